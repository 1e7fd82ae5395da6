-- Container templates (a bundle packaged as an image) and the images generated from them. An image
-- is a ticket of kind 'container_image': it shares the ticket lifecycle, job queue and downloads.
CREATE TABLE container_templates (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    bundle_id     INTEGER NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
    distro_name   TEXT,
    distro_version TEXT,
    distro_arch   TEXT,
    created       INTEGER NOT NULL,
    modified      INTEGER NOT NULL
);
CREATE INDEX container_templates_bundle ON container_templates(bundle_id);

ALTER TABLE tickets ADD COLUMN kind TEXT NOT NULL DEFAULT 'bundle_export';
-- Deleting a template (or its bundle) deletes its images' tickets, and so their jobs.
ALTER TABLE tickets ADD COLUMN template_id INTEGER REFERENCES container_templates(id) ON DELETE CASCADE;
ALTER TABLE tickets ADD COLUMN image_name TEXT;
ALTER TABLE tickets ADD COLUMN image_format TEXT;
ALTER TABLE tickets ADD COLUMN compress INTEGER;
CREATE INDEX tickets_template ON tickets(template_id);
