-- Signing-key sealing: the same version as in SQLite and PostgreSQL.
-- Signing keys are sealed with a key-encryption key that is not in the
-- database: kek_id names it ('' marks a legacy plaintext row, sealed in place
-- at the next start), private_der holds the sealed key. not_before is when
-- a key starts signing; it is published from created_at on.
--
-- Every statement is re-runnable (see 0001_init.sql). MySQL has no
-- ADD COLUMN IF NOT EXISTS (MariaDB has), so each column is added by a
-- statement prepared from information_schema: the ALTER when the column is
-- missing, a no-op otherwise. kek_id is compared (ResealSigningKey), hence
-- VARBINARY like every compared identifier.
SET @meridian_ddl = (SELECT IF(COUNT(*) = 0,
    'ALTER TABLE signing_keys ADD COLUMN kek_id VARBINARY(512) NOT NULL DEFAULT ''''',
    'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = 'signing_keys' AND column_name = 'kek_id');
PREPARE meridian_ddl FROM @meridian_ddl;
EXECUTE meridian_ddl;
DEALLOCATE PREPARE meridian_ddl;
SET @meridian_ddl = (SELECT IF(COUNT(*) = 0,
    'ALTER TABLE signing_keys ADD COLUMN not_before DATETIME(6) NOT NULL DEFAULT ''0001-01-01 00:00:00''',
    'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = 'signing_keys' AND column_name = 'not_before');
PREPARE meridian_ddl FROM @meridian_ddl;
EXECUTE meridian_ddl;
DEALLOCATE PREPARE meridian_ddl;
-- Only rows the ALTER just defaulted: a re-run leaves set values alone.
UPDATE signing_keys SET not_before = created_at WHERE not_before = '0001-01-01 00:00:00';
