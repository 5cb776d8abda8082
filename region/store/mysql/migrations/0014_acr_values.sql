-- Issue 11 item 6: the authorization request keeps its acr_values (a JSON
-- list, like ui_locales); the same version as in SQLite and PostgreSQL.
-- Rows from before read as no value.
--
-- Re-runnable (see 0001_init.sql): MySQL 8 has no ADD COLUMN IF NOT
-- EXISTS, so the ALTER is prepared only while information_schema does not
-- list the column yet (Migrate runs a migration on one session, which
-- keeps the user variable). A JSON column takes its default as an
-- expression, in parentheses, on MySQL 8.0.13+ and MariaDB.
SET @meridian_0014 = IF((SELECT COUNT(*) FROM information_schema.columns
        WHERE table_schema = DATABASE() AND table_name = 'auth_requests' AND column_name = 'acr_values') = 0,
    'ALTER TABLE auth_requests ADD COLUMN acr_values JSON NOT NULL DEFAULT (''[]'') AFTER ui_locales',
    'DO 0');
PREPARE meridian_0014 FROM @meridian_0014;
EXECUTE meridian_0014;
DEALLOCATE PREPARE meridian_0014;
