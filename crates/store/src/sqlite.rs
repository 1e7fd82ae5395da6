//! The SQLite engine (the embedded default): opening the file, and what SQLite does differently
//! (see [`crate::engine::Engine`]). Every statement is in the engine-neutral modules.
//!
//! SQLite has one writer at a time: every write transaction begins `BEGIN IMMEDIATE`, which takes
//! the write lock up front (not at the first write, where two readers upgrading would deadlock), so
//! the multi-statement writes are atomic without row locks. Only this process's workers claim jobs,
//! and they are woken directly, so there is no notification channel; every periodic task runs here.

use crate::db_err;
use crate::engine::Engine;
use satchel_domain::model::Id;
use satchel_domain::polls::TicketCache;
use satchel_domain::{DomainError, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The embedded store: one file, WAL mode, safe to share with `satchel admin` while the server runs.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// What status polls remember of tickets; every ticket write made here forgets (the one server
    /// on this file makes them all, but `satchel admin` in another process: see `polls::MAX_AGE`).
    pub(crate) tickets: Arc<TicketCache>,
    /// Connections handed back to the pool: one per statement or transaction.
    pub(crate) checkouts: Arc<AtomicU64>,
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
            .busy_timeout(Duration::from_secs(10))
            // 1 MiB of page cache per connection instead of SQLite's 2 MiB default: eight
            // connections' caches were a fifth of the server's memory after listing a bundle of
            // 16,000 files, and the file's pages are in the OS page cache anyway.
            .pragma("cache_size", "-1024");
        let checkouts = Arc::new(AtomicU64::new(0));
        let counter = checkouts.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .after_release(move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(true) })
            })
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| DomainError::Storage(satchel_domain::Cause::context("migrations", e)))?;
        Ok(SqliteStore {
            pool,
            tickets: Arc::new(TicketCache::new(true)),
            checkouts,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Engine for SqliteStore {
    type Db = Sqlite;

    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_LOCKING: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN DEFERRED";
    const FOR_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    /// The system clock, as the rest of the process reads it (same machine), in whole milliseconds.
    const NOW: &'static str = "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";
    /// SQLite's default collation (BINARY) already sorts by bytes.
    const BYTE_ORDER: &'static str = "";
    const JSON_ROWS: (&'static str, &'static str) = ("json_group_array(json_array(", "))");

    async fn lock_owner(_: &mut Transaction<'_, Sqlite>, _: Id) -> Result<()> {
        Ok(())
    }

    async fn lock_bundle(_: &mut Transaction<'_, Sqlite>, _: Id) -> Result<()> {
        Ok(())
    }

    async fn notify_jobs(_: &mut Transaction<'_, Sqlite>, _: Id) -> Result<()> {
        Ok(())
    }

    /// No signal: sleeps the whole `timeout` (polling), as the port's default does.
    async fn wait_for_jobs(&self, timeout: Duration) -> bool {
        tokio::time::sleep(timeout).await;
        false
    }

    fn ticket_cache(&self) -> Option<Arc<TicketCache>> {
        Some(self.tickets.clone())
    }

    /// One instance: it runs every periodic task.
    async fn claim_periodic(&self, _: &str, _: &str, _: Duration) -> Result<bool> {
        Ok(true)
    }
}

crate::store::sql_store!(SqliteStore);
