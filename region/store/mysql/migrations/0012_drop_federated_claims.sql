-- Issue 12: no foreign personal data at rest (see the PostgreSQL and SQLite
-- migrations of the same number). Grants that had claims here are rewritten
-- to the federated subject "fed.<home region>.<home subject>", sessions of
-- federated users are ended, and the claims are dropped. A re-run after a
-- crash finds the table again: 0002 creates it if it is missing.
UPDATE auth_requests a JOIN federated_claims f ON f.grant_id = a.id
    SET a.user_id = CONCAT('fed.', f.home_region, '.', a.user_id)
    WHERE a.user_id <> '' AND a.user_id NOT LIKE 'fed.%' AND f.home_region <> '';
UPDATE access_tokens t JOIN federated_claims f ON f.grant_id = t.grant_id
    SET t.subject = CONCAT('fed.', f.home_region, '.', t.subject)
    WHERE t.subject NOT LIKE 'fed.%' AND f.home_region <> '';
UPDATE refresh_tokens t JOIN federated_claims f ON f.grant_id = t.grant_id
    SET t.subject = CONCAT('fed.', f.home_region, '.', t.subject)
    WHERE t.subject NOT LIKE 'fed.%' AND f.home_region <> '';
DELETE FROM sessions WHERE user_id NOT LIKE 'fed.%' AND JSON_CONTAINS(amr, '"fed"');
DROP TABLE IF EXISTS federated_claims;
