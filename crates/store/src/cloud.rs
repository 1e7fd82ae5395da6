//! `CloudStore` written once for both engines: SSH keys, images, the object namespace
//! (`stor_entries`) and async image exports.
//!
//! The check-then-write methods (`stor_put`, `stor_mkdir`, `stor_delete`, `set_image_file`,
//! `delete_image`, and `Store::delete_user`, which collects the owner's blob keys) begin with
//! `begin_owner_write`: on SQLite a `BEGIN IMMEDIATE` transaction, whose single writer makes them
//! atomic; on PostgreSQL, which runs writers concurrently, a transaction holding a lock keyed by the
//! owner, so they run one at a time per owner.
//!
//! Why an owner-wide lock rather than row locks on the image or the parent directory: a blob's
//! references are rows with nothing in common to lock. Two transactions each removing one of the
//! last two references (two objects exported from a deleted image) would each still see the other's
//! reference and neither would hand the blob back, so it would leak; a `stor_put(link_from_image)`
//! could likewise add a reference while `delete_image` concludes the blob is unreferenced. Every
//! reference to a blob belongs to one owner (links are only made from the writer's own images,
//! every other blob is a fresh upload under a unique key), so serialising each owner's writers
//! covers all reference counts, and also the parent/child checks and two writers racing for one
//! path (which would otherwise surface as a unique violation instead of `Existed`/`IsDirectory`).
//! Different owners never wait for each other; reads and the single-statement writes take no lock.

/// `CloudStore` for `S`, plus its helpers.
macro_rules! impl_cloud {
    () => {
        /// Begins a write transaction that holds `owner`'s cloud write lock (see the module doc)
        /// until it ends. At READ COMMITTED on PostgreSQL (`Engine::BEGIN_LOCKING`): every
        /// statement after the lock then sees what the previous holder committed.
        async fn begin_owner_write(store: &S, owner: Id) -> Result<Tx<'static>> {
            let mut tx = store
                .pool
                .begin_with(S::BEGIN_LOCKING)
                .await
                .map_err(db_err)?;
            S::lock_owner(&mut tx, owner).await?;
            Ok(tx)
        }

        /// The INSERT of an image row, its file's columns included (NULL while it has none).
        fn insert_image(i: &Image) -> Query<'_> {
            let f = i.file.as_ref();
            sqlx::query(
                "INSERT INTO images (id, owner_id, name, version, os, type, description, state,
                     public, published_at, created, file_blob, file_size, file_sha1, file_md5,
                     file_compression)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(&i.id)
            .bind(i.owner_id)
            .bind(&i.name)
            .bind(&i.version)
            .bind(&i.os)
            .bind(&i.kind)
            .bind(&i.description)
            .bind(i.state.as_str())
            .bind(i.public)
            .bind(i.published_at)
            .bind(i.created)
            .bind(f.map(|f| f.blob_key.as_str()))
            .bind(f.map(|f| f.size))
            .bind(f.map(|f| f.sha1.as_str()))
            .bind(f.map(|f| f.md5.as_str()))
            .bind(f.map(|f| f.compression.as_str()))
        }

        /// `key` if no image or object references it any more (call after removing one reference,
        /// under the owner lock, which keeps every other reference to it from changing meanwhile).
        async fn if_unreferenced(tx: &mut Tx<'_>, key: Option<String>) -> Result<Option<String>> {
            let Some(key) = key else { return Ok(None) };
            let unreferenced: bool = sqlx::query_scalar(
                "SELECT NOT EXISTS (SELECT 1 FROM images WHERE file_blob = $1)
                    AND NOT EXISTS (SELECT 1 FROM stor_entries WHERE blob_key = $1)",
            )
            .bind(&key)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)?;
            Ok(unreferenced.then_some(key))
        }

        async fn parent_is_dir(tx: &mut Tx<'_>, owner: Id, parent: &str) -> Result<bool> {
            let kind: Option<String> = sqlx::query_scalar(
                "SELECT kind FROM stor_entries WHERE owner_id = $1 AND path = $2",
            )
            .bind(owner)
            .bind(parent)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?;
            Ok(kind.as_deref() == Some("directory"))
        }

        #[async_trait]
        impl satchel_domain::ports::CloudStore for S {
            async fn add_key(
                &self,
                owner: Id,
                name: &str,
                fingerprint: &str,
                key: &str,
            ) -> Result<SshKey> {
                let row = sqlx::query(
                    "INSERT INTO ssh_keys (owner_id, name, fingerprint, key, created) VALUES ($1, $2, $3, $4, $5) RETURNING *",
                )
                .bind(owner)
                .bind(name)
                .bind(fingerprint)
                .bind(key)
                .bind(now_millis())
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
                key_from(&row)
            }

            async fn list_keys(&self, owner: Id) -> Result<Vec<SshKey>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query("SELECT * FROM ssh_keys WHERE owner_id = $1 ORDER BY name")
                        .bind(owner),
                    key_from,
                )
                .await
            }

            async fn get_key(&self, owner: Id, name_or_fp: &str) -> Result<Option<SshKey>> {
                // One key's name may be another's fingerprint: the fingerprint match wins.
                let q = sqlx::query(
                    "SELECT * FROM ssh_keys WHERE owner_id = $1 AND (fingerprint = $2 OR name = $2)
                     ORDER BY (fingerprint = $2) DESC LIMIT 1",
                )
                .bind(owner)
                .bind(name_or_fp);
                fetch_opt(&self.pool, q, key_from).await
            }

            async fn delete_key(&self, owner: Id, name_or_fp: &str) -> Result<bool> {
                let q = sqlx::query(
                    "DELETE FROM ssh_keys WHERE id = (SELECT id FROM ssh_keys WHERE owner_id = $1 AND (fingerprint = $2 OR name = $2)
                                                     ORDER BY (fingerprint = $2) DESC LIMIT 1)",
                )
                .bind(owner)
                .bind(name_or_fp);
                Ok(affected(&self.pool, q).await? > 0)
            }

            async fn create_image(&self, i: &Image) -> Result<()> {
                insert_image(i)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn get_image(&self, id: &str) -> Result<Option<Image>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT * FROM images WHERE id = $1").bind(id),
                    image_from,
                )
                .await
            }

            async fn list_images(&self, owner: Id) -> Result<Vec<Image>> {
                let q = sqlx::query(
                    "SELECT * FROM images WHERE owner_id = $1 OR public ORDER BY name, version, created",
                )
                .bind(owner);
                fetch_vec(&self.pool, q, image_from).await
            }

            async fn set_image_file(
                &self,
                owner: Id,
                id: &str,
                f: &ImageFile,
            ) -> Result<Option<Option<String>>> {
                let mut tx = begin_owner_write(self, owner).await?;
                // `activate_image` is one conditional UPDATE that takes no owner lock: the row lock
                // waits out an activation in flight and re-checks the state afterwards, so a file
                // is never swapped under an image that has just become active.
                let old: Option<Option<String>> = sqlx::query_scalar(
                    &format!(
                        "SELECT file_blob FROM images WHERE id = $1 AND owner_id = $2 AND state = 'unactivated'{}",
                        S::FOR_UPDATE
                    ),
                )
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(old) = old else { return Ok(None) };
                sqlx::query(
                    "UPDATE images SET file_blob = $1, file_size = $2, file_sha1 = $3, file_md5 = $4, file_compression = $5 WHERE id = $6",
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
                let q = sqlx::query(
                    "UPDATE images SET state = 'active', published_at = $1
                     WHERE id = $2 AND owner_id = $3 AND state = 'unactivated' AND file_blob IS NOT NULL",
                )
                .bind(now)
                .bind(id)
                .bind(owner);
                Ok(affected(&self.pool, q).await? > 0)
            }

            async fn update_image(
                &self,
                owner: Id,
                id: &str,
                name: &str,
                version: &str,
                description: Option<&str>,
            ) -> Result<bool> {
                let q = sqlx::query(
                    "UPDATE images SET name = $1, version = $2, description = $3
                     WHERE id = $4 AND owner_id = $5",
                )
                .bind(name)
                .bind(version)
                .bind(description)
                .bind(id)
                .bind(owner);
                Ok(affected(&self.pool, q).await? > 0)
            }

            async fn clone_image(&self, source: &str, i: &Image) -> Result<bool> {
                let Some(f) = &i.file else { return Ok(false) };
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let held: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM images WHERE id = $1 AND state = 'active' AND file_blob = $2{}",
                    S::FOR_UPDATE
                ))
                .bind(source)
                .bind(&f.blob_key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if held.is_none() {
                    return Ok(false);
                }
                insert_image(i)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(true)
            }

            async fn delete_image(&self, owner: Id, id: &str) -> Result<Option<Option<String>>> {
                let mut tx = begin_owner_write(self, owner).await?;
                let blob: Option<Option<String>> = sqlx::query_scalar(
                    "DELETE FROM images WHERE id = $1 AND owner_id = $2 RETURNING file_blob",
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
                fetch_opt(&self.pool, sqlx::query("SELECT * FROM stor_entries WHERE owner_id = $1 AND path = $2") .bind(owner) .bind(path), entry_from).await
            }

            async fn stor_list(
                &self,
                owner: Id,
                dir: &str,
                marker: Option<&str>,
                limit: i64,
            ) -> Result<Vec<StorEntry>> {
                // A negative limit means none (SQLite reads a negative LIMIT so; PostgreSQL rejects
                // it).
                let q = sqlx::query(
                    "SELECT * FROM stor_entries WHERE owner_id = $1 AND parent = $2 AND name > $3
                     ORDER BY name LIMIT $4",
                )
                .bind(owner)
                .bind(dir)
                .bind(marker.unwrap_or(""))
                .bind(if limit < 0 { i64::MAX } else { limit });
                fetch_vec(&self.pool, q, entry_from).await
            }

            async fn stor_put(
                &self,
                e: &StorEntry,
                parent_is_root: bool,
                link_from_image: Option<&str>,
            ) -> Result<StorPut> {
                let mut tx = begin_owner_write(self, e.owner_id).await?;
                if !parent_is_root && !parent_is_dir(&mut tx, e.owner_id, &e.parent).await? {
                    return Ok(StorPut::NoParent);
                }
                if let Some(image) = link_from_image {
                    // Under the owner lock the image can neither be deleted nor get a new file
                    // before this transaction commits the new reference.
                    let holds: Option<i32> = sqlx::query_scalar(
                        "SELECT 1 FROM images WHERE id = $1 AND owner_id = $2 AND file_blob = $3",
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
                let existing = sqlx::query(
                    "SELECT kind, blob_key FROM stor_entries WHERE owner_id = $1 AND path = $2",
                )
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
                     VALUES ($1, $2, $3, $4, 'object', $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (owner_id, path) DO UPDATE SET size = EXCLUDED.size, md5 = EXCLUDED.md5,
                       content_type = EXCLUDED.content_type, blob_key = EXCLUDED.blob_key, etag = EXCLUDED.etag, mtime = EXCLUDED.mtime",
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
                let mut tx = begin_owner_write(self, e.owner_id).await?;
                if !parent_is_root && !parent_is_dir(&mut tx, e.owner_id, &e.parent).await? {
                    return Ok(StorMkdir::NoParent);
                }
                let kind: Option<String> = sqlx::query_scalar(
                    "SELECT kind FROM stor_entries WHERE owner_id = $1 AND path = $2",
                )
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
                    "INSERT INTO stor_entries (owner_id, path, parent, name, kind, size, etag, mtime)
                     VALUES ($1, $2, $3, $4, 'directory', 0, $5, $6)",
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
                // Under the owner lock no child can be added between the emptiness check and the
                // delete.
                let mut tx = begin_owner_write(self, owner).await?;
                let row = sqlx::query(
                    "SELECT kind, blob_key FROM stor_entries WHERE owner_id = $1 AND path = $2",
                )
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
                    let child: Option<i32> = sqlx::query_scalar(
                        "SELECT 1 FROM stor_entries WHERE owner_id = $1 AND parent = $2 LIMIT 1",
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
                sqlx::query("DELETE FROM stor_entries WHERE owner_id = $1 AND path = $2")
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
                // The export and its job in one transaction, like a ticket and its job.
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                sqlx::query(
                    "INSERT INTO image_exports (id, owner_id, image_id, manta_path, state, bytes_copied, bytes_total, image_path, manifest_path, error, created, modified)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
                // Runnable at once by the queue's own clock (the database's on PostgreSQL).
                sqlx::query(&format!(
                    "INSERT INTO jobs (kind, owner_id, image_export_id, max_attempts, run_after, created)
                     VALUES ($1, $2, $3, $4, {}, $5)",
                    S::NOW
                ))
                .bind(satchel_domain::model::JOB_IMAGE_EXPORT)
                .bind(e.owner_id)
                .bind(&e.id)
                .bind(max_attempts)
                .bind(e.created)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                // Delivered at commit, so no listener wakes before the job is visible.
                S::notify_jobs(&mut tx, 0).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(())
            }

            async fn get_image_export(&self, owner: Id, id: &str) -> Result<Option<ImageExport>> {
                fetch_opt(&self.pool, sqlx::query("SELECT * FROM image_exports WHERE id = $1 AND owner_id = $2") .bind(id) .bind(owner), export_from).await
            }

            async fn update_image_export(&self, e: &ImageExport) -> Result<()> {
                sqlx::query(
                    "UPDATE image_exports SET state = $1, bytes_copied = $2, bytes_total = $3, image_path = $4,
                        manifest_path = $5, error = $6, modified = $7
                     WHERE id = $8",
                )
                .bind(e.state.as_str())
                .bind(e.bytes_copied)
                .bind(e.bytes_total)
                .bind(&e.image_path)
                .bind(&e.manifest_path)
                .bind(&e.error)
                .bind(e.modified)
                .bind(&e.id)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            async fn get_image_export_any(&self, id: &str) -> Result<Option<ImageExport>> {
                let q = sqlx::query("SELECT * FROM image_exports WHERE id = $1").bind(id);
                fetch_opt(&self.pool, q, export_from).await
            }
        }
    };
}
pub(crate) use impl_cloud;
