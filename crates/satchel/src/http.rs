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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
        let conn = Conn {
            app: app.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            max_header_bytes: limits.max_header_bytes,
            peer,
        };
        match conn_threads() {
            Some(threads) => {
                // A tokio stream belongs to the runtime it was registered with: hand the socket
                // over as a std one and register it on the connection's thread.
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, %peer, "handing a connection over failed");
                        continue;
                    }
                };
                let (handle, load) = threads.least_loaded();
                handle.spawn(async move {
                    let _load = load;
                    match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => conn.serve(stream).await,
                        Err(e) => {
                            tracing::warn!(error = %e, %peer, "registering a connection failed")
                        }
                    }
                    drop(permit);
                });
            }
            None => {
                tokio::spawn(async move {
                    conn.serve(stream).await;
                    drop(permit);
                });
            }
        }
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

/// One accepted connection, served to its end on whichever runtime polls it.
struct Conn {
    app: tower_http::timeout::RequestBodyTimeout<Router>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    max_header_bytes: usize,
    peer: std::net::SocketAddr,
}

impl Conn {
    async fn serve(self, stream: tokio::net::TcpStream) {
        let Conn {
            app,
            builder,
            watcher,
            max_header_bytes,
            peer,
        } = self;
        // Notes which requests carried both Content-Length and Transfer-Encoding, which hyper
        // does not report (`framing`); the faces' front refuses them.
        let (stream, heads) = crate::framing::Watched::new(stream, max_header_bytes);
        let svc = app.map_request(move |mut req: axum::http::Request<_>| {
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
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    }
}

/// The connection threads: one single-threaded runtime per core, each serving the connections the
/// accept loop hands it, every request of a connection on the same thread.
///
/// Why not the main (multi-threaded) runtime: there a kept-alive connection's requests wake
/// whichever worker is idle, and those wakeups (futexes, cross-core interrupts, task switches)
/// cost more than a small request's own work: a `304` status poll took ~33 µs of CPU there against
/// ~22 µs on one thread, and these threads alone made `bench/poll.sh` ~10 % faster. The main
/// runtime keeps the jobs and timers.
///
/// The threads live as long as the process, whoever started them: a PostgreSQL connection a
/// request opens stays registered with that request's runtime, and the pool lends it to others.
struct ConnThreads {
    threads: Vec<(tokio::runtime::Handle, Arc<AtomicUsize>)>,
}

/// Released when a connection ends: the thread's count of connections goes down.
struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnThreads {
    fn start(n: usize) -> std::io::Result<ConnThreads> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("satchel-http-{i}-blocking"))
                .build()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name(format!("satchel-http-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
            threads.push((handle, Arc::new(AtomicUsize::new(0))));
        }
        Ok(ConnThreads { threads })
    }

    /// The thread serving the fewest connections (the first of equals), its count raised.
    fn least_loaded(&self) -> (&tokio::runtime::Handle, Load) {
        let (handle, load) = self
            .threads
            .iter()
            .min_by_key(|(_, l)| l.load(Ordering::Relaxed))
            .expect("at least one connection thread");
        load.fetch_add(1, Ordering::Relaxed);
        (handle, Load(load.clone()))
    }
}

/// The process's connection threads, started on first use; `None` when none could be started
/// (connections are then served on the caller's runtime, as before).
fn conn_threads() -> Option<&'static ConnThreads> {
    static THREADS: OnceLock<Option<ConnThreads>> = OnceLock::new();
    THREADS
        .get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(2, |n| n.get());
            ConnThreads::start(n.max(1))
                .map_err(|e| {
                    tracing::warn!(error = %e, "no connection threads; serving on the main runtime")
                })
                .ok()
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_thread_and_run_there() {
        let threads = ConnThreads::start(2).unwrap();
        let count = |i: usize| threads.threads[i].1.load(Ordering::Relaxed);

        let (_, a) = threads.least_loaded();
        let (_, b) = threads.least_loaded();
        assert_eq!((count(0), count(1)), (1, 1), "one connection each");
        let (_, c) = threads.least_loaded();
        assert_eq!(count(0) + count(1), 3);
        drop((a, b, c));
        assert_eq!(
            (count(0), count(1)),
            (0, 0),
            "ended connections are not counted"
        );

        // A task handed over runs on that thread's runtime, not on the caller's.
        let (handle, _load) = threads.least_loaded();
        let name = handle
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("satchel-http-0"));
    }
}
