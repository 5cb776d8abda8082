-- Issue 15 item 2 (management API for clients): the same version as in
-- SQLite and PostgreSQL. A rotated client secret keeps authenticating
-- until previous_secret_expires_at (the zero time when there is none), and
-- a dynamically registered client keeps the digest of its RFC 7592
-- registration access token. Rows from before have neither.
--
-- Re-runnable (see 0001_init.sql and 0003): each column is added by a
-- statement prepared from information_schema, a no-op when it exists.
SET @meridian_ddl = (SELECT IF(COUNT(*) = 0,
    'ALTER TABLE clients ADD COLUMN previous_secret_hash VARBINARY(64)',
    'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = 'clients' AND column_name = 'previous_secret_hash');
PREPARE meridian_ddl FROM @meridian_ddl;
EXECUTE meridian_ddl;
DEALLOCATE PREPARE meridian_ddl;
SET @meridian_ddl = (SELECT IF(COUNT(*) = 0,
    'ALTER TABLE clients ADD COLUMN previous_secret_expires_at DATETIME(6) NOT NULL DEFAULT ''0001-01-01 00:00:00''',
    'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = 'clients' AND column_name = 'previous_secret_expires_at');
PREPARE meridian_ddl FROM @meridian_ddl;
EXECUTE meridian_ddl;
DEALLOCATE PREPARE meridian_ddl;
SET @meridian_ddl = (SELECT IF(COUNT(*) = 0,
    'ALTER TABLE clients ADD COLUMN registration_token_hash VARBINARY(64)',
    'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = 'clients' AND column_name = 'registration_token_hash');
PREPARE meridian_ddl FROM @meridian_ddl;
EXECUTE meridian_ddl;
DEALLOCATE PREPARE meridian_ddl;
-- Deleting a client revokes its tokens (DeleteClient): find them by
-- client. MySQL has no CREATE INDEX IF NOT EXISTS either.
SET @meridian_ddl = (SELECT IF(COUNT(*) = 0,
    'CREATE INDEX access_tokens_client_id ON access_tokens (client_id)',
    'DO 0')
    FROM information_schema.statistics
    WHERE table_schema = DATABASE() AND table_name = 'access_tokens' AND index_name = 'access_tokens_client_id');
PREPARE meridian_ddl FROM @meridian_ddl;
EXECUTE meridian_ddl;
DEALLOCATE PREPARE meridian_ddl;
SET @meridian_ddl = (SELECT IF(COUNT(*) = 0,
    'CREATE INDEX refresh_tokens_client_id ON refresh_tokens (client_id)',
    'DO 0')
    FROM information_schema.statistics
    WHERE table_schema = DATABASE() AND table_name = 'refresh_tokens' AND index_name = 'refresh_tokens_client_id');
PREPARE meridian_ddl FROM @meridian_ddl;
EXECUTE meridian_ddl;
DEALLOCATE PREPARE meridian_ddl;
