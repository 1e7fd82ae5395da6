//! What differs between the two engines, and nothing else. Every SQL statement and row mapping is
//! written once (`store.rs`, `cloud.rs` and the other port modules, with `$N` placeholders, which
//! sqlx's SQLite driver accepts too); they ask the engine only for:
//! - how a write transaction begins ([`Engine::BEGIN`], [`Engine::BEGIN_LOCKING`]): SQLite takes its
//!   single write lock at `BEGIN IMMEDIATE`, which makes every write transaction atomic by itself;
//!   PostgreSQL runs writers concurrently, so they lock what they are about to change;
//! - the lock clauses appended to a read that must also lock ([`Engine::FOR_UPDATE`],
//!   [`Engine::SKIP_LOCKED`]), empty on SQLite (no row locks, none needed) and the locks that are
//!   statements of their own ([`Engine::lock_owner`], [`Engine::lock_bundle`]), no-ops on SQLite;
//! - the queue clock ([`Engine::NOW`]): the database's, so PostgreSQL instances with skewed clocks
//!   agree on when a lease has expired;
//! - byte-order collation ([`Engine::BYTE_ORDER`]), SQLite's default and PostgreSQL's `"C"`;
//! - how rows are folded into one JSON array of arrays ([`Engine::JSON_ROWS`]), for a read of
//!   thousands of rows (a bundle's artifacts) that would otherwise cross the driver row by row;
//! - job wake-ups ([`Engine::notify_jobs`], [`Engine::wait_for_jobs`]) and periodic-task claims
//!   ([`Engine::claim_periodic`]): NOTIFY/LISTEN and a shared claim row on PostgreSQL; on SQLite the
//!   one instance wakes its own workers and runs every periodic task;
//! - what keeps the status polls' ticket memory current ([`Engine::ticket_cache`]): on both, the
//!   store forgets a ticket when it writes it; PostgreSQL also listens for the changes other
//!   processes announce (a trigger), SQLite has only this process's writes to see.
//!
//! The store types themselves implement it (`SqliteStore`, `PostgresStore`): the PostgreSQL side
//! needs the store's LISTEN connection for its wake-ups.

use satchel_domain::model::Id;
use satchel_domain::polls::TicketCache;
use satchel_domain::Result;
use sqlx::Transaction;
use std::sync::Arc;
use std::time::Duration;

pub(crate) trait Engine {
    type Db: sqlx::Database;

    /// Begins a write transaction that changes one thing (an artifact, a ticket and its job...).
    const BEGIN: &'static str;
    /// Begins a write transaction that takes locks and then reads what it is about to change: on
    /// PostgreSQL at READ COMMITTED whatever the server default, so each read after a lock wait sees
    /// what the lock's previous holder committed (under REPEATABLE READ the snapshot would date from
    /// before the wait).
    const BEGIN_LOCKING: &'static str;
    /// Begins a read-only transaction whose reads all see one snapshot (several SELECTs that must
    /// agree, such as an appliance with its parts): SQLite's deferred read transaction, PostgreSQL's
    /// REPEATABLE READ.
    const BEGIN_SNAPSHOT: &'static str;
    /// Appended to a SELECT that must lock the rows it reads until the transaction ends.
    const FOR_UPDATE: &'static str;
    /// Appended to the job claim's candidate SELECT (aliased `j`): concurrent claimers skip each
    /// other's candidate instead of queueing behind it.
    const SKIP_LOCKED: &'static str;
    /// The current time in milliseconds, as SQL: the database's clock.
    const NOW: &'static str;
    /// Appended to an ORDER BY of text to sort by bytes.
    const BYTE_ORDER: &'static str;
    /// Wraps a column list into one JSON text of an array of arrays, one per row, as the single
    /// column of an aggregate SELECT: `{JSON_ROWS.0}col, col{JSON_ROWS.1}`. No rows give `[]`.
    const JSON_ROWS: (&'static str, &'static str);

    /// Takes `owner`'s cloud write lock until the transaction ends (see `postgres.rs`).
    async fn lock_owner(tx: &mut Transaction<'_, Self::Db>, owner: Id) -> Result<()>;
    /// Locks the bundle row against other writers of its artifacts and attachments.
    async fn lock_bundle(tx: &mut Transaction<'_, Self::Db>, bundle: Id) -> Result<()>;
    /// Announces that a job may be runnable, delivered when `tx` commits.
    async fn notify_jobs(tx: &mut Transaction<'_, Self::Db>, id: Id) -> Result<()>;
    /// `Store::wait_for_jobs`.
    async fn wait_for_jobs(&self, timeout: Duration) -> bool;
    /// `Store::claim_periodic`.
    async fn claim_periodic(&self, name: &str, owner: &str, period: Duration) -> Result<bool>;
    /// `Store::ticket_cache`.
    fn ticket_cache(&self) -> Option<Arc<TicketCache>>;
}
