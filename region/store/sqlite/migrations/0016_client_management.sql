-- Issue 15 item 2 (management API for clients): a rotated client secret
-- keeps authenticating until previous_secret_expires_at (microseconds, 0
-- when there is none), and a dynamically registered client keeps the
-- digest of its RFC 7592 registration access token. Rows from before have
-- neither: operator-made clients are not managed over RFC 7592.
ALTER TABLE clients ADD COLUMN previous_secret_hash BLOB;
ALTER TABLE clients ADD COLUMN previous_secret_expires_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN registration_token_hash BLOB;
-- Deleting a client revokes its tokens (DeleteClient): find them by client.
CREATE INDEX IF NOT EXISTS access_tokens_client_id ON access_tokens (client_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_client_id ON refresh_tokens (client_id);
