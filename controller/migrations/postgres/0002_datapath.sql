-- Gatewarden controller schema v2: per-gateway data-path settings (JSON DatapathConfig:
-- hop signing, middlebox chain). NULL = the defaults (signing on, every middlebox).
ALTER TABLE gateways ADD COLUMN datapath_settings TEXT;
