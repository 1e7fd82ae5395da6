//! SQLite implementation of `CloudStore`: keys, images, the object namespace, async image exports.
//! Writes that check something first (parent exists, image still holds a blob, blob unreferenced)
//! run in one `BEGIN IMMEDIATE` transaction, so SQLite's single writer makes them atomic.

use crate::db_err;
use crate::sqlite::SqliteStore;
use async_trait::async_trait;
use satchel_domain::cloud::model::*;
use satchel_domain::model::{Id, Millis};
use satchel_domain::ports::CloudStore;
use satchel_domain::{DomainError, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

crate::rows::cloud_rows!(SqliteRow);

/// `key` if no image or object references it any more (call after removing one reference).
async fn if_unreferenced(
    tx: &mut Transaction<'_, Sqlite>,
    key: Option<String>,
) -> Result<Option<String>> {
    let Some(key) = key else { return Ok(None) };
    let refs: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM images WHERE file_blob = ?1) + (SELECT COUNT(*) FROM stor_entries WHERE blob_key = ?1)",
    )
    .bind(&key)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok((refs == 0).then_some(key))
}

async fn parent_is_dir(tx: &mut Transaction<'_, Sqlite>, owner: Id, parent: &str) -> Result<bool> {
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM stor_entries WHERE owner_id = ? AND path = ?")
            .bind(owner)
            .bind(parent)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?;
    Ok(kind.as_deref() == Some("directory"))
}

#[async_trait]
impl CloudStore for SqliteStore {
    async fn add_key(&self, owner: Id, name: &str, fingerprint: &str, key: &str) -> Result<SshKey> {
        let row = sqlx::query(
            "INSERT INTO ssh_keys (owner_id, name, fingerprint, key, created) VALUES (?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(owner)
        .bind(name)
        .bind(fingerprint)
        .bind(key)
        .bind(satchel_domain::model::now_millis())
        .fetch_one(self.pool())
        .await
        .map_err(db_err)?;
        key_from(&row)
    }

    async fn list_keys(&self, owner: Id) -> Result<Vec<SshKey>> {
        let rows = sqlx::query("SELECT * FROM ssh_keys WHERE owner_id = ? ORDER BY name")
            .bind(owner)
            .fetch_all(self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(key_from).collect()
    }

    async fn get_key(&self, owner: Id, name_or_fp: &str) -> Result<Option<SshKey>> {
        let row = sqlx::query(
            "SELECT * FROM ssh_keys WHERE owner_id = ?1 AND (fingerprint = ?2 OR name = ?2) ORDER BY fingerprint = ?2 DESC LIMIT 1",
        )
        .bind(owner)
        .bind(name_or_fp)
        .fetch_optional(self.pool())
        .await
        .map_err(db_err)?;
        row.as_ref().map(key_from).transpose()
    }

    async fn delete_key(&self, owner: Id, name_or_fp: &str) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM ssh_keys WHERE id = (SELECT id FROM ssh_keys WHERE owner_id = ?1 AND (fingerprint = ?2 OR name = ?2) ORDER BY fingerprint = ?2 DESC LIMIT 1)",
        )
        .bind(owner)
        .bind(name_or_fp)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn create_image(&self, i: &Image) -> Result<()> {
        sqlx::query(
            "INSERT INTO images (id, owner_id, name, version, os, type, description, state, public, published_at, created)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&i.id)
        .bind(i.owner_id)
        .bind(&i.name)
        .bind(&i.version)
        .bind(&i.os)
        .bind(&i.kind)
        .bind(&i.description)
        .bind(i.state.as_str())
        .bind(i.public as i64)
        .bind(i.published_at)
        .bind(i.created)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_image(&self, id: &str) -> Result<Option<Image>> {
        let row = sqlx::query("SELECT * FROM images WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(image_from).transpose()
    }

    async fn list_images(&self, owner: Id) -> Result<Vec<Image>> {
        let rows = sqlx::query(
            "SELECT * FROM images WHERE owner_id = ? OR public = 1 ORDER BY name, version, created",
        )
        .bind(owner)
        .fetch_all(self.pool())
        .await
        .map_err(db_err)?;
        rows.iter().map(image_from).collect()
    }

    async fn set_image_file(
        &self,
        owner: Id,
        id: &str,
        f: &ImageFile,
    ) -> Result<Option<Option<String>>> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let old: Option<Option<String>> = sqlx::query_scalar(
            "SELECT file_blob FROM images WHERE id = ? AND owner_id = ? AND state = 'unactivated'",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(old) = old else { return Ok(None) };
        sqlx::query(
            "UPDATE images SET file_blob = ?, file_size = ?, file_sha1 = ?, file_md5 = ?, file_compression = ? WHERE id = ?",
        )
        .bind(&f.blob_key)
        .bind(f.size)
        .bind(&f.sha1)
        .bind(&f.md5)
        .bind(f.compression.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let old = if_unreferenced(&mut tx, old).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(old))
    }

    async fn activate_image(&self, owner: Id, id: &str, now: Millis) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE images SET state = 'active', published_at = ? WHERE id = ? AND owner_id = ? AND state = 'unactivated' AND file_blob IS NOT NULL",
        )
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_image(&self, owner: Id, id: &str) -> Result<Option<Option<String>>> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let blob: Option<Option<String>> = sqlx::query_scalar(
            "DELETE FROM images WHERE id = ? AND owner_id = ? RETURNING file_blob",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(blob) = blob else { return Ok(None) };
        let blob = if_unreferenced(&mut tx, blob).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(blob))
    }

    async fn stor_get(&self, owner: Id, path: &str) -> Result<Option<StorEntry>> {
        let row = sqlx::query("SELECT * FROM stor_entries WHERE owner_id = ? AND path = ?")
            .bind(owner)
            .bind(path)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(entry_from).transpose()
    }

    async fn stor_list(
        &self,
        owner: Id,
        dir: &str,
        marker: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StorEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM stor_entries WHERE owner_id = ? AND parent = ? AND name > ? ORDER BY name LIMIT ?",
        )
        .bind(owner)
        .bind(dir)
        .bind(marker.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err)?;
        rows.iter().map(entry_from).collect()
    }

    async fn stor_put(
        &self,
        e: &StorEntry,
        parent_is_root: bool,
        link_from_image: Option<&str>,
    ) -> Result<StorPut> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        if !parent_is_root && !parent_is_dir(&mut tx, e.owner_id, &e.parent).await? {
            return Ok(StorPut::NoParent);
        }
        if let Some(image) = link_from_image {
            let holds: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM images WHERE id = ? AND owner_id = ? AND file_blob = ?",
            )
            .bind(image)
            .bind(e.owner_id)
            .bind(&e.blob_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if holds.is_none() {
                return Ok(StorPut::SourceGone);
            }
        }
        let existing =
            sqlx::query("SELECT kind, blob_key FROM stor_entries WHERE owner_id = ? AND path = ?")
                .bind(e.owner_id)
                .bind(&e.path)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let mut replaced = None;
        if let Some(row) = existing {
            let kind: String = row.try_get("kind").map_err(db_err)?;
            if kind == "directory" {
                return Ok(StorPut::IsDirectory);
            }
            replaced = row
                .try_get::<Option<String>, _>("blob_key")
                .map_err(db_err)?;
        }
        sqlx::query(
            "INSERT INTO stor_entries (owner_id, path, parent, name, kind, size, md5, content_type, blob_key, etag, mtime)
             VALUES (?, ?, ?, ?, 'object', ?, ?, ?, ?, ?, ?)
             ON CONFLICT (owner_id, path) DO UPDATE SET size = excluded.size, md5 = excluded.md5,
               content_type = excluded.content_type, blob_key = excluded.blob_key, etag = excluded.etag, mtime = excluded.mtime",
        )
        .bind(e.owner_id)
        .bind(&e.path)
        .bind(&e.parent)
        .bind(&e.name)
        .bind(e.size)
        .bind(&e.md5)
        .bind(&e.content_type)
        .bind(&e.blob_key)
        .bind(&e.etag)
        .bind(e.mtime)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Replacing an object with a link to the same blob must not delete it.
        let replaced = if replaced == e.blob_key {
            None
        } else {
            replaced
        };
        let replaced = if_unreferenced(&mut tx, replaced).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(StorPut::Done {
            replaced_blob: replaced,
        })
    }

    async fn stor_mkdir(&self, e: &StorEntry, parent_is_root: bool) -> Result<StorMkdir> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        if !parent_is_root && !parent_is_dir(&mut tx, e.owner_id, &e.parent).await? {
            return Ok(StorMkdir::NoParent);
        }
        let kind: Option<String> =
            sqlx::query_scalar("SELECT kind FROM stor_entries WHERE owner_id = ? AND path = ?")
                .bind(e.owner_id)
                .bind(&e.path)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        match kind.as_deref() {
            Some("directory") => return Ok(StorMkdir::Existed),
            Some(_) => return Ok(StorMkdir::IsObject),
            None => {}
        }
        sqlx::query(
            "INSERT INTO stor_entries (owner_id, path, parent, name, kind, size, etag, mtime) VALUES (?, ?, ?, ?, 'directory', 0, ?, ?)",
        )
        .bind(e.owner_id)
        .bind(&e.path)
        .bind(&e.parent)
        .bind(&e.name)
        .bind(&e.etag)
        .bind(e.mtime)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(StorMkdir::Created)
    }

    async fn stor_delete(&self, owner: Id, path: &str) -> Result<StorDelete> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let row =
            sqlx::query("SELECT kind, blob_key FROM stor_entries WHERE owner_id = ? AND path = ?")
                .bind(owner)
                .bind(path)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(StorDelete::Missing);
        };
        let kind: String = row.try_get("kind").map_err(db_err)?;
        if kind == "directory" {
            let child: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM stor_entries WHERE owner_id = ? AND parent = ? LIMIT 1",
            )
            .bind(owner)
            .bind(path)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if child.is_some() {
                return Ok(StorDelete::NotEmpty);
            }
        }
        let blob: Option<String> = row.try_get("blob_key").map_err(db_err)?;
        sqlx::query("DELETE FROM stor_entries WHERE owner_id = ? AND path = ?")
            .bind(owner)
            .bind(path)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let blob = if_unreferenced(&mut tx, blob).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(StorDelete::Deleted { blob })
    }

    async fn create_image_export(&self, e: &ImageExport, max_attempts: i32) -> Result<()> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO image_exports (id, owner_id, image_id, manta_path, state, bytes_copied, bytes_total, image_path, manifest_path, error, created, modified)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(e.owner_id)
        .bind(&e.image_id)
        .bind(&e.manta_path)
        .bind(e.state.as_str())
        .bind(e.bytes_copied)
        .bind(e.bytes_total)
        .bind(&e.image_path)
        .bind(&e.manifest_path)
        .bind(&e.error)
        .bind(e.created)
        .bind(e.modified)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("INSERT INTO jobs (kind, owner_id, image_export_id, max_attempts, run_after, created) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(satchel_domain::model::JOB_IMAGE_EXPORT)
            .bind(e.owner_id)
            .bind(&e.id)
            .bind(max_attempts)
            .bind(e.created)
            .bind(e.created)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn get_image_export(&self, owner: Id, id: &str) -> Result<Option<ImageExport>> {
        let row = sqlx::query("SELECT * FROM image_exports WHERE id = ? AND owner_id = ?")
            .bind(id)
            .bind(owner)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(export_from).transpose()
    }

    async fn update_image_export(&self, e: &ImageExport) -> Result<()> {
        sqlx::query(
            "UPDATE image_exports SET state = ?, bytes_copied = ?, bytes_total = ?, image_path = ?, manifest_path = ?, error = ?, modified = ? WHERE id = ?",
        )
        .bind(e.state.as_str())
        .bind(e.bytes_copied)
        .bind(e.bytes_total)
        .bind(&e.image_path)
        .bind(&e.manifest_path)
        .bind(&e.error)
        .bind(e.modified)
        .bind(&e.id)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_image_export_any(&self, id: &str) -> Result<Option<ImageExport>> {
        let row = sqlx::query("SELECT * FROM image_exports WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(export_from).transpose()
    }
}
