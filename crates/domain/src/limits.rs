//! Token buckets keyed by a string (an address, a login, a user id), and the per-user request rate
//! built on them. Memory stays bounded under a spray of keys: full buckets carry no information and
//! are dropped first.

use crate::model::Principal;
use crate::{DomainError, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 100_000;

/// Buckets of `burst` tokens each, one token coming back every `refill`.
pub struct Buckets {
    burst: f64,
    refill: Duration,
    map: HashMap<String, (f64, Instant)>,
}

impl Buckets {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Buckets {
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_micros(1)),
            map: HashMap::new(),
        }
    }

    fn level(&self, key: &str, now: Instant) -> f64 {
        match self.map.get(key) {
            Some((tokens, at)) => {
                let back =
                    now.saturating_duration_since(*at).as_secs_f64() / self.refill.as_secs_f64();
                (tokens + back).min(self.burst)
            }
            None => self.burst,
        }
    }

    /// Seconds until a token is available, if the bucket is empty.
    pub fn wait(&self, key: &str, now: Instant) -> Option<u64> {
        let level = self.level(key, now);
        (level < 1.0).then(|| ((1.0 - level) * self.refill.as_secs_f64()).ceil().max(1.0) as u64)
    }

    /// Takes a token; true when this emptied the bucket (the start of a throttled burst).
    pub fn fail(&mut self, key: &str, now: Instant) -> bool {
        let level = self.level(key, now);
        self.bound(now);
        let after = (level - 1.0).max(0.0);
        self.map.insert(key.to_string(), (after, now));
        level >= 1.0 && after < 1.0
    }

    /// Takes a token if there is one; otherwise the seconds to wait.
    pub fn take(&mut self, key: &str, now: Instant) -> std::result::Result<(), u64> {
        if let Some(w) = self.wait(key, now) {
            return Err(w);
        }
        self.fail(key, now);
        Ok(())
    }

    fn bound(&mut self, now: Instant) {
        if self.map.len() < MAX_KEYS {
            return;
        }
        let (burst, refill) = (self.burst, self.refill);
        self.map.retain(|_, (t, at)| {
            *t + now.saturating_duration_since(*at).as_secs_f64() / refill.as_secs_f64() < burst
        });
        if self.map.len() >= MAX_KEYS {
            self.map.clear();
        }
    }
}

/// Requests per second per user, with a burst of ten seconds' worth.
pub struct RateLimiter {
    buckets: Option<Mutex<Buckets>>,
}

impl RateLimiter {
    /// `None` admits everything.
    pub fn new(per_second: Option<u32>) -> Self {
        RateLimiter {
            buckets: per_second.map(|r| {
                let r = r.max(1);
                Mutex::new(Buckets::new(
                    r.saturating_mul(10),
                    Duration::from_secs_f64(1.0 / f64::from(r)),
                ))
            }),
        }
    }

    /// Counts one request of `who`, or answers `Throttled` when their bucket is empty.
    pub fn admit(&self, who: &Principal) -> Result<()> {
        let Some(b) = &self.buckets else {
            return Ok(());
        };
        let mut b = b
            .lock()
            .map_err(|_| DomainError::Internal("rate limiter lock poisoned".into()))?;
        b.take(&who.user.id.to_string(), Instant::now())
            .map_err(|secs| {
                DomainError::throttled(
                    secs,
                    format!("too many requests from this user; retry in {secs} s"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_empty_after_the_burst_and_refill() {
        let mut b = Buckets::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(b.wait("ip", t0), None);
        assert!(!b.fail("ip", t0));
        assert!(!b.fail("ip", t0));
        // The third failure empties it: reported once, as the start of a burst.
        assert!(b.fail("ip", t0));
        assert!(!b.fail("ip", t0));
        assert_eq!(b.wait("ip", t0), Some(10));
        assert_eq!(b.wait("other", t0), None);
        assert_eq!(b.wait("ip", t0 + Duration::from_secs(4)), Some(6));
        assert_eq!(b.wait("ip", t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn take_refuses_once_empty_and_says_how_long() {
        let mut b = Buckets::new(2, Duration::from_millis(500));
        let t0 = Instant::now();
        assert_eq!(b.take("u", t0), Ok(()));
        assert_eq!(b.take("u", t0), Ok(()));
        assert_eq!(b.take("u", t0), Err(1));
        assert_eq!(b.take("u", t0 + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn a_spray_of_keys_stays_bounded() {
        let mut b = Buckets::new(1, Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            b.fail(&i.to_string(), t0);
        }
        assert!(b.map.len() <= MAX_KEYS);
    }
}
