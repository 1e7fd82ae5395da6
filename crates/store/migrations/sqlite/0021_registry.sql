-- Published container images (pimages), served by the pull endpoint (/v2). A publish is a ticket of
-- kind 'image_publish' (subject_id: the image's ticket; subject_name / subject_version: repository and
-- tag). Its reference is written in the transaction that completes it and goes with its ticket.
CREATE TABLE published_images (
    ticket_id       INTEGER PRIMARY KEY REFERENCES tickets(id) ON DELETE CASCADE,
    owner_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    image_ticket_id INTEGER NOT NULL,
    repository      TEXT NOT NULL,
    tag             TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    manifest_size   INTEGER NOT NULL,
    total_size      INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    UNIQUE (owner_id, repository, tag)
);
CREATE INDEX published_images_digest ON published_images(owner_id, repository, manifest_digest);

-- The content-addressed blobs (u/{owner}/registry/blobs/sha256/<hex>) each reference holds; a blob is
-- shared by every reference of its owner with the same content and deleted with the last one.
CREATE TABLE published_blobs (
    ticket_id  INTEGER NOT NULL REFERENCES published_images(ticket_id) ON DELETE CASCADE,
    owner_id   INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (ticket_id, digest)
);
CREATE INDEX published_blobs_key ON published_blobs(blob_key);
CREATE INDEX published_blobs_owner ON published_blobs(owner_id, digest);
