-- Issue 15 items 3 and 4: passkeys (WebAuthn credentials) of resident
-- users, and an index to list and end a user's sessions from /account.
-- The credential record itself (public key, flags, transports) is the
-- relying party library's JSON; the signature counter is a column so a use
-- is recorded with one conditional UPDATE (clone detection).
CREATE TABLE webauthn_credentials (
    id            bytea       NOT NULL PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 1023),
    user_id       text        NOT NULL,
    name          text        NOT NULL,
    data          bytea       NOT NULL,
    sign_count    bigint      NOT NULL DEFAULT 0,
    clone_warning boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    last_used_at  timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00'
);
CREATE INDEX webauthn_credentials_user_id ON webauthn_credentials (user_id, created_at);
CREATE INDEX sessions_user_id ON sessions (user_id);
