//! Test support: real, throwaway PostgreSQL servers (no mocks, no containers) and a fresh database
//! per test.
//!
//! [`TempPostgres::start`] runs `initdb` and `pg_ctl` from the Debian `postgresql` package
//! (`/usr/lib/postgresql/*/bin`) on a free loopback port with its data and socket in a temp dir, and
//! removes it all on drop. Tests normally call [`test_database`]: one server per test process
//! ([`shared_server`]), one `CREATE DATABASE test_<random>` per test. With `SATCHEL_TEST_DATABASE_URL`
//! set, that server is used instead and no binaries are needed.
//!
//! Missing binaries are an error that says how to install them, never a silent skip: a green run must
//! mean the PostgreSQL tests ran.

pub mod garage;

use anyhow::{anyhow, bail, Context};
use sqlx::{Connection, Executor, PgConnection};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// Points the tests at an existing server (`postgres://user@host:port/db`, a role that may create
/// databases) instead of starting one.
pub const DATABASE_URL_ENV: &str = "SATCHEL_TEST_DATABASE_URL";

/// Where the server binaries live when they are not in `/usr/lib/postgresql/*/bin`.
pub const BIN_DIR_ENV: &str = "SATCHEL_PG_BIN";

const INSTALL_HINT: &str =
    "the PostgreSQL store tests need a real PostgreSQL server: run `.ci/run` \
     (installs it), or `apt-get install postgresql`, or set SATCHEL_TEST_DATABASE_URL to a server \
     to use, or SATCHEL_PG_BIN to the directory holding initdb and pg_ctl";

/// A PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only. Stopped (immediate mode) and
/// deleted on drop; a watchdog process does the same if the test process dies without dropping it
/// (a static shared server is never dropped, and a panic=abort or kill skips destructors).
pub struct TempPostgres {
    url: String,
    port: u16,
    dir: PathBuf,
    pg_ctl: PathBuf,
    /// PostgreSQL refuses to run as root, so as root every server command runs as `postgres`.
    as_postgres: bool,
    watchdog: Option<Child>,
}

impl TempPostgres {
    /// Initialises and starts a new cluster and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let bin = find_bin_dir()?;
        let as_postgres = running_as_root()?;
        let dir = std::env::temp_dir().join(format!(
            "satchel-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut pg = TempPostgres {
            url: String::new(),
            port: 0,
            dir,
            pg_ctl: bin.join("pg_ctl"),
            as_postgres,
            watchdog: None,
        };
        // From here on, Drop cleans up whatever got created.
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&pg.dir))
                .context("handing the temp dir to the postgres OS user (does it exist?)")?;
        }
        pg.watchdog = Some(pg.spawn_watchdog()?);
        run(pg
            .command(&bin.join("initdb"))
            .arg("-D")
            .arg(pg.data_dir())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]))
        .context("initdb")?;
        // The port is only free when probed; another process may take it before the server binds,
        // so try a few.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            match pg.start_server(port) {
                Ok(()) => {
                    pg.port = port;
                    pg.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                    return Ok(pg);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start PostgreSQL")))
    }

    /// URL of the cluster's `postgres` maintenance database (superuser `postgres`, trust auth).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start_server(&self, port: u16) -> anyhow::Result<()> {
        let log = self.dir.join("server.log");
        // fsync and friends off: the data is thrown away, durability only costs time.
        let opts = format!(
            "-h 127.0.0.1 -p {port} -k {} -F -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.dir.display()
        );
        let res = run(self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-s", "-o", &opts, "start"]));
        res.with_context(|| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            format!("pg_ctl start on port {port}; server log:\n{tail}")
        })?;
        Ok(())
    }

    /// A command for a server binary, run as the `postgres` OS user when we are root.
    fn command(&self, program: &Path) -> Command {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // The postgres user may not be able to read the test's working directory.
        c.current_dir(&self.dir);
        c
    }

    /// A detached shell that waits for this process to end, then stops the server and deletes the
    /// dir. Its own process group keeps a terminal's Ctrl-C from killing it along with the tests.
    fn spawn_watchdog(&self) -> anyhow::Result<Child> {
        let stop = if self.as_postgres {
            r#"runuser -u postgres -- "$3" -D "$4" -m immediate -s stop"#
        } else {
            r#""$3" -D "$4" -m immediate -s stop"#
        };
        let script = format!(
            r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; if [ -f "$4/postmaster.pid" ]; then {stop}; fi; rm -rf "$2""#
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("satchel-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(&self.pg_ctl)
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the PostgreSQL watchdog (sh)")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let stopped = run(self
                .command(&self.pg_ctl)
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-s", "stop"]));
            if let Err(e) = stopped {
                eprintln!("stopping the temporary PostgreSQL server: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// The server the tests of this process share.
pub enum PgServer {
    Temp(TempPostgres),
    /// From `SATCHEL_TEST_DATABASE_URL`.
    External(String),
}

impl PgServer {
    /// URL of a database on the server from which new databases can be created.
    pub fn admin_url(&self) -> &str {
        match self {
            PgServer::Temp(t) => t.url(),
            PgServer::External(u) => u,
        }
    }
}

/// Starts the shared server on first use (or picks up `SATCHEL_TEST_DATABASE_URL`). A failed start
/// fails every caller with the same message.
pub fn shared_server() -> anyhow::Result<&'static PgServer> {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.is_empty() => Ok(PgServer::External(url)),
            _ => TempPostgres::start()
                .map(PgServer::Temp)
                .map_err(|e| format!("{e:#}")),
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// A database of its own for one test. On an external server it is dropped again on drop; a
/// temporary server is deleted whole when the process ends, so there it is left in place.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    drop_from: Option<String>,
}

/// Creates a fresh, empty database on the shared server.
pub async fn test_database() -> anyhow::Result<TestDatabase> {
    let server = tokio::task::spawn_blocking(shared_server)
        .await
        .context("starting PostgreSQL")??;
    let admin = server.admin_url();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin)
        .await
        .with_context(|| format!("connecting to {admin}"))?;
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .with_context(|| format!("creating database {name}"))?;
    conn.close().await.ok();
    let mut url = url::Url::parse(admin).with_context(|| format!("parsing {admin}"))?;
    url.set_path(&name);
    Ok(TestDatabase {
        url: url.to_string(),
        drop_from: matches!(server, PgServer::External(_)).then(|| admin.to_string()),
        name,
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(admin) = self.drop_from.take() else {
            return;
        };
        let name = self.name.clone();
        // Drop may run inside a runtime, which cannot be blocked on; a thread with its own can.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                conn.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await?;
                Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A plain-SQL dump of the database at `url` (`pg_dump` from the server binaries, run as the
/// `postgres` OS user when we are root, as the server is): what a stolen backup would hold.
pub fn pg_dump(url: &str) -> anyhow::Result<Vec<u8>> {
    let bin = find_bin_dir()?.join("pg_dump");
    let mut c = if running_as_root()? {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    // The postgres user may not be able to read the test's working directory.
    c.current_dir("/");
    let out = c
        .args(["--no-owner", "--data-only", url])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir);
        }
        bail!(
            "{BIN_DIR_ENV}={} has no initdb/pg_ctl; {INSTALL_HINT}",
            dir.display()
        );
    }
    // Debian's layout: /usr/lib/postgresql/<major>/bin. Take the newest major.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("no /usr/lib/postgresql/*/bin/initdb found; {INSTALL_HINT}"),
    }
}

fn running_as_root() -> anyhow::Result<bool> {
    // /proc/self belongs to the effective user of the process reading it.
    Ok(std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid()
        == 0)
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(l.local_addr()?.port())
}

/// Runs a command to completion; a failure carries its output.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn temp_server_serves_fresh_databases_and_cleans_up() -> anyhow::Result<()> {
        let pg = tokio::task::spawn_blocking(TempPostgres::start).await??;
        let dir = pg.dir().to_path_buf();
        assert!(dir.join("data/PG_VERSION").is_file());
        let mut conn = PgConnection::connect(pg.url()).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        assert_eq!(one, 1);
        let addr: String = sqlx::query_scalar("SELECT inet_server_addr()::TEXT")
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(addr, "127.0.0.1/32");
        conn.close().await?;
        drop(pg);
        assert!(!dir.exists(), "{} left behind", dir.display());
        Ok(())
    }

    #[tokio::test]
    async fn test_databases_are_distinct_and_empty() -> anyhow::Result<()> {
        let (a, b) = (test_database().await?, test_database().await?);
        assert_ne!(a.name, b.name);
        for db in [&a, &b] {
            let mut conn = PgConnection::connect(&db.url).await?;
            let current: String = sqlx::query_scalar("SELECT current_database()")
                .fetch_one(&mut conn)
                .await?;
            assert_eq!(current, db.name);
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_one(&mut conn)
            .await?;
            assert_eq!(tables, 0);
            conn.close().await?;
        }
        Ok(())
    }
}
