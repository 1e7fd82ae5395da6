//! Passwords (argon2id) and a short-lived cache of successful checks, so a client polling every two
//! seconds does not pay an argon2 hash per request.

use crate::model::Principal;
use crate::ports::Store;
use crate::{DomainError, Result};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(DomainError::Invalid("password must not be empty".into()));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("hashing password: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Verifies logins against the store. Successful checks are remembered for `ttl`, keyed by a
/// salted digest of (login, password), never by the password itself.
pub struct Authenticator {
    store: Arc<dyn Store>,
    ttl: Duration,
    salt: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Authenticator {
            store,
            ttl,
            salt: rand::random(),
            cache: Mutex::new(HashMap::new()),
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

    pub async fn login(&self, login: &str, password: &str) -> Result<Principal> {
        let key = self.key(login, password);
        if let Ok(cache) = self.cache.lock() {
            if let Some((p, at)) = cache.get(&key) {
                if at.elapsed() < self.ttl {
                    return Ok(p.clone());
                }
            }
        }
        let rec = self.store.user_by_login(login).await?;
        let denied = || DomainError::Unauthenticated("invalid login or password".into());
        let Some(rec) = rec else {
            // Spend the same time as a real check so logins cannot be probed by timing.
            let _ = verify_password(password, DUMMY_HASH);
            return Err(denied());
        };
        let hash = rec.password_hash.clone();
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        if !ok {
            return Err(denied());
        }
        let principal = Principal { user: rec.user };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
            }
            cache.insert(key, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }

    /// Forget cached logins (after a user is removed or changes password in this process).
    pub fn clear(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }
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
}
