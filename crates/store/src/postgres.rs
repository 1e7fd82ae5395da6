//! PostgreSQL implementation of the store and queue: the scale-out path, where several Satchel
//! instances share one database (metadata and job queue) and claim jobs from it concurrently.
//!
//! It mirrors [`crate::sqlite::SqliteStore`] method by method (same conditions, same return values,
//! same blob keys handed back on deletes). What differs, and why:
//! - Job claims lock the candidate row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on other
//!   instances skip each other's rows instead of queueing behind them.
//! - Queue times (`run_after`, `lease_expires`) come from the database clock (`satchel_now_ms()`), so
//!   instances with skewed clocks agree on when a lease has expired.
//! - SQLite serialises every write transaction (`BEGIN IMMEDIATE`); PostgreSQL does not, so the
//!   multi-statement writes take row locks in one order (user, then bundle, then its artifacts or
//!   attachments) before reading what they are about to change. `delete_user` first takes the owner's
//!   cloud write lock, which the `CloudStore` side (`postgres_cloud.rs`) serialises on.
//! - Enqueuing sends `NOTIFY satchel_jobs` inside the transaction, and [`Store::wait_for_jobs`] waits
//!   on a `LISTEN` connection, so idle workers on every instance wake when a job arrives.

use crate::postgres_cloud::lock_owner;
use crate::{db_err, ms};
use async_trait::async_trait;
use satchel_domain::model::*;
use satchel_domain::ports::Store;
use satchel_domain::{DomainError, Result};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;

/// The LISTEN/NOTIFY channel that announces runnable jobs. The payload (a ticket or job id) is
/// informational only; listeners just try to claim.
pub const JOBS_CHANNEL: &str = "satchel_jobs";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Cheap to clone: clones share the pool and the one LISTEN connection.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    signal: Arc<JobSignal>,
}

/// The store's one LISTEN connection, started on the first `wait_for_jobs` so that short-lived users
/// (the admin CLI) never hold it. A background task forwards each notification to `notify`.
struct JobSignal {
    notify: Arc<Notify>,
    task: OnceCell<JoinHandle<()>>,
}

impl Drop for JobSignal {
    fn drop(&mut self) {
        // The task owns the listener connection (and a pool handle); stop it with the last store clone.
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl PostgresStore {
    /// Connects (e.g. `postgres://user@host/db`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(db_err)?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool without touching the schema (see [`Self::migrate`]).
    pub fn from_pool(pool: PgPool) -> Self {
        PostgresStore {
            pool,
            signal: Arc::new(JobSignal {
                notify: Arc::new(Notify::new()),
                task: OnceCell::new(),
            }),
        }
    }

    /// Applies pending migrations. Safe to run from several instances at once: sqlx serialises
    /// migrators with an advisory lock.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| DomainError::Storage(format!("migrations: {e}")))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts the LISTEN connection if it is not running yet, so that every NOTIFY from now on wakes
    /// [`Store::wait_for_jobs`]. `wait_for_jobs` calls this itself; call it up front to not miss jobs
    /// enqueued before the first wait.
    pub async fn listen(&self) -> Result<()> {
        self.signal
            .task
            .get_or_try_init(|| async {
                let mut listener = PgListener::connect_with(&self.pool).await.map_err(db_err)?;
                listener.listen(JOBS_CHANNEL).await.map_err(db_err)?;
                Ok::<_, DomainError>(tokio::spawn(forward_notifications(
                    listener,
                    self.signal.notify.clone(),
                )))
            })
            .await?;
        Ok(())
    }
}

/// Wakes every current waiter, and leaves one permit for a worker that is between a failed claim and
/// its wait, so a job announced in that gap is not left for the next poll. A spare permit only costs
/// one extra claim attempt.
fn wake_all(notify: &Notify) {
    notify.notify_waiters();
    notify.notify_one();
}

async fn forward_notifications(mut listener: PgListener, notify: Arc<Notify>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => wake_all(&notify),
            // The connection dropped and was re-established: notifications sent meanwhile are lost,
            // so let the waiters poll once.
            Ok(None) => wake_all(&notify),
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "job notification listener failed; retrying");
                wake_all(&notify);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

crate::rows::store_rows!(PgRow);

crate::usage::impl_usage!(PostgresStore);
crate::usage::impl_stats!(PostgresStore);
crate::idempotency::impl_idempotency!(PostgresStore);
crate::blobrefs::impl_blob_refs!(PostgresStore);
crate::apikeys::impl_apikeys!(PostgresStore, PgRow);

crate::templates::impl_templates!(
    PostgresStore,
    begin: "BEGIN",
    create: "INSERT INTO container_templates (owner_id, bundle_id, distro_name, distro_version, distro_arch, created, modified)
             SELECT $1, $2, $3, $4, $5, $6, $6 WHERE EXISTS (SELECT 1 FROM bundles WHERE id = $2 AND owner_id = $1)
             RETURNING *",
    get: "SELECT * FROM container_templates WHERE id = $1 AND owner_id = $2 AND bundle_id = $3",
    list: "SELECT * FROM container_templates WHERE owner_id = $1 AND bundle_id = $2 ORDER BY id",
    lock: "SELECT 1 FROM container_templates WHERE id = $1 AND owner_id = $2 AND bundle_id = $3 FOR UPDATE",
    images_locked: "SELECT * FROM tickets WHERE template_id = $1 AND owner_id = $2 ORDER BY id FOR UPDATE",
    delete: "DELETE FROM container_templates WHERE id = $1",
    images: "SELECT * FROM tickets WHERE template_id = $1 AND owner_id = $2 ORDER BY id",
);

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let ents = serde_json::to_string(&new.entitlements)
            .map_err(|e| DomainError::Internal(e.to_string()))?;
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
            DomainError::Conflict(_) => DomainError::Conflict(format!("user {} already exists", new.login)),
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

    async fn list_users(&self) -> Result<Vec<User>> {
        // COLLATE "C": byte order, as SQLite's default BINARY collation sorts.
        let rows = sqlx::query(r#"SELECT * FROM users ORDER BY login COLLATE "C""#)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(user_from).collect()
    }

    async fn delete_user(&self, login: &str) -> Result<Option<Vec<String>>> {
        // READ COMMITTED whatever the server default: each read after a lock wait below must see
        // what the lock's previous holder committed.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(db_err)?;
        let Some(id) = sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE login = $1")
            .bind(login)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        // The cloud write lock first, the user row second (the order the cloud writers take them
        // in, see `postgres_cloud::lock_owner`): with it held no image file change or object write
        // of this user is in flight, so the image and object blob keys read below are all there are.
        lock_owner(&mut tx, id).await?;
        // Locking the user blocks new bundles and tickets (their foreign-key checks share-lock it);
        // locking the bundles blocks new artifacts/attachments and waits out writers in flight, so
        // the keys read below are all the blobs the cascade will orphan.
        let locked = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if locked.is_none() {
            // Deleted by someone else while this waited for the lock.
            return Ok(None);
        }
        sqlx::query("SELECT 1 FROM bundles WHERE owner_id = $1 ORDER BY id FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // UNION, not UNION ALL, as on SQLite: an image's file shared with the objects exported from
        // it is one blob, listed once.
        let mut keys: Vec<String> = sqlx::query_scalar(
            "SELECT a.blob_key FROM artifacts a JOIN bundles b ON a.bundle_id = b.id WHERE b.owner_id = $1 AND a.blob_key IS NOT NULL
             UNION ALL SELECT t.blob_key FROM attachments t JOIN bundles b ON t.bundle_id = b.id WHERE b.owner_id = $1
             UNION SELECT file_blob FROM images WHERE owner_id = $1 AND file_blob IS NOT NULL
             UNION SELECT blob_key FROM stor_entries WHERE owner_id = $1 AND blob_key IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        // Tickets are not under a bundle lock: a worker may publish an archive right now. DELETE
        // waits for that update and returns the row as it ends up, so its archive is not missed.
        let archives: Vec<Option<String>> =
            sqlx::query_scalar("DELETE FROM tickets WHERE owner_id = $1 RETURNING archive_key")
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
        let r = sqlx::query("UPDATE users SET password_hash = $1 WHERE login = $2")
            .bind(password_hash)
            .bind(login)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(owner)
        .bind(name)
        .bind(version)
        .bind(&input.description)
        .bind(&input.release)
        .bind(&input.install_location)
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        bundle_from(&row)
    }

    async fn get_bundle(&self, owner: Id, id: Id) -> Result<Option<Bundle>> {
        let row = sqlx::query("SELECT * FROM bundles WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(bundle_from).transpose()
    }

    async fn list_bundles(&self, owner: Id) -> Result<Vec<Bundle>> {
        let rows = sqlx::query("SELECT * FROM bundles WHERE owner_id = $1 ORDER BY id")
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(bundle_from).collect()
    }

    async fn update_bundle(
        &self,
        owner: Id,
        id: Id,
        input: &BundleInput,
    ) -> Result<Option<Bundle>> {
        let row = sqlx::query(
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
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(bundle_from).transpose()
    }

    async fn delete_bundle(&self, owner: Id, id: Id) -> Result<Option<Vec<String>>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // The row lock waits out artifact/attachment writers (they lock the bundle first) and
        // blocks new ones, so the keys read next are exactly what the cascade removes.
        let exists =
            sqlx::query("SELECT 1 FROM bundles WHERE id = $1 AND owner_id = $2 FOR UPDATE")
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
        // Locked, so an image finishing now either published before (its key is read here) or
        // finds its ticket gone and removes its own archive.
        let archives: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT archive_key FROM tickets
             WHERE template_id IN (SELECT id FROM container_templates WHERE bundle_id = $1) FOR UPDATE",
        )
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        lock_bundle(&mut tx, bundle).await?;
        let row = sqlx::query(
            "INSERT INTO artifacts (bundle_id, parent_id, name, kind, tag, install_location, created, modified)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(bundle)
        .bind(parent)
        .bind(name)
        .bind(input.kind.as_deref().unwrap_or("file"))
        .bind(&input.tag)
        .bind(&input.install_location)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        touch_bundle(&mut tx, bundle).await?;
        tx.commit().await.map_err(db_err)?;
        artifact_from(&row)
    }

    async fn get_artifact(&self, bundle: Id, id: Id) -> Result<Option<Artifact>> {
        let row = sqlx::query("SELECT * FROM artifacts WHERE id = $1 AND bundle_id = $2")
            .bind(id)
            .bind(bundle)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(artifact_from).transpose()
    }

    async fn list_artifacts(&self, bundle: Id) -> Result<Vec<Artifact>> {
        let rows = sqlx::query("SELECT * FROM artifacts WHERE bundle_id = $1 ORDER BY id")
            .bind(bundle)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(artifact_from).collect()
    }

    async fn update_artifact(
        &self,
        bundle: Id,
        id: Id,
        input: &ArtifactInput,
    ) -> Result<Option<Artifact>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        lock_bundle(&mut tx, bundle).await?;
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        lock_bundle(&mut tx, bundle).await?;
        let exists = sqlx::query("SELECT 1 FROM artifacts WHERE id = $1 AND bundle_id = $2")
            .bind(id)
            .bind(bundle)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            return Ok(None);
        }
        let keys: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE sub(id) AS (SELECT $1::BIGINT UNION ALL SELECT a.id FROM artifacts a JOIN sub ON a.parent_id = sub.id)
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        lock_bundle(&mut tx, bundle).await?;
        let old: Option<Option<String>> =
            sqlx::query_scalar("SELECT blob_key FROM artifacts WHERE id = $1 AND bundle_id = $2")
                .bind(id)
                .bind(bundle)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let Some(old) = old else {
            return Err(DomainError::not_found(format!("softwareArtifact {id}")));
        };
        sqlx::query(
            "UPDATE artifacts SET blob_key = $1, blob_size = $2, blob_sha256 = $3, blob_md5 = $4, blob_uploaded = $5, modified = $6
             WHERE id = $7",
        )
        .bind(&blob.key)
        .bind(blob.size)
        .bind(&blob.sha256)
        .bind(&blob.md5)
        .bind(blob.uploaded)
        .bind(now_millis())
        .bind(id)
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Under the bundle lock no other writer replaces this attachment between the read of the
        // old key and the upsert, so the key handed back is the one actually replaced.
        lock_bundle(&mut tx, bundle).await?;
        let old: Option<String> = sqlx::query_scalar(
            "SELECT blob_key FROM attachments WHERE bundle_id = $1 AND kind = $2",
        )
        .bind(bundle)
        .bind(kind.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let row = sqlx::query(
            "INSERT INTO attachments (bundle_id, kind, name, blob_key, blob_size, blob_sha256, blob_md5, blob_uploaded)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (bundle_id, kind) DO UPDATE SET name = excluded.name, blob_key = excluded.blob_key,
                blob_size = excluded.blob_size, blob_sha256 = excluded.blob_sha256, blob_md5 = excluded.blob_md5,
                blob_uploaded = excluded.blob_uploaded
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
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        touch_bundle(&mut tx, bundle).await?;
        tx.commit().await.map_err(db_err)?;
        Ok((attachment_from(&row)?, old))
    }

    async fn get_attachment(&self, bundle: Id, kind: AttachmentKind) -> Result<Option<Attachment>> {
        let row = sqlx::query("SELECT * FROM attachments WHERE bundle_id = $1 AND kind = $2")
            .bind(bundle)
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(attachment_from).transpose()
    }

    async fn delete_attachment(&self, bundle: Id, kind: AttachmentKind) -> Result<Option<String>> {
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let row = sqlx::query(
            "INSERT INTO tickets (owner_id, bundle_id, bundle_name, bundle_version, format, state, message, created, modified,
                                  kind, template_id, image_name, image_format, compress)
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *",
        )
        .bind(new.owner_id)
        .bind(new.bundle_id)
        .bind(&new.bundle_name)
        .bind(&new.bundle_version)
        .bind(new.format.as_str())
        .bind(match new.kind {
            TicketKind::BundleExport => "export queued",
            TicketKind::ContainerImage => "generation queued",
        })
        .bind(now)
        .bind(now)
        .bind(new.kind.as_str())
        .bind(new.image.as_ref().map(|i| i.template_id))
        .bind(new.image.as_ref().map(|i| i.name.clone()))
        .bind(new.image.as_ref().map(|i| i.format.clone()))
        .bind(new.image.as_ref().map(|i| i.compress))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let ticket = ticket_from(&row)?;
        sqlx::query(
            "INSERT INTO jobs (kind, owner_id, ticket_id, max_attempts, run_after, created) VALUES ($1, $2, $3, $4, satchel_now_ms(), $5)",
        )
        .bind(new.kind.as_str())
        .bind(ticket.owner_id)
        .bind(ticket.id)
        .bind(new.max_attempts)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Delivered at commit, so no listener wakes before the job is visible.
        notify_jobs(&mut tx, ticket.id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(ticket)
    }

    async fn get_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
        let row = sqlx::query("SELECT * FROM tickets WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(ticket_from).transpose()
    }

    async fn get_ticket_any(&self, id: Id) -> Result<Option<Ticket>> {
        let row = sqlx::query("SELECT * FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(ticket_from).transpose()
    }

    async fn list_tickets(&self, owner: Id) -> Result<Vec<Ticket>> {
        let rows = sqlx::query("SELECT * FROM tickets WHERE owner_id = $1 ORDER BY id")
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(ticket_from).collect()
    }

    async fn delete_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
        let row = sqlx::query("DELETE FROM tickets WHERE id = $1 AND owner_id = $2 RETURNING *")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(ticket_from).transpose()
    }

    async fn mark_running(&self, id: Id) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tickets SET state = 'running', message = CASE kind WHEN 'container_image' THEN 'generation in progress' ELSE 'export in progress' END, percentage = 0, bytes_loaded = 0, modified = $1
             WHERE id = $2 AND state IN ('queued', 'running')",
        )
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn update_progress(&self, id: Id, p: &Progress) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tickets SET percentage = $1, bytes_loaded = $2, bytes_total = $3, eta = $4, modified = $5
             WHERE id = $6 AND state = 'running'",
        )
        .bind(p.percentage.clamp(0, 100))
        .bind(p.bytes_loaded)
        .bind(p.bytes_total)
        .bind(p.eta)
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn finish_ticket(&self, id: Id, outcome: &Outcome) -> Result<bool> {
        // One conditional UPDATE: a racing finisher blocks on the row, re-checks the state after the
        // first one commits and matches nothing.
        let now = now_millis();
        let r = match outcome {
            Outcome::Complete { archive, expires_at } => sqlx::query(
                "UPDATE tickets SET state = 'complete', percentage = 100, bytes_loaded = bytes_total, eta = NULL,
                    message = CASE kind WHEN 'container_image' THEN 'image generated' ELSE 'export complete' END, error_message = NULL, archive_key = $1, archive_name = $2,
                    archive_size = $3, archive_sha256 = $4, expires_at = $5, modified = $6
                 WHERE id = $7 AND state IN ('queued', 'running')",
            )
            .bind(&archive.key)
            .bind(&archive.file_name)
            .bind(archive.size)
            .bind(&archive.sha256)
            .bind(expires_at)
            .bind(now)
            .bind(id),
            Outcome::Error { message, error_message } => sqlx::query(
                "UPDATE tickets SET state = 'error', eta = NULL, message = $1, error_message = $2, modified = $3
                 WHERE id = $4 AND state IN ('queued', 'running')",
            )
            .bind(message)
            .bind(error_message)
            .bind(now)
            .bind(id),
        }
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn tickets_to_expire(&self, now: Millis, limit: i64) -> Result<Vec<Ticket>> {
        let rows = sqlx::query(
            "SELECT * FROM tickets WHERE state = 'complete' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(ticket_from).collect()
    }

    async fn mark_expired(&self, id: Id) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tickets SET state = 'expired', message = 'archive expired and deleted', modified = $1
             WHERE id = $2 AND state = 'complete'",
        )
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn cancel_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
        sqlx::query(
            "UPDATE tickets SET state = 'cancelled', eta = NULL, message = 'cancelled', modified = $1
             WHERE id = $2 AND owner_id = $3 AND state IN ('queued', 'running')",
        )
        .bind(now_millis())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        self.get_ticket(owner, id).await
    }

    async fn claim_job_fair(
        &self,
        owner: &str,
        lease: Duration,
        per_user: u32,
    ) -> Result<Option<Job>> {
        // One statement. The subquery locks the chosen runnable row, skipping rows other claimers
        // hold, and (in READ COMMITTED) re-checks a row that changed since the snapshot, so no job is
        // handed to two owners and concurrent claimers do not wait on each other. Fair claiming: a
        // user already running `per_user` jobs waits; among the others, the user running the fewest
        // goes first, then the oldest job. (Claims racing on two instances may each count the same
        // running jobs, so the cap can be passed by the number of simultaneous claimers.)
        let row = sqlx::query(
            // Running jobs are counted once per owner (not once per candidate row: with a long
            // queue that was quadratic, and slow claims delayed heartbeats past their leases).
            "WITH running AS (
               SELECT owner_id, COUNT(*) AS n FROM jobs
               WHERE lease_owner IS NOT NULL AND lease_expires >= satchel_now_ms()
               GROUP BY owner_id)
             UPDATE jobs SET lease_owner = $1, lease_expires = satchel_now_ms() + $2, attempts = attempts + 1
             WHERE id = (SELECT j.id FROM jobs j
                         LEFT JOIN running r ON r.owner_id = j.owner_id
                         WHERE j.run_after <= satchel_now_ms()
                           AND (j.lease_owner IS NULL OR j.lease_expires < satchel_now_ms())
                           AND COALESCE(r.n, 0) < $3
                         ORDER BY COALESCE(r.n, 0), j.run_after, j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED)
             RETURNING *",
        )
        .bind(owner)
        .bind(ms(lease))
        .bind(i64::from(per_user))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(job_from).transpose()
    }

    async fn heartbeat(&self, job: Id, owner: &str, lease: Duration) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET lease_expires = satchel_now_ms() + $1 WHERE id = $2 AND lease_owner = $3",
        )
        .bind(ms(lease))
        .bind(job)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
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

    async fn retry_job(&self, job: Id, owner: &str, error: &str, delay: Duration) -> Result<()> {
        // One statement: the update and, only if it matched, the notification (sent at commit).
        sqlx::query(
            "WITH r AS (
                UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, last_error = $1, run_after = satchel_now_ms() + $2
                WHERE id = $3 AND lease_owner = $4 RETURNING id)
             SELECT pg_notify($5, r.id::TEXT) FROM r",
        )
        .bind(error)
        .bind(ms(delay))
        .bind(job)
        .bind(owner)
        .bind(JOBS_CHANNEL)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Drops every lease at once. Only for the embedded single-instance mode at start, where the
    /// instance that held the leases is known to be dead. Scale-out servers must NOT call this at
    /// start: instances share the queue, so it would take running jobs away from live instances
    /// (which then run them twice). There, a dead instance's leases simply expire and its jobs are
    /// claimed again.
    async fn release_all_leases(&self) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let r = sqlx::query("UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, last_error = COALESCE(last_error, 'the server stopped while running this job') WHERE lease_owner IS NOT NULL")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if r.rows_affected() > 0 {
            notify_jobs(&mut tx, 0).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(r.rows_affected())
    }

    /// One conditional upsert: the claim is taken only if nobody holds it or the holder's time is up,
    /// judged by the database's clock so instances with skewed clocks agree.
    async fn claim_periodic(&self, name: &str, owner: &str, period: Duration) -> Result<bool> {
        let won: Option<String> = sqlx::query_scalar(
            "INSERT INTO periodic_claims (name, owner, until_ms) VALUES ($1, $2, satchel_now_ms() + $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms
             WHERE periodic_claims.until_ms <= satchel_now_ms()
             RETURNING owner",
        )
        .bind(name)
        .bind(owner)
        .bind(period.as_millis().min(i64::MAX as u128) as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(won.is_some())
    }

    /// Waits on the store's LISTEN connection; falls back to sleeping `timeout` if it cannot listen.
    async fn wait_for_jobs(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.listen()).await {
            Ok(Ok(())) => tokio::time::timeout_at(deadline, self.signal.notify.notified())
                .await
                .is_ok(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for job notifications; polling");
                tokio::time::sleep_until(deadline).await;
                false
            }
            Err(_) => false,
        }
    }
}

/// Locks the bundle row in the mode its own UPDATE takes. Every transaction that changes a bundle's
/// artifacts or attachments takes this first, so they serialise per bundle (as SQLite's single writer
/// does) and delete_bundle / delete_user, which lock the bundle, see no write half done.
async fn lock_bundle(tx: &mut Transaction<'_, Postgres>, bundle: Id) -> Result<()> {
    sqlx::query("SELECT 1 FROM bundles WHERE id = $1 FOR NO KEY UPDATE")
        .bind(bundle)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn touch_bundle(tx: &mut Transaction<'_, Postgres>, bundle: Id) -> Result<()> {
    sqlx::query("UPDATE bundles SET modified = $1, revision = revision + 1 WHERE id = $2")
        .bind(now_millis())
        .bind(bundle)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn notify_jobs(tx: &mut Transaction<'_, Postgres>, id: Id) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(JOBS_CHANNEL)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}
