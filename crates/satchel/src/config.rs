//! Server configuration: flags win over environment (`SATCHEL_*`), which wins over the TOML file
//! (`--config`), which wins over defaults. Each setting is declared once, as a field of
//! [`ServeArgs`] (its flag, its variable, its TOML key and its doc); [`ServeArgs::with_file`] fills
//! what flags and environment left unset from the file, generically, and `resolve` applies the
//! defaults and checks.

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where metadata and blobs live: the embedded default (`--data-dir`), or the scale-out engines
/// (`--database-url postgres://...`, `--blob-url s3://...`). Shared by `serve`, `migrate` and `admin`.
#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct StorageArgs {
    /// PostgreSQL for metadata and the job queue (scale-out), e.g. postgres://satchel@db/satchel
    /// [default: SQLite in the data directory].
    #[arg(long, env = "SATCHEL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// S3-compatible bucket for blobs, s3://BUCKET[/PREFIX] [default: DATA_DIR/blobs].
    #[arg(long, env = "SATCHEL_BLOB_URL")]
    pub blob_url: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:3900 for Garage (AWS when unset; AWS_ENDPOINT also works).
    #[arg(long, env = "SATCHEL_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (AWS_REGION also works) [Garage: garage].
    #[arg(long, env = "SATCHEL_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id (AWS_ACCESS_KEY_ID also works).
    #[arg(long, env = "SATCHEL_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret key (AWS_SECRET_ACCESS_KEY also works). Prefer the environment to a flag.
    #[arg(long, env = "SATCHEL_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Address buckets as BUCKET.host (AWS style) instead of host/BUCKET (Garage, MinIO).
    #[arg(long, env = "SATCHEL_S3_VIRTUAL_HOSTED")]
    pub s3_virtual_hosted: bool,
}

impl StorageArgs {
    pub fn s3(&self) -> Option<satchel_blob::S3Config> {
        self.blob_url.as_ref().map(|url| satchel_blob::S3Config {
            url: url.clone(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            virtual_hosted: self.s3_virtual_hosted,
        })
    }
}

/// A key given as text (64 hex digits): `Debug` never shows it.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct KeyText(pub String);

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(<redacted>)")
    }
}

impl std::str::FromStr for KeyText {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(KeyText(s.to_string()))
    }
}

/// Where the key sealing cloud account secrets comes from. Shared by `serve` and
/// `admin secrets rotate` (the current key).
#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecretsKeyArgs {
    /// File with the key (64 hex digits) sealing cloud account secrets in the database. Embedded
    /// mode creates it (mode 0600) if missing; scale-out (--database-url) requires it, or
    /// SATCHEL_SECRETS_KEY, and the same key on every instance [default: DATA_DIR/secrets.key].
    #[arg(long, env = "SATCHEL_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The secrets key itself (64 hex digits), for deployments that inject secrets as environment
    /// variables. Prefer the environment variable to the flag (a flag shows in `ps`).
    #[arg(long, env = "SATCHEL_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<KeyText>,
}

#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub storage: StorageArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SATCHEL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory of the embedded store (SQLite file + blob directory) [default: ./satchel-data].
    #[arg(long, env = "SATCHEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Optional TOML configuration file: the long flags' names with `_` for `-` as keys.
    #[arg(long, env = "SATCHEL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// How long completed archives are kept, e.g. "7d", "12h", "30s" [default: 7d].
    #[arg(long, env = "SATCHEL_RETENTION")]
    pub retention: Option<String>,
    /// How often the expiry sweeper runs [default: 60s].
    #[arg(long, env = "SATCHEL_SWEEP_INTERVAL")]
    pub sweep_interval: Option<String>,
    /// How often blobs that nothing references (crash leftovers: unfinished uploads, unrecorded
    /// objects) are looked for and removed; also once at start [default: 1h].
    #[arg(long, env = "SATCHEL_ORPHAN_SWEEP_INTERVAL")]
    pub orphan_sweep_interval: Option<String>,
    /// How long an unreferenced blob or unfinished upload must have been untouched before that
    /// sweep removes it; keep it well above the longest pause of a write in flight [default: 1h].
    #[arg(long, env = "SATCHEL_ORPHAN_GRACE")]
    pub orphan_grace: Option<String>,
    /// Concurrent background jobs (exports, images, CloudAPI async exports) [default: 2]. 0 runs
    /// none: an API-only instance in a scale-out cluster whose other instances run the jobs.
    #[arg(long, env = "SATCHEL_WORKERS")]
    pub workers: Option<usize>,
    /// Attempts per export before it ends in error [default: 3].
    #[arg(long, env = "SATCHEL_MAX_ATTEMPTS")]
    pub max_attempts: Option<i32>,
    /// Largest accepted file upload in bytes [default: 64 GiB].
    #[arg(long, env = "SATCHEL_MAX_UPLOAD")]
    pub max_upload: Option<u64>,
    /// Largest decompressed size of an import archive in bytes [default: 64 GiB].
    #[arg(long, env = "SATCHEL_IMPORT_MAX_BYTES")]
    pub import_max_bytes: Option<u64>,
    /// Most members (files, folders) in an import archive [default: 100000].
    #[arg(long, env = "SATCHEL_IMPORT_MAX_MEMBERS")]
    pub import_max_members: Option<u64>,
    /// Largest decompressed/compressed ratio of an import archive, past its first 8 MiB (a gzip
    /// bomb's tell) [default: 1000].
    #[arg(long, env = "SATCHEL_IMPORT_MAX_RATIO")]
    pub import_max_ratio: Option<u64>,
    /// Job lease; a job whose worker stops heart-beating is taken over after this [default: 30s].
    #[arg(long, env = "SATCHEL_JOB_LEASE")]
    pub job_lease: Option<String>,
    /// Deflate level of export archives, 1-12 (libdeflate) [default: 6].
    #[arg(long, env = "SATCHEL_GZIP_LEVEL")]
    pub gzip_level: Option<i32>,
    /// This server's base URL as clients reach it (CloudAPI's `manta_url`), e.g. https://satchel.example.com
    /// [default: http:// + the request's Host].
    #[arg(long, env = "SATCHEL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long a one-time image downloadId stays valid, e.g. "1h", "10m" [default: 1h].
    #[arg(long, env = "SATCHEL_DOWNLOAD_KEY_TTL")]
    pub download_key_ttl: Option<String>,
    /// argon2 password checks running at once (19 MiB each) [default: the number of cores].
    #[arg(long, env = "SATCHEL_LOGIN_CONCURRENCY")]
    pub login_concurrency: Option<usize>,
    /// Password checks allowed to wait for a slot; more answer 429 [default: 4 x cores].
    #[arg(long, env = "SATCHEL_LOGIN_QUEUE")]
    pub login_queue: Option<usize>,
    /// Failed logins one source address may make in a burst (refills one every 2 s) [default: 30].
    #[arg(long, env = "SATCHEL_LOGIN_FAILURES_PER_SOURCE")]
    pub login_failures_per_source: Option<u32>,
    /// Failed logins for one login name in a burst (refills one every 6 s) [default: 10].
    #[arg(long, env = "SATCHEL_LOGIN_FAILURES_PER_LOGIN")]
    pub login_failures_per_login: Option<u32>,
    /// How long a remembered login answers from memory before it is checked against the stored
    /// user again: the bound on how long a removed user or a replaced password keeps working,
    /// e.g. "1s", "250ms", "0s" (every request reads the store) [default: 1s].
    #[arg(long, env = "SATCHEL_LOGIN_REVALIDATE")]
    pub login_revalidate: Option<String>,
    /// Bytes of uploads and archives one user may store, 0 for no limit [default: 50 GiB].
    #[arg(long, env = "SATCHEL_QUOTA_BYTES")]
    pub quota_bytes: Option<u64>,
    /// Completed archives (exports, images) one user may keep, 0 for no limit [default: 100].
    #[arg(long, env = "SATCHEL_QUOTA_ARCHIVES")]
    pub quota_archives: Option<u64>,
    /// Exports and images one user may have queued or running, 0 for no limit [default: 10].
    #[arg(long, env = "SATCHEL_QUOTA_TICKETS")]
    pub quota_tickets: Option<u64>,
    /// Connections served at once; more wait in the kernel's backlog [default: 4096].
    #[arg(long, env = "SATCHEL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, e.g. "10s" [default: 10s].
    #[arg(long, env = "SATCHEL_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Longest pause between two pieces of a request body [default: 60s].
    #[arg(long, env = "SATCHEL_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// Largest request head (request line and headers) in bytes [default: 65536].
    #[arg(long, env = "SATCHEL_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// After SIGTERM, how long requests and jobs in flight may run before they are dropped
    /// (jobs are released to the queue) [default: 30s].
    #[arg(long, env = "SATCHEL_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Requests per second one user may make (a token bucket with a burst of 10 x this), 0 for no
    /// limit [default: 50].
    #[arg(long, env = "SATCHEL_USER_RATE")]
    pub user_rate: Option<u32>,
    /// Jobs of one user running at once across the cluster, so one user's queue cannot starve
    /// others; whoever runs the fewest is served first either way [default: 2].
    #[arg(long, env = "SATCHEL_USER_JOBS")]
    pub user_jobs: Option<u32>,
    /// Log format: text (coloured only on a terminal) or json (one object per line) [default: text].
    #[arg(long, env = "SATCHEL_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Serve /metrics (Prometheus text) without authentication on this address, e.g. 127.0.0.1:9090.
    /// On the main port /metrics needs an administrator's credentials.
    #[arg(long, env = "SATCHEL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// File with the key (64 hex digits) sealing API key secrets in the database; created (mode 0600)
    /// if missing. Every instance on one database needs the same file [default: DATA_DIR/apikey-seal.key].
    #[arg(long, env = "SATCHEL_APIKEY_SEAL_FILE")]
    pub apikey_seal_file: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub secrets: SecretsKeyArgs,
    /// Testing aid: pause after each archive chunk (slows exports down deterministically).
    #[arg(long, env = "SATCHEL_EXPORT_THROTTLE", hide = true)]
    pub export_throttle: Option<String>,
    /// Let takeout webhooks (`notifyUrl`) go to loopback, private and link-local addresses; by
    /// default they are refused, at creation for an address and at delivery for what a name
    /// resolves to, so a takeout cannot be used to reach the server's own network.
    #[arg(long, env = "SATCHEL_NOTIFY_ALLOW_PRIVATE")]
    pub notify_allow_private: bool,
    /// How long one webhook delivery may take, connecting included [default: 10s].
    #[arg(long, env = "SATCHEL_NOTIFY_TIMEOUT")]
    pub notify_timeout: Option<String>,
    /// Testing aid: the wait after a webhook's first failed attempt, doubled after each [default: 10s].
    #[arg(long, env = "SATCHEL_NOTIFY_RETRY_BASE", hide = true)]
    pub notify_retry_base: Option<String>,
    /// Testing aid: the longest wait between two webhook attempts [default: 1h].
    #[arg(long, env = "SATCHEL_NOTIFY_RETRY_CAP", hide = true)]
    pub notify_retry_cap: Option<String>,
    /// Testing aid: how long after its first attempt a webhook is given up [default: 24h].
    #[arg(long, env = "SATCHEL_NOTIFY_RETRY_FOR", hide = true)]
    pub notify_retry_for: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub storage: StorageArgs,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub retention: Duration,
    pub sweep_interval: Duration,
    pub orphan_sweep_interval: Duration,
    pub orphan_grace: Duration,
    pub workers: usize,
    pub max_attempts: i32,
    pub max_upload: u64,
    pub import_limits: satchel_archive::reader::Limits,
    pub job_lease: Duration,
    pub export_throttle: Option<Duration>,
    pub gzip_level: i32,
    pub public_url: Option<String>,
    pub download_key_ttl: Duration,
    pub auth: satchel_domain::auth::AuthConfig,
    pub quota: satchel_domain::service::Quota,
    pub http: crate::http::HttpLimits,
    /// Requests per second per user (None: unlimited).
    pub user_rate: Option<u32>,
    pub user_jobs: u32,
    pub log_json: bool,
    pub metrics_listen: Option<SocketAddr>,
    /// The API key seal key's file, when given (else `DATA_DIR/apikey-seal.key`).
    pub apikey_seal_file: Option<PathBuf>,
    /// Where the cloud account secrets key comes from.
    pub secrets: SecretsKeyArgs,
    pub notify_allow_private: bool,
    pub notify_timeout: Duration,
    pub notify_retry: satchel_domain::notify::RetryPolicy,
}

fn dur(what: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s).with_context(|| format!("invalid duration for {what}: {s:?}"))
}

impl ServeArgs {
    /// These settings with what flags and environment left unset (`None`, or `false` for a switch)
    /// taken from the `--config` file. A key that names no setting is an error.
    pub fn with_file(self) -> anyhow::Result<ServeArgs> {
        use serde_json::Value;
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let (Value::Object(known), Value::Object(mut merged), Value::Object(file)) = (
            serde_json::to_value(ServeArgs::default())?,
            serde_json::to_value(&self)?,
            serde_json::to_value(file)?,
        ) else {
            anyhow::bail!("settings are not a map");
        };
        for (key, value) in file {
            if !known.contains_key(&key) {
                anyhow::bail!("{}: unknown setting {key:?}", path.display());
            }
            let unset = matches!(
                merged.get(&key),
                None | Some(Value::Null | Value::Bool(false))
            );
            if unset {
                merged.insert(key, value);
            }
        }
        let mut args: ServeArgs = serde_json::from_value(Value::Object(merged))
            .with_context(|| format!("{}: a setting has the wrong type", path.display()))?;
        args.config = Some(path);
        Ok(args)
    }

    pub fn resolve(self) -> anyhow::Result<Settings> {
        let s = self.with_file()?;
        s.settings()
    }

    fn settings(self) -> anyhow::Result<Settings> {
        Ok(Settings {
            storage: self.storage.clone(),
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./satchel-data")),
            retention: dur("retention", self.retention.as_deref().unwrap_or("7d"))?,
            sweep_interval: dur(
                "sweep-interval",
                self.sweep_interval.as_deref().unwrap_or("60s"),
            )?,
            orphan_sweep_interval: match dur(
                "orphan-sweep-interval",
                self.orphan_sweep_interval.as_deref().unwrap_or("1h"),
            )? {
                d if d.is_zero() => anyhow::bail!("orphan-sweep-interval must be more than 0"),
                d => d,
            },
            orphan_grace: dur("orphan-grace", self.orphan_grace.as_deref().unwrap_or("1h"))?,
            workers: self.workers.unwrap_or(2),
            max_attempts: self.max_attempts.unwrap_or(3).max(1),
            max_upload: self.max_upload.unwrap_or(64 << 30),
            import_limits: {
                let d = satchel_archive::reader::Limits::default();
                satchel_archive::reader::Limits {
                    max_total_bytes: self.import_max_bytes.unwrap_or(d.max_total_bytes),
                    max_member_bytes: self.import_max_bytes.unwrap_or(d.max_member_bytes),
                    max_members: self.import_max_members.unwrap_or(d.max_members),
                    max_ratio: self.import_max_ratio.unwrap_or(d.max_ratio).max(1),
                    ..d
                }
            },
            job_lease: dur("job-lease", self.job_lease.as_deref().unwrap_or("30s"))?,
            gzip_level: match self.gzip_level.unwrap_or(6) {
                l @ 1..=12 => l,
                l => anyhow::bail!("gzip level must be 1-12, not {l}"),
            },
            public_url: match self.public_url {
                Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                    anyhow::bail!("public URL must start with http:// or https://, not {u:?}")
                }
                other => other,
            },
            download_key_ttl: match dur(
                "download-key-ttl",
                self.download_key_ttl.as_deref().unwrap_or("1h"),
            )? {
                d if d.is_zero() => anyhow::bail!("download-key-ttl must be more than 0"),
                d => d,
            },
            auth: {
                let d = satchel_domain::auth::AuthConfig::default();
                satchel_domain::auth::AuthConfig {
                    max_concurrent: self.login_concurrency.unwrap_or(d.max_concurrent).max(1),
                    queue: self.login_queue.unwrap_or(d.queue),
                    source_burst: self
                        .login_failures_per_source
                        .unwrap_or(d.source_burst)
                        .max(1),
                    login_burst: self
                        .login_failures_per_login
                        .unwrap_or(d.login_burst)
                        .max(1),
                    revalidate_every: match &self.login_revalidate {
                        Some(v) => dur("login-revalidate", v)?,
                        None => d.revalidate_every,
                    },
                    ..d
                }
            },
            quota: {
                let d = satchel_domain::service::Quota::default();
                // 0 is "no limit", so a deployment can lift one quota without lifting the others.
                let pick = |flag: Option<u64>, default: Option<u64>| match flag {
                    Some(0) => None,
                    Some(n) => Some(n),
                    None => default,
                };
                satchel_domain::service::Quota {
                    bytes: pick(self.quota_bytes, d.bytes),
                    archives: pick(self.quota_archives, d.archives),
                    outstanding: pick(self.quota_tickets, d.outstanding),
                }
            },
            http: {
                let d = crate::http::HttpLimits::default();
                let or = |flag: Option<String>, what: &str, def: Duration| {
                    flag.map_or(Ok(def), |v| dur(what, &v))
                };
                crate::http::HttpLimits {
                    max_connections: self.max_connections.unwrap_or(d.max_connections).max(1),
                    header_timeout: or(self.header_timeout, "header-timeout", d.header_timeout)?,
                    body_idle_timeout: or(self.body_timeout, "body-timeout", d.body_idle_timeout)?,
                    max_header_bytes: self.max_header_bytes.unwrap_or(d.max_header_bytes),
                    shutdown_grace: or(self.shutdown_grace, "shutdown-grace", d.shutdown_grace)?,
                }
            },
            user_rate: match self.user_rate.unwrap_or(50) {
                0 => None,
                n => Some(n),
            },
            user_jobs: self.user_jobs.unwrap_or(2).max(1),
            log_json: match self.log_format.as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => anyhow::bail!("log format must be text or json, not {other:?}"),
            },
            metrics_listen: self.metrics_listen,
            apikey_seal_file: self.apikey_seal_file,
            secrets: self.secrets,
            export_throttle: self
                .export_throttle
                .as_deref()
                .map(|s| dur("export-throttle", s))
                .transpose()?,
            notify_allow_private: self.notify_allow_private,
            notify_timeout: match dur(
                "notify-timeout",
                self.notify_timeout.as_deref().unwrap_or("10s"),
            )? {
                d if d.is_zero() => anyhow::bail!("notify-timeout must be more than 0"),
                d => d,
            },
            notify_retry: {
                let d = satchel_domain::notify::RetryPolicy::default();
                let or = |flag: Option<String>, what: &str, def: Duration| {
                    flag.map_or(Ok(def), |v| dur(what, &v))
                };
                satchel_domain::notify::RetryPolicy {
                    base: or(self.notify_retry_base, "notify-retry-base", d.base)?,
                    cap: or(self.notify_retry_cap, "notify-retry-cap", d.cap)?,
                    window: or(self.notify_retry_for, "notify-retry-for", d.window)?,
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_sweep_settings() {
        let s = ServeArgs::default().resolve().unwrap();
        assert_eq!(s.orphan_grace, Duration::from_secs(3600));
        assert_eq!(s.orphan_sweep_interval, Duration::from_secs(3600));
        let s = ServeArgs {
            orphan_grace: Some("0s".into()),
            orphan_sweep_interval: Some("2s".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.orphan_grace, Duration::ZERO);
        assert_eq!(s.orphan_sweep_interval, Duration::from_secs(2));
        // A zero interval would sweep in a busy loop.
        assert!(ServeArgs {
            orphan_sweep_interval: Some("0s".into()),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "listen = \"127.0.0.1:9000\"\nretention = \"1h\"\nworkers = 5\n",
        )
        .unwrap();
        let s = ServeArgs {
            config: Some(p.clone()),
            workers: Some(1),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.retention, Duration::from_secs(3600));
        assert_eq!(s.workers, 1);
        // Storage keys (a flattened group), switches, and the environment-only defaults too.
        std::fs::write(
            &p,
            "blob_url = \"s3://b/p\"\ns3_virtual_hosted = true\nquota_bytes = 0\nuser_jobs = 4\n",
        )
        .unwrap();
        let s = ServeArgs {
            config: Some(p.clone()),
            user_jobs: Some(3),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.storage.blob_url.as_deref(), Some("s3://b/p"));
        assert!(s.storage.s3_virtual_hosted);
        assert_eq!(s.quota.bytes, None, "0 lifts the quota");
        assert_eq!(s.user_jobs, 3);
        std::fs::write(&p, "workers = \"five\"\n").unwrap();
        let e = ServeArgs {
            config: Some(p.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{e:#}").contains("wrong type"), "{e:#}");
        std::fs::write(&p, "bogus = 1\n").unwrap();
        assert!(ServeArgs {
            config: Some(p),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }
}
