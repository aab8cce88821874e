-- Gatewarden controller schema v3: results keep their EAR compressed (raw DEFLATE of the JSON,
-- in ear_deflate). A 50-component gateway's EAR is about 7.8 KB of JSON and 0.6 KB compressed;
-- the one result writer is bounded by the bytes it commits, and a fleet's history by the disk.
-- Rows written before v3 keep their JSON in ear. SQLite cannot drop NOT NULL in place, so the
-- table is rebuilt (ids, and so the AUTOINCREMENT sequence, are kept).
CREATE TABLE results_v3 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway_id   TEXT NOT NULL REFERENCES gateways(id),
    at           INTEGER NOT NULL,
    status       TEXT NOT NULL,
    ear          TEXT,                      -- EAR JSON (results written before v3)
    ear_deflate  BLOB,                      -- raw DEFLATE of the EAR JSON
    CHECK ((ear IS NULL) <> (ear_deflate IS NULL))
);
INSERT INTO results_v3 (id, gateway_id, at, status, ear)
    SELECT id, gateway_id, at, status, ear FROM results;
DROP TABLE results;
ALTER TABLE results_v3 RENAME TO results;
CREATE INDEX results_by_gateway ON results (gateway_id, id);
