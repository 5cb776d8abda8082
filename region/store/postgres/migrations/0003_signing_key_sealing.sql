-- Signing keys are sealed with a key-encryption key that is not in the
-- database: kek_id names it ('' marks a legacy plaintext row, sealed in place
-- at the next start), private_der holds the sealed key. not_before is when
-- a key starts signing; it is published from created_at on.
ALTER TABLE signing_keys ADD COLUMN kek_id text NOT NULL DEFAULT '';
ALTER TABLE signing_keys ADD COLUMN not_before timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00';
UPDATE signing_keys SET not_before = created_at;
