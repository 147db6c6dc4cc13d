-- gapsync store schema, version 11: one search row per update.
-- The console's search (title substring, KB number, in any language) reads
-- this narrow table instead of uniting a scan of every localized title
-- with the KB index; the two indexes that served it are dropped.

-- Per update, the searched text of its current revision: its titles in
-- every language, one per line, then `KB` and its KB article number.
-- Kept by store::insert_revision (SEARCH_TEXT there is the same expression).
CREATE TABLE update_search (
    update_id TEXT PRIMARY KEY REFERENCES updates (update_id),
    text      TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO update_search (update_id, text)
SELECT u.update_id,
       COALESCE((SELECT group_concat(l.title, char(10)) FROM localized l WHERE l.rev_id = u.current_rev), '')
       || COALESCE(char(10) || 'KB' || (SELECT r.kb_article FROM revisions r WHERE r.rev_id = u.current_rev), '')
FROM updates u;

DROP INDEX localized_title;
DROP INDEX revisions_kb;
