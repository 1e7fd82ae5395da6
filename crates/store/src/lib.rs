//! Satchel's metadata store and job queue. [`sqlite::SqliteStore`] is the embedded default (one file,
//! WAL mode, safe to share with `satchel admin` while the server runs). [`postgres::PostgresStore`]
//! is the scale-out store (several instances, one database and queue). Both implement every port of
//! `satchel_domain::ports` (`Store`, `CloudStore`, ...) with the same code.
//!
//! Where things are: every SQL statement is written once, for both engines (`$N` placeholders, which
//! sqlx's SQLite driver accepts too), in the module of its port: `store.rs` (`Store`: users, bundles,
//! tickets, the job queue), `cloud.rs` (`CloudStore`), `templates.rs`, `distributions.rs`, `appliances.rs`, `usage.rs`, `idempotency.rs`,
//! `apikeys.rs`, `keys.rs`, `blobrefs.rs`, `notify.rs`; row mapping in `rows.rs`; ticket state moves, as the
//! domain defines them, in `tickets.rs`. `store::sql_store!` instantiates all of them for each
//! engine's store type. What the engines do differently is the [`engine::Engine`] trait, implemented
//! in `sqlite.rs` and `postgres.rs`, which also hold connecting and migrating.

mod accounts;
mod apikeys;
mod appliances;
mod blobrefs;
mod cloud;
mod distributions;
mod engine;
mod idempotency;
mod imports;
mod keys;
mod notify;
pub mod postgres;
mod registry;
mod rows;
pub mod sqlite;
mod store;
mod templates;
mod tickets;
mod usage;

use satchel_domain::DomainError;

pub(crate) fn db_err(e: sqlx::Error) -> DomainError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return DomainError::Conflict("already exists".into());
        }
        if d.is_foreign_key_violation() {
            // What it referred to was deleted meanwhile (a template under a new image, ...).
            return DomainError::NotFound("it refers to something that was just deleted".into());
        }
    }
    DomainError::Storage(satchel_domain::Cause::of(e))
}

/// A duration as whole milliseconds, saturating (the schema's time unit).
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}
