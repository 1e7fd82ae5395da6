-- Takeout completion webhooks (domain/src/notify.rs).
-- Each user's signing secret, sealed like cloud account secrets (XChaCha20-Poly1305 under the
-- server's secrets key, bound to `seal_uid`; `key_id` names the key, for `admin secrets rotate`).
CREATE TABLE notify_secrets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      INTEGER NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    seal_uid      TEXT NOT NULL UNIQUE,
    key_id        TEXT NOT NULL,
    secret_sealed BLOB NOT NULL,
    created       INTEGER NOT NULL,
    modified      INTEGER NOT NULL
);
CREATE INDEX notify_secrets_key ON notify_secrets(key_id, id);

-- One delivery per ticket, ever (the primary key): written with its job in the transaction that
-- finishes the ticket; `state` pending -> delivered | failed, so no instance sends it again.
CREATE TABLE deliveries (
    ticket_id     INTEGER PRIMARY KEY REFERENCES tickets(id) ON DELETE CASCADE,
    owner_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    first_attempt INTEGER,
    last_error    TEXT,
    created       INTEGER NOT NULL,
    finished      INTEGER
);
