-- The fencing record of the region's database (store.Generation): one row.
CREATE TABLE federation_generation (
    id            INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    generation    INTEGER NOT NULL CHECK (generation >= 0),
    holder        TEXT    NOT NULL,
    fenced_by     INTEGER NOT NULL DEFAULT 0,
    fenced_holder TEXT    NOT NULL DEFAULT '',
    updated_at    INTEGER NOT NULL
) STRICT;
INSERT INTO federation_generation (id, generation, holder, updated_at) VALUES (1, 0, '', 0);
