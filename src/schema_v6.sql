-- gapsync store schema, version 6: per exported link, the last trust
-- statement the chain had carried once the link was exported, so that
-- `export --since` carries again the statements of the links it replaces
-- (NULL for links exported before: then every statement travels again).
ALTER TABLE export_history ADD COLUMN last_stmt_seq INTEGER;
