//! UForge API key pairs: the other way the SDK and hammr authenticate (`Api(url, apikeys=...)`).
//!
//! The scheme is the SDK's (uforge-python-sdk 3.8.13, `UForgeApiKeyAuth`): every request carries
//! `apiKey=PUBLIC` among its query parameters, and `&signature=SIG` appended last, where
//! `SIG = base64(HMAC-SHA1(secret, relative URL))` and the relative URL is the request URL with the
//! API's base URL (`http://host/api`) and one leading `/` removed, query included, e.g.
//! `users/alice/mysoftware?apiKey=PUBLIC`. There is no timestamp or nonce in it, so a signed URL can
//! be replayed until its key is revoked: that is the SDK's protocol, not a choice made here.
//!
//! HMAC needs the secret itself, so it is kept sealed (XChaCha20-Poly1305 under a server key that
//! never enters the database, bound to its public key), shown once at creation and never again.
//! Failures cost and answer exactly what a wrong password does (401, the same message, the same
//! per-address failure bucket).

use crate::model::{Id, Millis, Principal, User};
use crate::service::Satchel;
use crate::{DomainError, Result};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::distributions::{Alphanumeric, DistString};
use std::net::IpAddr;
use zeroize::Zeroizing;

/// Key pairs one user may hold.
pub const MAX_KEYS_PER_USER: i64 = 100;
/// `last_used` is written at most this often per key (a busy key costs no write per request).
pub const LAST_USED_GRANULARITY_MS: Millis = 60_000;
/// Characters of a public and of a secret key (alphanumeric: ~238 bits, and nothing to URL-encode).
const KEY_CHARS: usize = 40;
/// Sealed secret layout: version byte, 24-byte nonce, ciphertext + 16-byte tag.
const SEAL_V1: u8 = 1;
const NONCE_LEN: usize = 24;

/// One stored key pair. `sealed_secret` is only readable with the server's [`SealKey`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Id,
    pub owner_id: Id,
    pub public_key: String,
    pub sealed_secret: Vec<u8>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub created: Millis,
    pub last_used: Option<Millis>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("owner_id", &self.owner_id)
            .field("public_key", &self.public_key)
            .field("name", &self.name)
            .field("created", &self.created)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub owner_id: Id,
    pub public_key: String,
    pub sealed_secret: Vec<u8>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub created: Millis,
}

/// A key pair just created: the only time its secret is known outside the seal.
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: Zeroizing<String>,
}

/// The server key that seals API secrets (32 bytes). Kept out of the database, so a copy of the
/// database alone does not give the secrets away.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, k.as_mut());
        SealKey(k)
    }

    /// 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let bad = || DomainError::Invalid("a seal key is 64 hexadecimal digits".into());
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| bad())?);
        let mut k = Zeroizing::new([0u8; 32]);
        if bytes.len() != k.len() {
            return Err(bad());
        }
        k.copy_from_slice(&bytes);
        Ok(SealKey(k))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    /// Binds the ciphertext to its public key: a sealed secret copied onto another row does not open.
    fn aad(public_key: &str) -> Vec<u8> {
        [b"satchel-apikey-v1\0".as_slice(), public_key.as_bytes()].concat()
    }

    pub fn seal(&self, public_key: &str, secret: &str) -> Result<Vec<u8>> {
        self.seal_bound(&Self::aad(public_key), secret.as_bytes())
    }

    /// None when the seal does not open (another server key, or tampered with).
    pub fn open(&self, public_key: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.open_bound(&Self::aad(public_key), sealed)
    }

    /// Seals `msg` bound to `aad` (associated data: what the value belongs to, e.g. its row and
    /// field), so a ciphertext copied elsewhere does not open there.
    pub fn seal_bound(&self, aad: &[u8], msg: &[u8]) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
            .map_err(|_| DomainError::Internal("sealing a secret failed".into()))?;
        Ok([&[SEAL_V1][..], &nonce, &ct].concat())
    }

    /// Opens what [`SealKey::seal_bound`] sealed with the same `aad`; None otherwise.
    pub fn open_bound(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (&version, rest) = sealed.split_first()?;
        if version != SEAL_V1 || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }

    /// Names the key without giving it away: the first 8 bytes of its SHA-256, in hex. Stored
    /// beside every value it seals, so a key rotation knows which rows are done.
    pub fn key_id(&self) -> String {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(&self.0[..])[..8])
    }
}

/// What a face found in a request signed with an API key. The face only splits the query; which
/// string is signed and how it is checked are decided here.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// The `apiKey` parameter, decoded.
    pub public_key: String,
    /// The `signature` parameter, decoded (base64 text).
    pub signature: String,
    /// The request path below the API's base URL, e.g. `/users/alice/mysoftware`.
    pub path: String,
    /// The raw query string as received, without the `signature` parameter.
    pub query: String,
}

impl SignedRequest {
    /// The text the SDK signs: its `r.url.replace(baseUrl, "")` with one leading `/` dropped,
    /// the query (still URL-encoded, as sent) included.
    pub fn signed_text(&self) -> String {
        let path = self.path.strip_prefix('/').unwrap_or(&self.path);
        if self.query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", self.query)
        }
    }

    /// Whether the signature is base64(HMAC-SHA1(secret, signed text)); compared in constant time.
    pub fn verify(&self, secret: &[u8]) -> bool {
        // Python's urlencode turns '+' into %2B, but a hand-made client may send it raw, which
        // form decoding read as a space.
        let text = self.signature.trim().replace(' ', "+");
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) else {
            return false;
        };
        let Ok(mut mac) = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret) else {
            return false;
        };
        mac.update(self.signed_text().as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

/// base64(HMAC-SHA1(secret, text)), as the SDK computes it (for tests and clients).
pub fn sign(secret: &str, text: &str) -> String {
    let mut mac = match <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(text.strip_prefix('/').unwrap_or(text).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn random_key() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, KEY_CHARS)
}

fn check_text(what: &str, v: Option<String>, max: usize) -> Result<Option<String>> {
    let Some(v) = v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > max {
        return Err(DomainError::Invalid(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(DomainError::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(Some(v))
}

fn denied() -> DomainError {
    // The password path's message, so a caller cannot tell which part of the credentials was wrong.
    DomainError::Unauthenticated("invalid login or password".into())
}

impl Satchel {
    /// Creates a key pair for `uid` (the user, or an admin for them).
    pub async fn create_api_key(
        &self,
        who: &Principal,
        uid: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<CreatedKey> {
        let owner = self.target(who, uid).await?;
        let name = check_text("name", name, 255)?;
        let description = check_text("description", description, 1024)?;
        let secret = Zeroizing::new(random_key());
        // A public key collision (2^-238) is a unique violation: try again with another.
        for _ in 0..3 {
            let public_key = random_key();
            let new = NewApiKey {
                owner_id: owner.id,
                sealed_secret: self.seal.seal(&public_key, &secret)?,
                public_key,
                name: name.clone(),
                description: description.clone(),
                created: crate::model::now_millis(),
            };
            match self.store.create_api_key(&new, MAX_KEYS_PER_USER).await {
                Ok(Some(key)) => {
                    tracing::info!(user = %owner.login, key = key.id, "API key pair created");
                    return Ok(CreatedKey { key, secret });
                }
                Ok(None) => {
                    return Err(DomainError::QuotaExceeded(format!(
                        "a user holds at most {MAX_KEYS_PER_USER} API key pairs; delete one first"
                    )))
                }
                Err(DomainError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(DomainError::Internal(
            "could not draw a unique API key".into(),
        ))
    }

    pub async fn list_api_keys(&self, who: &Principal, uid: &str) -> Result<Vec<ApiKey>> {
        let owner = self.target(who, uid).await?;
        self.store.list_api_keys(owner.id).await
    }

    pub async fn api_key(&self, who: &Principal, uid: &str, id: Id) -> Result<ApiKey> {
        let owner = self.target(who, uid).await?;
        self.store
            .get_api_key(owner.id, id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("apiKeyPair {id}")))
    }

    /// Revokes the key: the next request signed with it is refused.
    pub async fn delete_api_key(&self, who: &Principal, uid: &str, id: Id) -> Result<()> {
        let owner = self.target(who, uid).await?;
        if !self.store.delete_api_key(owner.id, id).await? {
            return Err(DomainError::not_found(format!("apiKeyPair {id}")));
        }
        tracing::info!(user = %owner.login, key = id, "API key pair deleted");
        Ok(())
    }

    /// Authenticates a request signed with an API key, as the key's user. Every refusal (unknown
    /// or revoked key, wrong signature, a seal that does not open) is the wrong password's.
    pub async fn login_with_api_key(
        &self,
        req: &SignedRequest,
        source: Option<IpAddr>,
    ) -> Result<Principal> {
        self.auth.check_source(source)?;
        match self.check_api_key(req).await? {
            Some(user) => Ok(Principal { user }),
            None => {
                self.auth.record_source_failure(source);
                Err(denied())
            }
        }
    }

    async fn check_api_key(&self, req: &SignedRequest) -> Result<Option<User>> {
        let Some((key, user)) = self.store.api_key_by_public(&req.public_key).await? else {
            return Ok(None);
        };
        let Some(secret) = self.seal.open(&key.public_key, &key.sealed_secret) else {
            tracing::warn!(
                key = key.id,
                "an API key's secret does not open with this server's seal key \
                 (do all instances share the same --apikey-seal-file?)"
            );
            return Ok(None);
        };
        if !req.verify(&secret) {
            return Ok(None);
        }
        let now = crate::model::now_millis();
        if key
            .last_used
            .is_none_or(|t| now - t >= LAST_USED_GRANULARITY_MS)
        {
            // Best effort: a failed bookkeeping write must not refuse a valid request.
            if let Err(e) = self
                .store
                .touch_api_key(key.id, now, now - LAST_USED_GRANULARITY_MS)
                .await
            {
                tracing::warn!(key = key.id, error = %e, "recording an API key's last use failed");
            }
        }
        Ok(Some(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, query: &str, signature: &str) -> SignedRequest {
        SignedRequest {
            public_key: "PUB".into(),
            signature: signature.into(),
            path: path.into(),
            query: query.into(),
        }
    }

    #[test]
    fn signs_what_the_sdk_signs() {
        // Computed with the SDK's own UForgeApiKeyAuth._calc_signature('users/a?apiKey=x', 'sec').
        assert_eq!(
            sign("sec", "users/a?apiKey=x"),
            "Ndq8ZX3EXuL/HQuCvPPYx/4f7LI="
        );
        assert_eq!(
            sign("sec", "/users/a?apiKey=x"),
            "Ndq8ZX3EXuL/HQuCvPPYx/4f7LI="
        );
        let r = req("/users/a", "apiKey=x", "Ndq8ZX3EXuL/HQuCvPPYx/4f7LI=");
        assert_eq!(r.signed_text(), "users/a?apiKey=x");
        assert!(r.verify(b"sec"));
        // '+' read back as a space by form decoding still verifies.
        let (path, s) = (0..1000)
            .map(|i| format!("users/{i}?apiKey=x"))
            .map(|t| {
                let s = sign("sec", &t);
                (t, s)
            })
            .find(|(_, s)| s.contains('+'))
            .unwrap();
        let path = path.trim_end_matches("?apiKey=x");
        assert!(req(&format!("/{path}"), "apiKey=x", &s.replace('+', " ")).verify(b"sec"));
    }

    #[test]
    fn refuses_other_secrets_urls_and_garbage() {
        let s = sign("sec", "users/a?apiKey=x");
        assert!(!req("/users/a", "apiKey=x", &s).verify(b"other"));
        assert!(!req("/users/b", "apiKey=x", &s).verify(b"sec"));
        assert!(!req("/users/a", "apiKey=x&more=1", &s).verify(b"sec"));
        assert!(!req("/users/a", "apiKey=x", "not base64!").verify(b"sec"));
        assert!(!req("/users/a", "apiKey=x", "").verify(b"sec"));
        assert!(!req("/users/a", "apiKey=x", &s[..20]).verify(b"sec"));
    }

    #[test]
    fn seal_opens_only_with_its_key_and_public_key() {
        let k = SealKey::random();
        let sealed = k.seal("PUB", "the secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"the secret"));
        assert_eq!(k.open("PUB", &sealed).unwrap().as_slice(), b"the secret");
        assert!(k.open("OTHER", &sealed).is_none());
        assert!(SealKey::random().open("PUB", &sealed).is_none());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open("PUB", &bad).is_none());
        assert!(k.open("PUB", &[]).is_none());
        assert!(k.open("PUB", &sealed[..10]).is_none());
        let again = SealKey::from_hex(&k.to_hex()).unwrap();
        assert_eq!(
            again.open("PUB", &sealed).unwrap().as_slice(),
            b"the secret"
        );
        assert!(SealKey::from_hex("abcd").is_err());
        assert!(SealKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{k:?}"), "SealKey(..)");
    }

    #[test]
    fn keys_are_alphanumeric_and_fresh() {
        let (a, b) = (random_key(), random_key());
        assert_eq!(a.len(), KEY_CHARS);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
