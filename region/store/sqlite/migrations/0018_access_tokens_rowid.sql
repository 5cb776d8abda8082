-- Issue 14: access tokens move from a WITHOUT ROWID table keyed by the
-- token digest to a rowid table with a unique index on the digest. Keyed by
-- a digest, every insert landed on a random page of the table and, through
-- the primary key every index entry carries, on random pages of the
-- grant_id and (subject, client_id) indexes too: three random page writes
-- per token in each group commit (WAL frames, checksums, checkpoint copies).
-- With a rowid the table and those indexes grow at their ends (rows are
-- appended; index entries end with the rowid), and only the digest index
-- takes a random page. Lookups by digest read the digest index and then the
-- row. Columns, constraints and the other indexes are unchanged.
CREATE TABLE access_tokens_new (
    hash       BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
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
) STRICT;
INSERT INTO access_tokens_new (hash, client_id, subject, audience, scopes, grant_id, format, auth_time, amr, created_at, expires_at, revoked)
    SELECT hash, client_id, subject, audience, scopes, grant_id, format, auth_time, amr, created_at, expires_at, revoked
    FROM access_tokens ORDER BY created_at;
DROP TABLE access_tokens;
ALTER TABLE access_tokens_new RENAME TO access_tokens;
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id);
CREATE INDEX access_tokens_subject_client ON access_tokens (subject, client_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);
