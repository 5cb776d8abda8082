-- Issue 15 item 1 (SCIM 2.0): a user's SCIM resource id (a tagged
-- artifact, set when SCIM first names the user), its SCIM attributes as one
-- JSON object (name, emails, active, externalId, the enterprise extension:
-- read and written whole, filters are evaluated by the node), and a write
-- counter that is the resource's ETag. Groups and their members are new.
ALTER TABLE users ADD COLUMN scim_id TEXT;
ALTER TABLE users ADD COLUMN scim TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX users_scim_id ON users (scim_id);

CREATE TABLE scim_groups (
    id           TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    display_name TEXT    NOT NULL UNIQUE CHECK (display_name <> ''),
    external_id  TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    version      INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE scim_group_members (
    group_id  TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (member_id);
