//! One-time download ids for every ticket with a downloadable archive: container images, bundle
//! exports, appliance exports, takeouts.
//!
//! A browser cannot attach credentials to a plain link, and archives are too large to fetch into
//! memory first, so the owner mints an id and the link carries it instead. An id is 256 random bits,
//! shown once (hex), stored only as its sha256, bound to one ticket (the resource string names the
//! kind and id), expiring after `Config::download_key_ttl`, checked without spending it (a 304 or 416
//! keeps it) and spent by one conditional UPDATE when bytes are about to be sent.

use crate::model::*;
use crate::ports::{KeyUse, OneTimeKeys};
use crate::service::Satchel;
use crate::{DomainError, Result};
use sha2::{Digest, Sha256};

/// A ticket route that serves an archive, with the ids its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveTicket {
    BundleExport { msid: Id, eid: Id },
    ApplianceExport { aid: Id, eid: Id },
    Takeout { tid: Id },
    Image { msid: Id, tid: Id, itid: Id },
}

impl ArchiveTicket {
    fn id(self) -> Id {
        match self {
            ArchiveTicket::BundleExport { eid, .. }
            | ArchiveTicket::ApplianceExport { eid, .. } => eid,
            ArchiveTicket::Takeout { tid } => tid,
            ArchiveTicket::Image { itid, .. } => itid,
        }
    }

    /// Whether `t` is the ticket this route names: its kind, and its subject (and template) where
    /// the path names them. The same rule as the authenticated resolvers (`Satchel::ticket_of`,
    /// `Satchel::image`), for the anonymous download that has no caller to resolve with.
    fn names(self, t: &Ticket) -> bool {
        t.id == self.id()
            && match self {
                ArchiveTicket::BundleExport { msid, .. } => {
                    t.kind == TicketKind::BundleExport && t.subject_id == msid
                }
                ArchiveTicket::ApplianceExport { aid, .. } => {
                    t.kind == TicketKind::ApplianceExport && t.subject_id == aid
                }
                ArchiveTicket::Takeout { .. } => t.kind == TicketKind::Takeout,
                ArchiveTicket::Image { msid, tid, .. } => {
                    t.kind == TicketKind::ContainerImage
                        && t.subject_id == msid
                        && t.template_id() == Some(tid)
                }
            }
    }

    /// What the messages call it.
    fn noun(self) -> &'static str {
        match self {
            ArchiveTicket::Image { .. } => "image",
            ArchiveTicket::Takeout { .. } => "takeout",
            ArchiveTicket::BundleExport { .. } | ArchiveTicket::ApplianceExport { .. } => "export",
        }
    }

    /// How to get a fresh id (images mint one on every read of the image).
    fn renew_hint(self) -> &'static str {
        match self {
            ArchiveTicket::Image { .. } => "get the image again for a new one",
            _ => "POST to its downloadids for a new one",
        }
    }
}

/// The resource an id is bound to. Images keep the string they always had, so ids minted before
/// the generalisation stay valid.
fn resource(t: &Ticket) -> String {
    match t.kind {
        TicketKind::ContainerImage => format!("container-image:{}", t.id),
        k => format!("{}:{}", k.as_str(), t.id),
    }
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

/// An anonymous download whose id checked out, not spent yet.
#[derive(Debug)]
pub struct KeyedDownload {
    pub ticket: Ticket,
    pub archive: ArchiveRef,
    route: ArchiveTicket,
    key_hash: String,
    owner_id: Id,
}

fn unknown_key(route: ArchiveTicket) -> DomainError {
    DomainError::Forbidden(format!("unknown downloadId for this {}", route.noun()))
}

/// What a check or a use of an id means for the request. An id issued to another user (which
/// the resource binding already rules out) is as unknown as a made-up one.
fn verdict(found: KeyUse, owner: Id, route: ArchiveTicket) -> Result<()> {
    match found {
        KeyUse::Consumed { owner_id } | KeyUse::Usable { owner_id } if owner_id == owner => Ok(()),
        KeyUse::Consumed { .. } | KeyUse::Usable { .. } | KeyUse::Unknown => {
            Err(unknown_key(route))
        }
        KeyUse::AlreadyUsed => Err(DomainError::Gone(format!(
            "this downloadId was already used (each id works once); {}",
            route.renew_hint()
        ))),
        KeyUse::Expired => Err(DomainError::Gone(format!(
            "this downloadId has expired; {}",
            route.renew_hint()
        ))),
    }
}

/// Mints an id for `t` (whose archive the caller established is downloadable).
async fn issue(keys: &dyn OneTimeKeys, t: &Ticket, expires_at: Millis) -> Result<String> {
    let key = hex::encode(rand::random::<[u8; 32]>());
    keys.issue_key(&hash_key(&key), t.owner_id, &resource(t), expires_at)
        .await?;
    Ok(key)
}

/// Checks `key` for the ticket `t` of user `owner`, without spending it.
async fn check(
    keys: &dyn OneTimeKeys,
    route: ArchiveTicket,
    t: &Ticket,
    owner: Id,
    key: &str,
    now: Millis,
) -> Result<String> {
    let key_hash = hash_key(key);
    let found = keys.check_key(&key_hash, &resource(t), now).await?;
    verdict(found, owner, route)?;
    Ok(key_hash)
}

/// Spends a checked id: exactly one request ever gets past this.
async fn spend(keys: &dyn OneTimeKeys, d: &KeyedDownload, now: Millis) -> Result<()> {
    let used = keys
        .consume_key(&d.key_hash, &resource(&d.ticket), now)
        .await?;
    verdict(used, d.owner_id, d.route)
}

impl Satchel {
    /// The ticket a route names, resolved for the caller (the ordinary resolvers: 404 for what the
    /// caller may not see).
    pub async fn archive_ticket(
        &self,
        who: &Principal,
        uid: &str,
        route: ArchiveTicket,
    ) -> Result<Ticket> {
        match route {
            ArchiveTicket::BundleExport { msid, eid } => self.export(who, uid, msid, eid).await,
            ArchiveTicket::ApplianceExport { aid, eid } => {
                self.appliance_export(who, uid, aid, eid).await
            }
            ArchiveTicket::Takeout { tid } => self.takeout(who, uid, tid).await,
            ArchiveTicket::Image { msid, tid, itid } => self.image(who, uid, msid, tid, itid).await,
        }
    }

    /// The archive a download of `t` serves (naming `file_name`, for the routes that take one),
    /// or why there is none: the rule of the ticket's kind.
    fn archive_to_serve(
        route: ArchiveTicket,
        t: &Ticket,
        file_name: Option<&str>,
    ) -> Result<ArchiveRef> {
        let a = match route {
            ArchiveTicket::Image { .. } => Self::downloadable(t)?,
            _ => Self::ready_archive(t)?,
        };
        match file_name {
            Some(n) if !crate::names::same_name(n, &a.file_name) => Err(DomainError::not_found(
                format!("file {n:?} of {} {}", route.noun(), t.id),
            )),
            _ => Ok(a),
        }
    }

    /// The owner's (or an admin's) authenticated download.
    pub async fn ticket_archive(
        &self,
        who: &Principal,
        uid: &str,
        route: ArchiveTicket,
        file_name: Option<&str>,
    ) -> Result<(Ticket, ArchiveRef)> {
        let t = self.archive_ticket(who, uid, route).await?;
        let a = Self::archive_to_serve(route, &t, file_name)?;
        Ok((t, a))
    }

    fn key_expiry(&self) -> Millis {
        let ttl = self
            .config
            .download_key_ttl
            .as_millis()
            .min(i64::MAX as u128) as i64;
        now_millis().saturating_add(ttl)
    }

    /// A fresh one-time download id for a downloadable image (None when it is not downloadable).
    /// Each call mints a new id: only hashes are stored, so an id can be shown only once.
    pub async fn new_download_key(&self, i: &Ticket) -> Result<Option<String>> {
        if i.downloadable_archive().is_none() {
            return Ok(None);
        }
        Ok(Some(issue(self.keys.as_ref(), i, self.key_expiry()).await?))
    }

    /// A fresh one-time download id for the archive of the ticket a route names (409/410 with the
    /// reason when there is no archive to download yet or any more).
    pub async fn download_id(
        &self,
        who: &Principal,
        uid: &str,
        route: ArchiveTicket,
    ) -> Result<String> {
        // Whoever may download the archive may mint an id for it (no entitlement needed).
        let (t, _) = self.ticket_archive(who, uid, route, None).await?;
        issue(self.keys.as_ref(), &t, self.key_expiry()).await
    }

    /// The anonymous download: the id is the credential. The path must name the ticket the id was
    /// issued for. The id is checked here but not spent: the caller spends it with
    /// [`Satchel::spend_download_key`] once it knows bytes will be sent, so an answer that sends
    /// none (416, 304) never burns it.
    pub async fn archive_by_key(
        &self,
        uid: &str,
        route: ArchiveTicket,
        file_name: Option<&str>,
        key: &str,
    ) -> Result<KeyedDownload> {
        let owner = self
            .store
            .user_by_login(uid)
            .await?
            .ok_or_else(|| unknown_key(route))?
            .user;
        let t = self
            .store
            .get_ticket(owner.id, route.id())
            .await?
            .filter(|t| route.names(t))
            .ok_or_else(|| unknown_key(route))?;
        let archive = Self::archive_to_serve(route, &t, file_name)?;
        let key_hash = check(self.keys.as_ref(), route, &t, owner.id, key, now_millis()).await?;
        Ok(KeyedDownload {
            ticket: t,
            archive,
            route,
            key_hash,
            owner_id: owner.id,
        })
    }

    /// Spends a checked id: exactly one request ever gets past this (whoever wins a race); the
    /// others hear that it was used.
    pub async fn spend_download_key(&self, d: KeyedDownload) -> Result<(Ticket, ArchiveRef)> {
        spend(self.keys.as_ref(), &d, now_millis()).await?;
        Ok((d.ticket, d.archive))
    }

    /// Housekeeping: drops download ids expired for a day (kept that long so a late use still
    /// hears "expired" rather than "unknown").
    pub async fn purge_download_keys(&self) -> Result<u64> {
        self.keys
            .purge_keys(now_millis().saturating_sub(24 * 3600 * 1000))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// The port's contract in memory: hashed keys bound to a resource, one-time, expiring.
    #[derive(Default)]
    struct Keys(Mutex<HashMap<String, (Id, String, Millis, bool)>>);

    impl Keys {
        fn find(&self, hash: &str, resource: &str, now: Millis, spend: bool) -> KeyUse {
            let mut m = self.0.lock().unwrap();
            match m.get_mut(hash) {
                Some((_, r, _, _)) if r != resource => KeyUse::Unknown,
                None => KeyUse::Unknown,
                Some((_, _, _, true)) => KeyUse::AlreadyUsed,
                Some((_, _, exp, _)) if *exp <= now => KeyUse::Expired,
                Some((owner, _, _, used)) => {
                    *used = spend;
                    if spend {
                        KeyUse::Consumed { owner_id: *owner }
                    } else {
                        KeyUse::Usable { owner_id: *owner }
                    }
                }
            }
        }
    }

    #[async_trait::async_trait]
    impl OneTimeKeys for Keys {
        async fn issue_key(&self, h: &str, owner: Id, r: &str, exp: Millis) -> Result<()> {
            let v = (owner, r.to_string(), exp, false);
            self.0.lock().unwrap().insert(h.to_string(), v);
            Ok(())
        }
        async fn consume_key(&self, h: &str, r: &str, now: Millis) -> Result<KeyUse> {
            Ok(self.find(h, r, now, true))
        }
        async fn check_key(&self, h: &str, r: &str, now: Millis) -> Result<KeyUse> {
            Ok(self.find(h, r, now, false))
        }
        async fn purge_keys(&self, _: Millis) -> Result<u64> {
            Ok(0)
        }
    }

    fn ticket(id: Id, owner: Id, kind: TicketKind, subject: Id) -> Ticket {
        Ticket {
            id,
            owner_id: owner,
            kind,
            image: None,
            import: None,
            takeout: None,
            subject_id: subject,
            subject_name: String::new(),
            subject_version: String::new(),
            format: OutputFormat::Yaml,
            state: TicketState::Complete,
            percentage: 100,
            bytes_loaded: 0,
            bytes_total: 0,
            eta: None,
            message: None,
            error_message: None,
            archive: None,
            created: 0,
            modified: 0,
            expires_at: None,
        }
    }

    async fn keyed(
        keys: &Keys,
        t: &Ticket,
        route: ArchiveTicket,
        key: &str,
    ) -> Result<KeyedDownload> {
        let key_hash = check(keys, route, t, t.owner_id, key, 10).await?;
        Ok(KeyedDownload {
            ticket: t.clone(),
            archive: ArchiveRef {
                key: String::new(),
                file_name: String::new(),
                size: 0,
                sha256: String::new(),
            },
            route,
            key_hash,
            owner_id: t.owner_id,
        })
    }

    #[tokio::test]
    async fn an_id_works_once_for_its_own_ticket() {
        let keys = Keys::default();
        let t = ticket(7, 1, TicketKind::Takeout, 1);
        let route = ArchiveTicket::Takeout { tid: 7 };
        let key = issue(&keys, &t, 1000).await.unwrap();
        // Checking (a 304 or 416 would) does not spend it.
        keyed(&keys, &t, route, &key).await.unwrap();
        let d = keyed(&keys, &t, route, &key).await.unwrap();
        spend(&keys, &d, 10).await.unwrap();
        let again = keyed(&keys, &t, route, &key).await.unwrap_err();
        assert!(
            matches!(again, DomainError::Gone(ref m) if m.contains("already used")),
            "{again}"
        );
        assert!(matches!(
            spend(&keys, &d, 10).await,
            Err(DomainError::Gone(_))
        ));
    }

    #[tokio::test]
    async fn an_expired_id_is_gone() {
        let keys = Keys::default();
        let t = ticket(7, 1, TicketKind::BundleExport, 3);
        let key = issue(&keys, &t, 5).await.unwrap();
        let e = keyed(
            &keys,
            &t,
            ArchiveTicket::BundleExport { msid: 3, eid: 7 },
            &key,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, DomainError::Gone(ref m) if m.contains("expired")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_id_for_another_ticket_or_user_is_unknown() {
        let keys = Keys::default();
        let mine = ticket(7, 1, TicketKind::ApplianceExport, 4);
        let other = ticket(8, 1, TicketKind::ApplianceExport, 4);
        let route = ArchiveTicket::ApplianceExport { aid: 4, eid: 8 };
        let key = issue(&keys, &mine, 1000).await.unwrap();
        // The id of ticket 7 on ticket 8's route.
        let e = keyed(&keys, &other, route, &key).await.unwrap_err();
        assert!(matches!(e, DomainError::Forbidden(_)), "{e}");
        // Another user's id on this user's URL (the same ticket id seen as owned by user 2).
        let theirs = ticket(7, 2, TicketKind::ApplianceExport, 4);
        let e = keyed(&keys, &theirs, route, &key).await.unwrap_err();
        assert!(matches!(e, DomainError::Forbidden(_)), "{e}");
        // A made-up id.
        let e = keyed(&keys, &mine, route, &"0".repeat(64))
            .await
            .unwrap_err();
        assert!(matches!(e, DomainError::Forbidden(_)), "{e}");
    }

    #[test]
    fn a_route_names_only_its_own_kind_and_subject() {
        let export = ticket(7, 1, TicketKind::BundleExport, 3);
        assert!(ArchiveTicket::BundleExport { msid: 3, eid: 7 }.names(&export));
        assert!(!ArchiveTicket::BundleExport { msid: 4, eid: 7 }.names(&export));
        assert!(!ArchiveTicket::BundleExport { msid: 3, eid: 8 }.names(&export));
        assert!(!ArchiveTicket::Takeout { tid: 7 }.names(&export));
        assert!(!ArchiveTicket::ApplianceExport { aid: 3, eid: 7 }.names(&export));
        assert!(!ArchiveTicket::Image {
            msid: 3,
            tid: 1,
            itid: 7
        }
        .names(&export));
        let takeout = ticket(9, 1, TicketKind::Takeout, 1);
        assert!(ArchiveTicket::Takeout { tid: 9 }.names(&takeout));
    }

    #[test]
    fn resources_keep_the_image_form_and_name_the_kind() {
        let i = ticket(5, 1, TicketKind::ContainerImage, 3);
        assert_eq!(resource(&i), "container-image:5");
        let t = ticket(5, 1, TicketKind::Takeout, 1);
        assert_eq!(resource(&t), "takeout:5");
    }
}
