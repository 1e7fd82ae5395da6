//! The PostgreSQL engine (scale-out: several Satchel instances share one database, metadata and job
//! queue, and claim jobs from it concurrently): connecting, the LISTEN connection, and what
//! PostgreSQL does differently (see [`crate::engine::Engine`]). Every statement shared with SQLite is
//! in the engine-neutral modules. What differs, and why:
//! - Job claims lock the candidate row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on other
//!   instances skip each other's rows instead of queueing behind them.
//! - Queue times (`run_after`, `lease_expires`) come from the database clock (`satchel_now_ms()`), so
//!   instances with skewed clocks agree on when a lease has expired.
//! - SQLite serialises every write transaction (`BEGIN IMMEDIATE`); PostgreSQL does not, so the
//!   multi-statement writes take locks in one order (the owner's cloud lock, the user, then bundle,
//!   then its artifacts or attachments) before reading what they are about to change.
//! - Enqueuing sends `NOTIFY satchel_jobs` inside the transaction, and `Store::wait_for_jobs` waits
//!   on a `LISTEN` connection, so idle workers on every instance wake when a job arrives.

use crate::engine::Engine;
use crate::{db_err, ms};
use satchel_domain::model::Id;
use satchel_domain::{DomainError, Result};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
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
            .map_err(|e| DomainError::Storage(satchel_domain::Cause::context("migrations", e)))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts the LISTEN connection if it is not running yet, so that every NOTIFY from now on wakes
    /// `Store::wait_for_jobs`. `wait_for_jobs` calls this itself; call it up front to not miss jobs
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

/// First key of the owner locks (the two-key advisory lock space, which sqlx's migration lock, a
/// single bigint key, does not share). The ASCII of "StOw" (store owner).
const OWNER_LOCK_CLASS: i32 = 0x5374_4f77;

/// The second key: the owner id folded into 32 bits. Two owners that fold alike only wait for each
/// other; correctness needs just that one owner always maps to the same key.
fn owner_lock_key(owner: Id) -> i32 {
    (owner ^ (owner >> 32)) as i32
}

impl Engine for PostgresStore {
    type Db = Postgres;

    const BEGIN: &'static str = "BEGIN";
    const BEGIN_LOCKING: &'static str = "BEGIN ISOLATION LEVEL READ COMMITTED";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE OF j SKIP LOCKED";
    const NOW: &'static str = "satchel_now_ms()";
    /// `"C"`: byte order, as SQLite's default BINARY collation sorts.
    const BYTE_ORDER: &'static str = r#" COLLATE "C""#;

    /// A transaction-scoped advisory lock keyed by the owner (see `cloud.rs` for why owner-wide).
    /// Advisory rather than a lock on the `users` row: it writes no tuple and does not block that
    /// row's other updaters. `Store::delete_user` takes it before it locks the user row: cloud
    /// writers hold this lock while their inserts' foreign-key checks share-lock the user row, so the
    /// opposite order could deadlock.
    async fn lock_owner(tx: &mut Transaction<'_, Postgres>, owner: Id) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(OWNER_LOCK_CLASS)
            .bind(owner_lock_key(owner))
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Locks the bundle row in the mode its own UPDATE takes. Every transaction that changes a
    /// bundle's artifacts or attachments takes this first, so they serialise per bundle (as SQLite's
    /// single writer does) and delete_bundle / delete_user, which lock the bundle, see no write half
    /// done.
    async fn lock_bundle(tx: &mut Transaction<'_, Postgres>, bundle: Id) -> Result<()> {
        sqlx::query("SELECT 1 FROM bundles WHERE id = $1 FOR NO KEY UPDATE")
            .bind(bundle)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn notify_jobs(tx: &mut Transaction<'_, Postgres>, id: Id) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(JOBS_CHANNEL)
            .bind(id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
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
        .bind(ms(period))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(won.is_some())
    }
}

crate::store::sql_store!(PostgresStore);
