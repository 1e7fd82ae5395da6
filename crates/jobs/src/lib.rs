//! The job runtime. Each worker loops: claim a job (with a lease), run the handler while a heartbeat
//! task renews the lease, then remove the job, or give it back for a retry with backoff. A job whose
//! attempts are used up is handed to `give_up` so its ticket ends in `error` instead of hanging.
//! If the heartbeat finds the lease lost (another instance took over), the handler is cancelled.
//! A handler may keep its own retry schedule (`JobHandler::retry_delay`).

use satchel_domain::model::Job;
use satchel_domain::ports::{JobHandler, Store};
use satchel_domain::{DomainError, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Routes each job to the handler registered for its kind, so one pool (one queue, one fairness
/// rule, one set of leases) runs every kind of background work.
#[derive(Default)]
pub struct Dispatch {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl Dispatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(kind.to_string(), handler);
        self
    }

    fn handler(&self, job: &Job) -> Result<&Arc<dyn JobHandler>> {
        self.handlers.get(&job.kind).ok_or_else(|| {
            // A job written by a newer version: retried (and given up) rather than dropped.
            DomainError::Internal(format!("no handler for jobs of kind {:?}", job.kind).into())
        })
    }
}

#[async_trait::async_trait]
impl JobHandler for Dispatch {
    async fn run(&self, job: &Job, cancel: CancellationToken) -> Result<()> {
        self.handler(job)?.run(job, cancel).await
    }

    fn retry_delay(&self, job: &Job) -> Option<Duration> {
        self.handler(job).ok().and_then(|h| h.retry_delay(job))
    }

    async fn give_up(&self, job: &Job, error: &str) -> Result<()> {
        match self.handler(job) {
            Ok(h) => h.give_up(job, error).await,
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "giving up a job nobody can run");
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub idle_poll: Duration,
    pub retry_backoff: Duration,
    /// Jobs of one user running at once (across instances sharing the queue).
    pub per_user: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 2,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            idle_poll: Duration::from_millis(500),
            retry_backoff: Duration::from_secs(2),
            per_user: u32::MAX,
        }
    }
}

/// A running pool. Whoever enqueues notifies the pool's waker (`start_with_waker`) so an idle
/// worker starts at once.
pub struct WorkerPool {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    pub owner: String,
}

impl WorkerPool {
    pub fn start(store: Arc<dyn Store>, handler: Arc<dyn JobHandler>, cfg: PoolConfig) -> Self {
        Self::start_with_waker(store, handler, cfg, Arc::new(Notify::new()))
    }

    /// As [`WorkerPool::start`], woken by `wake` (handed to the services that enqueue jobs before
    /// the pool, whose handlers need those services, exists).
    pub fn start_with_waker(
        store: Arc<dyn Store>,
        handler: Arc<dyn JobHandler>,
        cfg: PoolConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let owner = format!("satchel-{}", uuid::Uuid::new_v4().simple());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for n in 0..cfg.workers {
            let w = Worker {
                store: store.clone(),
                handler: handler.clone(),
                cfg: cfg.clone(),
                owner: owner.clone(),
                wake: wake.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(async move {
                tracing::debug!(worker = n, "job worker started");
                w.run().await
            });
        }
        WorkerPool { stop, tasks, owner }
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

struct Worker {
    store: Arc<dyn Store>,
    handler: Arc<dyn JobHandler>,
    cfg: PoolConfig,
    owner: String,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self) {
        while !self.stop.is_cancelled() {
            match self
                .store
                .claim_job_fair(&self.owner, self.cfg.lease, self.cfg.per_user)
                .await
            {
                Ok(Some(job)) => self.process(job).await,
                Ok(None) => {
                    // `wake` covers jobs enqueued by this process; the store's wait covers other
                    // instances sharing the queue (PostgreSQL NOTIFY) and otherwise just sleeps
                    // `idle_poll`, which is the polling fallback either way.
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = self.store.wait_for_jobs(self.cfg.idle_poll) => {}
                        _ = self.stop.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed");
                    tokio::time::sleep(self.cfg.idle_poll).await;
                }
            }
        }
    }

    async fn process(&self, job: Job) {
        // `instrument`, not `span.enter()`: an entered span held across `.await` migrates between
        // runtime threads and corrupts the subscriber's span stack (it panicked in a busy test).
        let span = tracing::info_span!("job", id = job.id, kind = %job.kind, subject = %job.subject, attempt = job.attempts);
        self.process_in_span(job).instrument(span).await
    }

    async fn process_in_span(&self, job: Job) {
        if job.attempts > job.max_attempts {
            let why = job
                .last_error
                .clone()
                .unwrap_or_else(|| "the job kept failing".into());
            tracing::warn!(error = %why, "job used all its attempts; giving up");
            if let Err(e) = self.handler.give_up(&job, &why).await {
                tracing::error!(error = %e, "could not record a failed job");
                return;
            }
            let _ = self.store.finish_job(job.id, &self.owner).await;
            return;
        }
        let cancel = self.stop.child_token();
        // Whatever happens below (even a panic unwinding this task), the heartbeat stops, so the
        // lease lapses and another worker can take the job over.
        let _stop_heartbeat = cancel.clone().drop_guard();
        let hb = {
            let (store, owner, cfg, cancel) = (
                self.store.clone(),
                self.owner.clone(),
                self.cfg.clone(),
                cancel.clone(),
            );
            let id = job.id;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(cfg.heartbeat) => {}
                    }
                    match store.heartbeat(id, &owner, cfg.lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job = id, "lease lost or job removed; cancelling");
                            cancel.cancel();
                            return;
                        }
                        Err(e) => tracing::warn!(job = id, error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        // The handler runs in a task of its own so that a panic in it is one failed attempt
        // (retried, then given up) instead of a dead worker holding a lease forever.
        let res = {
            let (handler, j, c) = (self.handler.clone(), job.clone(), cancel.clone());
            match tokio::spawn(async move { handler.run(&j, c).await }.in_current_span()).await {
                Ok(r) => r,
                Err(e) => Err(DomainError::Internal(
                    format!("the job handler panicked: {e}").into(),
                )),
            }
        };
        let lost = cancel.is_cancelled();
        cancel.cancel();
        let _ = hb.await;
        match res {
            Ok(()) => {
                if let Err(e) = self.store.finish_job(job.id, &self.owner).await {
                    tracing::warn!(error = %e, "removing a finished job failed; it will be re-run idempotently");
                }
            }
            Err(e) if lost && self.stop.is_cancelled() => {
                tracing::info!(error = %e, "job interrupted by shutdown; it will be retried");
                let _ = self
                    .store
                    .retry_job(
                        job.id,
                        &self.owner,
                        "interrupted by shutdown",
                        Duration::ZERO,
                    )
                    .await;
            }
            Err(e) => {
                // The handler's own schedule if it has one (webhooks), else the pool's.
                let delay = self.handler.retry_delay(&job).unwrap_or_else(|| {
                    self.cfg.retry_backoff * 2u32.saturating_pow((job.attempts - 1).max(0) as u32)
                });
                tracing::warn!(error = %e, ?delay, "job attempt failed; will retry");
                let _ = self
                    .store
                    .retry_job(job.id, &self.owner, &e.to_string(), delay)
                    .await;
            }
        }
    }
}
