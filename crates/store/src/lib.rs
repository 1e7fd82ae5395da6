//! Satchel's metadata store and job queue. [`sqlite::SqliteStore`] is the embedded default (one file,
//! WAL mode, safe to share with `satchel admin` while the server runs). A PostgreSQL implementation of
//! the same `satchel_domain::ports::Store` trait is the scale-out path.

pub mod sqlite;
mod sqlite_cloud;

use satchel_domain::DomainError;

pub(crate) fn db_err(e: sqlx::Error) -> DomainError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return DomainError::Conflict("already exists".into());
        }
    }
    DomainError::Storage(e.to_string())
}
