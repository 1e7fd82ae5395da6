//! Satchel's metadata store and job queue. [`sqlite::SqliteStore`] is the embedded default (one file,
//! WAL mode, safe to share with `satchel admin` while the server runs). [`postgres::PostgresStore`]
//! implements the same `satchel_domain::ports::Store` trait for scale-out (several instances, one
//! database and queue). Both also implement `satchel_domain::ports::CloudStore` (keys, images, the
//! object namespace, image exports), in `sqlite_cloud` and `postgres_cloud`.

mod apikeys;
mod blobrefs;
mod idempotency;
mod keys;
pub mod postgres;
mod postgres_cloud;
mod rows;
pub mod sqlite;
mod sqlite_cloud;
mod templates;
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
    DomainError::Storage(e.to_string())
}

/// A duration as whole milliseconds, saturating (the schema's time unit).
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}
