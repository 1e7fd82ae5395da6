-- Every background job is on the queue: a job's subject is a ticket (bundle exports, container
-- images) or a CloudAPI image export, exactly one of the two; `owner_id` is the user it works for,
-- so fair claiming counts running jobs per user without knowing the subject's table.
-- SQLite cannot relax NOT NULL in place: the table is rebuilt (ids kept).
CREATE TABLE jobs_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    owner_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ticket_id       INTEGER REFERENCES tickets(id) ON DELETE CASCADE,
    image_export_id TEXT REFERENCES image_exports(id) ON DELETE CASCADE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    run_after       INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_expires   INTEGER,
    last_error      TEXT,
    created         INTEGER NOT NULL,
    CHECK ((ticket_id IS NULL) <> (image_export_id IS NULL))
);
INSERT INTO jobs_new (id, kind, owner_id, ticket_id, attempts, max_attempts, run_after, lease_owner,
                      lease_expires, last_error, created)
    SELECT j.id, j.kind, t.owner_id, j.ticket_id, j.attempts, j.max_attempts, j.run_after, j.lease_owner,
           j.lease_expires, j.last_error, j.created
    FROM jobs j JOIN tickets t ON t.id = j.ticket_id;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_runnable ON jobs(run_after);
CREATE INDEX jobs_ticket ON jobs(ticket_id);
CREATE INDEX jobs_image_export ON jobs(image_export_id);

-- Exports a previous version left queued or running were resumed by a scan at start; they get a
-- job instead (max_attempts as the default configuration's).
INSERT INTO jobs (kind, owner_id, image_export_id, max_attempts, run_after, created)
    SELECT 'image_export', owner_id, id, 3, created, created FROM image_exports
    WHERE state IN ('queued', 'running');
