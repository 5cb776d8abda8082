-- Login hardening: the same version as in SQLite and PostgreSQL. Every
-- statement is re-runnable (see 0001_init.sql).

-- Failed-login counters per key and fixed window, shared by every node.
-- KEY is a reserved word in MySQL, hence attempt_key.
CREATE TABLE IF NOT EXISTS login_attempts (
    attempt_key  VARBINARY(512) NOT NULL,
    window_start DATETIME(6)    NOT NULL,
    count        INT            NOT NULL,
    expires_at   DATETIME(6)    NOT NULL,
    PRIMARY KEY (attempt_key, window_start),
    KEY login_attempts_expires_at (expires_at),
    CONSTRAINT login_attempts_key_set CHECK (attempt_key <> ''),
    CONSTRAINT login_attempts_count CHECK (count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The last TOTP time step accepted per user: a code is used at most once.
-- The row goes with the user (ON DELETE CASCADE).
CREATE TABLE IF NOT EXISTS totp_steps (
    user_id   VARBINARY(512) NOT NULL,
    last_step BIGINT         NOT NULL,
    PRIMARY KEY (user_id),
    CONSTRAINT totp_steps_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
