//! Passwords (argon2id) and logins, built to survive a crowd.
//!
//! - A successful check is remembered, keyed by a salted digest of (login, password), never the
//!   password itself. A use at most [`AuthConfig::revalidate_every`] (1 s by default) after the
//!   last check of the entry against the store answers from memory; a later one re-reads the
//!   user's record and compares the stored hash, so a removed user or a changed password (even by
//!   `satchel admin` in another process, or on another instance) stops working within that bound
//!   (plus the one read in flight). One request per entry does that read; the others meanwhile
//!   still answer from memory. The entry slides on use, and an active user never sees it expire
//!   (no crowd of pollers re-hashing at once).
//! - argon2 (19 MiB and tens of ms per check) runs on blocking threads, at most
//!   `max_concurrent` at once, with a short queue; past it the answer is `Throttled` (429).
//! - Identical credentials in flight are verified once (single flight).
//! - Failed logins drain token buckets per source address and per login; an empty bucket answers
//!   `Throttled` before any hashing. Cached sessions are never throttled.
//! - Unknown users cost one argon2 check too, so logins cannot be probed by timing.

use crate::limits::Buckets;
use crate::model::{Principal, UserRecord};
use crate::ports::Store;
use crate::{DomainError, Result};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};

pub fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(DomainError::Invalid("password must not be empty".into()));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("hashing password: {e}").into()))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Limits of the login path.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// argon2 checks running at once (each holds 19 MiB); default: the number of cores.
    pub max_concurrent: usize,
    /// Checks allowed to wait for a slot; past this a login answers 429 at once.
    pub queue: usize,
    /// A remembered login is forgotten after this long unused.
    pub idle_ttl: Duration,
    /// A remembered login is checked against the store again once this long has passed since its
    /// last check: the bound on how long a removed user or a replaced password keeps working
    /// (`Duration::ZERO`: every use reads the store).
    pub revalidate_every: Duration,
    /// Failed logins a source address may make in a burst, and how fast that refills.
    pub source_burst: u32,
    pub source_refill: Duration,
    /// Failed logins per login name in a burst, and how fast that refills.
    pub login_burst: u32,
    pub login_refill: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        AuthConfig {
            max_concurrent: cores,
            queue: 4 * cores,
            idle_ttl: Duration::from_secs(300),
            revalidate_every: Duration::from_secs(1),
            source_burst: 30,
            source_refill: Duration::from_secs(2),
            login_burst: 10,
            login_refill: Duration::from_secs(6),
        }
    }
}

struct Remembered {
    principal: Principal,
    /// The stored hash this login was verified against; the entry is only good while it is current.
    password_hash: String,
    last_used: Instant,
    /// When the entry was last found to match the store (or claimed for that check).
    checked: Instant,
}

/// The outcome of one verification, shared by every request waiting on the same credentials.
#[derive(Clone)]
enum Verdict {
    Granted(Box<UserRecord>),
    Denied,
    Busy,
    Failed(String),
}

/// Verifies logins against the store, within the limits of [`AuthConfig`].
pub struct Authenticator {
    store: Arc<dyn Store>,
    config: AuthConfig,
    salt: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], Remembered>>,
    inflight: Mutex<HashMap<[u8; 32], Arc<OnceCell<Verdict>>>>,
    hashing: Semaphore,
    /// Checks running or waiting for a slot.
    admitted: AtomicUsize,
    by_source: Mutex<Buckets>,
    by_login: Mutex<Buckets>,
    /// argon2 runs, refused logins and throttled ones, for metrics.
    verifications: AtomicUsize,
    /// Store reads that rechecked a remembered login.
    revalidations: AtomicUsize,
    failures: AtomicUsize,
    throttled: AtomicUsize,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, config: AuthConfig) -> Self {
        Authenticator {
            store,
            salt: rand::random(),
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(config.max_concurrent.max(1)),
            admitted: AtomicUsize::new(0),
            by_source: Mutex::new(Buckets::new(config.source_burst, config.source_refill)),
            by_login: Mutex::new(Buckets::new(config.login_burst, config.login_refill)),
            verifications: AtomicUsize::new(0),
            revalidations: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            config,
        }
    }

    fn key(&self, login: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((login.len() as u64).to_le_bytes());
        h.update(login.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// How many argon2 checks this authenticator has run.
    pub fn verifications(&self) -> usize {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Store reads made to recheck remembered logins.
    pub fn revalidations(&self) -> usize {
        self.revalidations.load(Ordering::Relaxed)
    }

    /// Logins refused for wrong credentials.
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }

    /// Logins answered 429 (throttled address or login, or too many checks at once).
    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Authenticates `login`/`password`, from `source` when the face knows the peer's address.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<Principal> {
        let key = self.key(login, password);
        if let Some(p) = self.remembered(&key, login).await? {
            return Ok(p);
        }
        let denied = || DomainError::Unauthenticated("invalid login or password".into());
        let source_key = source.map(|ip| ip.to_string());
        if let Err(e) = self.check_throttle(source_key.as_deref(), login) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }

        // Single flight: the first request for these credentials verifies, the others wait for it.
        let cell = {
            let mut map = self.inflight.lock().map_err(poisoned)?;
            map.entry(key).or_default().clone()
        };
        let verdict = cell
            .get_or_init(|| self.verify(login.to_string(), password.to_string()))
            .await
            .clone();
        // Remembered before the in-flight entry goes, so no request in between hashes again.
        if let Verdict::Granted(rec) = &verdict {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() > 10_000 {
                    let ttl = self.config.idle_ttl;
                    cache.retain(|_, r| r.last_used.elapsed() < ttl);
                }
                cache.insert(
                    key,
                    Remembered {
                        principal: Principal {
                            user: rec.user.clone(),
                        },
                        password_hash: rec.password_hash.clone(),
                        last_used: Instant::now(),
                        checked: Instant::now(),
                    },
                );
            }
        }
        if let Ok(mut map) = self.inflight.lock() {
            if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(&key);
            }
        }
        match verdict {
            Verdict::Granted(rec) => Ok(Principal { user: rec.user }),
            Verdict::Denied => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.record_failure(source_key.as_deref(), login);
                Err(denied())
            }
            Verdict::Busy => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                Err(DomainError::throttled(
                    1,
                    "too many logins are being checked; retry shortly",
                ))
            }
            Verdict::Failed(m) => Err(DomainError::Internal(m.into())),
        }
    }

    /// A remembered login, if it is still backed by the user's current record: as of at most
    /// `revalidate_every` ago, else as of a store read made now.
    async fn remembered(&self, key: &[u8; 32], login: &str) -> Result<Option<Principal>> {
        let (hash, claimed) = {
            let mut cache = self.cache.lock().map_err(poisoned)?;
            let Some(r) = cache.get_mut(key) else {
                return Ok(None);
            };
            if r.last_used.elapsed() >= self.config.idle_ttl {
                return Ok(None);
            }
            let now = Instant::now();
            if now.duration_since(r.checked) < self.config.revalidate_every {
                // Checked recently enough: memory only.
                r.last_used = now;
                return Ok(Some(r.principal.clone()));
            }
            // This request rechecks; until it is done the others keep answering from memory
            // (the bound grows by this one read, not by a crowd of them).
            let claimed = std::mem::replace(&mut r.checked, now);
            (r.password_hash.clone(), claimed)
        };
        self.revalidations.fetch_add(1, Ordering::Relaxed);
        // The read that makes revocation prompt: the stored hash changes with every password
        // change, and a removed-and-re-added user gets a new one (new salt).
        let current = match self.store.user_by_login(login).await {
            Ok(c) => c,
            Err(e) => {
                // Not rechecked after all: the next request tries again.
                if let Ok(mut cache) = self.cache.lock() {
                    if let Some(r) = cache.get_mut(key) {
                        r.checked = r.checked.min(claimed);
                    }
                }
                return Err(e);
            }
        };
        let mut cache = self.cache.lock().map_err(poisoned)?;
        match current {
            Some(rec) if rec.password_hash == hash => {
                let principal = Principal { user: rec.user };
                if let Some(r) = cache.get_mut(key) {
                    r.last_used = Instant::now();
                    // Entitlements and the admin flag as they are now.
                    r.principal = principal.clone();
                }
                Ok(Some(principal))
            }
            _ => {
                cache.remove(key);
                Ok(None)
            }
        }
    }

    fn check_throttle(&self, source: Option<&str>, login: &str) -> Result<()> {
        let now = Instant::now();
        let mut wait = None;
        if let Some(src) = source {
            wait = self.by_source.lock().map_err(poisoned)?.wait(src, now);
        }
        if let Some(w) = self.by_login.lock().map_err(poisoned)?.wait(login, now) {
            wait = Some(wait.map_or(w, |v: u64| v.max(w)));
        }
        match wait {
            Some(secs) => Err(DomainError::throttled(
                secs,
                format!("too many failed logins; retry in {secs} s"),
            )),
            None => Ok(()),
        }
    }

    fn record_failure(&self, source: Option<&str>, login: &str) {
        let now = Instant::now();
        if let Some(src) = source {
            if let Ok(mut b) = self.by_source.lock() {
                if b.fail(src, now) {
                    tracing::warn!(
                        source = src,
                        "failed logins from this address are throttled"
                    );
                }
            }
        }
        if let Ok(mut b) = self.by_login.lock() {
            if b.fail(login, now) {
                tracing::warn!(login, "failed logins for this login are throttled");
            }
        }
    }

    /// One argon2 check on a blocking thread, within the concurrency bound.
    async fn verify(&self, login: String, password: String) -> Verdict {
        let rec = match self.store.user_by_login(&login).await {
            Ok(r) => r,
            Err(e) => return Verdict::Failed(e.to_string()),
        };
        let limit = self.config.max_concurrent.max(1) + self.config.queue;
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= limit {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Verdict::Busy;
        }
        let _admitted = Admitted(&self.admitted);
        let Ok(_permit) = self.hashing.acquire().await else {
            return Verdict::Failed("login semaphore closed".into());
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        // Unknown users are checked against a fixed hash so both cases cost the same.
        let hash = rec
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_string(), |r| r.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await;
        match (ok, rec) {
            (Ok(true), Some(rec)) => Verdict::Granted(Box::new(rec)),
            (Ok(_), _) => Verdict::Denied,
            (Err(e), _) => Verdict::Failed(e.to_string()),
        }
    }

    /// For credentials without a login name (API keys): only the per-address bucket applies.
    pub(crate) fn check_source(&self, source: Option<IpAddr>) -> Result<()> {
        let Some(src) = source.map(|ip| ip.to_string()) else {
            return Ok(());
        };
        let wait = self
            .by_source
            .lock()
            .map_err(poisoned)?
            .wait(&src, Instant::now());
        match wait {
            Some(secs) => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                Err(DomainError::throttled(
                    secs,
                    format!("too many failed logins; retry in {secs} s"),
                ))
            }
            None => Ok(()),
        }
    }

    /// A refused API-key request: counted and charged like a wrong password, to its address.
    pub(crate) fn record_source_failure(&self, source: Option<IpAddr>) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let Some(src) = source.map(|ip| ip.to_string()) else {
            return;
        };
        if let Ok(mut b) = self.by_source.lock() {
            if b.fail(&src, Instant::now()) {
                tracing::warn!(source = %src, "failed logins from this address are throttled");
            }
        }
    }

    /// Forget remembered logins (not needed for revocation, which uses recheck within
    /// `revalidate_every`).
    pub fn clear(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }
}

struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn poisoned<T>(_: T) -> DomainError {
    DomainError::Internal("login state lock poisoned".into())
}

const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2F0Y2hlbGR1bW15c2FsdA$4cVCW0D5Qrqm3qRr8wxOJw5TT0dJeGEpBEVsVhgnnbE";

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret", "garbage"));
    }

    #[test]
    fn dummy_hash_parses_so_unknown_users_cost_a_full_check() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
