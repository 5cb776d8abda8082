-- 0018 rebuilt access_tokens and recreated its indexes but one: the
-- client_id index 0016 added for DeleteClient, which revokes a client's
-- tokens. Without it that revocation scans every token of the region
-- inside the single writer's transaction. Entries end with the rowid, so
-- a client's new tokens append to its part of the index.
CREATE INDEX IF NOT EXISTS access_tokens_client_id ON access_tokens (client_id);
