-- One-time download keys: only the hash is stored; consumed by one conditional UPDATE.
CREATE TABLE download_keys (
    key_hash   TEXT PRIMARY KEY,
    owner_id   BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource   TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    created    BIGINT NOT NULL
);
CREATE INDEX download_keys_expiry ON download_keys(expires_at);
