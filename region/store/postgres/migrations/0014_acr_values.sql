-- Issue 11 item 6: the authorization request keeps its acr_values (text[],
-- like ui_locales), so the entry region can pass them to the hub and the
-- resident region can answer them. Rows from before read as no value.
ALTER TABLE auth_requests ADD COLUMN acr_values text[] NOT NULL DEFAULT '{}';
