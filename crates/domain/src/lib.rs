//! Satchel's domain: what users own, who may see it, what an export ticket is and what goes into its archive.
//!
//! Nothing here knows HTTP or SQL. The wire faces call [`service::Satchel`]; storage and the job queue are
//! reached through the [`ports`] traits; blobs through `satchel-blob` (the `object_store` crate).

pub mod accounts;
pub mod apikeys;
pub mod appliance;
pub mod appliance_export;
pub mod auth;
pub mod cloud;
pub mod container;
pub mod distribution;
pub mod download_ids;
pub mod error;
pub mod export;
pub mod idempotency;
pub mod import;
pub mod importer;
pub mod limits;
pub mod model;
pub mod names;
pub mod notify;
pub mod polls;
pub mod ports;
pub mod quota;
pub mod registry;
pub mod service;
pub mod sweep;
pub mod takeout;

pub use error::{Cause, DomainError, Result, RuleCode};
