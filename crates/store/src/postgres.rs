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
//! - A trigger announces every ticket row change on `satchel_tickets` (migration 0019), and a second
//!   `LISTEN` connection ([`watch_tickets`], started by `Store::ticket_cache`) makes every instance
//!   forget what its status polls remember of that ticket (`satchel_domain::polls`). While that
//!   connection is down (or silent: it is pinged), the memory is off and dropped.

use crate::engine::Engine;
use crate::{db_err, ms};
use satchel_domain::model::Id;
use satchel_domain::polls::TicketCache;
use satchel_domain::{DomainError, Result};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;

/// The LISTEN/NOTIFY channel that announces runnable jobs. The payload (a ticket or job id) is
/// informational only; listeners just try to claim.
pub const JOBS_CHANNEL: &str = "satchel_jobs";

/// The channel on which the `tickets` trigger announces a changed or deleted ticket (payload: its
/// id). Anything else on it (the watcher's pings) only proves the connection is alive.
pub const TICKETS_CHANNEL: &str = "satchel_tickets";

/// How long the ticket watcher may hear nothing before it pings itself through the channel, and how
/// long without an answer before it takes the connection for dead (and forgets everything).
const PING_AFTER: Duration = Duration::from_secs(1);
const DEAD_AFTER: Duration = Duration::from_secs(3);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Cheap to clone: clones share the pool and the one LISTEN connection.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    signal: Arc<JobSignal>,
    /// What status polls remember of tickets; off until the ticket watcher listens.
    pub(crate) tickets: Arc<TicketCache>,
    watcher: Arc<TicketWatcher>,
    /// Connections handed back to the pool: one per statement or transaction (0 for a store made
    /// `from_pool`, whose pool this store did not configure).
    pub(crate) checkouts: Arc<AtomicU64>,
}

/// The ticket watcher task ([`watch_tickets`]), started by the first `ticket_cache` call.
struct TicketWatcher {
    task: std::sync::OnceLock<Option<JoinHandle<()>>>,
}

impl Drop for TicketWatcher {
    fn drop(&mut self) {
        if let Some(Some(task)) = self.task.get() {
            task.abort();
        }
    }
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
        let checkouts = Arc::new(AtomicU64::new(0));
        let counter = checkouts.clone();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_release(move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(true) })
            })
            .connect(url)
            .await
            .map_err(db_err)?;
        let mut store = Self::from_pool(pool);
        store.checkouts = checkouts;
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
            tickets: Arc::new(TicketCache::new(false)),
            watcher: Arc::new(TicketWatcher {
                task: std::sync::OnceLock::new(),
            }),
            checkouts: Arc::new(AtomicU64::new(0)),
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

/// Keeps `cache` current from the `satchel_tickets` announcements, for as long as the store lives:
/// listens, turns the cache on (which first drops it: nothing read before the LISTEN may be kept),
/// forgets each announced ticket, and when the connection is lost, or stays silent past
/// [`DEAD_AFTER`] although pinged, turns the cache off (dropping it: announcements were missed)
/// and listens again.
async fn watch_tickets(pool: PgPool, cache: Arc<TicketCache>) {
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(TICKETS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = match tokio::time::timeout(Duration::from_secs(10), listener).await {
            Ok(Ok(l)) => l,
            Ok(Err(sqlx::Error::PoolClosed)) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for ticket changes; status polls read the store");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    "listening for ticket changes timed out; status polls read the store"
                );
                continue;
            }
        };
        let heard = Arc::new(std::sync::Mutex::new(Instant::now()));
        cache.set_live(true);
        // The receiving half runs on its own task, so a connection stuck without an error can be
        // abandoned (dropping it) without ever cancelling a read halfway through.
        let receiver = AbortOnDrop(tokio::spawn(receive_tickets(
            listener,
            cache.clone(),
            heard.clone(),
        )));
        let closed = supervise(&pool, receiver, &heard).await;
        cache.set_live(false);
        if closed {
            return;
        }
        tracing::warn!(
            "lost the ticket change announcements; status polls read the store until they resume"
        );
    }
}

/// Waits for the receiver to end, pinging the channel when it has been quiet; true if the pool
/// closed (the store is gone).
async fn supervise(
    pool: &PgPool,
    mut receiver: AbortOnDrop<bool>,
    heard: &std::sync::Mutex<Instant>,
) -> bool {
    let quiet = || heard.lock().map_or(DEAD_AFTER, |t| t.elapsed());
    loop {
        tokio::select! {
            ended = &mut receiver.0 => return ended.unwrap_or(false),
            _ = tokio::time::sleep(PING_AFTER / 2) => {
                let q = quiet();
                if q >= DEAD_AFTER {
                    return false;
                }
                if q >= PING_AFTER {
                    // Our own announcement comes back on the LISTEN connection if it is alive.
                    let ping = sqlx::query("SELECT pg_notify($1, 'ping')")
                        .bind(TICKETS_CHANNEL)
                        .execute(pool);
                    match tokio::time::timeout(PING_AFTER, ping).await {
                        Ok(Err(sqlx::Error::PoolClosed)) => return true,
                        Ok(Err(e)) => tracing::debug!(error = %e, "ticket watcher ping failed"),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Forgets each announced ticket; returns when the connection is lost (false) or the pool closed
/// (true).
async fn receive_tickets(
    mut listener: PgListener,
    cache: Arc<TicketCache>,
    heard: Arc<std::sync::Mutex<Instant>>,
) -> bool {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if let Ok(mut t) = heard.lock() {
                    *t = Instant::now();
                }
                if let Ok(id) = n.payload().parse::<Id>() {
                    cache.changed(id);
                }
            }
            Ok(None) => return false,
            Err(sqlx::Error::PoolClosed) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "ticket change listener failed");
                return false;
            }
        }
    }
}

/// A task aborted when its handle is dropped (the watcher's receiver ends with the watcher).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
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
    const JSON_ROWS: (&'static str, &'static str) =
        ("COALESCE(json_agg(json_build_array(", ")), '[]')::text");

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

    /// Starts the ticket watcher on first use (inside a Tokio runtime; without one there is no
    /// cache: polls read the store).
    fn ticket_cache(&self) -> Option<Arc<TicketCache>> {
        let started = self.watcher.task.get_or_init(|| {
            let rt = tokio::runtime::Handle::try_current().ok()?;
            Some(rt.spawn(watch_tickets(self.pool.clone(), self.tickets.clone())))
        });
        started.as_ref().map(|_| self.tickets.clone())
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
