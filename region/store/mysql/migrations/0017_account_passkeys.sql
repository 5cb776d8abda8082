-- Issue 15 items 3 and 4: passkeys (WebAuthn credentials) of resident
-- users (the same version as in SQLite and PostgreSQL; sessions already
-- have their user_id index here). The credential record itself is the
-- relying party library's JSON; the signature counter is a column so a use
-- is recorded with one conditional UPDATE (clone detection). Re-runnable
-- (see 0001_init.sql).
CREATE TABLE IF NOT EXISTS webauthn_credentials (
    id            VARBINARY(1023) NOT NULL,
    user_id       VARBINARY(512)  NOT NULL,
    name          TEXT            NOT NULL,
    data          BLOB            NOT NULL,
    sign_count    BIGINT          NOT NULL DEFAULT 0,
    clone_warning BOOLEAN         NOT NULL DEFAULT FALSE,
    created_at    DATETIME(6)     NOT NULL,
    last_used_at  DATETIME(6)     NOT NULL DEFAULT '0001-01-01 00:00:00',
    PRIMARY KEY (id),
    KEY webauthn_credentials_user_id (user_id, created_at),
    CONSTRAINT webauthn_credentials_id_set CHECK (LENGTH(id) >= 1)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
