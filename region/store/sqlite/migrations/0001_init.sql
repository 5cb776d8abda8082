-- Initial schema of the SQLite backend.
-- Times are INTEGER microseconds since the Unix epoch (UTC); the zero
-- time.Time is stored as its own (negative) value, never as NULL, so every
-- expiry comparison is total. Lists and claims are JSON text. Digests are
-- 32-byte BLOBs.

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    username      TEXT    NOT NULL UNIQUE CHECK (username <> ''),
    password_hash TEXT    NOT NULL,
    claims        TEXT    NOT NULL,
    totp_secret   TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE outbox (
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    op         TEXT    NOT NULL CHECK (op IN ('put', 'delete')),
    username   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE clients (
    id                        TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    secret_hash               BLOB,
    name                      TEXT    NOT NULL,
    redirect_uris             TEXT    NOT NULL,
    post_logout_redirect_uris TEXT    NOT NULL,
    grant_types               TEXT    NOT NULL,
    auth_method               TEXT    NOT NULL,
    access_token_format       TEXT    NOT NULL,
    jwks                      TEXT    NOT NULL,
    first_party               INTEGER NOT NULL,
    scopes                    TEXT    NOT NULL,
    created_at                INTEGER NOT NULL
) STRICT;

CREATE TABLE auth_requests (
    id                    TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    client_id             TEXT    NOT NULL,
    redirect_uri          TEXT    NOT NULL,
    scopes                TEXT    NOT NULL,
    state                 TEXT    NOT NULL,
    nonce                 TEXT    NOT NULL,
    response_type         TEXT    NOT NULL,
    response_mode         TEXT    NOT NULL,
    code_challenge        TEXT    NOT NULL,
    code_challenge_method TEXT    NOT NULL,
    prompt                TEXT    NOT NULL,
    max_age               INTEGER CHECK (max_age >= 0),
    login_hint            TEXT    NOT NULL,
    ui_locales            TEXT    NOT NULL,
    user_id               TEXT    NOT NULL,
    auth_time             INTEGER NOT NULL,
    amr                   TEXT    NOT NULL,
    done                  INTEGER NOT NULL,
    code_hash             BLOB    UNIQUE CHECK (length(code_hash) = 32),
    code_used             INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL
) STRICT;
CREATE INDEX auth_requests_expires_at ON auth_requests (expires_at);

-- grants holds one row per authorization grant (token family) that has
-- tokens or was revoked. Writers of a grant's tokens and revokers of the
-- grant go through this row, so a revocation also stops tokens that are
-- being issued concurrently (revoked = 1 is sticky).
CREATE TABLE grants (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    revoked    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE access_tokens (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    client_id  TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    audience   TEXT    NOT NULL,
    scopes     TEXT    NOT NULL,
    grant_id   TEXT    NOT NULL,
    format     TEXT    NOT NULL,
    auth_time  INTEGER NOT NULL,
    amr        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id);
CREATE INDEX access_tokens_subject_client ON access_tokens (subject, client_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);

CREATE TABLE refresh_tokens (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    grant_id   TEXT    NOT NULL CHECK (grant_id <> ''),
    client_id  TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    audience   TEXT    NOT NULL,
    scopes     TEXT    NOT NULL,
    auth_time  INTEGER NOT NULL,
    amr        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0,
    revoked    INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_subject_client ON refresh_tokens (subject, client_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE sessions (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    user_id    TEXT    NOT NULL,
    auth_time  INTEGER NOT NULL,
    amr        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE signing_keys (
    id          TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    algorithm   TEXT    NOT NULL,
    private_der BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    active      INTEGER NOT NULL,
    not_after   INTEGER NOT NULL
) STRICT;
-- At most one active key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active = 1;
