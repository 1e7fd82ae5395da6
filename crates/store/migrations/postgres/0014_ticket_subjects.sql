-- Tickets work on more than bundles: appliance exports name an appliance, imports the bundle or
-- appliance they created. The columns say so.
ALTER TABLE tickets RENAME COLUMN bundle_id TO subject_id;
ALTER TABLE tickets RENAME COLUMN bundle_name TO subject_name;
ALTER TABLE tickets RENAME COLUMN bundle_version TO subject_version;
-- Imports: how they treat what they find (NULL for the other kinds).
ALTER TABLE tickets ADD COLUMN import_imported BOOLEAN;
ALTER TABLE tickets ADD COLUMN import_force BOOLEAN;
ALTER TABLE tickets ADD COLUMN import_reuse_bundles BOOLEAN;
ALTER TABLE tickets ADD COLUMN import_use_major BOOLEAN;
