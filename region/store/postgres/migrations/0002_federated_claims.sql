-- Claims of users resident in another region, kept per grant until it expires.
CREATE TABLE federated_claims (
    grant_id    text        NOT NULL PRIMARY KEY CHECK (grant_id <> ''),
    home_region text        NOT NULL,
    claims      jsonb       NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX federated_claims_expires_at ON federated_claims (expires_at);
