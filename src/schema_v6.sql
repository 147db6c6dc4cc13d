-- gapsync store schema, version 6: the key that signed each exported
-- bundle, so `trust statement` knows which keys a destination is known to
-- accept (docs/security.md §4.8). NULL for bundles exported before.
ALTER TABLE export_history ADD COLUMN signer TEXT;
