//! A real, throwaway Garage (S3-compatible object store) for tests: `garage server --single-node
//! --default-bucket` on loopback ports with a generated config in a temp dir, one per test process,
//! a fresh key prefix per test. Missing `garage` is an error that says how to install it.

use anyhow::{bail, Context};
use object_store::ObjectStore;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const GARAGE_BIN_ENV: &str = "SATCHEL_GARAGE_BIN";
const HINT: &str = "the scale-out tests need Garage: run `.ci/run` (installs it with \
    `cargo install garage --locked`), or set SATCHEL_GARAGE_BIN to a garage binary";

/// Connection settings of a running Garage bucket.
#[derive(Debug, Clone)]
pub struct S3Target {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub struct TempGarage {
    pub target: S3Target,
    dir: PathBuf,
    child: Child,
    watchdog: Option<Child>,
}

fn garage_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(GARAGE_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(Path::new(&h).join(".cargo/bin/garage"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| HINT.to_string())
}

/// `n` random hex digits: the first 12 of a v4 UUID are random (the version nibble comes after).
fn hex(n: usize) -> String {
    let mut out = String::with_capacity(n + 12);
    while out.len() < n {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string()[..12]);
    }
    out.truncate(n);
    out
}

impl TempGarage {
    pub fn start() -> anyhow::Result<Self> {
        let bin = garage_bin()?;
        let dir =
            std::env::temp_dir().join(format!("satchel-garage-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let (rpc, s3) = (super::free_port()?, super::free_port()?);
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                d = dir.display(),
                secret = hex(64),
            ),
        )?;
        let target = S3Target {
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket: "satchel".into(),
            access_key_id: format!("GK{}", hex(24)),
            secret_access_key: hex(64),
        };
        let log = std::fs::File::create(dir.join("garage.log"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &target.access_key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &target.secret_access_key)
            .env("GARAGE_DEFAULT_BUCKET", &target.bucket)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}; {HINT}", bin.display()))?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; kill -9 "$2" 2>/dev/null; rm -rf "$3""#)
            .arg("satchel-garage-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        let g = TempGarage {
            target,
            dir,
            child,
            watchdog,
        };
        g.wait_ready()?;
        Ok(g)
    }

    /// Ready means a real put and delete in the default bucket succeed.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store = self.store("")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = object_store::path::Path::from("ready-probe");
        loop {
            let ok = rt.block_on(async {
                store.put(&path, bytes_payload()).await.is_ok() && store.delete(&path).await.is_ok()
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default();
                bail!("Garage did not become ready in 30 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An `object_store` client for the bucket (under `prefix`).
    pub fn store(&self, prefix: &str) -> anyhow::Result<Box<dyn ObjectStore>> {
        let t = &self.target;
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&t.endpoint)
            .with_allow_http(true)
            .with_region(&t.region)
            .with_bucket_name(&t.bucket)
            .with_access_key_id(&t.access_key_id)
            .with_secret_access_key(&t.secret_access_key)
            .build()?;
        Ok(if prefix.is_empty() {
            Box::new(s3)
        } else {
            Box::new(object_store::prefix::PrefixStore::new(
                s3,
                prefix.to_string(),
            ))
        })
    }
}

fn bytes_payload() -> object_store::PutPayload {
    object_store::PutPayload::from_static(b"ok")
}

impl Drop for TempGarage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// The Garage the tests of this process share (started on first use).
pub fn shared_garage() -> anyhow::Result<&'static TempGarage> {
    static G: OnceLock<Result<TempGarage, String>> = OnceLock::new();
    // Started on a thread of its own: the readiness probe runs a small runtime, which cannot nest
    // inside the async test that asked first.
    G.get_or_init(|| {
        std::thread::spawn(|| TempGarage::start().map_err(|e| format!("{e:#}")))
            .join()
            .unwrap_or_else(|_| Err("starting Garage panicked".into()))
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A fresh `s3://bucket/test-<uuid>` location on the shared Garage.
pub fn test_bucket_url() -> anyhow::Result<(String, &'static S3Target)> {
    let g = shared_garage()?;
    Ok((
        format!(
            "s3://{}/test-{}",
            g.target.bucket,
            uuid::Uuid::new_v4().simple()
        ),
        &g.target,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garage_stores_and_lists_under_a_prefix() -> anyhow::Result<()> {
        let (url, _) = test_bucket_url()?;
        let prefix = url.rsplit('/').next().unwrap_or_default().to_string();
        let g = shared_garage()?;
        let store = g.store(&prefix)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let p = object_store::path::Path::from("a/b");
            store
                .put(&p, object_store::PutPayload::from_static(b"hello"))
                .await?;
            let got = store.get(&p).await?.bytes().await?;
            assert_eq!(&got[..], b"hello");
            store.delete(&p).await?;
            assert!(store.head(&p).await.is_err());
            anyhow::Ok(())
        })
    }
}
