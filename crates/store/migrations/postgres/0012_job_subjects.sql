-- Every background job is on the queue: a job's subject is a ticket (bundle exports, container
-- images) or a CloudAPI image export, exactly one of the two; `owner_id` is the user it works for,
-- so fair claiming counts running jobs per user without knowing the subject's table.
ALTER TABLE jobs ALTER COLUMN ticket_id DROP NOT NULL;
ALTER TABLE jobs ADD COLUMN image_export_id TEXT REFERENCES image_exports(id) ON DELETE CASCADE;
ALTER TABLE jobs ADD COLUMN owner_id BIGINT REFERENCES users(id) ON DELETE CASCADE;
UPDATE jobs j SET owner_id = t.owner_id FROM tickets t WHERE t.id = j.ticket_id;
DELETE FROM jobs WHERE owner_id IS NULL;
ALTER TABLE jobs ALTER COLUMN owner_id SET NOT NULL;
ALTER TABLE jobs ADD CONSTRAINT jobs_one_subject CHECK ((ticket_id IS NULL) <> (image_export_id IS NULL));
CREATE INDEX jobs_image_export ON jobs(image_export_id);

-- Exports a previous version left queued or running were resumed by a scan at start; they get a
-- job instead (max_attempts as the default configuration's).
INSERT INTO jobs (kind, owner_id, image_export_id, max_attempts, run_after, created)
    SELECT 'image_export', owner_id, id, 3, created, created FROM image_exports
    WHERE state IN ('queued', 'running');
