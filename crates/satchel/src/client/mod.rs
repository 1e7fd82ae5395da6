//! The client commands (`login`, `bundles`, `export`, `exports`): a UForge client over HTTP, like
//! hammr, that never opens a data dir. `args.rs` declares the commands, `creds.rs` the stored login,
//! `api.rs` the HTTP/wire details (documents, errors, status polls, ranged downloads), `out.rs`
//! what is shown (bars, `--quiet`, `--json`), `cmds.rs` the flows.

mod api;
pub mod args;
mod cloud;
mod cmds;
mod creds;
mod out;

pub use args::Command;

/// The exit codes, as `--help` documents them.
pub const EXIT_CODES: &str = "\
Exit codes (client commands):
  0  done
  1  the server reported an error
  2  usage (bad arguments, ambiguous names)
  3  not found
  4  authentication (wrong or missing credentials, not allowed)
  5  network (server unreachable, connection lost; re-run to resume a download)
  6  verification failed (the archive's sha256 does not match the server's digest)";

/// Why a client command failed: one readable line and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub msg: String,
}

pub const SERVER: i32 = 1;
pub const USAGE: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const AUTH: i32 = 4;
pub const NETWORK: i32 = 5;
pub const VERIFY: i32 = 6;

impl Failure {
    pub fn new(code: i32, msg: impl Into<String>) -> Failure {
        Failure {
            code,
            msg: msg.into(),
        }
    }
}

pub type Res<T> = Result<T, Failure>;

/// Runs one client command; the process's exit code.
pub async fn run(cmd: Command) -> i32 {
    match cmds::run(cmd).await {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("satchel: {}", f.msg);
            f.code
        }
    }
}
