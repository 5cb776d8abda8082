-- Failed-login counters per key and fixed window, shared by every node.
CREATE TABLE login_attempts (
    key          TEXT    NOT NULL CHECK (key <> ''),
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL CHECK (count >= 0),
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
) STRICT;
CREATE INDEX login_attempts_expires_at ON login_attempts (expires_at);

-- The last TOTP time step accepted per user: a code is used at most once.
CREATE TABLE totp_steps (
    user_id   TEXT    NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    last_step INTEGER NOT NULL
) STRICT;
