#!/usr/bin/env bash
# Install and start what the controller's tests need besides Rust: a PostgreSQL server and
# Debian's Chromium with ChromeDriver. Source it (`. .ci/services.sh`): it exports
# GW_TEST_POSTGRES_URL for the tests. Needs root (apt, the system PostgreSQL cluster).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
command -v pg_ctlcluster >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if ((${#need[@]})); then
    echo "==> installing ${need[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# The newest installed PostgreSQL, its default cluster started; a passwordless role for the
# tests, allowed from loopback only.
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$ver/main"; then
    pg_createcluster "$ver" main >/dev/null
fi
hba=/etc/postgresql/$ver/main/pg_hba.conf
if ! grep -q "gatewarden-tests" "$hba"; then
    sed -i "1i host all gatewarden 127.0.0.1/32 trust # gatewarden-tests" "$hba"
fi
pg_ctlcluster "$ver" main start 2>/dev/null || pg_ctlcluster "$ver" main reload
for _ in $(seq 50); do
    runuser -u postgres -- psql -qAtc "select 1" >/dev/null 2>&1 && break
    sleep 0.2
done
port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
runuser -u postgres -- psql -p "$port" -qAtc "select 1 from pg_roles where rolname='gatewarden'" | grep -q 1 ||
    runuser -u postgres -- psql -p "$port" -qc "CREATE ROLE gatewarden LOGIN CREATEDB"
runuser -u postgres -- psql -p "$port" -qAtc "select 1 from pg_database where datname='gatewarden'" | grep -q 1 ||
    runuser -u postgres -- psql -p "$port" -qc "CREATE DATABASE gatewarden OWNER gatewarden"
export GW_TEST_POSTGRES_URL="postgres://gatewarden@127.0.0.1:$port/gatewarden"
echo "==> PostgreSQL $ver on port $port: GW_TEST_POSTGRES_URL=$GW_TEST_POSTGRES_URL"
chromium --version
