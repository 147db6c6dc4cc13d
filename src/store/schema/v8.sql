-- gapsync store schema, version 8: indexes for reading a large catalog
-- (the console's update pages and searches, `updates show`, reports).
-- Only indexes: no table or row changes.

-- Which update a revision is current for (supersedence: "superseded by").
CREATE INDEX updates_current_rev ON updates (current_rev);
-- KB search by number prefix, without reading the revisions' XML.
CREATE INDEX revisions_kb ON revisions (kb_article);
-- Title search scans titles alone (a covering index), not the
-- descriptions beside them.
CREATE INDEX localized_title ON localized (title);
-- Status counts per update (report updates, the console's update page).
CREATE INDEX wusp_status_update ON wusp_status (update_id, state);
