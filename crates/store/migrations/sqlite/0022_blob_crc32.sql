-- The CRC-32 of each stored file, recorded at upload: exports check a file against it on the way
-- into an archive (a second sha256 pass was a third of a large export's CPU). NULL on rows written
-- before this column; those are checked against their sha256 as before.
ALTER TABLE artifacts ADD COLUMN blob_crc32 INTEGER;
ALTER TABLE attachments ADD COLUMN blob_crc32 INTEGER;
ALTER TABLE boot_scripts ADD COLUMN blob_crc32 INTEGER;
