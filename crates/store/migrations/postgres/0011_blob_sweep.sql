-- Same as migrations/sqlite/0011_blob_sweep.sql. The orphan sweep (domain/src/sweep.rs) asks which
-- listed blob keys rows reference: index every column that holds one (images and stor_entries have
-- theirs since 0002). Partial, like those: rows without a blob never match.
CREATE INDEX artifacts_blob ON artifacts(blob_key) WHERE blob_key IS NOT NULL;
CREATE INDEX attachments_blob ON attachments(blob_key);
CREATE INDEX tickets_archive ON tickets(archive_key) WHERE archive_key IS NOT NULL;

-- Multipart uploads running on S3, which object_store cannot list: recorded before the first part is
-- sent, refreshed while parts are sent (`touched`), dropped when the upload completes or is
-- aborted. A record left by a crash is aborted by the sweep once `touched` is older than its grace.
CREATE TABLE blob_uploads (
    blob_key  TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    started   BIGINT NOT NULL,
    touched   BIGINT NOT NULL,
    PRIMARY KEY (blob_key, upload_id)
);
CREATE INDEX blob_uploads_touched ON blob_uploads(touched);
