//! The one store: `Store` (users, bundles, artifacts, attachments, tickets and the job queue)
//! written once for both engines, and `sql_store!`, which instantiates every port of the crate for
//! an engine's store type.
//!
//! Why a `macro_rules!` body rather than a `SqlStore<E: Engine>` generic over `E::Db`: generic sqlx
//! code needs, on every impl, higher-ranked bounds such as `for<'c> &'c mut <E::Db as
//! Database>::Connection: Executor<'c, Database = E::Db>` plus `Encode + Decode + Type` for each
//! Rust type bound or read, and the `Send` futures `async_trait` requires then run into "not
//! general enough" lifetime errors. Instantiated by the macro, the body below is ordinary, concrete
//! sqlx code per engine; what the engines do differently comes from [`crate::engine::Engine`]
//! (`Self::BEGIN`, `Self::NOW`, `Self::lock_bundle`, ...), never from a second copy of a statement.
//!
//! Multi-statement writes run in one transaction and take the same locks in one order (the owner's
//! cloud lock, the user, then bundle, then its artifacts or attachments), which on PostgreSQL
//! serialises them as SQLite's single writer does.

/// Every port (`Store`, `CloudStore`, `TemplateStore`, `UsageStore`, `StatsStore`,
/// `IdempotencyStore`, `ApiKeyStore`, `AccountStore`, `OneTimeKeys`, `BlobRefStore`, `NotifyStore`) for the engine's store type
/// `$store`, named in its module. Expands to a private module there, so the row mappers and helpers
/// of the two engines never meet.
macro_rules! sql_store {
    ($store:ident) => {
        mod one_store {
            #[allow(unused_imports)]
            use crate::engine::Engine;
            use crate::{db_err, ms};
            use async_trait::async_trait;
            use satchel_domain::cloud::model::*;
            use satchel_domain::model::*;
            use satchel_domain::{DomainError, Result};
            use sqlx::{Row, Transaction};
            use std::time::Duration;

            type S = super::$store;
            type Db = <S as Engine>::Db;
            type R = <Db as sqlx::Database>::Row;
            type Tx<'c> = Transaction<'c, Db>;
            type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

            /// The row `q` returns, if any, mapped.
            async fn fetch_opt<T>(
                pool: &sqlx::Pool<Db>,
                q: Query<'_>,
                map: fn(&R) -> Result<T>,
            ) -> Result<Option<T>> {
                let row = q.fetch_optional(pool).await.map_err(db_err)?;
                row.as_ref().map(map).transpose()
            }

            /// Every row `q` returns, mapped as it arrives: a driver row holds a copy of every value
            /// (several times the mapped value's size), and a bundle of 16,000 files fetched whole
            /// held ~25 MiB of them at once.
            async fn fetch_vec<T>(
                pool: &sqlx::Pool<Db>,
                q: Query<'_>,
                map: fn(&R) -> Result<T>,
            ) -> Result<Vec<T>> {
                use futures::TryStreamExt;
                let mut rows = q.fetch(pool);
                let mut out = Vec::new();
                while let Some(r) = rows.try_next().await.map_err(db_err)? {
                    out.push(map(&r)?);
                }
                Ok(out)
            }

            /// The statement that writes a takeout ticket's parameters: the one place they are
            /// serialized (the job's own updates, a final move dropping the passphrase, a key
            /// rotation resealing it).
            fn takeout_spec_update(
                id: Id,
                spec: &satchel_domain::model::TakeoutSpec,
            ) -> Result<Query<'static>> {
                let params = serde_json::to_string(spec)
                    .map_err(|e| DomainError::Internal(satchel_domain::Cause::of(e)))?;
                Ok(
                    sqlx::query("UPDATE tickets SET params = $1 WHERE id = $2 AND kind = $3")
                        .bind(params)
                        .bind(id)
                        .bind(satchel_domain::model::TicketKind::Takeout.as_str()),
                )
            }

            /// How many rows `q` changed.
            async fn affected(pool: &sqlx::Pool<Db>, q: Query<'_>) -> Result<u64> {
                Ok(q.execute(pool).await.map_err(db_err)?.rows_affected())
            }

            crate::rows::store_rows!();
            crate::rows::cloud_rows!();
            crate::store::impl_store!();
            crate::cloud::impl_cloud!();
            crate::templates::impl_templates!();
            crate::distributions::impl_distributions!();
            crate::imports::impl_imports!();
            crate::appliances::impl_appliances!();
            crate::usage::impl_usage!();
            crate::usage::impl_stats!();
            crate::idempotency::impl_idempotency!();
            crate::blobrefs::impl_blob_refs!();
            crate::apikeys::impl_apikeys!();
            crate::accounts::impl_accounts!();
            crate::keys::impl_keys!();
            crate::notify::impl_notify!();
            crate::registry::impl_registry!();
        }
    };
}
pub(crate) use sql_store;

/// `Store` for `S`, plus `touch_bundle`.
macro_rules! impl_store {
    () => {
        async fn touch_bundle(tx: &mut Tx<'_>, bundle: Id) -> Result<()> {
            sqlx::query("UPDATE bundles SET modified = $1, revision = revision + 1 WHERE id = $2")
                .bind(now_millis())
                .bind(bundle)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            Ok(())
        }

        #[async_trait]
        impl satchel_domain::ports::Store for S {
            async fn create_user(&self, new: NewUser) -> Result<User> {
                let ents = serde_json::to_string(&new.entitlements)
                    .map_err(|e| DomainError::Internal(satchel_domain::Cause::of(e)))?;
                let row = sqlx::query(
                    "INSERT INTO users (login, password_hash, admin, entitlements, created) VALUES ($1, $2, $3, $4, $5) RETURNING *",
                )
                .bind(&new.login)
                .bind(&new.password_hash)
                .bind(new.admin)
                .bind(ents)
                .bind(now_millis())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| match db_err(e) {
                    DomainError::Conflict(_) => {
                        DomainError::Conflict(format!("user {} already exists", new.login))
                    }
                    other => other,
                })?;
                user_from(&row)
            }

            async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>> {
                let row = sqlx::query("SELECT * FROM users WHERE login = $1")
                    .bind(login)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                match row {
                    None => Ok(None),
                    Some(r) => Ok(Some(UserRecord {
                        user: user_from(&r)?,
                        password_hash: r.try_get("password_hash").map_err(db_err)?,
                    })),
                }
            }

            async fn user_by_id(&self, id: Id) -> Result<Option<User>> {
                let q = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id);
                fetch_opt(&self.pool, q, user_from).await
            }

            async fn list_users(&self) -> Result<Vec<User>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query(&format!(
                        "SELECT * FROM users ORDER BY login{}",
                        S::BYTE_ORDER
                    )),
                    user_from,
                )
                .await
            }

            async fn delete_user(&self, login: &str) -> Result<Option<Vec<String>>> {
                let mut tx = self
                    .pool
                    .begin_with(S::BEGIN_LOCKING)
                    .await
                    .map_err(db_err)?;
                let Some(id) =
                    sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE login = $1")
                        .bind(login)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                else {
                    return Ok(None);
                };
                // The cloud write lock first, the user row second (the order the cloud writers take
                // them in, see `Engine::lock_owner`): with it held no image file change or object
                // write of this user is in flight, so the image and object blob keys read below are
                // all there are.
                S::lock_owner(&mut tx, id).await?;
                // Status polls forget the user's tickets once this commits (or is abandoned).
                let _forget = self.tickets.forget_owner(id);
                // Locking the user blocks new bundles and tickets (their foreign-key checks
                // share-lock it); locking the bundles blocks new artifacts/attachments and waits out
                // writers in flight, so the keys read below are all the blobs the cascade will
                // orphan. (On SQLite, whose one writer is this transaction, these are plain reads.)
                let locked = sqlx::query(&format!(
                    "SELECT 1 FROM users WHERE id = $1{}",
                    S::FOR_UPDATE
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if locked.is_none() {
                    // Deleted by someone else while this waited for the lock.
                    return Ok(None);
                }
                sqlx::query(&format!(
                    "SELECT 1 FROM bundles WHERE owner_id = $1 ORDER BY id{}",
                    S::FOR_UPDATE
                ))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                // Locking the appliances waits out boot script body switches in flight
                // (`set_boot_script_blob` locks its appliance), so their keys read below are final.
                sqlx::query(&format!(
                    "SELECT 1 FROM appliances WHERE owner_id = $1 ORDER BY id{}",
                    S::FOR_UPDATE
                ))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                // Cloud accounts and their certificate files go by the cascade: they are rows only
                // (sealed in the database), with no blob to collect.
                // UNION, not UNION ALL, from the images on: an image's file shared with the objects
                // exported from it is one blob, listed once.
                let mut keys: Vec<String> = sqlx::query_scalar(
                    "SELECT a.blob_key FROM artifacts a JOIN bundles b ON a.bundle_id = b.id WHERE b.owner_id = $1 AND a.blob_key IS NOT NULL
                     UNION ALL SELECT t.blob_key FROM attachments t JOIN bundles b ON t.bundle_id = b.id WHERE b.owner_id = $1
                     UNION ALL SELECT s.blob_key FROM boot_scripts s JOIN appliances p ON s.appliance_id = p.id WHERE p.owner_id = $1 AND s.blob_key IS NOT NULL
                     UNION SELECT file_blob FROM images WHERE owner_id = $1 AND file_blob IS NOT NULL
                     UNION SELECT blob_key FROM stor_entries WHERE owner_id = $1 AND blob_key IS NOT NULL",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                // Tickets are not under a bundle lock: a worker may publish an archive right now.
                // DELETE waits for that update and returns the row as it ends up, so its archive is
                // not missed.
                let archives: Vec<Option<String>> = sqlx::query_scalar(
                    "DELETE FROM tickets WHERE owner_id = $1 RETURNING archive_key",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                keys.extend(archives.into_iter().flatten());
                sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(keys))
            }

            async fn set_password(&self, login: &str, password_hash: &str) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query("UPDATE users SET password_hash = $1 WHERE login = $2")
                        .bind(password_hash)
                        .bind(login),
                )
                .await?
                    > 0)
            }

            async fn create_bundle(
                &self,
                owner: Id,
                name: &str,
                version: &str,
                input: &BundleInput,
            ) -> Result<Bundle> {
                let now = now_millis();
                let row = sqlx::query(
                    "INSERT INTO bundles (owner_id, name, version, description, release, install_location, created, modified)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING *",
                )
                .bind(owner)
                .bind(name)
                .bind(version)
                .bind(&input.description)
                .bind(&input.release)
                .bind(&input.install_location)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
                bundle_from(&row)
            }

            async fn get_bundle(&self, owner: Id, id: Id) -> Result<Option<Bundle>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT * FROM bundles WHERE id = $1 AND owner_id = $2")
                        .bind(id)
                        .bind(owner),
                    bundle_from,
                )
                .await
            }

            async fn list_bundles(&self, owner: Id) -> Result<Vec<Bundle>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query("SELECT * FROM bundles WHERE owner_id = $1 ORDER BY id")
                        .bind(owner),
                    bundle_from,
                )
                .await
            }

            async fn update_bundle(
                &self,
                owner: Id,
                id: Id,
                input: &BundleInput,
            ) -> Result<Option<Bundle>> {
                let q = sqlx::query(
                    "UPDATE bundles SET name = COALESCE($1, name), version = COALESCE($2, version),
                        description = COALESCE($3, description), release = COALESCE($4, release),
                        install_location = COALESCE($5, install_location), revision = revision + 1, modified = $6
                     WHERE id = $7 AND owner_id = $8 RETURNING *",
                )
                .bind(&input.name)
                .bind(&input.version)
                .bind(&input.description)
                .bind(&input.release)
                .bind(&input.install_location)
                .bind(now_millis())
                .bind(id)
                .bind(owner);
                fetch_opt(&self.pool, q, bundle_from).await
            }

            async fn delete_bundle(&self, owner: Id, id: Id) -> Result<Option<Vec<String>>> {
                // Its images go with it (their templates cascade): forgotten after the commit.
                let _forget = self.tickets.forget_owner(owner);
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                // The row lock waits out artifact/attachment writers (they lock the bundle first)
                // and blocks new ones, so the keys read next are exactly what the cascade removes.
                let exists = sqlx::query(&format!(
                    "SELECT 1 FROM bundles WHERE id = $1 AND owner_id = $2{}",
                    S::FOR_UPDATE
                ))
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if exists.is_none() {
                    return Ok(None);
                }
                let mut keys: Vec<String> = sqlx::query_scalar(
                    "SELECT blob_key FROM artifacts WHERE bundle_id = $1 AND blob_key IS NOT NULL
                     UNION ALL SELECT blob_key FROM attachments WHERE bundle_id = $1",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                // Locked, so an image finishing now either published before (its key is read here)
                // or finds its ticket gone and removes its own archive.
                let archives: Vec<Option<String>> = sqlx::query_scalar(&format!(
                    "SELECT archive_key FROM tickets
                     WHERE template_id IN (SELECT id FROM container_templates WHERE bundle_id = $1){}",
                    S::FOR_UPDATE
                ))
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                keys.extend(archives.into_iter().flatten());
                sqlx::query("DELETE FROM bundles WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(keys))
            }

            async fn create_artifact(
                &self,
                bundle: Id,
                parent: Option<Id>,
                name: &str,
                input: &ArtifactInput,
            ) -> Result<Artifact> {
                let now = now_millis();
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                S::lock_bundle(&mut tx, bundle).await?;
                let row = sqlx::query(
                    "INSERT INTO artifacts (bundle_id, parent_id, name, kind, tag, install_location, created, modified)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING *",
                )
                .bind(bundle)
                .bind(parent)
                .bind(name)
                .bind(input.kind.as_deref().unwrap_or("file"))
                .bind(&input.tag)
                .bind(&input.install_location)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                touch_bundle(&mut tx, bundle).await?;
                tx.commit().await.map_err(db_err)?;
                artifact_from(&row)
            }

            async fn get_artifact(&self, bundle: Id, id: Id) -> Result<Option<Artifact>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT * FROM artifacts WHERE id = $1 AND bundle_id = $2")
                        .bind(id)
                        .bind(bundle),
                    artifact_from,
                )
                .await
            }

            async fn list_artifacts(&self, bundle: Id) -> Result<Vec<Artifact>> {
                // One row of JSON rather than a row per artifact: the driver's per-row hand-off
                // made a 16,000-file bundle's read 60-100 ms, most of an export's start.
                let (open, close) = S::JSON_ROWS;
                let sql = format!(
                    "SELECT {open}{}{close} FROM artifacts WHERE bundle_id = $1",
                    crate::rows::ARTIFACT_JSON_COLUMNS
                );
                let json: String = sqlx::query_scalar(&sql)
                    .bind(bundle)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)?;
                crate::rows::artifacts_from_json(&json)
            }

            async fn update_artifact(
                &self,
                bundle: Id,
                id: Id,
                input: &ArtifactInput,
            ) -> Result<Option<Artifact>> {
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                S::lock_bundle(&mut tx, bundle).await?;
                let row = sqlx::query(
                    "UPDATE artifacts SET name = COALESCE($1, name), tag = COALESCE($2, tag),
                        install_location = COALESCE($3, install_location), modified = $4
                     WHERE id = $5 AND bundle_id = $6 RETURNING *",
                )
                .bind(&input.name)
                .bind(&input.tag)
                .bind(&input.install_location)
                .bind(now_millis())
                .bind(id)
                .bind(bundle)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if row.is_some() {
                    touch_bundle(&mut tx, bundle).await?;
                }
                tx.commit().await.map_err(db_err)?;
                row.as_ref().map(artifact_from).transpose()
            }

            async fn delete_artifact(&self, bundle: Id, id: Id) -> Result<Option<Vec<String>>> {
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                S::lock_bundle(&mut tx, bundle).await?;
                let exists =
                    sqlx::query("SELECT 1 FROM artifacts WHERE id = $1 AND bundle_id = $2")
                        .bind(id)
                        .bind(bundle)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                if exists.is_none() {
                    return Ok(None);
                }
                // The CAST types the recursion's seed for PostgreSQL.
                let keys: Vec<String> = sqlx::query_scalar(
                    "WITH RECURSIVE sub(id) AS (SELECT CAST($1 AS BIGINT) UNION ALL SELECT a.id FROM artifacts a JOIN sub ON a.parent_id = sub.id)
                     SELECT blob_key FROM artifacts WHERE id IN (SELECT id FROM sub) AND blob_key IS NOT NULL",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                sqlx::query("DELETE FROM artifacts WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                touch_bundle(&mut tx, bundle).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(keys))
            }

            async fn set_artifact_blob(
                &self,
                bundle: Id,
                id: Id,
                blob: &BlobRef,
            ) -> Result<Option<String>> {
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                S::lock_bundle(&mut tx, bundle).await?;
                let old: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT blob_key FROM artifacts WHERE id = $1 AND bundle_id = $2",
                )
                .bind(id)
                .bind(bundle)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(old) = old else {
                    return Err(DomainError::not_found(format!("softwareArtifact {id}")));
                };
                sqlx::query(
                    "UPDATE artifacts SET blob_key = $1, blob_size = $2, blob_sha256 = $3, blob_md5 = $4, blob_uploaded = $5, modified = $6,
                        blob_crc32 = $8
                     WHERE id = $7",
                )
                .bind(&blob.key)
                .bind(blob.size)
                .bind(&blob.sha256)
                .bind(&blob.md5)
                .bind(blob.uploaded)
                .bind(now_millis())
                .bind(id)
                .bind(blob.crc32.map(i64::from))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                touch_bundle(&mut tx, bundle).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(old)
            }

            async fn put_attachment(
                &self,
                bundle: Id,
                kind: AttachmentKind,
                name: &str,
                blob: &BlobRef,
            ) -> Result<(Attachment, Option<String>)> {
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                // Under the bundle lock no other writer replaces this attachment between the read
                // of the old key and the upsert, so the key handed back is the one replaced.
                S::lock_bundle(&mut tx, bundle).await?;
                let old: Option<String> = sqlx::query_scalar(
                    "SELECT blob_key FROM attachments WHERE bundle_id = $1 AND kind = $2",
                )
                .bind(bundle)
                .bind(kind.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let row = sqlx::query(
                    "INSERT INTO attachments (bundle_id, kind, name, blob_key, blob_size, blob_sha256, blob_md5, blob_uploaded, blob_crc32)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (bundle_id, kind) DO UPDATE SET name = excluded.name, blob_key = excluded.blob_key,
                        blob_size = excluded.blob_size, blob_sha256 = excluded.blob_sha256, blob_md5 = excluded.blob_md5,
                        blob_uploaded = excluded.blob_uploaded, blob_crc32 = excluded.blob_crc32
                     RETURNING *",
                )
                .bind(bundle)
                .bind(kind.as_str())
                .bind(name)
                .bind(&blob.key)
                .bind(blob.size)
                .bind(&blob.sha256)
                .bind(&blob.md5)
                .bind(blob.uploaded)
                .bind(blob.crc32.map(i64::from))
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                touch_bundle(&mut tx, bundle).await?;
                tx.commit().await.map_err(db_err)?;
                Ok((attachment_from(&row)?, old))
            }

            async fn bundle_extras(&self, owner: Id) -> Result<(Vec<(Id, i64)>, Vec<Attachment>)> {
                // SUM of BIGINT is NUMERIC on PostgreSQL: cast back.
                let sizes = sqlx::query(
                    "SELECT a.bundle_id, CAST(SUM(a.blob_size) AS BIGINT) AS size
                     FROM artifacts a JOIN bundles b ON b.id = a.bundle_id
                     WHERE b.owner_id = $1 AND a.blob_key IS NOT NULL GROUP BY a.bundle_id",
                )
                .bind(owner)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<i64, _>("bundle_id").map_err(db_err)?,
                        r.try_get::<i64, _>("size").map_err(db_err)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
                let attachments = fetch_vec(
                    &self.pool,
                    sqlx::query(
                        "SELECT t.* FROM attachments t JOIN bundles b ON b.id = t.bundle_id
                         WHERE b.owner_id = $1 ORDER BY t.bundle_id, t.kind",
                    )
                    .bind(owner),
                    attachment_from,
                )
                .await?;
                Ok((sizes, attachments))
            }

            async fn get_attachment(
                &self,
                bundle: Id,
                kind: AttachmentKind,
            ) -> Result<Option<Attachment>> {
                let q = sqlx::query("SELECT * FROM attachments WHERE bundle_id = $1 AND kind = $2")
                    .bind(bundle)
                    .bind(kind.as_str());
                fetch_opt(&self.pool, q, attachment_from).await
            }

            async fn delete_attachment(
                &self,
                bundle: Id,
                kind: AttachmentKind,
            ) -> Result<Option<String>> {
                let key: Option<String> = sqlx::query_scalar(
                    "DELETE FROM attachments WHERE bundle_id = $1 AND kind = $2 RETURNING blob_key",
                )
                .bind(bundle)
                .bind(kind.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(key)
            }

            async fn create_ticket(&self, new: &NewTicket) -> Result<Ticket> {
                let now = now_millis();
                // An import waits for its archive: no job until it is uploaded (`queue_import`).
                let state = if new.kind.is_import() {
                    TicketState::AwaitingUpload
                } else {
                    TicketState::Queued
                };
                let imp = new.import;
                let params = match &new.takeout {
                    Some(t) => Some(serde_json::to_string(t).map_err(|e| {
                        DomainError::Internal(satchel_domain::Cause::of(e))
                    })?),
                    None => None,
                };
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let row = sqlx::query(
                    "INSERT INTO tickets (owner_id, subject_id, subject_name, subject_version, format, state, message, created, modified,
                                          kind, template_id, image_name, image_format, compress,
                                          import_imported, import_force, import_reuse_bundles, import_use_major, params,
                                          image_base_id, image_base)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) RETURNING *",
                )
                .bind(new.owner_id)
                .bind(new.subject_id)
                .bind(&new.subject_name)
                .bind(&new.subject_version)
                .bind(new.format.as_str())
                .bind(state.as_str())
                .bind(state.message(new.kind))
                .bind(now)
                .bind(new.kind.as_str())
                .bind(new.image.as_ref().map(|i| i.template_id))
                .bind(new.image.as_ref().map(|i| i.name.clone()))
                .bind(new.image.as_ref().map(|i| i.format.clone()))
                .bind(new.image.as_ref().map(|i| i.compress))
                .bind(imp.map(|i| i.imported))
                .bind(imp.map(|i| i.force))
                .bind(imp.map(|i| i.reuse_bundles))
                .bind(imp.map(|i| i.use_major))
                .bind(params)
                .bind(new.image.as_ref().and_then(|i| i.base.as_ref()).map(|b| b.id))
                .bind(new.image.as_ref().and_then(|i| i.base.as_ref()).map(|b| b.label.clone()))
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                let ticket = ticket_from(&row)?;
                if state == TicketState::Queued {
                    sqlx::query(&format!(
                        "INSERT INTO jobs (kind, owner_id, ticket_id, max_attempts, run_after, created) VALUES ($1, $2, $3, $4, {}, $5)",
                        S::NOW
                    ))
                    .bind(new.kind.as_str())
                    .bind(ticket.owner_id)
                    .bind(ticket.id)
                    .bind(new.max_attempts)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    // Delivered at commit, so no listener wakes before the job is visible.
                    S::notify_jobs(&mut tx, ticket.id).await?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(ticket)
            }

            async fn get_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT * FROM tickets WHERE id = $1 AND owner_id = $2")
                        .bind(id)
                        .bind(owner),
                    ticket_from,
                )
                .await
            }

            async fn get_ticket_any(&self, id: Id) -> Result<Option<Ticket>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT * FROM tickets WHERE id = $1").bind(id),
                    ticket_from,
                )
                .await
            }

            async fn list_tickets(&self, owner: Id) -> Result<Vec<Ticket>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query("SELECT * FROM tickets WHERE owner_id = $1 ORDER BY id")
                        .bind(owner),
                    ticket_from,
                )
                .await
            }

            async fn delete_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
                let _forget = self.tickets.forget_ticket(id);
                fetch_opt(&self.pool, sqlx::query("DELETE FROM tickets WHERE id = $1 AND owner_id = $2 RETURNING *") .bind(id) .bind(owner), ticket_from).await
            }

            async fn set_takeout_spec(&self, id: Id, spec: &TakeoutSpec) -> Result<()> {
                let q = takeout_spec_update(id, spec)?;
                let _forget = self.tickets.forget_ticket(id);
                q.execute(&self.pool).await.map_err(db_err)?;
                Ok(())
            }

            async fn mark_running(&self, id: Id) -> Result<bool> {
                let _forget = self.tickets.forget_ticket(id);
                let to = crate::tickets::Move::to(TicketState::Running, 3);
                let sql = format!(
                    "UPDATE tickets SET {}, percentage = 0, bytes_loaded = 0, modified = $1
                     WHERE id = $2 AND {}",
                    to.set, to.guard
                );
                let q = sqlx::query(&sql).bind(now_millis()).bind(id);
                Ok(affected(&self.pool, to.bind(q)).await? > 0)
            }

            async fn update_progress(&self, id: Id, p: &Progress) -> Result<bool> {
                let _forget = self.tickets.forget_ticket(id);
                let q = sqlx::query(
                    "UPDATE tickets SET percentage = $1, bytes_loaded = $2, bytes_total = $3, eta = $4, modified = $5
                     WHERE id = $6 AND state = $7",
                )
                .bind(p.percentage.clamp(0, 100))
                .bind(p.bytes_loaded)
                .bind(p.bytes_total)
                .bind(p.eta)
                .bind(now_millis())
                .bind(id)
                .bind(TicketState::Running.as_str());
                Ok(affected(&self.pool, q).await? > 0)
            }

            async fn finish_ticket(&self, id: Id, outcome: &Outcome) -> Result<bool> {
                // One conditional UPDATE: a racing finisher blocks on the row (PostgreSQL) or the
                // write lock (SQLite), re-checks the state after the first one commits and matches
                // nothing.
                let now = now_millis();
                let (sql, to);
                let q = match outcome {
                    Outcome::Complete {
                        archive,
                        expires_at,
                    } => {
                        to = crate::tickets::Move::to(TicketState::Complete, 8);
                        sql = format!(
                            "UPDATE tickets SET {}, percentage = 100, bytes_loaded = bytes_total, eta = NULL,
                                error_message = NULL, archive_key = $1, archive_name = $2,
                                archive_size = $3, archive_sha256 = $4, expires_at = $5, modified = $6
                             WHERE id = $7 AND {}",
                            to.set, to.guard
                        );
                        sqlx::query(&sql)
                            .bind(&archive.key)
                            .bind(&archive.file_name)
                            .bind(archive.size)
                            .bind(&archive.sha256)
                            .bind(expires_at)
                            .bind(now)
                            .bind(id)
                    }
                    Outcome::Error {
                        message,
                        error_message,
                    } => {
                        to = crate::tickets::Move::to(TicketState::Error, 5);
                        sql = format!(
                            "UPDATE tickets SET {}, eta = NULL, message = $1, error_message = $2, modified = $3
                             WHERE id = $4 AND {}",
                            to.set, to.guard
                        );
                        sqlx::query(&sql)
                            .bind(message)
                            .bind(error_message)
                            .bind(now)
                            .bind(id)
                    }
                };
                // The takeout webhook's delivery, if any, is queued with the move (or not at all).
                let _forget = self.tickets.forget_ticket(id);
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let moved = to.bind(q).execute(&mut *tx).await.map_err(db_err)?.rows_affected() > 0;
                if moved {
                    after_final_move(&mut tx, id).await?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(moved)
            }

            async fn tickets_to_expire(&self, now: Millis, limit: i64) -> Result<Vec<Ticket>> {
                let q = sqlx::query(
                    "SELECT * FROM tickets WHERE state = $3 AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .bind(TicketState::Complete.as_str());
                fetch_vec(&self.pool, q, ticket_from).await
            }

            async fn mark_expired(&self, id: Id) -> Result<bool> {
                let _forget = self.tickets.forget_ticket(id);
                let to = crate::tickets::Move::to(TicketState::Expired, 3);
                let sql = format!(
                    "UPDATE tickets SET {}, modified = $1 WHERE id = $2 AND {}",
                    to.set, to.guard
                );
                let q = sqlx::query(&sql).bind(now_millis()).bind(id);
                Ok(affected(&self.pool, to.bind(q)).await? > 0)
            }

            async fn cancel_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
                let to = crate::tickets::Move::to(TicketState::Cancelled, 4);
                let sql = format!(
                    "UPDATE tickets SET {}, eta = NULL, modified = $1
                     WHERE id = $2 AND owner_id = $3 AND {}",
                    to.set, to.guard
                );
                let q = sqlx::query(&sql).bind(now_millis()).bind(id).bind(owner);
                // As `finish_ticket`: a cancelled takeout's webhook is queued with the move.
                let _forget = self.tickets.forget_ticket(id);
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                if to.bind(q).execute(&mut *tx).await.map_err(db_err)?.rows_affected() > 0 {
                    after_final_move(&mut tx, id).await?;
                }
                tx.commit().await.map_err(db_err)?;
                // Forgotten before the row is read back for the answer.
                self.tickets.changed(id);
                self.get_ticket(owner, id).await
            }

            async fn claim_job_fair(
                &self,
                owner: &str,
                lease: Duration,
                per_user: u32,
            ) -> Result<Option<Job>> {
                // One statement. SQLite runs it atomically; on PostgreSQL the subquery locks the
                // chosen runnable row, skipping rows other claimers hold, and (in READ COMMITTED)
                // re-checks a row that changed since the snapshot, so no job is handed to two owners
                // and concurrent claimers do not wait on each other. Fair claiming: a user already
                // running `per_user` jobs waits; among the others, the user running the fewest goes
                // first, then the oldest job. (Claims racing on two PostgreSQL instances may each
                // count the same running jobs, so the cap can be passed by the number of
                // simultaneous claimers.) Running jobs are counted once per owner, not once per
                // candidate row: with a long queue that was quadratic, and slow claims delayed
                // heartbeats past their leases.
                let sql = format!(
                    "WITH running AS (
                       SELECT owner_id, COUNT(*) AS n FROM jobs
                       WHERE lease_owner IS NOT NULL AND lease_expires >= {now}
                       GROUP BY owner_id)
                     UPDATE jobs SET lease_owner = $1, lease_expires = {now} + $2, attempts = attempts + 1
                     WHERE id = (SELECT j.id FROM jobs j
                                 LEFT JOIN running r ON r.owner_id = j.owner_id
                                 WHERE j.run_after <= {now}
                                   AND (j.lease_owner IS NULL OR j.lease_expires < {now})
                                   AND COALESCE(r.n, 0) < $3
                                 ORDER BY COALESCE(r.n, 0), j.run_after, j.id LIMIT 1{skip})
                     RETURNING *",
                    now = S::NOW,
                    skip = S::SKIP_LOCKED
                );
                fetch_opt(
                    &self.pool,
                    sqlx::query(&sql)
                        .bind(owner)
                        .bind(ms(lease))
                        .bind(i64::from(per_user)),
                    job_from,
                )
                .await
            }

            async fn heartbeat(&self, job: Id, owner: &str, lease: Duration) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query(&format!(
                    "UPDATE jobs SET lease_expires = {} + $1 WHERE id = $2 AND lease_owner = $3",
                    S::NOW
                ))
                    .bind(ms(lease))
                    .bind(job)
                    .bind(owner),
                )
                .await?
                    > 0)
            }

            async fn finish_job(&self, job: Id, owner: &str) -> Result<()> {
                sqlx::query("DELETE FROM jobs WHERE id = $1 AND lease_owner = $2")
                    .bind(job)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn retry_job(
                &self,
                job: Id,
                owner: &str,
                error: &str,
                delay: Duration,
            ) -> Result<()> {
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let r = sqlx::query(&format!(
                    "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, last_error = $1, run_after = {} + $2
                     WHERE id = $3 AND lease_owner = $4",
                    S::NOW
                ))
                .bind(error)
                .bind(ms(delay))
                .bind(job)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                // Only if it matched; delivered at commit.
                if r.rows_affected() > 0 {
                    S::notify_jobs(&mut tx, job).await?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(())
            }

            /// Drops every lease at once. Only for the embedded single-instance mode at start,
            /// where the instance that held the leases is known to be dead. Scale-out servers must
            /// NOT call this at start: instances share the queue, so it would take running jobs
            /// away from live instances (which then run them twice). There, a dead instance's
            /// leases simply expire and its jobs are claimed again.
            fn ticket_cache(&self) -> Option<std::sync::Arc<satchel_domain::polls::TicketCache>> {
                <S as Engine>::ticket_cache(self)
            }

            async fn release_all_leases(&self) -> Result<u64> {
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let r = sqlx::query(
                    "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL,
                        last_error = COALESCE(last_error, 'the server stopped while running this job')
                     WHERE lease_owner IS NOT NULL",
                )
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if r.rows_affected() > 0 {
                    S::notify_jobs(&mut tx, 0).await?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(r.rows_affected())
            }

            async fn claim_periodic(
                &self,
                name: &str,
                owner: &str,
                period: Duration,
            ) -> Result<bool> {
                Engine::claim_periodic(self, name, owner, period).await
            }

            async fn wait_for_jobs(&self, timeout: Duration) -> bool {
                Engine::wait_for_jobs(self, timeout).await
            }
        }
    };
}
pub(crate) use impl_store;
