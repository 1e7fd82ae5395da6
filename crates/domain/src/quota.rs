//! Per-user quotas: what one user may hold at once, checked before a ticket is created and bounding
//! every upload (UForge files and CloudAPI images and objects alike).
//!
//! The checks read the user's usage and then act, without a lock, so requests racing at the same
//! instant may each pass: a quota is exceeded by at most the requests in flight, never by a
//! sustained client.

use crate::model::Id;
use crate::ports::UsageStore;
use crate::{DomainError, Result};

/// What one user may hold at once. `None` is no limit.
#[derive(Debug, Clone)]
pub struct Quota {
    /// Bytes of uploads and archives stored for the user.
    pub bytes: Option<u64>,
    /// Completed archives (exports and images) kept.
    pub archives: Option<u64>,
    /// Tickets queued or running.
    pub outstanding: Option<u64>,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            bytes: Some(50 << 30),
            archives: Some(100),
            outstanding: Some(10),
        }
    }
}

/// The quota checks of one service.
pub struct Quotas<'a> {
    pub store: &'a dyn UsageStore,
    pub quota: &'a Quota,
    pub max_upload: u64,
}

/// How much one upload may write, and how to read its `TooLarge`.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    pub bytes: u64,
    limited_by_quota: Option<u64>,
}

impl Allowance {
    /// The blob store's answer, with a limit hit because of the quota told as the quota.
    pub fn check<T>(&self, r: std::result::Result<T, satchel_blob::BlobError>) -> Result<T> {
        match (r, self.limited_by_quota) {
            (Err(satchel_blob::BlobError::TooLarge(_)), Some(limit)) => {
                Err(DomainError::QuotaExceeded(format!(
                    "quota exceeded: this upload would take what is stored for this user over \
                     {limit} bytes; delete archives or files first"
                )))
            }
            (r, _) => Ok(r?),
        }
    }
}

fn over(limit: Option<u64>, have: i64) -> bool {
    limit.is_some_and(|l| have.max(0) as u64 >= l)
}

impl Quotas<'_> {
    /// Refuses a new ticket (export or image) when its owner is at a quota.
    pub async fn check_ticket(&self, owner: Id) -> Result<()> {
        let q = self.quota;
        if q.outstanding.is_none() && q.archives.is_none() && q.bytes.is_none() {
            return Ok(());
        }
        let u = self.store.usage(owner).await?;
        if over(q.outstanding, u.outstanding) {
            return Err(DomainError::QuotaExceeded(format!(
                "quota exceeded: {} exports or images are already queued or running for this \
                 user (the limit); wait for one to finish",
                u.outstanding
            )));
        }
        if over(q.archives, u.archives) {
            return Err(DomainError::QuotaExceeded(format!(
                "quota exceeded: {} archives are kept for this user (the limit); delete some first",
                u.archives
            )));
        }
        if over(q.bytes, u.bytes) {
            return Err(DomainError::QuotaExceeded(format!(
                "quota exceeded: {} bytes are stored for this user, the limit is {}; delete \
                 archives or files first",
                u.bytes,
                q.bytes.unwrap_or(u64::MAX)
            )));
        }
        Ok(())
    }

    /// The most an upload of `owner` may write: the upload limit, or what is left of the quota.
    pub async fn upload_allowance(&self, owner: Id) -> Result<Allowance> {
        let Some(limit) = self.quota.bytes else {
            return Ok(Allowance {
                bytes: self.max_upload,
                limited_by_quota: None,
            });
        };
        let used = self.store.usage(owner).await?.bytes.max(0) as u64;
        if used >= limit {
            return Err(DomainError::QuotaExceeded(format!(
                "quota exceeded: {used} bytes are stored for this user, the limit is {limit}; \
                 delete archives or files first"
            )));
        }
        let left = limit - used;
        Ok(Allowance {
            bytes: left.min(self.max_upload),
            limited_by_quota: (left < self.max_upload).then_some(limit),
        })
    }
}
