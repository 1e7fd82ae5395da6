CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    login         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    entitlements  TEXT NOT NULL DEFAULT '[]',
    created       INTEGER NOT NULL
);

CREATE TABLE bundles (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    description      TEXT,
    release          TEXT,
    install_location TEXT,
    revision         INTEGER NOT NULL DEFAULT 1,
    created          INTEGER NOT NULL,
    modified         INTEGER NOT NULL
);
CREATE INDEX bundles_owner ON bundles(owner_id);

CREATE TABLE artifacts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle_id        INTEGER NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
    parent_id        INTEGER REFERENCES artifacts(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    tag              TEXT,
    install_location TEXT,
    blob_key         TEXT,
    blob_size        INTEGER,
    blob_sha256      TEXT,
    blob_md5         TEXT,
    blob_uploaded    INTEGER,
    created          INTEGER NOT NULL,
    modified         INTEGER NOT NULL
);
CREATE INDEX artifacts_bundle ON artifacts(bundle_id);

CREATE TABLE attachments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle_id     INTEGER NOT NULL REFERENCES bundles(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    blob_key      TEXT NOT NULL,
    blob_size     INTEGER NOT NULL,
    blob_sha256   TEXT NOT NULL,
    blob_md5      TEXT NOT NULL,
    blob_uploaded INTEGER NOT NULL,
    UNIQUE (bundle_id, kind)
);

CREATE TABLE tickets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    bundle_id       INTEGER NOT NULL,
    bundle_name     TEXT NOT NULL,
    bundle_version  TEXT NOT NULL,
    format          TEXT NOT NULL,
    state           TEXT NOT NULL,
    percentage      INTEGER NOT NULL DEFAULT 0,
    bytes_loaded    INTEGER NOT NULL DEFAULT 0,
    bytes_total     INTEGER NOT NULL DEFAULT 0,
    eta             INTEGER,
    message         TEXT,
    error_message   TEXT,
    archive_key     TEXT,
    archive_name    TEXT,
    archive_size    INTEGER,
    archive_sha256  TEXT,
    created         INTEGER NOT NULL,
    modified        INTEGER NOT NULL,
    expires_at      INTEGER
);
CREATE INDEX tickets_owner ON tickets(owner_id);
CREATE INDEX tickets_expiry ON tickets(state, expires_at);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    ticket_id     INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    run_after     INTEGER NOT NULL,
    lease_owner   TEXT,
    lease_expires INTEGER,
    last_error    TEXT,
    created       INTEGER NOT NULL
);
CREATE INDEX jobs_runnable ON jobs(run_after);
