-- Gatewarden controller schema v1 (SQLite). Keep in step with ../postgres/0001_init.sql.
CREATE TABLE vendors (
    key          BLOB PRIMARY KEY,
    name         TEXT NOT NULL,
    added_at     INTEGER NOT NULL
);
CREATE TABLE gateways (
    id              TEXT PRIMARY KEY,
    attestation_key BLOB NOT NULL UNIQUE,
    agent_key       BLOB NOT NULL,
    enrollment      TEXT NOT NULL,          -- pending | accepted
    endorsed_by     BLOB,                   -- vendor key, NULL when approved by an operator
    monitor         TEXT NOT NULL,          -- hypervisor | insecure-software-monitor
    cert_fp         BLOB UNIQUE,            -- SHA-256 of the issued client certificate
    enrolled_at     INTEGER NOT NULL,
    approved_at     INTEGER,
    status          TEXT NOT NULL DEFAULT 'none',
    status_since    INTEGER NOT NULL,
    last_result_at  INTEGER,
    last_boot       INTEGER,
    last_quote      INTEGER,
    agent_version   TEXT,
    manifests       TEXT                    -- JSON list of allowed manifest ids; NULL = every allowed manifest
);
CREATE TABLE manifests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    digest       BLOB NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    board        TEXT NOT NULL,
    envelope     TEXT NOT NULL,             -- the signed envelope, verbatim (immutable)
    signer       BLOB NOT NULL,
    imported_at  INTEGER NOT NULL,
    allowed      INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE results (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    at           INTEGER NOT NULL,
    status       TEXT NOT NULL,
    ear          TEXT NOT NULL
);
CREATE INDEX results_by_gateway ON results (gateway_id, id);
CREATE TABLE device_policies (
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    mac          TEXT NOT NULL,
    spec         TEXT NOT NULL,             -- JSON DevicePolicy
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, mac)
);
CREATE TABLE policies (
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    version      INTEGER NOT NULL,
    body         BLOB NOT NULL,
    signature    BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    applied_at   INTEGER,
    error        TEXT,
    PRIMARY KEY (gateway_id, version)
);
CREATE TABLE devices (
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    mac          TEXT NOT NULL,
    ip           TEXT,
    hostname     TEXT,
    last_seen    INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, mac)
);
CREATE TABLE datapath (
    gateway_id   TEXT PRIMARY KEY REFERENCES gateways(id),
    hop_drops    INTEGER NOT NULL,
    hop_passes   INTEGER NOT NULL,
    at           INTEGER NOT NULL
);
