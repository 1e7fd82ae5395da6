-- Cluster-wide claims on periodic tasks (the expiry sweep): one holder per name until `until_ms`.
CREATE TABLE periodic_claims (
    name     TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
