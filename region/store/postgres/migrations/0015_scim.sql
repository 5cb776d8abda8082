-- Issue 15 item 1 (SCIM 2.0): a user's SCIM resource id (a tagged
-- artifact, set when SCIM first names the user), its SCIM attributes as one
-- JSON object (name, emails, active, externalId, the enterprise extension:
-- read and written whole, filters are evaluated by the node), and a write
-- counter that is the resource's ETag. Groups and their members are new.
ALTER TABLE users ADD COLUMN scim_id text COLLATE "C" UNIQUE;
ALTER TABLE users ADD COLUMN scim text NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 1;

CREATE TABLE scim_groups (
    id           text        COLLATE "C" NOT NULL PRIMARY KEY CHECK (id <> ''),
    display_name text        COLLATE "C" NOT NULL UNIQUE CHECK (display_name <> ''),
    external_id  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    version      bigint      NOT NULL DEFAULT 1
);

CREATE TABLE scim_group_members (
    group_id  text COLLATE "C" NOT NULL REFERENCES scim_groups (id) ON DELETE CASCADE,
    member_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (member_id);
