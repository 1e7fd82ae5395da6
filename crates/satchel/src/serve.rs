//! `satchel serve`: wires store, blobs, domain, job workers, the sweeper and the HTTP faces.

use crate::config::{ServeArgs, Settings, StorageArgs};
use anyhow::Context;
use axum::response::IntoResponse;
use satchel_api_cloudapi::CloudState;
use satchel_api_uforge::AppState;
use satchel_blob::{BlobStore, Blobs};
use satchel_domain::cloud::Cloud;
use satchel_domain::export::TicketRunner;
use satchel_domain::model::NewUser;
use satchel_domain::ports::{CloudStore, OneTimeKeys, Store};
use satchel_domain::service::{Config, Satchel};
use satchel_jobs::{PoolConfig, WorkerPool};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The stores a server or an admin command works on.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub keys: Arc<dyn OneTimeKeys>,
    pub cloud_store: Arc<dyn CloudStore>,
    /// The blob port; `Blobs` (object_store) is named only here, where it is made.
    pub blobs: Arc<dyn BlobStore>,
    pub max_upload: u64,
    pub quota: satchel_domain::quota::Quota,
    pub rate: Arc<satchel_domain::limits::RateLimiter>,
    /// The metadata store is shared with other instances (PostgreSQL).
    pub shared: bool,
}

impl Opened {
    pub fn cloud(&self) -> Cloud {
        Cloud {
            users: self.store.clone(),
            store: self.cloud_store.clone(),
            blobs: self.blobs.clone(),
            max_upload: self.max_upload,
            quota: self.quota.clone(),
            rate: self.rate.clone(),
            max_attempts: satchel_domain::service::Config::default().max_attempts,
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// Opens the metadata store and blob store `storage` names: PostgreSQL and/or S3 for scale-out, else
/// the embedded default `DIR/satchel.db` (SQLite) and `DIR/blobs/`. Migrations run on open.
pub async fn open(storage: &StorageArgs, dir: &Path) -> anyhow::Result<Opened> {
    #[allow(clippy::type_complexity)]
    let (store, cloud_store, keys, shared): (
        Arc<dyn Store>,
        Arc<dyn CloudStore>,
        Arc<dyn OneTimeKeys>,
        bool,
    ) = match &storage.database_url {
        Some(url) => {
            let pg = satchel_store::postgres::PostgresStore::connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            (
                Arc::new(pg.clone()),
                Arc::new(pg.clone()),
                Arc::new(pg),
                true,
            )
        }
        None => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let s = satchel_store::sqlite::SqliteStore::open(&dir.join("satchel.db")).await?;
            (Arc::new(s.clone()), Arc::new(s.clone()), Arc::new(s), false)
        }
    };
    let blobs = match storage.s3() {
        Some(cfg) => Blobs::s3(&cfg).context("configuring the S3 blob store")?,
        None => Blobs::local(&dir.join("blobs"))?,
    };
    // S3 multipart uploads are recorded in the database while they run, so the orphan sweep can
    // abort the ones a crash left (a local store's leftovers are files it finds by itself).
    let blobs: Arc<dyn BlobStore> =
        Arc::new(blobs.with_journal(Arc::new(satchel_domain::sweep::StoreJournal(store.clone()))));
    Ok(Opened {
        store,
        keys,
        cloud_store,
        blobs,
        max_upload: satchel_domain::service::Config::default().max_upload,
        quota: Default::default(),
        rate: Arc::new(satchel_domain::limits::RateLimiter::new(None)),
        shared,
    })
}

/// glibc's malloc keeps what exports freed (1 MiB chunks, from many runtime threads) in per-thread
/// arenas, so a long-running server's RSS climbed export after export (25 -> 79 -> 106 -> 120 MiB
/// measured; mimalloc was worse, 300 MiB). Fewer arenas and a periodic trim give it back.
///
/// During an export the opposite matters: glibc's default trim threshold (128 KiB once the mmap
/// threshold is fixed) cut every freed chunk off a heap's top, so the next one was faulted in and
/// zeroed by the kernel again: a quarter of a large export's CPU. Up to 2 MiB (two chunks) now
/// stays at a heap's top while an export runs; the periodic trim still returns it afterwards.
/// An operator's own `MALLOC_*` settings win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called once before the runtime is busy.
    let set = |name: &str| std::env::var_os(name).is_some();
    unsafe {
        if !set("MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        if !set("MALLOC_MMAP_THRESHOLD_") && !set("MALLOC_TRIM_THRESHOLD_") {
            // A fixed threshold (setting it turns off glibc's dynamic one, which rises to the
            // largest block freed): password checks' 19 MiB argon2 blocks are then always
            // mmapped and given back on free, instead of settling in an arena (+113 MiB under a
            // login storm, measured).
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
        }
    }
    std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_secs(2));
            // SAFETY: malloc_trim is thread-safe and only returns free memory to the kernel.
            unsafe {
                libc::malloc_trim(0);
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!(error = %e, "no malloc-trim thread"));
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// What every request passes through before a face, as one stack (no boxing between layers):
/// the path normalised (so the faces route it), a request id given or kept, and credential headers
/// marked sensitive before anything inside can log them.
fn outer_layers<S>(inner: S) -> axum::Router
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    axum::Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .map_request(satchel_api_uforge::normalize_path)
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                tower_http::request_id::MakeRequestUuid,
            ))
            .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
            .layer(
                tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::PROXY_AUTHORIZATION,
                    axum::http::header::COOKIE,
                ]),
            )
            .service(inner),
    )
}

/// Text logs (coloured only when stdout is a terminal) or one JSON object per line.
fn init_logs(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        b.json().with_current_span(false).init();
    } else {
        b.with_ansi(std::io::stdout().is_terminal()).init();
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let s: Settings = args.resolve()?;
    init_logs(s.log_json);
    tune_allocator();
    let mut opened = open(&s.storage, &s.data_dir).await?;
    opened.max_upload = s.max_upload;
    opened.quota = s.quota.clone();
    let (store, blobs) = (opened.store.clone(), opened.blobs.clone());
    // Kept alive for the server's lifetime.
    let mut _lock = None;
    if opened.shared {
        // Instances share the queue: a dead instance's jobs are taken over when their leases expire.
        tracing::info!("scale-out mode: PostgreSQL queue shared with other instances");
    } else {
        // One server per data directory: the job leases of a dead server are released at start,
        // which is only safe if no other server is using them.
        let lock = std::fs::File::create(s.data_dir.join("serve.lock"))?;
        fs2::FileExt::try_lock_exclusive(&lock)
            .with_context(|| format!("another satchel server is using {}", s.data_dir.display()))?;
        _lock = Some(lock);
        let released = store.release_all_leases().await?;
        if released > 0 {
            tracing::warn!(released, "resuming jobs left running by a previous server");
        }
    }
    if let Ok(pw) = std::env::var("SATCHEL_ADMIN_PASSWORD") {
        if !pw.is_empty() && store.user_by_login("root").await?.is_none() {
            let hash = satchel_domain::auth::hash_password(&pw)?;
            let created = store
                .create_user(NewUser {
                    login: "root".into(),
                    password_hash: hash,
                    admin: true,
                    entitlements: vec![],
                })
                .await;
            match created {
                Ok(_) => tracing::info!("created admin user root"),
                // Another instance starting at the same moment created it first.
                Err(satchel_domain::DomainError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    let seal_file = match &s.apikey_seal_file {
        Some(f) => f.clone(),
        None => {
            if opened.shared {
                tracing::warn!(
                    "scale-out mode without --apikey-seal-file: API keys made here work only on \
                     instances sharing this data directory's apikey-seal.key"
                );
            }
            s.data_dir.join("apikey-seal.key")
        }
    };
    let secrets_key = crate::sealkey::secrets_key(&s.secrets, &s.data_dir, opened.shared)?;
    let config = Config {
        api_key_seal: crate::sealkey::load_or_create(&seal_file)?,
        secrets_key: secrets_key.clone(),
        retention: s.retention,
        max_attempts: s.max_attempts,
        max_upload: s.max_upload,
        download_key_ttl: s.download_key_ttl,
        auth: s.auth.clone(),
        quota: s.quota.clone(),
        user_rate: s.user_rate,
        notify_allow_private: s.notify_allow_private,
    };
    let runner = Arc::new(TicketRunner {
        store: store.clone(),
        blobs: blobs.clone(),
        retention: s.retention,
        gz: satchel_archive::GzOptions {
            level: s.gzip_level,
            ..Default::default()
        },
        progress_every: Duration::from_millis(250),
        throttle: s.export_throttle,
        import_limits: s.import_limits.clone(),
        secrets: secrets_key,
    });
    if s.workers == 0 {
        if opened.shared {
            tracing::info!("--workers 0: this instance runs no jobs; other instances must");
        } else {
            return Err(anyhow::anyhow!(
                "--workers 0 needs a shared database (--database-url): nothing else would run the jobs"
            ));
        }
    }
    // Every background job runs on one pool: both ticket kinds and CloudAPI async exports. The
    // services that queue jobs wake its idle workers through `wake`.
    let wake = Arc::new(tokio::sync::Notify::new());
    // Status polls answer from the store's memory of tickets (on PostgreSQL this starts listening
    // for the changes other instances announce).
    let satchel = Arc::new(
        Satchel::new(store.clone(), opened.keys.clone(), blobs.clone(), config)
            .with_waker(wake.clone())
            .with_ticket_cache(store.ticket_cache()),
    );
    opened.rate = satchel.rate.clone();
    let cloud = Arc::new(Cloud {
        max_attempts: s.max_attempts,
        wake: wake.clone(),
        ..opened.cloud()
    });
    // Every ticket kind runs on the ticket runner.
    let handlers = satchel_domain::model::TicketKind::ALL
        .into_iter()
        .fold(satchel_jobs::Dispatch::new(), |d, k| {
            d.with(k.as_str(), runner.clone())
        })
        .with(
            satchel_domain::model::JOB_IMAGE_EXPORT,
            Arc::new(satchel_domain::cloud::service::ImageExportRunner {
                cloud: cloud.clone(),
            }),
        )
        .with(
            satchel_domain::model::JOB_TAKEOUT_NOTIFY,
            Arc::new(satchel_domain::notify::NotifyRunner {
                store: store.clone(),
                secrets: satchel.config.secrets_key.clone(),
                transport: Arc::new(crate::notify::HttpTransport::new(
                    s.notify_timeout,
                    s.notify_allow_private,
                )?),
                policy: s.notify_retry,
            }),
        );
    let pool = WorkerPool::start_with_waker(
        store.clone(),
        Arc::new(handlers),
        PoolConfig {
            workers: s.workers,
            lease: s.job_lease,
            heartbeat: (s.job_lease / 6).max(Duration::from_millis(100)),
            per_user: s.user_jobs,
            ..Default::default()
        },
        wake,
    );

    let sweeper = {
        let satchel = satchel.clone();
        let every = s.sweep_interval;
        let owner = pool.owner.clone();
        tokio::spawn(async move {
            loop {
                // Once per period across the cluster; a claim lapses a little before the next tick
                // so timer drift never skips a period.
                let lease = every.mul_f64(0.9);
                match satchel
                    .store
                    .claim_periodic("sweep-expired", &owner, lease)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tokio::time::sleep(every).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming the expiry sweep failed; sweeping anyway")
                    }
                }
                match satchel.sweep_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "expired archives deleted"),
                    Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                }
                match satchel.purge_download_keys().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "expired download ids dropped"),
                    Err(e) => tracing::warn!(error = %e, "purging download ids failed"),
                }
                let keys = satchel_domain::idempotency::Idempotency::new(satchel.store.clone());
                match keys.purge().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "expired idempotency keys dropped"),
                    Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    };

    let orphan_sweeper = {
        let (store, blobs) = (store.clone(), blobs.clone());
        let (every, grace) = (s.orphan_sweep_interval, s.orphan_grace);
        let owner = pool.owner.clone();
        tokio::spawn(async move {
            // The first round runs at start: a restart after a crash removes what the crash left
            // (once it is older than the grace period; the next rounds take the rest).
            loop {
                // Once per period across the cluster, like the expiry sweep: listing a whole bucket
                // is the expensive part, and a second sweeper would only find the same keys.
                let claimed = store
                    .claim_periodic("sweep-orphans", &owner, every.mul_f64(0.9))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "claiming the orphan sweep failed; sweeping anyway");
                        true
                    });
                if claimed {
                    match satchel_domain::sweep::sweep_orphans(
                        store.as_ref(),
                        blobs.as_ref(),
                        grace,
                    )
                    .await
                    {
                        Ok(r) if r.is_empty() => {}
                        Ok(r) => tracing::info!(
                            objects = r.objects,
                            staged = r.staged,
                            uploads = r.uploads,
                            bytes = r.bytes,
                            failed = r.failed,
                            "orphan sweep removed crash leftovers"
                        ),
                        Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    };

    let state = AppState::new(satchel.clone());
    let metrics = Arc::new(crate::ops::Metrics::new()?);
    let track = |face: &'static str| {
        axum::middleware::from_fn_with_state((metrics.clone(), face), crate::ops::track)
    };
    let uforge = satchel_api_uforge::router(state).route_layer(track("uforge"));
    let cloudapi = satchel_api_cloudapi::router(CloudState {
        cloud,
        public_url: s.public_url.clone(),
        max_clock_skew: Duration::from_secs(300),
    })
    .route_layer(track("cloudapi"));
    let registry = satchel_api_registry::router(satchel.clone()).route_layer(track("registry"));
    // Two faces on one port: `/api/...` is UForge's, everything else CloudAPI's (`/{login}/...`),
    // but for the operators' three paths and the self-service page (`/`, `/ui/...`), which are
    // therefore not valid logins.
    // Each face keeps its own fallback, so an unknown path answers in the right error format.
    let ops = (satchel.clone(), metrics.clone(), blobs.clone());
    let openapi = Arc::new(crate::openapi::document());
    let max_upload = s.max_upload;
    let dispatch = move |req: axum::extract::Request| {
        // Before any face polls the body: a refusal here reads none of it and sends no
        // `100 Continue` (hyper sends that on the first poll).
        let refused = crate::framing::refusal(&req, max_upload)
            .map(|(status, message)| crate::framing::refuse(&req, status, &message));
        let path = req.uri().path();
        let page =
            satchel_web::owns(path).then(|| satchel_web::serve(req.method(), path, req.headers()));
        let face = if path == "/api/openapi.json" || page.is_some() {
            None
        } else if path == "/api" || path.starts_with("/api/") {
            Some(uforge.clone())
        } else if path == "/v2" || path.starts_with("/v2/") {
            Some(registry.clone())
        } else if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            None
        } else {
            Some(cloudapi.clone())
        };
        let (satchel, metrics, blobs) = ops.clone();
        let openapi = openapi.clone();
        async move {
            if let Some(r) = refused {
                return r;
            }
            if let Some(r) = page {
                return r;
            }
            match face {
                Some(face) => match face.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
                None => match req.uri().path() {
                    "/healthz" => crate::ops::plain(axum::http::StatusCode::OK, "ok"),
                    "/api/openapi.json" => axum::Json(openapi.as_ref().clone()).into_response(),
                    "/readyz" => crate::ops::readyz(&satchel, blobs.as_ref()).await,
                    _ => {
                        let source = req
                            .extensions()
                            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                            .map(|c| c.0.ip());
                        crate::ops::metrics_for_admin(&satchel, &metrics, req.headers(), source)
                            .await
                    }
                },
            }
        }
    };
    let dispatch = tower::service_fn(move |req| {
        let answer = dispatch(req);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    // Request spans, with URIs whose credentials (download ids, signatures) are redacted, only
    // when someone reads them: the layer costs about a fifth of a small request's time even when
    // the log level drops every span it makes (`bench/poll.sh`: 52 k against 63 k status polls a
    // second). Failed requests are logged by `ops::track` either way.
    let app = if tracing::enabled!(target: "satchel::redact", tracing::Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG)
    {
        outer_layers(
            tower::ServiceBuilder::new()
                .map_response(axum::response::IntoResponse::into_response)
                .layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(crate::redact::span),
                )
                .service(dispatch),
        )
    } else {
        outer_layers(dispatch)
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let metrics_server = match s.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics listening (no authentication)");
            let (satchel, metrics) = (satchel.clone(), metrics.clone());
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let (satchel, metrics) = (satchel.clone(), metrics.clone());
                    async move { crate::ops::metrics_page(&satchel, &metrics).await }
                }),
            );
            Some(tokio::spawn(crate::http::serve(
                l,
                app,
                s.http.clone(),
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("binding {}", s.listen))?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %s.data_dir.display(), "satchel listening");
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    crate::http::serve(listener, app, s.http.clone(), stopped(stop_rx)).await?;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    sweeper.abort();
    orphan_sweeper.abort();
    pool.shutdown().await;
    Ok(())
}
