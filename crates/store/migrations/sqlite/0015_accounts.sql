-- Cloud accounts (domain/src/accounts.rs). `fields` holds the non-secret fields as JSON; the
-- secrets are one sealed blob (XChaCha20-Poly1305 under the server's secrets key, which is not in
-- the database), bound to `seal_uid`; `key_id` names the key that sealed it, so a key rotation
-- can skip what it already did. Certificate files are sealed the same way, one row each.
CREATE TABLE accounts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    platform       TEXT NOT NULL,
    fields         TEXT NOT NULL,
    seal_uid       TEXT NOT NULL UNIQUE,
    key_id         TEXT NOT NULL,
    secrets_sealed BLOB NOT NULL,
    created        INTEGER NOT NULL,
    modified       INTEGER NOT NULL
);
CREATE INDEX accounts_owner ON accounts(owner_id, id);
CREATE INDEX accounts_key ON accounts(key_id, id);

CREATE TABLE account_certs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    cert_type      TEXT,
    size           INTEGER NOT NULL,
    seal_uid       TEXT NOT NULL UNIQUE,
    key_id         TEXT NOT NULL,
    content_sealed BLOB NOT NULL,
    created        INTEGER NOT NULL,
    modified       INTEGER NOT NULL
);
CREATE INDEX account_certs_account ON account_certs(account_id, id);
CREATE INDEX account_certs_key ON account_certs(key_id, id);
