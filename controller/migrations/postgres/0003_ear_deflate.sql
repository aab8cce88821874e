-- Gatewarden controller schema v3: results keep their EAR compressed (raw DEFLATE of the JSON,
-- in ear_deflate). A 50-component gateway's EAR is about 7.8 KB of JSON and 0.6 KB compressed;
-- the one result writer is bounded by the bytes it commits, and a fleet's history by the disk.
-- Rows written before v3 keep their JSON in ear.
ALTER TABLE results ALTER COLUMN ear DROP NOT NULL;
ALTER TABLE results ADD COLUMN ear_deflate BYTEA;
ALTER TABLE results ADD CONSTRAINT results_one_ear CHECK ((ear IS NULL) <> (ear_deflate IS NULL));
