-- Issue 15 item 1 (SCIM 2.0): a user's SCIM resource id (a tagged
-- artifact, set when SCIM first names the user; VARBINARY like every id),
-- its SCIM attributes as one JSON text (name, emails, active, externalId,
-- the enterprise extension: read and written whole, filters are evaluated
-- by the node), and a write counter that is the resource's ETag. Groups and
-- their members are new. The same version as in SQLite and PostgreSQL.
--
-- Re-runnable (see 0001_init.sql and 0014): each ADD COLUMN is prepared
-- only while information_schema does not list the column yet. A TEXT
-- column takes no literal default on MySQL, so scim is NULL for none.
SET @meridian_0015 = IF((SELECT COUNT(*) FROM information_schema.columns
        WHERE table_schema = DATABASE() AND table_name = 'users' AND column_name = 'scim_id') = 0,
    'ALTER TABLE users ADD COLUMN scim_id VARBINARY(512) NULL UNIQUE',
    'DO 0');
PREPARE meridian_0015 FROM @meridian_0015;
EXECUTE meridian_0015;
DEALLOCATE PREPARE meridian_0015;
SET @meridian_0015 = IF((SELECT COUNT(*) FROM information_schema.columns
        WHERE table_schema = DATABASE() AND table_name = 'users' AND column_name = 'scim') = 0,
    'ALTER TABLE users ADD COLUMN scim MEDIUMTEXT NULL',
    'DO 0');
PREPARE meridian_0015 FROM @meridian_0015;
EXECUTE meridian_0015;
DEALLOCATE PREPARE meridian_0015;
SET @meridian_0015 = IF((SELECT COUNT(*) FROM information_schema.columns
        WHERE table_schema = DATABASE() AND table_name = 'users' AND column_name = 'version') = 0,
    'ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 1',
    'DO 0');
PREPARE meridian_0015 FROM @meridian_0015;
EXECUTE meridian_0015;
DEALLOCATE PREPARE meridian_0015;

CREATE TABLE IF NOT EXISTS scim_groups (
    id           VARBINARY(512) NOT NULL,
    display_name VARBINARY(512) NOT NULL,
    external_id  TEXT           NOT NULL,
    created_at   DATETIME(6)    NOT NULL,
    updated_at   DATETIME(6)    NOT NULL,
    version      BIGINT         NOT NULL DEFAULT 1,
    PRIMARY KEY (id),
    UNIQUE KEY scim_groups_display_name (display_name),
    CONSTRAINT scim_groups_id_set CHECK (id <> ''),
    CONSTRAINT scim_groups_name_set CHECK (display_name <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS scim_group_members (
    group_id  VARBINARY(512) NOT NULL,
    member_id VARBINARY(512) NOT NULL,
    PRIMARY KEY (group_id, member_id),
    KEY scim_group_members_member (member_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
