-- Idempotency-Key records, one per (user, key), kept 24 h (`expires_at`). A claim is `pending` with a
-- lease (`locked_until`, renewed by its request) while the first request runs, then `done` with the
-- answer to replay (status, header lines, body). Claims are one conditional upsert (see
-- store/src/idempotency.rs).
CREATE TABLE idempotency_keys (
    owner_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    body_hash    TEXT,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    token        TEXT NOT NULL,
    locked_until BIGINT NOT NULL,
    status       INTEGER,
    headers      TEXT,
    response     BYTEA,
    created      BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (owner_id, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);
