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
