-- Registered base distributions (`satchel admin distribution add`): an OCI image's config and layers,
-- stored as content-addressed blobs (`dist/blobs/sha256/<hex>`), named by name, version and arch.
-- `name_key` is the lowercased name and `arch` one spelling per OCI architecture (the domain's), so a
-- name, version and arch are registered once.
CREATE TABLE distributions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT NOT NULL,
    name_key  TEXT NOT NULL,
    version   TEXT NOT NULL,
    arch      TEXT NOT NULL,
    -- JSON descriptors: {"mediaType", "digest", "size"}, and an array of them in layer order.
    config    TEXT NOT NULL,
    layers    TEXT NOT NULL,
    created   INTEGER NOT NULL
);
CREATE UNIQUE INDEX distributions_key ON distributions(name_key, version, arch);

-- The base an image is built on, resolved when it was requested (no foreign key: a base in use by a
-- template cannot be removed, and a queued image whose base went fails with a message).
ALTER TABLE tickets ADD COLUMN image_base_id INTEGER;
ALTER TABLE tickets ADD COLUMN image_base TEXT;
