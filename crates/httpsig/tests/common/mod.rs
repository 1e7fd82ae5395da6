//! Shared test fixtures: real keys from the real `ssh-keygen`, and the real Triton client
//! (smartdc@9.0.1 under node) for interop. Nothing here skips silently: a missing tool is a
//! test failure with a message saying what to install.
#![allow(dead_code)] // each test binary uses a different subset

use satchel_httpsig::{PrivateKey, PublicKey};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A key pair written by ssh-keygen.
#[derive(Debug, Clone)]
pub struct KeyFile {
    pub label: String,
    pub path: PathBuf,
    pub pub_path: PathBuf,
}

impl KeyFile {
    pub fn private_text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }
    pub fn public_text(&self) -> String {
        std::fs::read_to_string(&self.pub_path).unwrap()
    }
    pub fn private(&self) -> PrivateKey {
        PrivateKey::from_openssh(&self.private_text())
            .unwrap_or_else(|e| panic!("{}: {e}", self.label))
    }
    pub fn public(&self) -> PublicKey {
        PublicKey::parse_openssh(&self.public_text())
            .unwrap_or_else(|e| panic!("{}: {e}", self.label))
    }
}

/// The key types Triton clients use, as (label, ssh-keygen arguments, sshpk default algorithm).
pub const KEY_SPECS: [(&str, &[&str], &str); 5] = [
    ("rsa", &["-t", "rsa", "-b", "2048"], "rsa-sha256"),
    ("ecdsa256", &["-t", "ecdsa", "-b", "256"], "ecdsa-sha256"),
    ("ecdsa384", &["-t", "ecdsa", "-b", "384"], "ecdsa-sha384"),
    ("ecdsa521", &["-t", "ecdsa", "-b", "521"], "ecdsa-sha512"),
    ("ed25519", &["-t", "ed25519"], "ed25519-sha512"),
];

/// Runs `ssh-keygen -q -N '' -C <name> -f <dir>/<name> <args>`.
pub fn ssh_keygen(dir: &Path, name: &str, args: &[&str]) -> KeyFile {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", &format!("{name}@satchel-test"), "-f"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (install openssh-client): {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    KeyFile {
        label: name.to_string(),
        pub_path: path.with_file_name(format!("{name}.pub")),
        path,
    }
}

/// Generates ed25519 keys until one's public key starts with a byte >= 0x80 (`high`) or < 0x80.
/// sshpk 1.7.1 mishandles the former (see `PublicKey::sshpk_legacy_md5_fingerprint`), so the
/// interop tests need one of each. Each try has probability 1/2; 64 tries cannot fail in practice.
pub fn ed25519_with_high_bit(dir: &Path, name: &str, high: bool) -> KeyFile {
    for _ in 0..64 {
        let kf = ssh_keygen(dir, name, &["-t", "ed25519"]);
        let blob = kf.public().ssh_blob().to_vec();
        if (blob[blob.len() - 32] >= 0x80) == high {
            return kf;
        }
        std::fs::remove_file(&kf.path).unwrap();
        std::fs::remove_file(&kf.pub_path).unwrap();
    }
    panic!("64 ed25519 keys in a row without the wanted first-byte class");
}

/// `ssh-keygen -l -E <hash> -f <pub>` → (bits, fingerprint without the `MD5:` prefix for md5).
pub fn keygen_fingerprint(pub_path: &Path, hash: &str) -> (u32, String) {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", hash, "-f"])
        .arg(pub_path)
        .output()
        .expect("run ssh-keygen -l");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split_whitespace();
    let bits = fields.next().unwrap().parse().unwrap();
    let fp = fields.next().unwrap();
    let fp = fp.strip_prefix("MD5:").unwrap_or(fp).to_string();
    (bits, fp)
}

/// The node_modules directory holding smartdc@9.0.1 (and with it smartdc-auth 2.3.1,
/// http-signature 1.4.0, sshpk 1.7.1).
///
/// `SMARTDC_NODE_MODULES` if set (must contain smartdc), else /tmp/sdc/node_modules if it has
/// smartdc, else `npm install --prefix <target>/tmp/httpsig-smartdc-9.0.1 smartdc@9.0.1` once
/// (idempotent: reused when already there). Panics with a clear message when npm is missing.
pub fn smartdc_node_modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SMARTDC_NODE_MODULES") {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("smartdc/package.json").is_file(),
                "SMARTDC_NODE_MODULES={} has no smartdc package",
                dir.display()
            );
            return dir;
        }
        let default = PathBuf::from("/tmp/sdc/node_modules");
        if is_smartdc_901(&default) {
            return default;
        }
        let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("httpsig-smartdc-9.0.1");
        let dir = prefix.join("node_modules");
        if !is_smartdc_901(&dir) {
            std::fs::create_dir_all(&prefix).unwrap();
            let out = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg("smartdc@9.0.1")
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "smartdc@9.0.1 is not installed (set SMARTDC_NODE_MODULES or populate \
                         /tmp/sdc/node_modules) and npm cannot be run to install it: {e}"
                    )
                });
            assert!(
                out.status.success() && is_smartdc_901(&dir),
                "npm install smartdc@9.0.1 into {} failed:\n{}\n{}",
                prefix.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
}

fn is_smartdc_901(node_modules: &Path) -> bool {
    std::fs::read_to_string(node_modules.join("smartdc/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["version"] == "9.0.1")
}

/// Where the node helper script lives.
pub fn sign_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/sign.js")
}

/// Runs `node sign.js <node_modules> <mode> <options>` with HOME set to `home` and
/// SSH_AUTH_SOCK set to `agent` (or removed), returning the JSON it printed. The script
/// reports client-side errors as `{"error": ...}` (exit 2); those are returned, not panicked on,
/// so tests can assert on the real client's failures.
pub fn run_node(
    home: &Path,
    agent: Option<&Path>,
    mode: &str,
    options: serde_json::Value,
) -> serde_json::Value {
    let mut cmd = Command::new("node");
    cmd.arg(sign_js())
        .arg(smartdc_node_modules())
        .arg(mode)
        .arg(options.to_string())
        .env("HOME", home);
    match agent {
        Some(sock) => cmd.env("SSH_AUTH_SOCK", sock),
        None => cmd.env_remove("SSH_AUTH_SOCK"),
    };
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (install nodejs): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "node {mode} printed no JSON ({e}); status {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
