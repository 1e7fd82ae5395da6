//! Test harness: starts the real `satchel` binary on a free loopback port with a temp data dir.
#![allow(dead_code)]

pub mod cloud;
pub mod podman;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NS: &str = "http://www.usharesoft.com/uforge";

/// Flags for runs where one user submits far more than the per-user defaults allow (10 tickets
/// outstanding, 100 archives, 2 running jobs, 50 requests/s): they measure the queue, not the limits.
pub const UNLIMITED: [&str; 10] = [
    "--workers",
    "2",
    "--quota-tickets",
    "0",
    "--quota-archives",
    "0",
    "--user-jobs",
    "1000",
    "--user-rate",
    "0",
];

pub struct Server {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub extra: Vec<String>,
    /// `--database-url ... --blob-url ...` in scale-out runs.
    pub storage: Vec<String>,
    pub _db: Option<satchel_testkit::TestDatabase>,
    /// The Garage key prefix of this server's blobs (scale-out runs).
    pub blob_prefix: Option<String>,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_satchel"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn admin(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    admin_with(dir, &[], args, stdin)
}

/// `satchel admin` with storage flags (`--database-url ...` in scale-out runs) before the subcommand.
pub fn admin_with(
    dir: &std::path::Path,
    storage: &[String],
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut c = Command::new(bin())
        .arg("admin")
        .arg("--data-dir")
        .arg(dir)
        .args(storage)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    c.wait_with_output().unwrap()
}

const fn starts_with(s: &str, prefix: &str) -> bool {
    let (s, p) = (s.as_bytes(), prefix.as_bytes());
    if s.len() < p.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if s[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Test binaries named `scaleout*` run the same tests on PostgreSQL + Garage (S3) instead of the
/// embedded default: tests/scaleout.rs includes the other test files as modules.
pub const SCALEOUT: bool = starts_with(env!("CARGO_CRATE_NAME"), "scaleout");

/// The storage flags of one test server (also given to `satchel admin`): a fresh PostgreSQL
/// database, a fresh Garage prefix and a secrets key file in `dir` in scale-out runs (the database handle keeps it alive), nothing for the embedded default.
async fn storage_flags(
    dir: &std::path::Path,
) -> (
    Vec<String>,
    Option<satchel_testkit::TestDatabase>,
    Option<String>,
) {
    if !SCALEOUT {
        return (Vec::new(), None, None);
    }
    let db = satchel_testkit::test_database()
        .await
        .expect("a test database");
    let (url, t) = satchel_testkit::garage::test_bucket_url().expect("Garage");
    let prefix = url.rsplit('/').next().unwrap_or_default().to_string();
    // Scale-out instances must be given the cloud account secrets key (they never make one up);
    // every instance on this database shares this one (`second` copies these flags).
    let key = dir.join("shared-secrets.key");
    let hex: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
    std::fs::write(&key, hex).unwrap();
    let flags = vec![
        "--secrets-key-file".into(),
        key.display().to_string(),
        "--database-url".into(),
        db.url.clone(),
        "--blob-url".into(),
        url,
        "--s3-endpoint".into(),
        t.endpoint.clone(),
        "--s3-region".into(),
        t.region.clone(),
        "--s3-access-key-id".into(),
        t.access_key_id.clone(),
        "--s3-secret-access-key".into(),
        t.secret_access_key.clone(),
    ];
    (flags, Some(db), Some(prefix))
}

impl Server {
    /// A server with users alice and bob (software_upload), carol (no entitlement) and root (admin).
    pub async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (storage, db, blob_prefix) = storage_flags(dir.path()).await;
        for (login, ents) in [("alice", true), ("bob", true), ("carol", false)] {
            let mut args = vec!["user", "add", login, "--password-stdin"];
            if ents {
                args.extend(["--entitlement", "software_upload"]);
            }
            let out = admin_with(dir.path(), &storage, &args, Some(&format!("{login}-pw\n")));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = admin_with(
            dir.path(),
            &storage,
            &["user", "add", "root", "--password-stdin", "--admin"],
            Some("root-pw\n"),
        );
        assert!(out.status.success());
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut s = Server {
            child: None,
            dir,
            port: free_port(),
            extra,
            storage,
            _db: db,
            blob_prefix,
        };
        s.spawn().await;
        s
    }

    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.storage)
            .args(&self.extra)
            // Instances share the queue, so a restarted one does not release leases at start: a
            // dead worker's jobs are taken over when the lease runs out. Keep that short in tests.
            .args(
                if SCALEOUT && !self.extra.iter().any(|a| a == "--job-lease") {
                    &["--job-lease", "3s"][..]
                } else {
                    &[][..]
                },
            )
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/status", self.base())).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Another instance on the same PostgreSQL database and Garage prefix (scale-out runs only), with
    /// its own port and scratch directory.
    pub async fn second(&self, extra: &[&str]) -> Server {
        if !SCALEOUT {
            panic!("a second instance needs the shared scale-out engines");
        }
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut s = Server {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            extra,
            storage: self.storage.clone(),
            _db: None,
            blob_prefix: self.blob_prefix.clone(),
        };
        s.spawn().await;
        s
    }

    /// The PostgreSQL database of this server (scale-out runs).
    pub fn database_url(&self) -> Option<String> {
        self.storage
            .iter()
            .position(|a| a == "--database-url")
            .and_then(|i| self.storage.get(i + 1).cloned())
    }

    /// Runs one statement on this server's database (SQLite file or PostgreSQL), as another
    /// process would: the rows it affected.
    pub async fn execute_sql(&self, sql: &str) -> u64 {
        match self.database_url() {
            Some(url) => {
                let db = sqlx::PgPool::connect(&url).await.unwrap();
                let n = sqlx::query(sql).execute(&db).await.unwrap().rows_affected();
                db.close().await;
                n
            }
            None => {
                let url = format!("sqlite://{}", self.dir.path().join("satchel.db").display());
                let db = sqlx::SqlitePool::connect(&url).await.unwrap();
                let n = sqlx::query(sql).execute(&db).await.unwrap().rows_affected();
                db.close().await;
                n
            }
        }
    }

    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        admin_with(self.dir.path(), &self.storage, args, stdin)
    }

    /// Every stored blob as (key, size): the data dir's files, or the Garage prefix's objects.
    pub async fn blobs(&self) -> Vec<(String, u64)> {
        use futures::TryStreamExt;
        match &self.blob_prefix {
            None => walk_files(&self.dir.path().join("blobs"))
                .into_iter()
                .map(|p| {
                    let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                    (p.to_string_lossy().to_string(), size)
                })
                .collect(),
            Some(prefix) => {
                let g = satchel_testkit::garage::shared_garage().unwrap();
                let store = g.store(prefix).unwrap();
                let list: Vec<_> = store.list(None).try_collect().await.unwrap();
                list.into_iter()
                    .map(|m| (m.location.to_string(), m.size))
                    .collect()
            }
        }
    }

    /// Reads one stored object as [`Server::blobs`] names it (a file, or a Garage key).
    pub async fn read_blob(&self, name: &str) -> Vec<u8> {
        match &self.blob_prefix {
            None => std::fs::read(name).unwrap(),
            Some(prefix) => {
                let g = satchel_testkit::garage::shared_garage().unwrap();
                let store = g.store(prefix).unwrap();
                let p = object_store::path::Path::from(name);
                store.get(&p).await.unwrap().bytes().await.unwrap().to_vec()
            }
        }
    }

    /// Replaces one stored object's bytes behind the server's back (bit rot, a tampered disk).
    pub async fn overwrite_blob(&self, name: &str, data: Vec<u8>) {
        match &self.blob_prefix {
            None => std::fs::write(name, data).unwrap(),
            Some(prefix) => {
                let g = satchel_testkit::garage::shared_garage().unwrap();
                let store = g.store(prefix).unwrap();
                let p = object_store::path::Path::from(name);
                store.put(&p, data.into()).await.unwrap();
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            let _ = c.wait();
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    pub fn client(&self, login: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.base(),
            login: login.into(),
            password: format!("{login}-pw"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub login: String,
    pub password: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// Text of the first `<name>` element.
    pub fn field(&self, name: &str) -> Option<String> {
        let t = self.text();
        let open = format!("<{name}>");
        let start = t.find(&open)? + open.len();
        let end = t[start..].find(&format!("</{name}>"))? + start;
        Some(t[start..end].to_string())
    }
    pub fn id(&self) -> i64 {
        self.field("dbId")
            .unwrap_or_else(|| panic!("no dbId in {}", self.text()))
            .parse()
            .unwrap()
    }
    pub fn error_message(&self) -> String {
        self.field("message").unwrap_or_default()
    }
    pub fn header(&self, h: &str) -> Option<String> {
        self.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
    /// Every non-2xx answer must be a namespaced uforgeError carrying the status.
    pub fn assert_uforge_error(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.text());
        let t = self.text();
        assert!(
            t.contains("<ns0:uforgeError xmlns:ns0=\"http://www.usharesoft.com/uforge\">"),
            "{t}"
        );
        assert_eq!(
            self.field("statusCode").as_deref(),
            Some(status.to_string().as_str()),
            "{t}"
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/xml")
        );
    }
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http
            .request(m, self.url(path))
            .basic_auth(&self.login, Some(&self.password));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            rb = rb.header("Content-Type", "application/xml");
        }
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            rb = rb.header("Accept", "application/xml");
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Like `req`, but a connection reset (the server refusing an oversized body mid-upload) is
    /// reported as `None` instead of a panic.
    pub async fn try_req(&self, method: &str, path: &str, body: Vec<u8>) -> Option<Resp> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .http
            .request(m, self.url(path))
            .basic_auth(&self.login, Some(&self.password))
            .body(body)
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.ok()?.to_vec();
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, None, &[]).await
    }

    pub async fn create_bundle(&self, name: &str, version: &str) -> i64 {
        let doc = format!("<ns1:mySoftware xmlns:ns1=\"{NS}\"><name>{name}</name><version>{version}</version><description>test bundle</description></ns1:mySoftware>");
        let r = self
            .req(
                "POST",
                &format!("/users/{}/mysoftware", self.login),
                Some(doc.into_bytes()),
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.id()
    }

    pub async fn create_artifact(
        &self,
        msid: i64,
        parent: Option<i64>,
        name: &str,
        kind: &str,
    ) -> i64 {
        let doc = format!("<ns1:softwareArtifact xmlns:ns1=\"{NS}\"><name>{name}</name><type>{kind}</type></ns1:softwareArtifact>");
        let path = match parent {
            None => format!("/users/{}/mysoftware/{msid}/artifacts", self.login),
            Some(p) => format!(
                "/users/{}/mysoftware/{msid}/artifacts/{p}/subsoftwareartifacts",
                self.login
            ),
        };
        let r = self.req("POST", &path, Some(doc.into_bytes()), &[]).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.id()
    }

    pub async fn upload(&self, msid: i64, said: i64, name: &str, data: &[u8]) {
        let r = self
            .req(
                "POST",
                &format!(
                    "/users/{}/mysoftware/{msid}/artifacts/{said}/bin/{name}",
                    self.login
                ),
                Some(data.to_vec()),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// Creates an appliance template holding `bundles` (by reference); its id.
    pub async fn create_appliance(&self, name: &str, version: &str, bundles: &[i64]) -> i64 {
        let uris: String = bundles
            .iter()
            .map(|m| format!("<uri>users/{}/mysoftware/{m}</uri>", self.login))
            .collect();
        let body = format!(
            "<ns1:appliance xmlns:ns1=\"{NS}\"><name>{name}</name><version>{version}</version>\
             <mySoftwareUris>{uris}</mySoftwareUris></ns1:appliance>"
        );
        let r = self
            .req(
                "POST",
                &format!("/users/{}/appliances", self.login),
                Some(body.into_bytes()),
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.id()
    }

    pub async fn add_file(&self, msid: i64, parent: Option<i64>, name: &str, data: &[u8]) -> i64 {
        let id = self.create_artifact(msid, parent, name, "file").await;
        self.upload(msid, id, name, data).await;
        id
    }

    pub async fn export(&self, msid: i64, format: &str) -> i64 {
        let r = self
            .req(
                "POST",
                &format!(
                    "/users/{}/mysoftware/{msid}/exports?outputFormat={format}",
                    self.login
                ),
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.id()
    }

    /// Starts an appliance export (in `format`, or the server's default): its id.
    pub async fn export_appliance(&self, aid: i64, format: Option<&str>) -> i64 {
        let query = format
            .map(|f| format!("?outputFormat={f}"))
            .unwrap_or_default();
        let r = self
            .req(
                "POST",
                &format!("/users/{}/appliances/{aid}/exports{query}", self.login),
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.id()
    }

    pub async fn wait_export(&self, msid: i64, eid: i64, timeout: Duration) -> Resp {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self
                .get(&format!(
                    "/users/{}/mysoftware/{msid}/exports/{eid}/status",
                    self.login
                ))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            let pct: i64 = r.field("percentage").unwrap().parse().unwrap();
            assert!((0..=100).contains(&pct));
            if r.field("complete").as_deref() == Some("true")
                || r.field("error").as_deref() == Some("true")
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "export {eid} did not finish: {}",
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Members of a .tar.gz: path -> content (directories as empty with a trailing slash).
pub fn untar(data: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let gz = flate2::read::MultiGzDecoder::new(data);
    let mut ar = tar::Archive::new(gz);
    let mut out = std::collections::BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut p = e.path().unwrap().to_string_lossy().to_string();
        if e.header().entry_type().is_dir() && !p.ends_with('/') {
            p.push('/');
        }
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        out.insert(p, body);
    }
    out
}

pub fn walk_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A random byte (for test keys), from the OS.
fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    b[0]
}

/// Restarts `s` with every log target at TRACE, appending to `trace.log` in its data dir.
pub async fn restart_with_trace_logs(s: &mut Server) -> PathBuf {
    s.kill9();
    let path = s.dir.path().join("trace.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let child = std::process::Command::new(bin())
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", s.port))
        .arg("--data-dir")
        .arg(s.dir.path())
        .args(&s.storage)
        .args(&s.extra)
        .env("RUST_LOG", "trace")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    s.child = Some(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !matches!(reqwest::get(format!("{}/status", s.base())).await, Ok(r) if r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    path
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every place a secret could rest: each file of the data directory (SQLite file, WAL, blob
/// directory, logs), each object of the Garage prefix, and a dump of the PostgreSQL database.
pub async fn everything_stored(s: &Server) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walk_files(s.dir.path())
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            )
        })
        .collect();
    if let Some(prefix) = &s.blob_prefix {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let store = satchel_testkit::garage::shared_garage()
            .unwrap()
            .store(prefix)
            .unwrap();
        let list: Vec<_> = store.list(None).try_collect().await.unwrap();
        for m in list {
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            out.push((format!("garage:{}", m.location), bytes.to_vec()));
        }
    }
    if let Some(url) = s.database_url() {
        let dump = satchel_testkit::pg_dump(&url).expect("pg_dump");
        assert!(
            contains(&dump, "CredAccountAws"),
            "the dump holds the accounts"
        );
        out.push(("pg_dump".into(), dump));
    }
    out
}

pub fn assert_nowhere(stored: &[(String, Vec<u8>)], secrets: &[&str]) {
    for (place, bytes) in stored {
        for secret in secrets {
            assert!(
                !contains(bytes, secret),
                "{secret:?} in plaintext in {place}"
            );
        }
    }
}
