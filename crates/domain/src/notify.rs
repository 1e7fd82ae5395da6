//! Takeout completion webhooks (`notifyUrl`, issue 14). This module owns:
//! - the URL rule ([`check_url`]): absolute `http(s)`, no credentials, bounded length, and no
//!   loopback / private / link-local address literal unless the server allows them
//!   ([`is_public`] is the one address rule; the transport applies it again to what a name
//!   resolves to, at delivery time);
//! - each user's signing secret: made on first need, sealed at rest under the secrets key like
//!   cloud account secrets (bound to its row and field, re-sealed by `admin secrets rotate`), shown
//!   once (the `201` that made it, or [`Satchel::rotate_notify_secret`]), a [`Secret`] in memory;
//! - the signature ([`signature`]): `Satchel-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
//!   "<t>.<body>">`, keyed with the secret's text (Stripe's scheme);
//! - the delivery job ([`NotifyRunner`], kind [`JOB_TAKEOUT_NOTIFY`]): one POST of the final status
//!   per ticket, a 2xx recorded as delivered (never sent again, on any instance), anything else
//!   retried with capped exponential backoff ([`RetryPolicy`]) until a day after the first attempt,
//!   then recorded as failed.
//!
//! The delivery row and its job are written by the store in the transaction that moves the ticket
//! to a final state (`Store::finish_ticket`, `cancel_ticket`), so a crash never loses or doubles
//! one. The HTTP request itself is a port ([`Transport`], implemented by the server binary): the
//! domain has no HTTP types.

use crate::accounts::{new_uid, open_value, seal_value, SealedKind, Secret};
use crate::model::*;
use crate::ports::{JobHandler, Store};
use crate::service::Satchel;
use crate::{DomainError, Result};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use crate::model::JOB_TAKEOUT_NOTIFY;

/// Longest accepted `notifyUrl`.
pub const MAX_URL: usize = 2048;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "Satchel-Signature";
/// Names the delivery (the ticket id), so a receiver can drop a duplicate (a crash between its
/// 2xx and our record of it resends once).
pub const DELIVERY_HEADER: &str = "Satchel-Delivery";
/// A backstop for the job runtime: deliveries end by time ([`RetryPolicy::window`]) long before.
pub const JOB_MAX_ATTEMPTS: i32 = 1000;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One ticket's webhook delivery, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub ticket_id: Id,
    pub owner_id: Id,
    pub url: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub first_attempt: Option<Millis>,
    pub last_error: Option<String>,
    pub created: Millis,
    pub finished: Option<Millis>,
}

/// How failed deliveries are retried: `base` doubling per attempt, at most `cap` apart, until
/// `window` after the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
            window: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1 for the first).
    pub fn delay(&self, attempt: i32) -> Duration {
        let doublings = attempt.saturating_sub(1).clamp(0, 30) as u32;
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }
}

/// Whether `ip` may receive webhooks without `--notify-allow-private`: not loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast, multicast or documentation space, nor an
/// IPv6 form of one (mapped, unique local, link-local).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8))
        }
    }
}

/// Checks a `notifyUrl` as given; the URL to store (normalised as the HTTP client will send it).
pub fn check_url(raw: &str, allow_private: bool) -> Result<String> {
    let bad = |why: &str| DomainError::Invalid(format!("notifyUrl {why}"));
    if raw.len() > MAX_URL {
        return Err(bad(&format!("is longer than {MAX_URL} characters")));
    }
    let u = url::Url::parse(raw.trim())
        .map_err(|_| bad("must be an absolute http:// or https:// URL"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("must be an absolute http:// or https:// URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if u.fragment().is_some() {
        return Err(bad("must not have a #fragment"));
    }
    let literal = match u.host() {
        None => return Err(bad("must name a host")),
        Some(url::Host::Domain(_)) => None,
        Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
    };
    if let Some(ip) = literal {
        if !allow_private && !is_public(ip) {
            return Err(bad(
                "is a loopback, private or link-local address, which this server does not call",
            ));
        }
    }
    let s = u.to_string();
    if s.len() > MAX_URL {
        return Err(bad(&format!("is longer than {MAX_URL} characters")));
    }
    Ok(s)
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh signing secret's text (what the user is shown and HMACs with).
fn new_secret() -> Secret {
    Secret::text(format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>())))
}

/// What the receiver gets (JSON).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub ticket: Id,
    pub kind: &'static str,
    pub state: &'static str,
    pub percentage: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Below `/api` (as documents' `uri`s are), set when complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// When the ticket reached this state (RFC 3339).
    pub time: String,
}

impl Payload {
    pub fn of(t: &Ticket, login: &str) -> Payload {
        let archive = t
            .archive
            .as_ref()
            .filter(|_| t.state == TicketState::Complete);
        Payload {
            ticket: t.id,
            kind: t.kind.as_str(),
            state: t.state.as_str(),
            percentage: t.percentage,
            size: archive.map(|a| a.size),
            sha256: archive.map(|a| a.sha256.clone()),
            download_uri: archive.map(|_| format!("users/{login}/takeouts/{}/downloads", t.id)),
            error_message: t.error_message.clone(),
            time: chrono::DateTime::from_timestamp_millis(t.modified)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }
}

impl Satchel {
    /// Queues a takeout (as [`Satchel::create_takeout`]); with a `notify_url`, also makes the
    /// owner's signing secret if they have none, returned here (the only time it is shown).
    pub async fn create_takeout_notifying(
        &self,
        who: &Principal,
        uid: &str,
        req: crate::takeout::TakeoutRequest,
    ) -> Result<(Ticket, Option<Secret>)> {
        let notify = req.notify_url.is_some();
        let t = self.create_takeout(who, uid, req).await?;
        if !notify {
            return Ok((t, None));
        }
        // After the ticket: a refused takeout (quota, entitlement) never spends the one showing.
        let secret = new_secret();
        let sealed = seal_value(
            &self.secrets,
            SealedKind::NotifySecret,
            new_uid(),
            secret.expose(),
        )?;
        let made = self.store.create_notify_secret(t.owner_id, &sealed).await?;
        Ok((t, made.then_some(secret)))
    }

    /// Replaces `uid`'s signing secret (or makes the first one): the new one, shown only here.
    /// Deliveries sign with the secret current when they are sent.
    pub async fn rotate_notify_secret(&self, who: &Principal, uid: &str) -> Result<Secret> {
        let owner = self.target(who, uid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let secret = new_secret();
        let sealed = seal_value(
            &self.secrets,
            SealedKind::NotifySecret,
            new_uid(),
            secret.expose(),
        )?;
        self.store.replace_notify_secret(owner.id, &sealed).await?;
        tracing::info!(user = %owner.login, "takeout webhook secret rotated");
        Ok(secret)
    }
}

/// What the transport saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The receiver answered with this status (its body is not read).
    Status(u16),
    /// No answer: refused address, DNS, connection, TLS, timeout (why, without the secret).
    Failed(String),
}

/// Sends one webhook request. Implemented by the server binary (HTTP client, DNS, the address rule
/// at connect time, a timeout, no redirects).
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn post(&self, url: &str, headers: &[(&'static str, String)], body: Vec<u8>) -> Sent;
}

/// The job handler of [`JOB_TAKEOUT_NOTIFY`] jobs.
pub struct NotifyRunner {
    pub store: Arc<dyn Store>,
    /// The secrets key (`Config::secrets_key`), which seals the signing secrets.
    pub secrets: crate::apikeys::SealKey,
    pub transport: Arc<dyn Transport>,
    pub policy: RetryPolicy,
}

/// The host of a URL, for logs (a query may carry the receiver's own token).
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

#[async_trait]
impl JobHandler for NotifyRunner {
    async fn run(&self, job: &Job, cancel: CancellationToken) -> Result<()> {
        let Some(id) = job.ticket_id() else {
            return Err(DomainError::Internal(
                format!("a {} job reached the webhook runner", job.subject).into(),
            ));
        };
        let now = now_millis();
        // Not pending: delivered or given up already (by an attempt whose job removal was lost).
        let Some(d) = self.store.begin_delivery_attempt(id, now).await? else {
            return Ok(());
        };
        let Some(t) = self.store.get_ticket_any(id).await? else {
            return Ok(()); // deleted: its delivery row went with it
        };
        let login = match self.store.user_by_id(t.owner_id).await? {
            Some(u) => u.login,
            None => return Ok(()),
        };
        let outcome = match self.store.notify_secret(t.owner_id).await? {
            // Only possible if making it failed after the ticket was queued: retried, so a
            // rotation (which makes one) within the window still lets it go out.
            None => Sent::Failed("the user has no webhook secret yet (POST notifysecret)".into()),
            Some(sealed) => {
                let secret = open_value(&self.secrets, SealedKind::NotifySecret, &sealed)?;
                let body = serde_json::to_vec(&Payload::of(&t, &login))
                    .map_err(|e| DomainError::Internal(crate::Cause::of(e)))?;
                let sig = signature(secret.expose(), now / 1000, &body);
                let headers = [
                    ("Content-Type", "application/json".to_string()),
                    (SIGNATURE_HEADER, sig),
                    (DELIVERY_HEADER, t.id.to_string()),
                    (
                        "User-Agent",
                        format!("Satchel/{} (webhook)", env!("CARGO_PKG_VERSION")),
                    ),
                ];
                tokio::select! {
                    sent = self.transport.post(&d.url, &headers, body) => sent,
                    _ = cancel.cancelled() => {
                        return Err(DomainError::Internal("interrupted before the receiver answered; it will be retried".into()));
                    }
                }
            }
        };
        let host = host_of(&d.url);
        let why = match outcome {
            Sent::Status(s) if (200..300).contains(&s) => {
                self.store
                    .end_delivery(id, DeliveryState::Delivered, None, now_millis())
                    .await?;
                tracing::info!(ticket = id, %host, status = s, attempts = d.attempts, "takeout webhook delivered");
                return Ok(());
            }
            Sent::Status(s) => format!("the receiver answered HTTP {s}"),
            Sent::Failed(why) => why,
        };
        let first = d.first_attempt.unwrap_or(now);
        if now_millis().saturating_sub(first) >= self.policy.window.as_millis() as i64 {
            self.store
                .end_delivery(id, DeliveryState::Failed, Some(&why), now_millis())
                .await?;
            tracing::warn!(ticket = id, %host, attempts = d.attempts, error = %why, "takeout webhook given up");
            return Ok(());
        }
        self.store.delivery_error(id, &why).await?;
        Err(DomainError::Internal(
            format!("webhook delivery failed: {why}").into(),
        ))
    }

    async fn give_up(&self, job: &Job, error: &str) -> Result<()> {
        if let Some(id) = job.ticket_id() {
            self.store
                .end_delivery(id, DeliveryState::Failed, Some(error), now_millis())
                .await?;
            tracing::warn!(ticket = id, error, "takeout webhook given up");
        }
        Ok(())
    }

    fn retry_delay(&self, job: &Job) -> Option<Duration> {
        Some(self.policy.delay(job.attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        for ok in [
            "https://example.com/hook",
            "http://example.com:8080/a?b=c",
            "https://93.184.216.34/x",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/",
            "/relative",
            "example.com/x",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "http://127.0.0.1:9/x",
            "http://[::1]/x",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:192.168.1.1]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "https://example.com/#frag",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(check_url(&long, true).is_err());
    }

    #[test]
    fn signatures_are_stripe_style() {
        // Python: hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        let s = signature(b"whsec_test", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            s,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(s, signature(b"whsec_other", 1_700_000_000, br#"{"a":1}"#));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_secs(10));
        assert_eq!(p.delay(2), Duration::from_secs(20));
        assert_eq!(p.delay(9), Duration::from_secs(2560));
        assert_eq!(p.delay(10), Duration::from_secs(3600));
        assert_eq!(p.delay(900), Duration::from_secs(3600));
    }
}
