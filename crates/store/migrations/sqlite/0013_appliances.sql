-- Appliance templates: bundles (the user's own, referenced, never copied), an OS profile with its
-- package list, and boot scripts whose bodies are blobs. Deleting a bundle detaches it from every
-- appliance; deleting an appliance never deletes its bundles.
CREATE TABLE appliances (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    version        TEXT NOT NULL,
    description    TEXT,
    distro_name    TEXT,
    distro_version TEXT,
    distro_arch    TEXT,
    created        INTEGER NOT NULL,
    modified       INTEGER NOT NULL
);
CREATE INDEX appliances_owner ON appliances(owner_id, name, version);

CREATE TABLE appliance_bundles (
    appliance_id INTEGER NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    bundle_id    INTEGER NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    PRIMARY KEY (appliance_id, bundle_id)
);
CREATE INDEX appliance_bundles_bundle ON appliance_bundles(bundle_id);

CREATE TABLE appliance_os_profiles (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance_id INTEGER NOT NULL UNIQUE REFERENCES appliances(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created      INTEGER NOT NULL,
    modified     INTEGER NOT NULL
);

CREATE TABLE appliance_pkgs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id INTEGER NOT NULL REFERENCES appliance_os_profiles(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    name       TEXT NOT NULL,
    version    TEXT,
    arch       TEXT
);
CREATE INDEX appliance_pkgs_profile ON appliance_pkgs(profile_id, position);

CREATE TABLE boot_scripts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance_id  INTEGER NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    boot_order    INTEGER NOT NULL,
    boot_type     TEXT NOT NULL CHECK (boot_type IN ('firstboot', 'everyboot')),
    blob_key      TEXT,
    blob_size     INTEGER,
    blob_sha256   TEXT,
    blob_md5      TEXT,
    blob_uploaded INTEGER,
    created       INTEGER NOT NULL,
    modified      INTEGER NOT NULL
);
CREATE INDEX boot_scripts_appliance ON boot_scripts(appliance_id);
CREATE INDEX boot_scripts_blob ON boot_scripts(blob_key);
