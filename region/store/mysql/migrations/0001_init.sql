-- Initial schema of the MySQL/MariaDB backend (InnoDB, utf8mb4).
--
-- Every value that is compared or ordered as an identifier (ids, usernames,
-- client ids, grant ids, key ids, subjects) and every digest is VARBINARY:
-- byte equality and byte order, exactly like SQLite and PostgreSQL's
-- COLLATE "C". utf8mb4_bin is not enough: it is a PAD SPACE collation on
-- MariaDB and MySQL 5.7, where 'ada' = 'ada ' is true. Free text is utf8mb4
-- with the binary collation utf8mb4_bin (the table default).
--
-- Times are DATETIME(6) in UTC (the store sets time_zone = '+00:00'); the
-- zero time.Time is stored as 0001-01-01 00:00:00, never as NULL, so every
-- expiry comparison is total. Lists and claims are JSON.
--
-- MySQL commits DDL implicitly, so a migration is not one transaction:
-- every statement is written to be re-runnable (IF NOT EXISTS, indexes
-- declared inside CREATE TABLE), and a migration that failed half-way is
-- completed by running migrate again. Statements end with ';' at the end of
-- a line; comments are whole lines.

CREATE TABLE IF NOT EXISTS users (
    id            VARBINARY(512) NOT NULL,
    username      VARBINARY(512) NOT NULL,
    password_hash TEXT           NOT NULL,
    claims        JSON           NOT NULL,
    totp_secret   TEXT           NOT NULL,
    created_at    DATETIME(6)    NOT NULL,
    updated_at    DATETIME(6)    NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY users_username (username),
    CONSTRAINT users_id_set CHECK (id <> ''),
    CONSTRAINT users_username_set CHECK (username <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- AUTO_INCREMENT counters survive restarts on MySQL 8.0+ and MariaDB
-- 10.2.4+, so a Seq is never reused even after its row was acknowledged.
CREATE TABLE IF NOT EXISTS outbox (
    seq        BIGINT         NOT NULL AUTO_INCREMENT,
    op         VARCHAR(16)    NOT NULL,
    username   VARBINARY(512) NOT NULL,
    created_at DATETIME(6)    NOT NULL,
    attempts   INT            NOT NULL DEFAULT 0,
    PRIMARY KEY (seq),
    CONSTRAINT outbox_op CHECK (op IN ('put', 'delete'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS clients (
    id                        VARBINARY(512) NOT NULL,
    secret_hash               VARBINARY(64),
    name                      TEXT           NOT NULL,
    redirect_uris             JSON           NOT NULL,
    post_logout_redirect_uris JSON           NOT NULL,
    grant_types               JSON           NOT NULL,
    auth_method               TEXT           NOT NULL,
    access_token_format       TEXT           NOT NULL,
    jwks                      MEDIUMTEXT     NOT NULL,
    first_party               BOOLEAN        NOT NULL,
    scopes                    JSON           NOT NULL,
    created_at                DATETIME(6)    NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT clients_id_set CHECK (id <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS auth_requests (
    id                    VARBINARY(512) NOT NULL,
    client_id             VARBINARY(512) NOT NULL,
    redirect_uri          TEXT           NOT NULL,
    scopes                JSON           NOT NULL,
    state                 TEXT           NOT NULL,
    nonce                 TEXT           NOT NULL,
    response_type         TEXT           NOT NULL,
    response_mode         TEXT           NOT NULL,
    code_challenge        TEXT           NOT NULL,
    code_challenge_method TEXT           NOT NULL,
    prompt                JSON           NOT NULL,
    max_age               BIGINT,
    login_hint            TEXT           NOT NULL,
    ui_locales            JSON           NOT NULL,
    user_id               VARBINARY(512) NOT NULL,
    auth_time             DATETIME(6)    NOT NULL,
    amr                   JSON           NOT NULL,
    done                  BOOLEAN        NOT NULL,
    code_hash             VARBINARY(32),
    code_used             BOOLEAN        NOT NULL DEFAULT FALSE,
    created_at            DATETIME(6)    NOT NULL,
    expires_at            DATETIME(6)    NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY auth_requests_code_hash (code_hash),
    KEY auth_requests_expires_at (expires_at),
    CONSTRAINT auth_requests_id_set CHECK (id <> ''),
    CONSTRAINT auth_requests_max_age CHECK (max_age >= 0),
    CONSTRAINT auth_requests_code_hash_len CHECK (LENGTH(code_hash) = 32)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per authorization grant (token family) that has tokens or was
-- revoked. Everything that issues tokens of a grant, and everything that
-- revokes it, first locks this row, so a revocation also stops tokens being
-- issued concurrently (revoked = TRUE is sticky).
CREATE TABLE IF NOT EXISTS grants (
    id         VARBINARY(512) NOT NULL,
    revoked    BOOLEAN        NOT NULL DEFAULT FALSE,
    created_at DATETIME(6)    NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT grants_id_set CHECK (id <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS access_tokens (
    hash       VARBINARY(32)  NOT NULL,
    client_id  VARBINARY(512) NOT NULL,
    subject    VARBINARY(512) NOT NULL,
    audience   JSON           NOT NULL,
    scopes     JSON           NOT NULL,
    grant_id   VARBINARY(512) NOT NULL,
    format     TEXT           NOT NULL,
    auth_time  DATETIME(6)    NOT NULL,
    amr        JSON           NOT NULL,
    created_at DATETIME(6)    NOT NULL,
    expires_at DATETIME(6)    NOT NULL,
    revoked    BOOLEAN        NOT NULL DEFAULT FALSE,
    PRIMARY KEY (hash),
    KEY access_tokens_grant_id (grant_id),
    KEY access_tokens_subject_client (subject, client_id),
    KEY access_tokens_expires_at (expires_at),
    CONSTRAINT access_tokens_hash_len CHECK (LENGTH(hash) = 32)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash       VARBINARY(32)  NOT NULL,
    grant_id   VARBINARY(512) NOT NULL,
    client_id  VARBINARY(512) NOT NULL,
    subject    VARBINARY(512) NOT NULL,
    audience   JSON           NOT NULL,
    scopes     JSON           NOT NULL,
    auth_time  DATETIME(6)    NOT NULL,
    amr        JSON           NOT NULL,
    created_at DATETIME(6)    NOT NULL,
    expires_at DATETIME(6)    NOT NULL,
    used       BOOLEAN        NOT NULL DEFAULT FALSE,
    revoked    BOOLEAN        NOT NULL DEFAULT FALSE,
    PRIMARY KEY (hash),
    KEY refresh_tokens_grant_id (grant_id),
    KEY refresh_tokens_subject_client (subject, client_id),
    KEY refresh_tokens_expires_at (expires_at),
    CONSTRAINT refresh_tokens_hash_len CHECK (LENGTH(hash) = 32),
    CONSTRAINT refresh_tokens_grant_set CHECK (grant_id <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS sessions (
    hash       VARBINARY(32)  NOT NULL,
    user_id    VARBINARY(512) NOT NULL,
    auth_time  DATETIME(6)    NOT NULL,
    amr        JSON           NOT NULL,
    created_at DATETIME(6)    NOT NULL,
    expires_at DATETIME(6)    NOT NULL,
    PRIMARY KEY (hash),
    KEY sessions_user_id (user_id),
    KEY sessions_expires_at (expires_at),
    CONSTRAINT sessions_hash_len CHECK (LENGTH(hash) = 32)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- At most one active key: active_one is 1 for the active key and NULL
-- otherwise, and a UNIQUE index admits any number of NULLs (MySQL has no
-- partial indexes).
CREATE TABLE IF NOT EXISTS signing_keys (
    id          VARBINARY(512) NOT NULL,
    algorithm   TEXT           NOT NULL,
    private_der BLOB           NOT NULL,
    created_at  DATETIME(6)    NOT NULL,
    active      BOOLEAN        NOT NULL,
    not_after   DATETIME(6)    NOT NULL,
    active_one  TINYINT GENERATED ALWAYS AS (IF(active, 1, NULL)) STORED,
    PRIMARY KEY (id),
    UNIQUE KEY signing_keys_one_active (active_one),
    CONSTRAINT signing_keys_id_set CHECK (id <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
