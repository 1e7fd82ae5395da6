-- What a takeout ticket packs (its format and the kinds it includes), as JSON; NULL for other kinds.
ALTER TABLE tickets ADD COLUMN params TEXT;
