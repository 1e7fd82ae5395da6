//! What operators use: `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz`
//! (the database and the blob store answer). Request metrics are recorded by a route layer on each
//! face, labelled with the matched route template, never the raw path (ids would explode the series).

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use satchel_blob::BlobStore;
use satchel_domain::service::Satchel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_served: IntCounter,
    tickets: IntGaugeVec,
    queue_waiting: IntGauge,
    queue_running: IntGauge,
    oldest_job_age: prometheus::Gauge,
    archive_bytes: IntGauge,
    auth_failures: IntCounter,
    auth_throttled: IntCounter,
    password_checks: IntCounter,
    rate_limited: IntCounterVec,
    status_polls: IntCounterVec,
    ticket_cache_resets: IntCounter,
    ticket_cache_live: IntGauge,
    store_checkouts: IntCounter,
    login_revalidations: IntCounter,
    /// Scrapes mirror the authenticator's counters by difference; one at a time.
    scrape: Mutex<()>,
}

fn err(e: prometheus::Error) -> anyhow::Error {
    anyhow::anyhow!("registering metrics: {e}")
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("satchel_http_requests_total", "HTTP requests answered"),
            &["face", "method", "route", "status"],
        )
        .map_err(err)?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "satchel_http_request_duration_seconds",
                "Time to the response head (bodies stream on)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["face", "method", "route"],
        )
        .map_err(err)?;
        let bytes_served = IntCounter::new(
            "satchel_http_response_bytes_total",
            "Response body bytes sent (downloads included)",
        )
        .map_err(err)?;
        let tickets = IntGaugeVec::new(
            Opts::new(
                "satchel_tickets",
                "Tickets (exports, images) by kind and state",
            ),
            &["kind", "state"],
        )
        .map_err(err)?;
        let queue_waiting =
            IntGauge::new("satchel_jobs_waiting", "Jobs waiting to be claimed").map_err(err)?;
        let queue_running =
            IntGauge::new("satchel_jobs_running", "Jobs under a live lease").map_err(err)?;
        let oldest_job_age = prometheus::Gauge::new(
            "satchel_jobs_oldest_waiting_age_seconds",
            "Age of the oldest waiting job (0 when none waits)",
        )
        .map_err(err)?;
        let archive_bytes = IntGauge::new(
            "satchel_archive_bytes",
            "Bytes of completed archives kept (exports and images)",
        )
        .map_err(err)?;
        let auth_failures = IntCounter::new(
            "satchel_auth_failures_total",
            "Logins refused for wrong credentials",
        )
        .map_err(err)?;
        let auth_throttled = IntCounter::new(
            "satchel_auth_throttled_total",
            "Logins answered 429 (failed-login throttle or password-check queue full)",
        )
        .map_err(err)?;
        let password_checks = IntCounter::new(
            "satchel_password_checks_total",
            "argon2 password verifications run (cached and single-flight logins run none)",
        )
        .map_err(err)?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "satchel_rate_limited_total",
                "Requests answered 429, by face",
            ),
            &["face"],
        )
        .map_err(err)?;
        let status_polls = IntCounterVec::new(
            Opts::new(
                "satchel_status_polls_total",
                "Ticket status polls, by where the ticket came from: this instance's memory (no \
                 store read) or the store",
            ),
            &["answered"],
        )
        .map_err(err)?;
        let ticket_cache_resets = IntCounter::new(
            "satchel_ticket_cache_resets_total",
            "Times the status polls' ticket memory was dropped whole (a lost LISTEN connection)",
        )
        .map_err(err)?;
        let ticket_cache_live = IntGauge::new(
            "satchel_ticket_cache_live",
            "1 while status polls may answer from memory (PostgreSQL: the LISTEN connection is up)",
        )
        .map_err(err)?;
        let store_checkouts = IntCounter::new(
            "satchel_store_checkouts_total",
            "Database connections used and handed back: one per statement or transaction",
        )
        .map_err(err)?;
        let login_revalidations = IntCounter::new(
            "satchel_login_revalidations_total",
            "Store reads rechecking a remembered login (at most one per login per --login-revalidate)",
        )
        .map_err(err)?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(bytes_served.clone()),
            Box::new(tickets.clone()),
            Box::new(queue_waiting.clone()),
            Box::new(queue_running.clone()),
            Box::new(oldest_job_age.clone()),
            Box::new(archive_bytes.clone()),
            Box::new(auth_failures.clone()),
            Box::new(auth_throttled.clone()),
            Box::new(password_checks.clone()),
            Box::new(rate_limited.clone()),
            Box::new(status_polls.clone()),
            Box::new(ticket_cache_resets.clone()),
            Box::new(ticket_cache_live.clone()),
            Box::new(store_checkouts.clone()),
            Box::new(login_revalidations.clone()),
        ] {
            registry.register(c).map_err(err)?;
        }
        Ok(Metrics {
            registry,
            requests,
            latency,
            bytes_served,
            tickets,
            queue_waiting,
            queue_running,
            oldest_job_age,
            archive_bytes,
            auth_failures,
            auth_throttled,
            password_checks,
            rate_limited,
            status_polls,
            ticket_cache_resets,
            ticket_cache_live,
            store_checkouts,
            login_revalidations,
            scrape: Mutex::new(()),
        })
    }

    /// The text exposition, with the gauges read from the store now.
    pub async fn render(&self, satchel: &Satchel) -> Result<String, String> {
        let store = &satchel.store;
        let counts = store.ticket_counts().await.map_err(|e| e.to_string())?;
        let now = satchel_domain::model::now_millis();
        let q = store.queue_stats(now).await.map_err(|e| e.to_string())?;
        let _one = self.scrape.lock().map_err(|_| "scrape lock poisoned")?;
        self.tickets.reset();
        for (kind, state, n) in counts {
            self.tickets.with_label_values(&[&kind, &state]).set(n);
        }
        self.queue_waiting.set(q.waiting);
        self.queue_running.set(q.running);
        self.oldest_job_age.set(
            q.oldest_waiting
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
        );
        self.archive_bytes.set(q.archive_bytes);
        let mirror = |c: &IntCounter, now: u64| {
            if now > c.get() {
                c.inc_by(now - c.get());
            }
        };
        mirror(&self.auth_failures, satchel.auth.failures() as u64);
        mirror(&self.auth_throttled, satchel.auth.throttled() as u64);
        mirror(&self.password_checks, satchel.auth.verifications() as u64);
        mirror(
            &self.login_revalidations,
            satchel.auth.revalidations() as u64,
        );
        // Read last, so the scrape's own reads above are in it.
        mirror(&self.store_checkouts, store.checkouts());
        if let Some(cache) = satchel.ticket_cache() {
            mirror(
                &self.status_polls.with_label_values(&["memory"]),
                cache.hits(),
            );
            mirror(
                &self.status_polls.with_label_values(&["store"]),
                cache.misses(),
            );
            mirror(&self.ticket_cache_resets, cache.resets());
            self.ticket_cache_live.set(i64::from(cache.is_live()));
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// The route layer of one face: counts and times each request under its route template.
pub async fn track(
    State((metrics, face)): State<(Arc<Metrics>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        // `:uid` rather than `{uid}`: braces inside label values trip up simple exposition parsers.
        .map(|m| m.as_str().replace('{', ":").replace('}', ""))
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    metrics
        .latency
        .with_label_values(&[face, &method, &route])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[face, &method, &route, status.as_str()])
        .inc();
    if status.is_server_error() {
        tracing::error!(face, %method, %route, status = status.as_u16(), "request failed");
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        metrics.rate_limited.with_label_values(&[face]).inc();
    }
    let counter = metrics.bytes_served.clone();
    let (parts, body) = resp.into_parts();
    let body = body.map_frame(move |f| {
        if let Some(d) = f.data_ref() {
            counter.inc_by(d.len() as u64);
        }
        f
    });
    Response::from_parts(parts, Body::new(body))
}

/// `/metrics` on the main port: administrators only (HTTP Basic).
pub async fn metrics_for_admin(
    satchel: &Satchel,
    metrics: &Metrics,
    headers: &HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Response {
    // The same Basic parsing as the UForge face's.
    let Ok((login, password)) = satchel_api_uforge::basic_credentials(headers) else {
        return plain(
            StatusCode::UNAUTHORIZED,
            "metrics need an administrator's credentials (HTTP Basic)",
        );
    };
    match satchel.auth.login(&login, &password, source).await {
        Ok(p) if p.user.admin => metrics_page(satchel, metrics).await,
        Ok(_) => plain(StatusCode::FORBIDDEN, "metrics are for administrators"),
        Err(satchel_domain::DomainError::Throttled { retry_after, .. }) => {
            let mut r = plain(StatusCode::TOO_MANY_REQUESTS, "too many failed logins");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            r
        }
        Err(_) => plain(StatusCode::UNAUTHORIZED, "invalid login or password"),
    }
}

pub async fn metrics_page(satchel: &Satchel, metrics: &Metrics) -> Response {
    match metrics.render(satchel).await {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "rendering metrics failed");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics unavailable: the database did not answer",
            )
        }
    }
}

/// `/readyz`: 200 when a database round trip and a blob-store request both succeed.
pub async fn readyz(satchel: &Satchel, blobs: &dyn BlobStore) -> Response {
    if let Err(e) = satchel.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return plain(StatusCode::SERVICE_UNAVAILABLE, "database unreachable");
    }
    // A missing object is a healthy answer; anything else means the store cannot be reached.
    match blobs.exists("readyz/probe").await {
        Ok(_) => plain(StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: blob store unreachable");
            plain(StatusCode::SERVICE_UNAVAILABLE, "blob store unreachable")
        }
    }
}

pub fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, format!("{text}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
