-- Issue 12: no foreign personal data at rest. The entry region no longer
-- keeps the claims of users resident in another region; it names them by
-- a federated subject "fed.<home region>.<home subject>" and fetches their
-- claims from the home region when it needs them. Grants that had claims
-- here are rewritten to that subject (home region and home subject are the
-- only identity data left), sessions of federated users (which cannot be
-- rewritten: they name no grant) are ended, and the claims are dropped.
UPDATE auth_requests SET user_id = 'fed.' || (SELECT f.home_region FROM federated_claims f WHERE f.grant_id = auth_requests.id) || '.' || user_id
    WHERE user_id <> '' AND user_id NOT LIKE 'fed.%'
    AND id IN (SELECT grant_id FROM federated_claims WHERE home_region <> '');
UPDATE access_tokens SET subject = 'fed.' || (SELECT f.home_region FROM federated_claims f WHERE f.grant_id = access_tokens.grant_id) || '.' || subject
    WHERE subject NOT LIKE 'fed.%'
    AND grant_id IN (SELECT grant_id FROM federated_claims WHERE home_region <> '');
UPDATE refresh_tokens SET subject = 'fed.' || (SELECT f.home_region FROM federated_claims f WHERE f.grant_id = refresh_tokens.grant_id) || '.' || subject
    WHERE subject NOT LIKE 'fed.%'
    AND grant_id IN (SELECT grant_id FROM federated_claims WHERE home_region <> '');
DELETE FROM sessions WHERE user_id NOT LIKE 'fed.%' AND EXISTS (SELECT 1 FROM json_each(sessions.amr) WHERE value = 'fed');
DROP TABLE federated_claims;
