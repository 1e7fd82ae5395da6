//! The accept loop: hyper with the limits every client is held to — a connection cap, a deadline for
//! request headers (slowloris), a bound on header bytes, an idle timeout between body bytes — and a
//! graceful shutdown that stops accepting, lets requests in flight finish within a grace period, then
//! drops the rest.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections served at once; past it, new connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (from the first byte, or from the end of the
    /// previous response on a kept-alive connection).
    pub header_timeout: Duration,
    /// Largest request head (request line + headers) in bytes.
    pub max_header_bytes: usize,
    /// Longest pause between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// How long requests in flight may run on after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            body_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains within the grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_idle_timeout,
        ))
        .service(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's minimum is 8 KiB; the buffer bounds the request head.
        .max_buf_size(limits.max_header_bytes.max(8192));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Notes which requests carried both Content-Length and Transfer-Encoding, which hyper
        // does not report (`framing`); the faces' front refuses them.
        let (stream, heads) = crate::framing::Watched::new(stream, limits.max_header_bytes);
        let svc = app
            .clone()
            .map_request(move |mut req: axum::http::Request<_>| {
                // The peer address feeds the failed-login throttle.
                req.extensions_mut().insert(ConnectInfo(peer));
                if heads.next_is_ambiguous() {
                    req.extensions_mut().insert(crate::framing::AmbiguousLength);
                }
                req
            });
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "no longer accepting; draining requests in flight"
    );
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "requests still running after the shutdown grace period were dropped"
        );
    }
    Ok(())
}
