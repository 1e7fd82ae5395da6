//! SQLite implementation of the store and queue.

use crate::{db_err, ms};
use async_trait::async_trait;
use satchel_domain::model::*;
use satchel_domain::ports::Store;
use satchel_domain::{DomainError, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(file: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
            .map_err(db_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| DomainError::Storage(format!("migrations: {e}")))?;
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

crate::rows::store_rows!(SqliteRow);

crate::usage::impl_usage!(SqliteStore);
crate::usage::impl_stats!(SqliteStore);
crate::idempotency::impl_idempotency!(SqliteStore);
crate::blobrefs::impl_blob_refs!(SqliteStore);
crate::apikeys::impl_apikeys!(SqliteStore, SqliteRow);

crate::templates::impl_templates!(
    SqliteStore,
    begin: "BEGIN IMMEDIATE",
    create: "INSERT INTO container_templates (owner_id, bundle_id, distro_name, distro_version, distro_arch, created, modified)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?6 WHERE EXISTS (SELECT 1 FROM bundles WHERE id = ?2 AND owner_id = ?1)
             RETURNING *",
    get: "SELECT * FROM container_templates WHERE id = ? AND owner_id = ? AND bundle_id = ?",
    list: "SELECT * FROM container_templates WHERE owner_id = ? AND bundle_id = ? ORDER BY id",
    lock: "SELECT 1 FROM container_templates WHERE id = ? AND owner_id = ? AND bundle_id = ?",
    images_locked: "SELECT * FROM tickets WHERE template_id = ? AND owner_id = ? ORDER BY id",
    delete: "DELETE FROM container_templates WHERE id = ?",
    images: "SELECT * FROM tickets WHERE template_id = ? AND owner_id = ? ORDER BY id",
);

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let ents = serde_json::to_string(&new.entitlements)
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        let row = sqlx::query(
            "INSERT INTO users (login, password_hash, admin, entitlements, created) VALUES (?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&new.login)
        .bind(&new.password_hash)
        .bind(new.admin as i64)
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
        let row = sqlx::query("SELECT * FROM users WHERE login = ?")
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
        let rows = sqlx::query("SELECT * FROM users ORDER BY login")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(user_from).collect()
    }

    async fn delete_user(&self, login: &str) -> Result<Option<Vec<String>>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let Some(row) = sqlx::query("SELECT id FROM users WHERE login = ?")
            .bind(login)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT a.blob_key FROM artifacts a JOIN bundles b ON a.bundle_id = b.id WHERE b.owner_id = ?1 AND a.blob_key IS NOT NULL
             UNION ALL SELECT t.blob_key FROM attachments t JOIN bundles b ON t.bundle_id = b.id WHERE b.owner_id = ?1
             UNION ALL SELECT archive_key FROM tickets WHERE owner_id = ?1 AND archive_key IS NOT NULL
             UNION SELECT file_blob FROM images WHERE owner_id = ?1 AND file_blob IS NOT NULL
             UNION SELECT blob_key FROM stor_entries WHERE owner_id = ?1 AND blob_key IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(keys))
    }

    async fn set_password(&self, login: &str, password_hash: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE users SET password_hash = ? WHERE login = ?")
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
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
        let row = sqlx::query("SELECT * FROM bundles WHERE id = ? AND owner_id = ?")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(bundle_from).transpose()
    }

    async fn list_bundles(&self, owner: Id) -> Result<Vec<Bundle>> {
        let rows = sqlx::query("SELECT * FROM bundles WHERE owner_id = ? ORDER BY id")
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
            "UPDATE bundles SET name = COALESCE(?, name), version = COALESCE(?, version),
                description = COALESCE(?, description), release = COALESCE(?, release),
                install_location = COALESCE(?, install_location), revision = revision + 1, modified = ?
             WHERE id = ? AND owner_id = ? RETURNING *",
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let exists = sqlx::query("SELECT 1 FROM bundles WHERE id = ? AND owner_id = ?")
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            return Ok(None);
        }
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT blob_key FROM artifacts WHERE bundle_id = ?1 AND blob_key IS NOT NULL
             UNION ALL SELECT blob_key FROM attachments WHERE bundle_id = ?1
             UNION ALL SELECT archive_key FROM tickets WHERE archive_key IS NOT NULL
                AND template_id IN (SELECT id FROM container_templates WHERE bundle_id = ?1)",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM bundles WHERE id = ?")
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let row = sqlx::query(
            "INSERT INTO artifacts (bundle_id, parent_id, name, kind, tag, install_location, created, modified)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
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
        let row = sqlx::query("SELECT * FROM artifacts WHERE id = ? AND bundle_id = ?")
            .bind(id)
            .bind(bundle)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(artifact_from).transpose()
    }

    async fn list_artifacts(&self, bundle: Id) -> Result<Vec<Artifact>> {
        let rows = sqlx::query("SELECT * FROM artifacts WHERE bundle_id = ? ORDER BY id")
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let row = sqlx::query(
            "UPDATE artifacts SET name = COALESCE(?, name), tag = COALESCE(?, tag),
                install_location = COALESCE(?, install_location), modified = ?
             WHERE id = ? AND bundle_id = ? RETURNING *",
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let exists = sqlx::query("SELECT 1 FROM artifacts WHERE id = ? AND bundle_id = ?")
            .bind(id)
            .bind(bundle)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            return Ok(None);
        }
        let keys: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE sub(id) AS (SELECT ?1 UNION ALL SELECT a.id FROM artifacts a JOIN sub ON a.parent_id = sub.id)
             SELECT blob_key FROM artifacts WHERE id IN (SELECT id FROM sub) AND blob_key IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM artifacts WHERE id = ?")
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let old: Option<Option<String>> =
            sqlx::query_scalar("SELECT blob_key FROM artifacts WHERE id = ? AND bundle_id = ?")
                .bind(id)
                .bind(bundle)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let Some(old) = old else {
            return Err(DomainError::not_found(format!("softwareArtifact {id}")));
        };
        sqlx::query(
            "UPDATE artifacts SET blob_key = ?, blob_size = ?, blob_sha256 = ?, blob_md5 = ?, blob_uploaded = ?, modified = ?
             WHERE id = ?",
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT blob_key FROM attachments WHERE bundle_id = ? AND kind = ?")
                .bind(bundle)
                .bind(kind.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let row = sqlx::query(
            "INSERT INTO attachments (bundle_id, kind, name, blob_key, blob_size, blob_sha256, blob_md5, blob_uploaded)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
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
        let row = sqlx::query("SELECT * FROM attachments WHERE bundle_id = ? AND kind = ?")
            .bind(bundle)
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(attachment_from).transpose()
    }

    async fn delete_attachment(&self, bundle: Id, kind: AttachmentKind) -> Result<Option<String>> {
        let key: Option<String> = sqlx::query_scalar(
            "DELETE FROM attachments WHERE bundle_id = ? AND kind = ? RETURNING blob_key",
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let row = sqlx::query(
            "INSERT INTO tickets (owner_id, bundle_id, bundle_name, bundle_version, format, state, message, created, modified,
                                  kind, template_id, image_name, image_format, compress)
             VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
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
        sqlx::query("INSERT INTO jobs (kind, owner_id, ticket_id, max_attempts, run_after, created) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(new.kind.as_str())
            .bind(ticket.owner_id)
            .bind(ticket.id)
            .bind(new.max_attempts)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(ticket)
    }

    async fn get_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
        let row = sqlx::query("SELECT * FROM tickets WHERE id = ? AND owner_id = ?")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(ticket_from).transpose()
    }

    async fn get_ticket_any(&self, id: Id) -> Result<Option<Ticket>> {
        let row = sqlx::query("SELECT * FROM tickets WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(ticket_from).transpose()
    }

    async fn list_tickets(&self, owner: Id) -> Result<Vec<Ticket>> {
        let rows = sqlx::query("SELECT * FROM tickets WHERE owner_id = ? ORDER BY id")
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(ticket_from).collect()
    }

    async fn delete_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>> {
        let row = sqlx::query("DELETE FROM tickets WHERE id = ? AND owner_id = ? RETURNING *")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(ticket_from).transpose()
    }

    async fn mark_running(&self, id: Id) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tickets SET state = 'running', message = CASE kind WHEN 'container_image' THEN 'generation in progress' ELSE 'export in progress' END, percentage = 0, bytes_loaded = 0, modified = ?
             WHERE id = ? AND state IN ('queued', 'running')",
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
            "UPDATE tickets SET percentage = ?, bytes_loaded = ?, bytes_total = ?, eta = ?, modified = ?
             WHERE id = ? AND state = 'running'",
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
        let now = now_millis();
        let r = match outcome {
            Outcome::Complete { archive, expires_at } => sqlx::query(
                "UPDATE tickets SET state = 'complete', percentage = 100, bytes_loaded = bytes_total, eta = NULL,
                    message = CASE kind WHEN 'container_image' THEN 'image generated' ELSE 'export complete' END, error_message = NULL, archive_key = ?, archive_name = ?,
                    archive_size = ?, archive_sha256 = ?, expires_at = ?, modified = ?
                 WHERE id = ? AND state IN ('queued', 'running')",
            )
            .bind(&archive.key)
            .bind(&archive.file_name)
            .bind(archive.size)
            .bind(&archive.sha256)
            .bind(expires_at)
            .bind(now)
            .bind(id),
            Outcome::Error { message, error_message } => sqlx::query(
                "UPDATE tickets SET state = 'error', eta = NULL, message = ?, error_message = ?, modified = ?
                 WHERE id = ? AND state IN ('queued', 'running')",
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
        let rows = sqlx::query("SELECT * FROM tickets WHERE state = 'complete' AND expires_at <= ? ORDER BY expires_at LIMIT ?")
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(ticket_from).collect()
    }

    async fn mark_expired(&self, id: Id) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tickets SET state = 'expired', message = 'archive expired and deleted', modified = ?
             WHERE id = ? AND state = 'complete'",
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
            "UPDATE tickets SET state = 'cancelled', eta = NULL, message = 'cancelled', modified = ?
             WHERE id = ? AND owner_id = ? AND state IN ('queued', 'running')",
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
        let now = now_millis();
        // One statement: SQLite runs it atomically, so two workers never claim the same job.
        let row = sqlx::query(
            // Fair claiming: a user already running `per_user` jobs waits; among the others, the
            // user running the fewest goes first, then the oldest job.
            // Running jobs are counted once per owner, not once per candidate row.
            "WITH running AS (
               SELECT owner_id, COUNT(*) AS n FROM jobs
               WHERE lease_owner IS NOT NULL AND lease_expires >= ?3
               GROUP BY owner_id)
             UPDATE jobs SET lease_owner = ?1, lease_expires = ?2, attempts = attempts + 1
             WHERE id = (SELECT j.id FROM jobs j
                         LEFT JOIN running r ON r.owner_id = j.owner_id
                         WHERE j.run_after <= ?3 AND (j.lease_owner IS NULL OR j.lease_expires < ?3)
                           AND COALESCE(r.n, 0) < ?4
                         ORDER BY COALESCE(r.n, 0), j.run_after, j.id LIMIT 1)
             RETURNING *",
        )
        .bind(owner)
        .bind(now + ms(lease))
        .bind(now)
        .bind(i64::from(per_user))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(job_from).transpose()
    }

    async fn heartbeat(&self, job: Id, owner: &str, lease: Duration) -> Result<bool> {
        let r = sqlx::query("UPDATE jobs SET lease_expires = ? WHERE id = ? AND lease_owner = ?")
            .bind(now_millis() + ms(lease))
            .bind(job)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn finish_job(&self, job: Id, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ? AND lease_owner = ?")
            .bind(job)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn retry_job(&self, job: Id, owner: &str, error: &str, delay: Duration) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, last_error = ?, run_after = ?
             WHERE id = ? AND lease_owner = ?",
        )
        .bind(error)
        .bind(now_millis() + ms(delay))
        .bind(job)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn release_all_leases(&self) -> Result<u64> {
        let r = sqlx::query("UPDATE jobs SET lease_owner = NULL, lease_expires = NULL, last_error = COALESCE(last_error, 'the server stopped while running this job') WHERE lease_owner IS NOT NULL")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected())
    }
}

async fn touch_bundle(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, bundle: Id) -> Result<()> {
    sqlx::query("UPDATE bundles SET modified = ?, revision = revision + 1 WHERE id = ?")
        .bind(now_millis())
        .bind(bundle)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}
