-- Failed-login counters per key and fixed window, shared by every node.
CREATE TABLE login_attempts (
    key          text        NOT NULL CHECK (key <> ''),
    window_start timestamptz NOT NULL,
    count        integer     NOT NULL CHECK (count >= 0),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX login_attempts_expires_at ON login_attempts (expires_at);

-- The last TOTP time step accepted per user: a code is used at most once.
CREATE TABLE totp_steps (
    user_id   text   NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    last_step bigint NOT NULL
);
