//! The integration suite again, on the scale-out engines: every server these tests start uses a
//! fresh PostgreSQL database (metadata and job queue) and a fresh prefix in a real Garage bucket
//! (S3) instead of the embedded default. `common::SCALEOUT` is true in this binary (by its name),
//! so `Server::start` does the rest; the test bodies are the same files, unchanged.
//! (The Python SDK suite manages its own servers and runs on the embedded default only.)

// Each included file brings its own `mod common;`: the harness is compiled once per file, on purpose,
// so the files stay unchanged and runnable on their own.
#![allow(clippy::duplicate_mod)]

#[path = "accounts.rs"]
mod accounts;
#[path = "api.rs"]
mod api;
#[path = "apikeys.rs"]
mod apikeys;
#[path = "cloudapi.rs"]
mod cloudapi;
#[path = "containers.rs"]
mod containers;
#[path = "crash_leftovers.rs"]
mod crash_leftovers;
#[path = "distributions.rs"]
mod distributions;
#[path = "durability.rs"]
mod durability;
#[path = "hardening.rs"]
mod hardening;
#[path = "http_details.rs"]
mod http_details;
#[path = "idempotency.rs"]
mod idempotency;
#[path = "imports.rs"]
mod imports;
#[path = "notify.rs"]
mod notify;
#[path = "operations.rs"]
mod operations;
#[path = "polls.rs"]
mod polls;
#[path = "registry.rs"]
mod registry;
#[path = "sdc.rs"]
mod sdc;
#[path = "takeouts.rs"]
mod takeouts;
#[path = "web.rs"]
mod web;
