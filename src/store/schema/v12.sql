-- gapsync store schema, version 12: what the console's overview and
-- Bundles page show beyond the ledgers of version 11.

-- Bundle sizes (Manifest::payload_bytes: the packs and content files a
-- bundle carries), the end of each bundle's validity period (the
-- manifest's `expires`) and the key that signed each applied bundle. Rows
-- of earlier versions keep NULL: unknown.
ALTER TABLE export_history ADD COLUMN bytes INTEGER;
ALTER TABLE export_history ADD COLUMN expires TEXT;
ALTER TABLE import_ledger ADD COLUMN bytes INTEGER;
ALTER TABLE import_ledger ADD COLUMN expires TEXT;
ALTER TABLE import_ledger ADD COLUMN signer TEXT;

-- Every completed `check`, newest last (store::check::record keeps the
-- last 20). `problems` and `notes`: JSON arrays of {rule, detail}.
CREATE TABLE check_runs (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    repair        INTEGER NOT NULL,
    revisions     INTEGER NOT NULL,
    content_files INTEGER NOT NULL,
    content_bytes INTEGER NOT NULL,
    problems      TEXT NOT NULL,
    notes         TEXT NOT NULL
);
