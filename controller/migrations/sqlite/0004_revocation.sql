-- Gatewarden controller schema v4: revocation. An operator revokes an enrolled gateway (its
-- image may be compromised: its keys are no longer believed) or every endorsement of a vendor
-- key. A revoked gateway keeps its row and history; enrollment becomes 'revoked', its client
-- certificate is forgotten, and it is never accepted again under these keys.
ALTER TABLE gateways ADD COLUMN revoked_at INTEGER;
ALTER TABLE gateways ADD COLUMN revoked_reason TEXT;
ALTER TABLE vendors ADD COLUMN revoked_at INTEGER;
ALTER TABLE vendors ADD COLUMN revoked_reason TEXT;
