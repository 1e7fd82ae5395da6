-- The CloudAPI side: SSH keys, images, the object namespace, async image exports.

CREATE TABLE ssh_keys (
    id          BIGSERIAL PRIMARY KEY,
    owner_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    key         TEXT NOT NULL,
    created     BIGINT NOT NULL,
    UNIQUE (owner_id, name),
    UNIQUE (owner_id, fingerprint)
);

CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    owner_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    os               TEXT NOT NULL,
    type             TEXT NOT NULL,
    description      TEXT,
    state            TEXT NOT NULL,
    public           BOOLEAN NOT NULL DEFAULT FALSE,
    published_at     BIGINT,
    created          BIGINT NOT NULL,
    file_blob        TEXT,
    file_size        BIGINT,
    file_sha1        TEXT,
    file_md5         TEXT,
    file_compression TEXT
);
CREATE INDEX images_owner ON images(owner_id);
CREATE INDEX images_blob ON images(file_blob);

CREATE TABLE stor_entries (
    owner_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    parent       TEXT NOT NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    size         BIGINT NOT NULL DEFAULT 0,
    md5          TEXT,
    content_type TEXT,
    blob_key     TEXT,
    etag         TEXT NOT NULL,
    mtime        BIGINT NOT NULL,
    PRIMARY KEY (owner_id, path)
);
CREATE INDEX stor_parent ON stor_entries(owner_id, parent, name COLLATE "C");
CREATE INDEX stor_blob ON stor_entries(blob_key);

CREATE TABLE image_exports (
    id            TEXT PRIMARY KEY,
    owner_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    image_id      TEXT NOT NULL,
    manta_path    TEXT NOT NULL,
    state         TEXT NOT NULL,
    bytes_copied  BIGINT NOT NULL DEFAULT 0,
    bytes_total   BIGINT NOT NULL DEFAULT 0,
    image_path    TEXT,
    manifest_path TEXT,
    error         TEXT,
    created       BIGINT NOT NULL,
    modified      BIGINT NOT NULL
);
CREATE INDEX image_exports_state ON image_exports(state);
