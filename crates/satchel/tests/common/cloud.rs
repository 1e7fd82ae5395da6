//! CloudAPI test helpers: SSH keys made by the real `ssh-keygen`, registered with the real
//! `satchel admin key add`, and a reqwest client that signs every request (HTTP Signature).
#![allow(dead_code)]

use super::Server;
use satchel_httpsig::PrivateKey;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A key pair on disk (`dir/name` and `dir/name.pub`).
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
    pub key: PrivateKey,
    pub md5: String,
}

/// `ssh-keygen -t <kind> [-b bits]`, unencrypted, in OpenSSH format unless `pem`.
pub fn keygen(dir: &Path, name: &str, kind: &str, bits: Option<u32>, pem: bool) -> KeyPair {
    let private = dir.join(name);
    let mut c = Command::new("ssh-keygen");
    c.args([
        "-q",
        "-N",
        "",
        "-C",
        &format!("{name}@satchel-test"),
        "-t",
        kind,
    ]);
    if let Some(b) = bits {
        c.args(["-b", &b.to_string()]);
    }
    if pem {
        c.args(["-m", "PEM"]);
    }
    let out = c.arg("-f").arg(&private).output().expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = PrivateKey::from_openssh(&std::fs::read_to_string(&private).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // The fingerprint as ssh-keygen prints it, to check the server's independently.
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "md5", "-f"])
        .arg(dir.join(format!("{name}.pub")))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let md5 = line
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.strip_prefix("MD5:"))
        .unwrap_or_else(|| panic!("fingerprint in {line:?}"))
        .to_string();
    KeyPair {
        public: dir.join(format!("{name}.pub")),
        private,
        key,
        md5,
    }
}

/// Registers `kp` for `login` with the admin command, as an operator would.
pub fn register(server: &Server, login: &str, name: &str, kp: &KeyPair) {
    let out = server.admin(
        &[
            "key",
            "add",
            login,
            "--name",
            name,
            "--file",
            kp.public.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "key add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&kp.md5), "{text} should name {}", kp.md5);
}

pub struct Signed {
    pub http: reqwest::Client,
    pub root: String,
    pub login: String,
    pub key_id: String,
    pub key: PrivateKey,
    pub algorithm: String,
    /// Shift the Date header (stale-date tests).
    pub date_offset: i64,
}

pub struct CResp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl CResp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
    pub fn header(&self, h: &str) -> Option<String> {
        self.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    /// A CloudAPI error: the status, a JSON `{code, message}` body, and the code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json")
        );
        let j = self.json();
        assert_eq!(j["code"], code, "{j}");
        assert!(!j["message"].as_str().unwrap_or_default().is_empty(), "{j}");
    }
}

impl Signed {
    pub fn new(server: &Server, login: &str, kp: &KeyPair) -> Signed {
        Signed {
            http: reqwest::Client::new(),
            root: format!("http://127.0.0.1:{}", server.port),
            login: login.to_string(),
            key_id: format!("/{login}/keys/{}", kp.md5),
            key: PrivateKey::from_openssh(&std::fs::read_to_string(&kp.private).unwrap()).unwrap(),
            algorithm: String::new(),
            date_offset: 0,
        }
    }

    pub fn authorization(&self, method: &str, path: &str, date: &str) -> String {
        satchel_httpsig::sign_request(
            &self.key,
            &self.key_id,
            &self.algorithm,
            &[],
            method,
            path,
            |h| (h == "date").then(|| date.to_string()),
        )
        .unwrap()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> CResp {
        let when = std::time::SystemTime::now()
            .checked_add(std::time::Duration::from_secs(
                self.date_offset.max(0) as u64
            ))
            .and_then(|t| {
                t.checked_sub(std::time::Duration::from_secs(
                    (-self.date_offset).max(0) as u64
                ))
            })
            .unwrap();
        let date = httpdate::fmt_http_date(when);
        let auth = self.authorization(method, path, &date);
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.root))
            .header("date", &date)
            .header("authorization", auth)
            .header("accept", "application/json");
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
        CResp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> CResp {
        self.call("GET", path, None, &[]).await
    }

    pub async fn post_json(&self, path: &str, v: serde_json::Value) -> CResp {
        self.call(
            "POST",
            path,
            Some(serde_json::to_vec(&v).unwrap()),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// Creates, uploads and activates an image; returns its id.
    pub async fn make_image(
        &self,
        name: &str,
        version: &str,
        compression: &str,
        data: &[u8],
    ) -> String {
        let r = self
            .post_json(
                "/my/images",
                serde_json::json!({"name": name, "version": version, "os": "linux", "type": "zvol"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let id = r.json()["id"].as_str().unwrap().to_string();
        self.upload_and_activate(&id, compression, data).await;
        id
    }

    /// Uploads the file of image `id` and activates it.
    pub async fn upload_and_activate(&self, id: &str, compression: &str, data: &[u8]) {
        let r = self
            .call(
                "PUT",
                &format!("/my/images/{id}/file?compression={compression}"),
                Some(data.to_vec()),
                &[("content-type", "application/octet-stream")],
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let r = self
            .call(
                "POST",
                &format!("/my/images/{id}?action=activate"),
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["state"], "active");
    }

    pub async fn mkdir(&self, path: &str) -> CResp {
        self.call(
            "PUT",
            path,
            None,
            &[("content-type", "application/json; type=directory")],
        )
        .await
    }
}

pub fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(data))
}

pub fn md5_b64(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// `node_modules` holding smartdc 9.0.1, the real CloudAPI client: installed once with npm into
/// `target/tmp/smartdc-9.0.1` (reused afterwards; a file lock keeps parallel test binaries from
/// installing twice). Fails loudly when npm is missing: these tests never skip silently.
pub fn smartdc_modules() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("smartdc-9.0.1");
    let modules = root.join("node_modules");
    let marker = modules.join("smartdc").join("bin").join("sdc-exportimage");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    fs2::FileExt::lock_exclusive(&lock).unwrap();
    if !marker.exists() {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&root)
            .arg("smartdc@9.0.1")
            .output()
            .unwrap_or_else(|e| {
                panic!("npm is needed to install smartdc@9.0.1 (run .ci/run): {e}")
            });
        assert!(
            out.status.success() && marker.exists(),
            "npm install smartdc@9.0.1 failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs2::FileExt::unlock(&lock).unwrap();
    modules
}

pub struct SdcRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sdc-exportimage` as a user would: `SDC_URL`, `SDC_ACCOUNT`, `SDC_KEY_ID`, with the key in
/// `home/.ssh` (and, when `agent` is given, an ssh-agent holding it, which makes smartdc sign with
/// `rsa-sha1`).
pub fn sdc_exportimage(
    server: &Server,
    home: &Path,
    account: &str,
    key_md5: &str,
    agent: Option<&Path>,
    args: &[&str],
) -> SdcRun {
    sdc(
        "sdc-exportimage",
        server,
        home,
        account,
        key_md5,
        agent,
        args,
    )
}

/// Any of smartdc's commands (`sdc-updateimage`, ...), as [`sdc_exportimage`] runs its own.
pub fn sdc(
    command: &str,
    server: &Server,
    home: &Path,
    account: &str,
    key_md5: &str,
    agent: Option<&Path>,
    args: &[&str],
) -> SdcRun {
    let bin = smartdc_modules().join("smartdc").join("bin").join(command);
    let mut c = Command::new("node");
    c.arg(bin)
        .args(args)
        .env("HOME", home)
        .env("SDC_URL", format!("http://127.0.0.1:{}", server.port))
        .env("SDC_ACCOUNT", account)
        .env("SDC_KEY_ID", key_md5)
        .env_remove("SDC_USER")
        .env_remove("SSH_AUTH_SOCK");
    if let Some(sock) = agent {
        c.env("SSH_AUTH_SOCK", sock);
    }
    let out = c.output().expect("node runs");
    SdcRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}
