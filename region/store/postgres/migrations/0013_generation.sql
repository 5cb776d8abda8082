-- The fencing record of the region's database (store.Generation): one row.
CREATE TABLE federation_generation (
    id            smallint    NOT NULL PRIMARY KEY CHECK (id = 1),
    generation    bigint      NOT NULL CHECK (generation >= 0),
    holder        text        NOT NULL,
    fenced_by     bigint      NOT NULL DEFAULT 0,
    fenced_holder text        NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL
);
INSERT INTO federation_generation (id, generation, holder, updated_at) VALUES (1, 0, '', now());
