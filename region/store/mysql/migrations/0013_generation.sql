-- The fencing record of the region's database (store.Generation): one row.
-- The same version as in SQLite and PostgreSQL. Every statement is
-- re-runnable (see 0001_init.sql). holder is compared (ClaimGeneration),
-- hence VARBINARY like every compared identifier.
CREATE TABLE IF NOT EXISTS federation_generation (
    id            SMALLINT       NOT NULL,
    generation    BIGINT         NOT NULL,
    holder        VARBINARY(512) NOT NULL,
    fenced_by     BIGINT         NOT NULL DEFAULT 0,
    fenced_holder VARBINARY(512) NOT NULL DEFAULT '',
    updated_at    DATETIME(6)    NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT federation_generation_one_row CHECK (id = 1),
    CONSTRAINT federation_generation_number CHECK (generation >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- A re-run leaves an existing record alone.
INSERT INTO federation_generation (id, generation, holder, updated_at)
    VALUES (1, 0, '', UTC_TIMESTAMP(6))
    ON DUPLICATE KEY UPDATE id = id;
