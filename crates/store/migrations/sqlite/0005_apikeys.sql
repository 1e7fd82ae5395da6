-- UForge API key pairs (domain/src/apikeys.rs). The secret is kept sealed (XChaCha20-Poly1305 under
-- the server's seal key, which is not in the database) because HMAC needs it back; the public key is
-- what requests name. `last_used` is written at most once a minute per key.
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key    TEXT NOT NULL UNIQUE,
    secret_sealed BLOB NOT NULL,
    name          TEXT,
    description   TEXT,
    created       INTEGER NOT NULL,
    last_used     INTEGER
);
CREATE INDEX api_keys_owner ON api_keys(owner_id, id);
