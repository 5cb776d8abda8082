-- Initial schema of the PostgreSQL backend. Objects are created in the
-- first schema of the connection's search_path.
-- The zero time.Time is stored as 0001-01-01 00:00:00 UTC, never as NULL, so
-- every expiry comparison is total. Digests are 32-byte bytea.

CREATE TABLE users (
    id            text        NOT NULL PRIMARY KEY CHECK (id <> ''),
    -- Byte order, as in SQLite, so ListUsers pages identically everywhere.
    username      text        COLLATE "C" NOT NULL UNIQUE CHECK (username <> ''),
    password_hash text        NOT NULL,
    claims        jsonb       NOT NULL,
    totp_secret   text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE outbox (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    op         text        NOT NULL CHECK (op IN ('put', 'delete')),
    username   text        NOT NULL,
    created_at timestamptz NOT NULL,
    attempts   integer     NOT NULL DEFAULT 0
);

CREATE TABLE clients (
    id                        text        COLLATE "C" NOT NULL PRIMARY KEY CHECK (id <> ''),
    secret_hash               bytea,
    name                      text        NOT NULL,
    redirect_uris             text[]      NOT NULL,
    post_logout_redirect_uris text[]      NOT NULL,
    grant_types               text[]      NOT NULL,
    auth_method               text        NOT NULL,
    access_token_format       text        NOT NULL,
    jwks                      text        NOT NULL,
    first_party               boolean     NOT NULL,
    scopes                    text[]      NOT NULL,
    created_at                timestamptz NOT NULL
);

CREATE TABLE auth_requests (
    id                    text        NOT NULL PRIMARY KEY CHECK (id <> ''),
    client_id             text        NOT NULL,
    redirect_uri          text        NOT NULL,
    scopes                text[]      NOT NULL,
    state                 text        NOT NULL,
    nonce                 text        NOT NULL,
    response_type         text        NOT NULL,
    response_mode         text        NOT NULL,
    code_challenge        text        NOT NULL,
    code_challenge_method text        NOT NULL,
    prompt                text[]      NOT NULL,
    max_age               bigint      CHECK (max_age >= 0),
    login_hint            text        NOT NULL,
    ui_locales            text[]      NOT NULL,
    user_id               text        NOT NULL,
    auth_time             timestamptz NOT NULL,
    amr                   text[]      NOT NULL,
    done                  boolean     NOT NULL,
    code_hash             bytea       UNIQUE CHECK (length(code_hash) = 32),
    code_used             boolean     NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL,
    expires_at            timestamptz NOT NULL
);
CREATE INDEX auth_requests_expires_at ON auth_requests (expires_at);

-- One row per authorization grant (token family) that has tokens or was
-- revoked. Everything that issues tokens of a grant, and everything that
-- revokes it, first locks this row, so a revocation also stops tokens being
-- issued concurrently (revoked = true is sticky).
CREATE TABLE grants (
    id         text        NOT NULL PRIMARY KEY CHECK (id <> ''),
    revoked    boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);

CREATE TABLE access_tokens (
    hash       bytea       NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    client_id  text        NOT NULL,
    subject    text        NOT NULL,
    audience   text[]      NOT NULL,
    scopes     text[]      NOT NULL,
    grant_id   text        NOT NULL,
    format     text        NOT NULL,
    auth_time  timestamptz NOT NULL,
    amr        text[]      NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked    boolean     NOT NULL DEFAULT false
);
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id);
CREATE INDEX access_tokens_subject_client ON access_tokens (subject, client_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);

CREATE TABLE refresh_tokens (
    hash       bytea       NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    grant_id   text        NOT NULL CHECK (grant_id <> ''),
    client_id  text        NOT NULL,
    subject    text        NOT NULL,
    audience   text[]      NOT NULL,
    scopes     text[]      NOT NULL,
    auth_time  timestamptz NOT NULL,
    amr        text[]      NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used       boolean     NOT NULL DEFAULT false,
    revoked    boolean     NOT NULL DEFAULT false
);
CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_subject_client ON refresh_tokens (subject, client_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE sessions (
    hash       bytea       NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    user_id    text        NOT NULL,
    auth_time  timestamptz NOT NULL,
    amr        text[]      NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE signing_keys (
    id          text        COLLATE "C" NOT NULL PRIMARY KEY CHECK (id <> ''),
    algorithm   text        NOT NULL,
    private_der bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    active      boolean     NOT NULL,
    not_after   timestamptz NOT NULL
);
-- At most one active key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
