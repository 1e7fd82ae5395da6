-- The orphan sweep (domain/src/sweep.rs) asks which listed blob keys rows reference: index every
-- column that holds one (images and stor_entries have theirs since 0002).
CREATE INDEX artifacts_blob ON artifacts(blob_key);
CREATE INDEX attachments_blob ON attachments(blob_key);
CREATE INDEX tickets_archive ON tickets(archive_key);

-- Multipart uploads running on S3, which object_store cannot list: recorded before the first part is
-- sent, refreshed while parts are sent (`touched`), dropped when the upload completes or is
-- aborted. A record left by a crash is aborted by the sweep once `touched` is older than its grace.
CREATE TABLE blob_uploads (
    blob_key  TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    started   INTEGER NOT NULL,
    touched   INTEGER NOT NULL,
    PRIMARY KEY (blob_key, upload_id)
);
CREATE INDEX blob_uploads_touched ON blob_uploads(touched);
