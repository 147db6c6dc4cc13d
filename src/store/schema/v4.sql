-- gapsync store schema, version 4: the languages of language-specific
-- updates (/Update/Properties/Language), for the export's --language filter.
-- Existing revisions are filled in by store::backfill_languages after this
-- migration runs.
CREATE TABLE revision_languages (
    rev_id   INTEGER NOT NULL REFERENCES revisions (rev_id),
    language TEXT NOT NULL,
    PRIMARY KEY (rev_id, language)
) WITHOUT ROWID;
