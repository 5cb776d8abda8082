-- Claims of users resident in another region, kept per grant until it expires.
CREATE TABLE IF NOT EXISTS federated_claims (
    grant_id    VARBINARY(512) NOT NULL,
    home_region TEXT           NOT NULL,
    claims      JSON           NOT NULL,
    expires_at  DATETIME(6)    NOT NULL,
    PRIMARY KEY (grant_id),
    KEY federated_claims_expires_at (expires_at),
    CONSTRAINT federated_claims_grant_set CHECK (grant_id <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
