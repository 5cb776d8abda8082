-- Claims of users resident in another region, kept per grant until it expires.
CREATE TABLE federated_claims (
    grant_id    TEXT    NOT NULL PRIMARY KEY CHECK (grant_id <> ''),
    home_region TEXT    NOT NULL,
    claims      TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX federated_claims_expires_at ON federated_claims (expires_at);
