-- Issue 15 item 2 (management API for clients): a rotated client secret
-- keeps authenticating until previous_secret_expires_at (the zero time
-- when there is none), and a dynamically registered client keeps the
-- digest of its RFC 7592 registration access token. Rows from before have
-- neither: operator-made clients are not managed over RFC 7592.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS previous_secret_hash bytea;
ALTER TABLE clients ADD COLUMN IF NOT EXISTS previous_secret_expires_at timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00';
ALTER TABLE clients ADD COLUMN IF NOT EXISTS registration_token_hash bytea;
-- Deleting a client revokes its tokens (DeleteClient): find them by client.
CREATE INDEX IF NOT EXISTS access_tokens_client_id ON access_tokens (client_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_client_id ON refresh_tokens (client_id);
