//! The UForge face over HTTP: JSON documents (`Accept: application/json`), its errors
//! (`uforgeError`) as one line and an exit code, status polls with `If-None-Match`, and ranged,
//! resumable, verified downloads. Nothing outside the client module knows these details.

use super::creds::Creds;
use super::{Failure, Res, AUTH, NETWORK, NOT_FOUND, SERVER, USAGE, VERIFY};
use indicatif::ProgressBar;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub struct Api {
    http: reqwest::Client,
    base: String,
    pub user: String,
    password: String,
}

// ------------------------------------------------------------------ documents (lenient: unknown fields ignored)

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    pub db_id: Option<i64>,
    pub bytes_loaded: i64,
    pub bytes_total: i64,
    pub cancelled: bool,
    pub complete: bool,
    pub error: bool,
    pub error_message: Option<String>,
    pub message: Option<String>,
    pub percentage: i64,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Bundle {
    pub db_id: i64,
    pub name: String,
    pub version: String,
    pub size: i64,
    pub description: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BundleList {
    my_software_list: BundleItems,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BundleItems {
    my_software: Vec<Bundle>,
}

/// A bundle export (`softwareBundleExport`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Export {
    pub db_id: i64,
    pub digest: Option<String>,
    #[serde(alias = "applianceName")]
    pub bundle_name: String,
    #[serde(alias = "applianceVersion")]
    pub bundle_version: String,
    pub status: Status,
    /// `users/{uid}/mysoftware/{msid}/exports/{eid}`.
    pub uri: String,
    pub created: String,
}

impl Export {
    /// The bundle id, from the export's URI.
    pub fn bundle_id(&self) -> Option<i64> {
        let parts: Vec<&str> = self.uri.split('/').collect();
        let i = parts.iter().position(|p| *p == "mysoftware")?;
        parts.get(i + 1)?.parse().ok()
    }
}

/// A container image (`image`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Image {
    pub db_id: i64,
    pub name: String,
    pub file_extension: String,
    pub status: Status,
    /// `users/{uid}/mysoftware/{msid}/templates/{tid}/images/{itid}`.
    pub uri: String,
}

/// `GET users/{uid}/mysoftware/exports` (`softwareBundleExports`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ExportList {
    software_bundle_exports: ExportItems,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ExportItems {
    software_bundle_export: Vec<Export>,
}

/// What one status poll saw.
pub enum Poll {
    Changed(Status, Option<String>),
    Unchanged,
    /// `429` or `503`: ask again after this long (`Retry-After`, else the caller's back-off).
    Busy(Option<std::time::Duration>),
}

/// What a download did.
pub struct Downloaded {
    pub path: PathBuf,
    pub size: u64,
    /// Bytes received in this run (less than `size` when resumed).
    pub transferred: u64,
    pub resumed_from: u64,
    pub sha256: String,
    /// Whether the server sent a digest to check against (and it matched).
    pub verified: bool,
}

// ------------------------------------------------------------------ errors

fn network(e: reqwest::Error, url: &str) -> Failure {
    let mut msg = format!("cannot reach {url}");
    let mut src: Option<&dyn std::error::Error> = Some(&e);
    let mut last = String::new();
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    if !last.is_empty() {
        msg.push_str(": ");
        msg.push_str(&last);
    }
    Failure::new(NETWORK, msg)
}

/// The server's own message from a `uforgeError` (JSON or XML), else the status text.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let m = v
            .pointer("/localizedErrorMsg/message")
            .or_else(|| v.get("errorMsg"))
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str());
        if let Some(m) = m {
            return m.to_string();
        }
    }
    let t = String::from_utf8_lossy(body);
    if let Some(s) = t.find("<message>") {
        if let Some(e) = t[s..].find("</message>") {
            return t[s + 9..s + e]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&");
        }
    }
    status
        .canonical_reason()
        .unwrap_or("unexpected answer")
        .to_string()
}

pub fn status_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        401 | 403 => AUTH,
        404 | 410 => NOT_FOUND,
        _ => SERVER,
    }
}

async fn failure(r: Response) -> Failure {
    let status = r.status();
    let body = r.bytes().await.unwrap_or_default();
    let msg = error_message(status, &body);
    Failure::new(
        status_code(status),
        format!("{msg} (HTTP {})", status.as_u16()),
    )
}

fn header(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Failure {
    Failure::new(USAGE, format!("{what} {}: {e}", p.display()))
}

/// `FILE.part` and the sidecar holding the ETag the part was downloaded under.
pub fn part_paths(out: &Path) -> (PathBuf, PathBuf) {
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let mut tag = part.clone();
    tag.push(".etag");
    (PathBuf::from(part), PathBuf::from(tag))
}

// ------------------------------------------------------------------ requests

/// `--fsync`: downloads are flushed to disk before the rename (set once per command).
pub static DURABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The HTTP client for `base`. The system's root certificates are loaded only for `https://`: reading
/// and parsing them is most of a short command's start-up, and plain HTTP never uses them.
pub fn http_client(base: &str) -> Res<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("satchel-client/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .tls_built_in_root_certs(base.starts_with("https://"))
        .build()
        .map_err(|e| Failure::new(USAGE, format!("HTTP client: {e}")))
}

impl Api {
    pub fn new(c: &Creds) -> Res<Api> {
        let http = http_client(&c.url)?;
        Ok(Api {
            http,
            base: c.url.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api{path}", self.base)
    }

    /// `/users/{login}` (the caller's own things).
    pub fn me(&self) -> String {
        format!("/users/{}", self.user)
    }

    fn request(&self, m: Method, path: &str) -> RequestBuilder {
        self.http
            .request(m, self.url(path))
            .basic_auth(&self.user, Some(&self.password))
            .header(header::ACCEPT, "application/json")
    }

    async fn send(&self, rb: RequestBuilder, path: &str) -> Res<Response> {
        rb.send().await.map_err(|e| network(e, &self.url(path)))
    }

    async fn doc<T: DeserializeOwned>(&self, m: Method, path: &str) -> Res<T> {
        self.doc_with(m, path, None).await
    }

    async fn doc_with<T: DeserializeOwned>(
        &self,
        m: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Res<T> {
        let mut rb = self.request(m, path);
        if let Some(b) = body {
            rb = rb
                .header(header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let r = self.send(rb, path).await?;
        if !r.status().is_success() {
            return Err(failure(r).await);
        }
        let body = r.bytes().await.map_err(|e| network(e, &self.url(path)))?;
        serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                SERVER,
                format!("unexpected answer from {}: {e}", self.url(path)),
            )
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Res<T> {
        self.doc(Method::GET, path).await
    }

    pub async fn delete(&self, path: &str) -> Res<()> {
        let r = self.send(self.request(Method::DELETE, path), path).await?;
        if !r.status().is_success() {
            return Err(failure(r).await);
        }
        Ok(())
    }

    /// Checks the login (`GET /users/{login}`).
    pub async fn check_login(&self) -> Res<()> {
        let _: serde_json::Value = self.get(&self.me()).await.map_err(|f| {
            if f.code == NOT_FOUND {
                Failure::new(AUTH, f.msg)
            } else {
                f
            }
        })?;
        Ok(())
    }

    pub async fn bundles(&self) -> Res<Vec<Bundle>> {
        let l: BundleList = self.get(&format!("{}/mysoftware", self.me())).await?;
        Ok(l.my_software_list.my_software)
    }

    pub async fn bundle(&self, id: i64) -> Res<Bundle> {
        self.get(&format!("{}/mysoftware/{id}", self.me())).await
    }

    /// The user's bundle exports, across bundles (`users/{uid}/exports` lists appliance exports,
    /// which the client's commands do not handle).
    pub async fn exports(&self) -> Res<Vec<Export>> {
        let l: ExportList = self
            .get(&format!("{}/mysoftware/exports", self.me()))
            .await?;
        let mut all = l.software_bundle_exports.software_bundle_export;
        all.retain(|e| e.bundle_id().is_some());
        Ok(all)
    }

    pub fn export_path(&self, msid: i64, eid: i64) -> String {
        format!("{}/mysoftware/{msid}/exports/{eid}", self.me())
    }

    pub async fn start_export(&self, msid: i64, format: &str) -> Res<Export> {
        self.doc(
            Method::POST,
            &format!(
                "{}/mysoftware/{msid}/exports?outputFormat={format}",
                self.me()
            ),
        )
        .await
    }

    /// Generates a container image from template `tid` of bundle `msid`.
    pub async fn start_image(&self, msid: i64, tid: i64, name: Option<&str>) -> Res<Image> {
        // Only compressed images can be downloaded (an uncompressed one is refused with a 403).
        let mut body = serde_json::json!({"compress": true});
        if let Some(n) = name {
            body["name"] = serde_json::json!(n);
        }
        self.doc_with(
            Method::POST,
            &format!("{}/mysoftware/{msid}/templates/{tid}/images", self.me()),
            Some(body),
        )
        .await
    }

    pub async fn export(&self, msid: i64, eid: i64) -> Res<Export> {
        self.get(&self.export_path(msid, eid)).await
    }

    /// One status poll of a ticket (an export or an image): `If-None-Match` with the last ETag, so an unchanged status is a `304`.
    /// `ticket` is the export's or image's path under `/api` (its document's `uri`, with a leading `/`).
    pub async fn poll(&self, ticket: &str, etag: Option<&str>) -> Res<Poll> {
        let path = format!("{ticket}/status");
        let mut rb = self.request(Method::GET, &path);
        if let Some(t) = etag {
            rb = rb.header(header::IF_NONE_MATCH, t);
        }
        let r = self.send(rb, &path).await?;
        if r.status() == StatusCode::NOT_MODIFIED {
            return Ok(Poll::Unchanged);
        }
        if matches!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            let after = header(r.headers(), header::RETRY_AFTER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| std::time::Duration::from_secs(s.min(60)));
            return Ok(Poll::Busy(after));
        }
        if !r.status().is_success() {
            return Err(failure(r).await);
        }
        let tag = header(r.headers(), header::ETAG);
        let body = r.bytes().await.map_err(|e| network(e, &self.url(&path)))?;
        let s = serde_json::from_slice(&body)
            .map_err(|e| Failure::new(SERVER, format!("unexpected status document: {e}")))?;
        Ok(Poll::Changed(s, tag))
    }

    /// Downloads `{ticket}/downloads` (an export's or an image's archive) to `out` through `out.part`: resumes a part left by an
    /// earlier run (`Range`, with `If-Range` when its ETag is known), checks the sha256 against
    /// `X-Checksum-Sha256`, renames when complete. A mismatch removes the part (exit 6).
    pub async fn download(
        &self,
        ticket: &str,
        out: &Path,
        bar: impl Fn(u64, u64) -> ProgressBar,
    ) -> Res<Downloaded> {
        let path = format!("{ticket}/downloads");
        let (part, tagf) = part_paths(out);
        let mut offset = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let etag = std::fs::read_to_string(&tagf)
            .ok()
            .filter(|t| !t.is_empty());
        let mut rb = self
            .request(Method::GET, &path)
            .header(header::ACCEPT, "*/*");
        if offset > 0 {
            rb = rb.header(header::RANGE, format!("bytes={offset}-"));
            if let Some(t) = &etag {
                rb = rb.header(header::IF_RANGE, t.trim());
            }
        }
        let mut r = self.send(rb, &path).await?;
        if r.status() == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            // The part is as long as (or longer than) the archive: start over.
            offset = 0;
            r = self
                .send(
                    self.request(Method::GET, &path)
                        .header(header::ACCEPT, "*/*"),
                    &path,
                )
                .await?;
        }
        let status = r.status();
        if !status.is_success() {
            return Err(failure(r).await);
        }
        if status != StatusCode::PARTIAL_CONTENT {
            offset = 0;
        } else {
            // `Content-Range: bytes N-M/T` must start where the part ends.
            let cr = header(r.headers(), header::CONTENT_RANGE).unwrap_or_default();
            let start = cr
                .strip_prefix("bytes ")
                .and_then(|s| s.split('-').next())
                .and_then(|s| s.parse::<u64>().ok());
            if start != Some(offset) {
                return Err(Failure::new(
                    SERVER,
                    format!(
                        "the server answered a range that does not continue the part file: {cr:?}"
                    ),
                ));
            }
        }
        let digest = header(r.headers(), "x-checksum-sha256").map(|s| s.to_ascii_lowercase());
        let new_tag = header(r.headers(), header::ETAG);
        let total = offset + r.content_length().unwrap_or(0);

        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| io_err("opening", &part, e))?;
        let mut hasher = Sha256::new();
        if offset > 0 {
            // What the part already holds counts towards the digest.
            let mut buf = vec![0u8; 1 << 20];
            let mut left = offset;
            f.rewind().map_err(|e| io_err("reading", &part, e))?;
            while left > 0 {
                let n = f
                    .read(&mut buf[..left.min(1 << 20) as usize])
                    .map_err(|e| io_err("reading", &part, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
        }
        f.set_len(offset)
            .and_then(|_| f.seek(std::io::SeekFrom::Start(offset)).map(|_| ()))
            .map_err(|e| io_err("writing", &part, e))?;
        match &new_tag {
            Some(t) => std::fs::write(&tagf, t).map_err(|e| io_err("writing", &tagf, e))?,
            None => {
                let _ = std::fs::remove_file(&tagf);
            }
        }
        let pb = bar(total, offset);
        // Writing and hashing run on a thread of their own, so the network is read while the disk
        // writes. With `--fsync` the page cache is pushed to disk as it fills (`start_writeback`),
        // so the sync before the rename waits only for the tail.
        let durable = DURABLE.load(std::sync::atomic::Ordering::Relaxed);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let writer = std::thread::spawn(move || -> std::io::Result<(std::fs::File, Sha256)> {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let (mut written, mut synced) = (offset, offset);
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk)?;
                hasher.update(&chunk);
                written += chunk.len() as u64;
                if durable && written - synced >= 16 << 20 {
                    w.flush()?;
                    start_writeback(w.get_ref(), synced, written - synced);
                    synced = written;
                }
            }
            w.flush()?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            if durable {
                f.sync_all()?;
            }
            Ok((f, hasher))
        });
        let mut transferred = 0u64;
        let mut failed = None;
        loop {
            match r.chunk().await {
                Ok(Some(chunk)) => {
                    transferred += chunk.len() as u64;
                    pb.inc(chunk.len() as u64);
                    if tx.send(chunk).await.is_err() {
                        break; // the writer stopped: its error is reported below
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")));
        let (f, hasher) = written.map_err(|e| io_err("writing", &part, e))?;
        drop(f);
        if let Some(e) = failed {
            pb.abandon();
            let mut f = network(e, &self.url(&path));
            f.msg.push_str(&format!(
                        " (the download stopped after {} bytes, kept in {}: re-run the same command to resume)",
                        offset + transferred,
                        part.display()
                    ));
            return Err(f);
        }

        pb.finish();
        let size = offset + transferred;
        let sha256 = hex::encode(hasher.finalize());
        if size < total {
            return Err(Failure::new(
                NETWORK,
                format!(
                    "the download stopped after {size} of {total} bytes (kept in {}: re-run the same command to resume)",
                    part.display()
                ),
            ));
        }
        let verified = match &digest {
            Some(d) if *d != sha256 => {
                let _ = std::fs::remove_file(&part);
                let _ = std::fs::remove_file(&tagf);
                return Err(Failure::new(
                    VERIFY,
                    format!(
                        "verification failed: the archive's sha256 is {sha256}, the server's digest is {d}; removed {}",
                        part.display()
                    ),
                ));
            }
            Some(_) => true,
            None => false,
        };
        std::fs::rename(&part, out).map_err(|e| io_err("renaming to", out, e))?;
        let _ = std::fs::remove_file(&tagf);
        Ok(Downloaded {
            path: out.to_path_buf(),
            size,
            transferred,
            resumed_from: offset,
            sha256,
            verified,
        })
    }
}

/// Starts writing `len` bytes at `offset` of `f` back to disk without waiting for it.
#[cfg(target_os = "linux")]
fn start_writeback(f: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules writeback of the given range.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File, _: u64, _: u64) {}
