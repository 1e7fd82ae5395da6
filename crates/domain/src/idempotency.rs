//! `Idempotency-Key`: a retried `POST` that creates a ticket or stores an upload gets the first answer
//! back instead of creating a second one.
//!
//! The rule, shared by both faces:
//! - A key is scoped to the authenticated user and kept 24 h ([`TTL`]); another user's identical key
//!   is unrelated.
//! - A request's fingerprint is sha256("METHOD target") plus sha256(body). For a streamed upload the
//!   body digest is the sha256 the blob layer computes while storing it, and a retry's body is hashed
//!   without being stored.
//! - Same key, same fingerprint, first request done: the recorded answer (status, headers, document)
//!   is replayed. Same key, another method, path, query or body: `Conflict` (409).
//! - Only successful (2xx) answers are recorded. An error releases the key, so the retry runs again
//!   (a request that failed created nothing).
//! - Claim, then record: [`Idempotency::begin`] inserts the key as `pending` with one conditional
//!   statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE <expired or lapsed>`), so of any number
//!   of racing requests, on any number of instances, exactly one runs; [`Claim::record`] stores the
//!   answer. A retry that finds the key pending waits for the first request ([`Config::wait`], 10 s)
//!   and then answers like any retry; if the first is still running after that (a long upload), it is
//!   `Conflict` with a message saying so.
//! - A pending claim holds a lease ([`Config::lease`]) that its request renews while it runs. An
//!   instance that dies mid-request leaves the key pending until the lease lapses; the next retry of
//!   the same request then takes the claim over and runs again. Lease and expiry times are the
//!   instances' clocks (not the database's): the 30 s lease is far above any sane skew.

use crate::model::{now_millis, Id, Millis};
use crate::ports::Store;
use crate::{DomainError, Result};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The response header set on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted key.
pub const MAX_KEY: usize = 255;
/// Largest answer body recorded (answers are documents of a few KiB); a larger one is not recorded.
pub const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub ttl: Duration,
    /// How long a pending claim stays valid without renewal (renewed every third of it).
    pub lease: Duration,
    /// How long a retry waits for a first request still in flight.
    pub wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: TTL,
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(10),
        }
    }
}

/// A recorded answer: what the face sent the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Header lines set by the handler (content type, location, ...), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The headers as stored: `name: value` lines (header values cannot hold line breaks).
    pub fn headers_text(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }

    pub fn parse_headers(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Pending,
    Done,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Done => "done",
        }
    }
    pub fn parse(s: &str) -> Option<KeyState> {
        match s {
            "pending" => Some(KeyState::Pending),
            "done" => Some(KeyState::Done),
            _ => None,
        }
    }
}

/// A claim to insert (or to take over an expired or lapsed one with).
#[derive(Debug, Clone)]
pub struct NewClaim {
    pub owner: Id,
    pub key: String,
    pub request_hash: String,
    /// Known up front for documents; `None` for a streamed upload (recorded with the answer).
    pub body_hash: Option<String>,
    /// Identifies this claim: renewals and the record only apply while it still holds the key.
    pub token: String,
    pub now: Millis,
    pub locked_until: Millis,
    pub expires_at: Millis,
}

/// A stored key as the store reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub request_hash: String,
    pub body_hash: Option<String>,
    pub state: KeyState,
    pub token: String,
    pub locked_until: Millis,
    pub expires_at: Millis,
    /// Set when `Done`.
    pub answer: Option<Answer>,
}

/// What `begin` decided.
#[derive(Debug)]
pub enum Begin {
    /// This request holds the key: run it, then `record` (or drop the claim to release the key).
    Run(Claim),
    /// The first answer, to send again.
    Replay(Answer),
    /// A streamed upload was answered before: send `answer` again only if this retry's body hashes
    /// to `body_hash` (see [`stream_sha256`]), else it is a different request.
    ReplayIfBody { body_hash: String, answer: Answer },
}

/// sha256 of the request line the key is bound to (method and target, query included).
pub fn request_hash(method: &str, target: &str) -> String {
    hex::encode(Sha256::digest(format!("{method} {target}").as_bytes()))
}

/// sha256 of a request body, hex, in the same form the blob layer reports for uploads.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The key from a header value: 1 to 255 visible ASCII characters, optionally in double quotes (the
/// IETF draft's structured-field string form).
/// The key of a request from the values of its `Idempotency-Key` headers: none, or exactly one.
pub fn single_key<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<Option<String>> {
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => parse_key(v).map(Some),
        (Some(_), Some(_)) => Err(DomainError::Invalid(
            "a request carries at most one Idempotency-Key".into(),
        )),
    }
}

pub fn parse_key(value: &[u8]) -> Result<String> {
    let bad = || {
        DomainError::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"
        ))
    };
    let s = std::str::from_utf8(value).map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s);
    if s.is_empty() || s.len() > MAX_KEY || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// Hashes a retried upload's body without storing it; `None` when it is longer than `limit` (then it
/// cannot be the body first stored). Chunks are hashed in 1 MiB batches on blocking threads.
pub async fn stream_sha256<S, E>(body: S, limit: u64) -> Result<Option<String>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut hasher = Sha256::new();
    let mut batch: Vec<Bytes> = Vec::new();
    let (mut pending, mut total) = (0usize, 0u64);
    loop {
        let next = body.next().await;
        let end = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk
                .map_err(|e| DomainError::Invalid(format!("reading the request body: {e}")))?;
            total += chunk.len() as u64;
            if total > limit {
                return Ok(None);
            }
            pending += chunk.len();
            batch.push(chunk);
        }
        if pending >= 1 << 20 || (end && pending > 0) {
            let chunks = std::mem::take(&mut batch);
            pending = 0;
            hasher = tokio::task::spawn_blocking(move || {
                for c in &chunks {
                    hasher.update(c);
                }
                hasher
            })
            .await
            .map_err(|e| {
                DomainError::Internal(crate::Cause::context("hashing the request body", e))
            })?;
        }
        if end {
            return Ok(Some(hex::encode(hasher.finalize())));
        }
    }
}

fn conflict_other_request() -> DomainError {
    DomainError::Conflict(
        "this Idempotency-Key was already used for a different request (another method, path, \
         query or body); use a new key for a new request"
            .into(),
    )
}

/// The rule over a store; cheap to build per request.
pub struct Idempotency {
    store: Arc<dyn Store>,
    config: Config,
}

impl Idempotency {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, Config::default())
    }

    pub fn with_config(store: Arc<dyn Store>, config: Config) -> Self {
        Idempotency { store, config }
    }

    /// Claims `key` for this request, or finds what the first request with it answered.
    /// `body_hash` is `None` for a streamed upload (hashed as it is stored).
    pub async fn begin(
        &self,
        owner: Id,
        key: &str,
        request_hash: &str,
        body_hash: Option<&str>,
    ) -> Result<Begin> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let now = now_millis();
            let claim = NewClaim {
                owner,
                key: key.to_string(),
                request_hash: request_hash.to_string(),
                body_hash: body_hash.map(str::to_string),
                token: token.clone(),
                now,
                locked_until: now.saturating_add(ms(self.config.lease)),
                expires_at: now.saturating_add(ms(self.config.ttl)),
            };
            if self.store.claim_idempotency_key(&claim).await? {
                return Ok(Begin::Run(Claim::start(
                    self.store.clone(),
                    owner,
                    key,
                    token,
                    self.config.lease,
                )));
            }
            // Someone holds the key (or just released it: then the next claim takes it).
            if let Some(r) = self.store.get_idempotency_key(owner, key).await? {
                if r.request_hash != request_hash {
                    return Err(conflict_other_request());
                }
                if let (Some(mine), Some(theirs)) = (body_hash, r.body_hash.as_deref()) {
                    if mine != theirs {
                        return Err(conflict_other_request());
                    }
                }
                match (r.state, r.answer) {
                    (KeyState::Done, Some(answer)) => {
                        return Ok(match (body_hash, r.body_hash) {
                            (None, Some(body_hash)) => Begin::ReplayIfBody { body_hash, answer },
                            _ => Begin::Replay(answer),
                        });
                    }
                    (KeyState::Done, None) => {
                        return Err(DomainError::Internal(
                            "an idempotency record is done without an answer".into(),
                        ))
                    }
                    (KeyState::Pending, _) => {}
                }
            }
            // Pending: wait for the first request (a ticket is created in milliseconds).
            if started.elapsed() >= self.config.wait {
                return Err(DomainError::Conflict(format!(
                    "a request with this Idempotency-Key is still in progress (waited {} s for it); \
                     retry later to get its answer",
                    self.config.wait.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

impl Idempotency {
    /// Housekeeping for the periodic sweep: forgets keys older than their TTL.
    pub async fn purge(&self) -> Result<u64> {
        self.store.purge_idempotency_keys(now_millis()).await
    }
}

fn ms(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

/// This request's hold on a key. `record` stores the answer; dropping it unrecorded (an error, a
/// client gone mid-request) releases the key so a retry runs again.
pub struct Claim {
    store: Arc<dyn Store>,
    owner: Id,
    key: String,
    token: String,
    renew: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("owner", &self.owner)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Claim {
    fn start(store: Arc<dyn Store>, owner: Id, key: &str, token: String, lease: Duration) -> Claim {
        // Renew the lease while the request runs (uploads can take long), so no retry takes over a
        // live claim; a dead instance stops renewing and its claim lapses.
        let renew = {
            let (store, key, token) = (store.clone(), key.to_string(), token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let until = now_millis().saturating_add(ms(lease));
                    match store
                        .renew_idempotency_key(owner, &key, &token, until)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "renewing an idempotency claim failed")
                        }
                    }
                }
            })
        };
        Claim {
            store,
            owner,
            key: key.to_string(),
            token,
            renew: Some(renew),
        }
    }

    /// Stores the first answer. `body_hash` is the body's sha256 (for uploads, the stored blob's).
    /// False if the claim had lapsed and another request took the key over meanwhile.
    pub async fn record(mut self, body_hash: &str, answer: &Answer) -> Result<bool> {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        let done = self
            .store
            .record_idempotency_key(self.owner, &self.key, &self.token, body_hash, answer)
            .await;
        if done.is_err() {
            // Leave nothing pending behind a failed record.
            self.release_now().await;
        }
        self.token.clear();
        done
    }

    /// Gives the key up (the request failed): a retry runs again.
    pub async fn release(mut self) {
        self.release_now().await;
        self.token.clear();
    }

    async fn release_now(&mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        if let Err(e) = self
            .store
            .release_idempotency_key(self.owner, &self.key, &self.token)
            .await
        {
            tracing::warn!(error = %e, "releasing an idempotency key failed; it lapses with its lease");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        if self.token.is_empty() {
            return;
        }
        // Dropped mid-request (the client went away): release in the background.
        let (store, owner, key, token) = (
            self.store.clone(),
            self.owner,
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_idempotency_key(owner, &key, &token).await {
                    tracing::warn!(error = %e, "releasing an idempotency key failed; it lapses with its lease");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_optionally_quoted() {
        assert_eq!(parse_key(b"abc-123").unwrap(), "abc-123");
        assert_eq!(parse_key(b"\"8e03978e-40d5\"").unwrap(), "8e03978e-40d5");
        assert_eq!(parse_key(b" k ").unwrap(), "k");
        assert!(parse_key(b"").is_err());
        assert!(parse_key(b"\"\"").is_err());
        assert!(parse_key("é".as_bytes()).is_err());
        assert!(parse_key(b"a\tb").is_err());
        assert!(parse_key(&[b'x'; MAX_KEY]).is_ok());
        assert!(parse_key(&[b'x'; MAX_KEY + 1]).is_err());
    }

    #[test]
    fn fingerprints_separate_method_target_and_body() {
        assert_ne!(
            request_hash("POST", "/a?x=1"),
            request_hash("POST", "/a?x=2")
        );
        assert_ne!(request_hash("POST", "/a"), request_hash("PUT", "/a"));
        assert_eq!(
            body_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn answer_headers_roundtrip() {
        let a = Answer {
            status: 201,
            headers: vec![
                ("content-type".into(), "application/xml".into()),
                ("location".into(), "/api/users/a: b".into()),
            ],
            body: vec![],
        };
        assert_eq!(Answer::parse_headers(&a.headers_text()), a.headers);
    }

    #[tokio::test]
    async fn streamed_bodies_hash_like_whole_ones_within_the_limit() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<std::result::Result<Bytes, String>> = data
            .chunks(70_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let got = stream_sha256(futures::stream::iter(chunks.clone()), 3_000_000)
            .await
            .unwrap();
        assert_eq!(got, Some(body_hash(&data)));
        let over = stream_sha256(futures::stream::iter(chunks), 2_999_999)
            .await
            .unwrap();
        assert_eq!(over, None);
        let empty = stream_sha256(
            futures::stream::iter(Vec::<std::result::Result<Bytes, String>>::new()),
            0,
        )
        .await
        .unwrap();
        assert_eq!(empty, Some(body_hash(b"")));
    }
}
