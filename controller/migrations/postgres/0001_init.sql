-- Gatewarden controller schema v1 (PostgreSQL). Keep in step with ../sqlite/0001_init.sql.
CREATE TABLE vendors (
    key          BYTEA PRIMARY KEY,
    name         TEXT NOT NULL,
    added_at     BIGINT NOT NULL
);
CREATE TABLE gateways (
    id              TEXT PRIMARY KEY,
    attestation_key BYTEA NOT NULL UNIQUE,
    agent_key       BYTEA NOT NULL,
    enrollment      TEXT NOT NULL,          -- pending | accepted
    endorsed_by     BYTEA,                   -- vendor key, NULL when approved by an operator
    monitor         TEXT NOT NULL,          -- hypervisor | insecure-software-monitor
    cert_fp         BYTEA UNIQUE,            -- SHA-256 of the issued client certificate
    enrolled_at     BIGINT NOT NULL,
    approved_at     BIGINT,
    status          TEXT NOT NULL DEFAULT 'none',
    status_since    BIGINT NOT NULL,
    last_result_at  BIGINT,
    last_boot       BIGINT,
    last_quote      BIGINT,
    agent_version   TEXT,
    manifests       TEXT                    -- JSON list of allowed manifest ids; NULL = every allowed manifest
);
CREATE TABLE manifests (
    id           BIGSERIAL PRIMARY KEY,
    digest       BYTEA NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    board        TEXT NOT NULL,
    envelope     TEXT NOT NULL,             -- the signed envelope, verbatim (immutable)
    signer       BYTEA NOT NULL,
    imported_at  BIGINT NOT NULL,
    allowed      BIGINT NOT NULL DEFAULT 1
);
CREATE TABLE results (
    id           BIGSERIAL PRIMARY KEY,
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    at           BIGINT NOT NULL,
    status       TEXT NOT NULL,
    ear          TEXT NOT NULL
);
CREATE INDEX results_by_gateway ON results (gateway_id, id);
CREATE TABLE device_policies (
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    mac          TEXT NOT NULL,
    spec         TEXT NOT NULL,             -- JSON DevicePolicy
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, mac)
);
CREATE TABLE policies (
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    version      BIGINT NOT NULL,
    body         BYTEA NOT NULL,
    signature    BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    applied_at   BIGINT,
    error        TEXT,
    PRIMARY KEY (gateway_id, version)
);
CREATE TABLE devices (
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    mac          TEXT NOT NULL,
    ip           TEXT,
    hostname     TEXT,
    last_seen    BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, mac)
);
CREATE TABLE datapath (
    gateway_id   TEXT PRIMARY KEY REFERENCES gateways(id),
    hop_drops    BIGINT NOT NULL,
    hop_passes   BIGINT NOT NULL,
    at           BIGINT NOT NULL
);
