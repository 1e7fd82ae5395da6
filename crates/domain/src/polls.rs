//! Cheap status polls: this instance's memory of tickets ([`TicketCache`]), so that a poll of a
//! ticket nothing changed needs no store round trip, and the resolving calls the status routes use
//! ([`Satchel::export_status`] and the other `*_status` calls below), which answer from it.
//!
//! What the memory may say, and why it is current:
//! - It holds whole ticket rows as last read from the store (everything a status document and its
//!   ETag are made of), each with a `version` unique in this process, so a face can keep what it
//!   rendered from a row until the row changes.
//! - Every ticket write made through this process's store holds the ticket (or, for deletes that
//!   cascade, all of the owner's tickets) unremembered from before the write begins until after it
//!   has committed: the store holds a guard ([`TicketCache::forget_ticket`] /
//!   [`TicketCache::forget_owner`]) across the write, which drops the entry and refuses gets and
//!   fills while held, and forgets again when dropped, so neither a poll in the gap between the
//!   commit and the guard's drop nor a request cancelled after its commit sees the old row. On PostgreSQL a trigger on `tickets` sends a
//!   notification for every row updated or deleted, by any process, and the store's LISTEN task
//!   forgets the ticket on every instance; while that connection is down the cache is not used
//!   ([`TicketCache::set_live`]) and everything it held is dropped, since notifications were missed.
//! - A read and a concurrent change race: a row read before a change commits but stored after
//!   the change was announced would be stale. Each store read therefore begins with
//!   [`TicketCache::begin`], and [`TicketCache::fill`] keeps the row only if nothing about the
//!   ticket (or its owner, or the whole cache) was forgotten since.
//! - As a safety net for writes no signal reaches (on the embedded SQLite store, `satchel admin`
//!   writing from another process), an entry is only used for [`MAX_AGE`] after its read.
//!
//! What it never decides: ownership. Only the caller's own tickets are answered from memory (the
//! URL's user is the authenticated one, and the row's owner is that user's id); an entry that does
//! not fit the route (another kind, subject or template), an unknown ticket, an admin's look at
//! another user's, go through the same resolving calls as before, which read the store and answer
//! exactly as they always did.

use crate::model::*;
use crate::service::Satchel;
use crate::Result;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a remembered row is used without a store read, whatever the signals say.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Past this many slots (entries and forgotten ids), the cache starts over.
const MAX_SLOTS: usize = 100_000;

/// A ticket row as read from the store, and the version of this process's memory it is.
#[derive(Debug)]
pub struct Snapshot {
    pub ticket: Ticket,
    /// Unique among the snapshots this process kept (never 0); 0 for a row that was not kept
    /// (the cache is off, or the ticket changed while it was being read).
    pub version: u64,
    read_at: Instant,
}

impl Snapshot {
    fn loose(ticket: Ticket) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            ticket,
            version: 0,
            read_at: Instant::now(),
        })
    }
}

/// Where a store read began, as [`TicketCache::begin`] saw the cache.
#[derive(Debug, Clone, Copy)]
pub struct ReadStart(u64);

#[derive(Default)]
struct Slot {
    /// The epoch of the last time this ticket was forgotten (0: never).
    forgotten: u64,
    /// Writes of this ticket in progress (guards held): nothing is remembered meanwhile.
    writing: u32,
    entry: Option<Arc<Snapshot>>,
}

#[derive(Default)]
struct State {
    /// Bumped by every forgetting; a read that began at epoch `e` may only be kept if nothing it
    /// concerns was forgotten after `e`.
    epoch: u64,
    /// Reads that began before this are never kept (the cache was reset after they began).
    floor: u64,
    slots: HashMap<Id, Slot>,
    /// Owners all of whose tickets were forgotten, and when.
    owners: HashMap<Id, u64>,
    /// Owners with a cascading write in progress, and how many.
    owners_writing: HashMap<Id, u32>,
}

/// This instance's memory of ticket rows (see the module doc).
pub struct TicketCache {
    state: Mutex<State>,
    /// Whether the signals that keep the memory current are flowing: always on SQLite (only this
    /// process's writes, which it sees itself), on PostgreSQL while the LISTEN connection is up.
    live: AtomicBool,
    versions: AtomicU64,
    /// Polls answered from memory, and polls that read the store.
    hits: AtomicU64,
    misses: AtomicU64,
    /// Times everything was dropped (a LISTEN connection lost, the size bound).
    resets: AtomicU64,
}

impl TicketCache {
    /// A cache whose signals flow (`live`) or will once [`Self::set_live`] says so.
    pub fn new(live: bool) -> Self {
        TicketCache {
            state: Mutex::new(State::default()),
            live: AtomicBool::new(live),
            versions: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself is
        // consistent after every statement, but play safe and bypass the cache.
        self.state.lock().ok()
    }

    /// The remembered row of ticket `id` if it belongs to `owner` and may be used.
    pub fn get(&self, owner: Id, id: Id) -> Option<Arc<Snapshot>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let state = self.lock()?;
        let slot = state.slots.get(&id)?;
        if slot.writing > 0 || state.owners_writing.contains_key(&owner) {
            return None;
        }
        let entry = slot.entry.as_ref()?;
        (entry.ticket.owner_id == owner && entry.read_at.elapsed() < MAX_AGE).then(|| entry.clone())
    }

    /// To call before reading a ticket from the store, for [`Self::fill`].
    pub fn begin(&self) -> ReadStart {
        ReadStart(self.lock().map_or(u64::MAX, |s| s.epoch))
    }

    /// Keeps `ticket`, read from the store after `since`, unless the ticket, its owner or the
    /// whole cache was forgotten since (then the row may already be stale) or the signals are
    /// down; returns it as a snapshot either way (version 0 if not kept).
    pub fn fill(&self, since: ReadStart, ticket: Ticket) -> Arc<Snapshot> {
        if !self.live.load(Ordering::Acquire) {
            return Snapshot::loose(ticket);
        }
        let Some(mut state) = self.lock() else {
            return Snapshot::loose(ticket);
        };
        let e = since.0;
        let stale = e < state.floor
            || e == u64::MAX
            || state.owners.get(&ticket.owner_id).is_some_and(|&f| f > e)
            || state.owners_writing.contains_key(&ticket.owner_id)
            || state
                .slots
                .get(&ticket.id)
                .is_some_and(|s| s.forgotten > e || s.writing > 0);
        if stale {
            return Snapshot::loose(ticket);
        }
        if state.slots.len() >= MAX_SLOTS {
            Self::clear(&mut state);
            self.resets.fetch_add(1, Ordering::Relaxed);
            // Begun before the reset: not kept (as every other read in flight).
            return Snapshot::loose(ticket);
        }
        let snap = Arc::new(Snapshot {
            version: self.versions.fetch_add(1, Ordering::Relaxed) + 1,
            read_at: Instant::now(),
            ticket,
        });
        state.slots.entry(snap.ticket.id).or_default().entry = Some(snap.clone());
        snap
    }

    /// A write of ticket `id` begins: its entry goes, and nothing is kept until [`Self::written`].
    fn writing(&self, id: Id) {
        if let Some(mut state) = self.lock() {
            let slot = state.slots.entry(id).or_default();
            slot.writing += 1;
            slot.entry = None;
        }
    }

    /// A write of ticket `id` ended (committed, failed or cancelled).
    fn written(&self, id: Id) {
        if let Some(mut state) = self.lock() {
            if let Some(slot) = state.slots.get_mut(&id) {
                slot.writing = slot.writing.saturating_sub(1);
            }
        }
        self.changed(id);
    }

    /// A write that may cascade to any of `owner`'s tickets begins.
    fn owner_writing(&self, owner: Id) {
        if let Some(mut state) = self.lock() {
            *state.owners_writing.entry(owner).or_default() += 1;
            state
                .slots
                .retain(|_, s| s.entry.as_ref().is_none_or(|e| e.ticket.owner_id != owner));
        }
    }

    /// That write ended.
    fn owner_written(&self, owner: Id) {
        if let Some(mut state) = self.lock() {
            if let Some(n) = state.owners_writing.get_mut(&owner) {
                *n -= 1;
                if *n == 0 {
                    state.owners_writing.remove(&owner);
                }
            }
        }
        self.owner_changed(owner);
    }

    /// Ticket `id` changed (call it once the change has committed).
    pub fn changed(&self, id: Id) {
        if let Some(mut state) = self.lock() {
            state.epoch += 1;
            let epoch = state.epoch;
            let slot = state.slots.entry(id).or_default();
            slot.forgotten = epoch;
            slot.entry = None;
        }
    }

    /// Any of `owner`'s tickets may have changed (a delete that cascades to them).
    pub fn owner_changed(&self, owner: Id) {
        if let Some(mut state) = self.lock() {
            state.epoch += 1;
            let epoch = state.epoch;
            state.owners.insert(owner, epoch);
            // The owner's stamp refuses their reads in flight; their kept rows go now.
            state
                .slots
                .retain(|_, s| s.entry.as_ref().is_none_or(|e| e.ticket.owner_id != owner));
        }
    }

    fn clear(state: &mut State) {
        state.epoch += 1;
        state.floor = state.epoch;
        // Writes in progress stay marked: their guards have yet to drop.
        state.slots.retain(|_, s| s.writing > 0);
        for s in state.slots.values_mut() {
            s.entry = None;
        }
        state.owners.clear();
    }

    /// Forgets everything (notifications may have been missed); reads in flight are not kept.
    pub fn reset(&self) {
        if let Some(mut state) = self.lock() {
            Self::clear(&mut state);
        }
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the memory may be used. Turning it on first forgets everything, so nothing read
    /// while the signals were down is used.
    pub fn set_live(&self, live: bool) {
        if live {
            self.reset();
            self.live.store(true, Ordering::Release);
        } else {
            self.live.store(false, Ordering::Release);
            self.reset();
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Status polls answered from memory, without a store read.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Status polls that read the store.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Times the memory was dropped whole.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
}

/// Holds a ticket (or an owner's tickets) unremembered while alive and forgets it again when
/// dropped: the store holds one across a ticket write, from before it begins until after it
/// commits, also when the request is cancelled midway.
pub struct Forget<'a> {
    cache: &'a TicketCache,
    what: Forgotten,
}

enum Forgotten {
    Ticket(Id),
    Owner(Id),
}

impl TicketCache {
    /// A guard forgetting ticket `id` when dropped.
    pub fn forget_ticket(&self, id: Id) -> Forget<'_> {
        self.writing(id);
        Forget {
            cache: self,
            what: Forgotten::Ticket(id),
        }
    }

    /// A guard forgetting all of `owner`'s tickets when dropped.
    pub fn forget_owner(&self, owner: Id) -> Forget<'_> {
        self.owner_writing(owner);
        Forget {
            cache: self,
            what: Forgotten::Owner(owner),
        }
    }
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        match self.what {
            Forgotten::Ticket(id) => self.cache.written(id),
            Forgotten::Owner(owner) => self.cache.owner_written(owner),
        }
    }
}

// ---------------------------------------------------------------- the status routes' resolving calls

impl Satchel {
    /// A ticket for a status poll: from memory when the caller polls their own ticket and the
    /// remembered row fits the route (`fits`), else through `resolve`, the route's resolving
    /// call (ownership, kind, subject and the not-found message are all its), whose row is then
    /// remembered.
    async fn polled(
        &self,
        who: &Principal,
        uid: &str,
        id: Id,
        fits: impl Fn(&Ticket) -> bool,
        resolve: impl Future<Output = Result<Ticket>>,
    ) -> Result<Arc<Snapshot>> {
        let Some(cache) = &self.tickets else {
            return Ok(Snapshot::loose(resolve.await?));
        };
        // Only the caller's own: the URL's user is the principal, whose id the row must carry.
        if who.user.login == uid {
            if let Some(s) = cache.get(who.user.id, id).filter(|s| fits(&s.ticket)) {
                cache.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(s);
            }
        }
        let since = cache.begin();
        cache.misses.fetch_add(1, Ordering::Relaxed);
        let ticket = resolve.await?;
        Ok(cache.fill(since, ticket))
    }

    /// An export's status (seed 001, `mySoftwareExportStatus_get`): the `software_upload`
    /// entitlement is required, after the ticket resolves (another user's still answers 404).
    pub async fn export_status(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        eid: Id,
    ) -> Result<Arc<Snapshot>> {
        let fits = |t: &Ticket| t.kind == TicketKind::BundleExport && t.subject_id == msid;
        let t = self
            .polled(who, uid, eid, fits, self.export(who, uid, msid, eid))
            .await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        Ok(t)
    }

    /// An appliance export's status.
    pub async fn appliance_export_status(
        &self,
        who: &Principal,
        uid: &str,
        aid: Id,
        eid: Id,
    ) -> Result<Arc<Snapshot>> {
        let fits = |t: &Ticket| t.kind == TicketKind::ApplianceExport && t.subject_id == aid;
        self.polled(
            who,
            uid,
            eid,
            fits,
            self.appliance_export(who, uid, aid, eid),
        )
        .await
    }

    /// An import's status (`kind`: which import route).
    pub async fn import_status(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
    ) -> Result<Arc<Snapshot>> {
        self.polled(
            who,
            uid,
            id,
            |t| t.kind == kind,
            self.import(who, uid, kind, id),
        )
        .await
    }

    /// A takeout's status.
    pub async fn takeout_status(
        &self,
        who: &Principal,
        uid: &str,
        id: Id,
    ) -> Result<Arc<Snapshot>> {
        self.polled(
            who,
            uid,
            id,
            |t| t.kind == TicketKind::Takeout,
            self.takeout(who, uid, id),
        )
        .await
    }

    /// A container image's status. From memory only when the row names the route's template and
    /// bundle: an image row exists only while its template does (the template's delete takes its
    /// images, and forgets the owner's tickets), and its template is under its bundle.
    pub async fn image_status(
        &self,
        who: &Principal,
        uid: &str,
        (msid, tid, itid): (Id, Id, Id),
    ) -> Result<Arc<Snapshot>> {
        let fits = |t: &Ticket| {
            t.kind == TicketKind::ContainerImage
                && t.template_id() == Some(tid)
                && t.subject_id == msid
        };
        self.polled(who, uid, itid, fits, self.image(who, uid, msid, tid, itid))
            .await
    }

    /// This instance's ticket memory, if it has one (for metrics and tests).
    pub fn ticket_cache(&self) -> Option<&TicketCache> {
        self.tickets.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(id: Id, owner: Id, percentage: i32) -> Ticket {
        Ticket {
            id,
            owner_id: owner,
            kind: TicketKind::BundleExport,
            image: None,
            import: None,
            takeout: None,
            subject_id: 1,
            subject_name: "b".into(),
            subject_version: "1".into(),
            format: OutputFormat::Yaml,
            state: TicketState::Running,
            percentage,
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

    #[test]
    fn remembers_and_forgets() {
        let c = TicketCache::new(true);
        assert!(c.get(7, 1).is_none());
        let s = c.fill(c.begin(), ticket(1, 7, 10));
        assert!(s.version > 0);
        assert_eq!(c.get(7, 1).map(|s| s.ticket.percentage), Some(10));
        // Another owner's id never sees it.
        assert!(c.get(8, 1).is_none());
        c.changed(1);
        assert!(c.get(7, 1).is_none());
        let s2 = c.fill(c.begin(), ticket(1, 7, 20));
        assert!(s2.version > s.version);
        c.owner_changed(7);
        assert!(c.get(7, 1).is_none());
    }

    #[test]
    fn a_read_racing_a_change_is_not_kept() {
        let c = TicketCache::new(true);
        let since = c.begin();
        // The change commits and is announced while the (old) row is on its way.
        c.changed(1);
        let s = c.fill(since, ticket(1, 7, 10));
        assert_eq!(s.version, 0);
        assert!(c.get(7, 1).is_none());
        // Likewise for an owner-wide change and a reset.
        let since = c.begin();
        c.owner_changed(7);
        assert_eq!(c.fill(since, ticket(2, 7, 10)).version, 0);
        let since = c.begin();
        c.reset();
        assert_eq!(c.fill(since, ticket(3, 7, 10)).version, 0);
        // A change to another ticket does not spoil the read.
        let since = c.begin();
        c.changed(99);
        assert!(c.fill(since, ticket(4, 7, 10)).version > 0);
    }

    #[test]
    fn not_live_answers_nothing_and_keeps_nothing() {
        let c = TicketCache::new(false);
        assert_eq!(c.fill(c.begin(), ticket(1, 7, 10)).version, 0);
        assert!(c.get(7, 1).is_none());
        c.set_live(true);
        c.fill(c.begin(), ticket(1, 7, 10));
        assert!(c.get(7, 1).is_some());
        // Losing the signals drops everything; reads begun before they return are not kept.
        let since = c.begin();
        c.set_live(false);
        assert!(c.get(7, 1).is_none());
        c.set_live(true);
        assert_eq!(c.fill(since, ticket(1, 7, 10)).version, 0);
        assert!(c.get(7, 1).is_none());
    }

    #[test]
    fn forget_guards_fire_on_drop() {
        let c = TicketCache::new(true);
        c.fill(c.begin(), ticket(1, 7, 10));
        c.fill(c.begin(), ticket(2, 7, 10));
        {
            // While the write is in progress (before and after its commit) the old row is not
            // answered, and a read that completes meanwhile is not kept.
            let _g = c.forget_ticket(1);
            assert!(c.get(7, 1).is_none());
            assert_eq!(c.fill(c.begin(), ticket(1, 7, 20)).version, 0);
            assert!(c.get(7, 1).is_none());
            assert!(c.get(7, 2).is_some());
        }
        assert!(c.get(7, 1).is_none());
        assert!(c.fill(c.begin(), ticket(1, 7, 20)).version > 0);
        assert!(c.get(7, 1).is_some());
        {
            let _g = c.forget_owner(7);
            assert!(c.get(7, 2).is_none());
            assert_eq!(c.fill(c.begin(), ticket(2, 7, 20)).version, 0);
            // A reset while a write is held keeps the write's mark.
            c.reset();
            assert_eq!(c.fill(c.begin(), ticket(2, 7, 20)).version, 0);
        }
        assert!(c.get(7, 2).is_none());
        assert!(c.fill(c.begin(), ticket(2, 7, 20)).version > 0);
        {
            let _g = c.forget_ticket(2);
            c.reset();
            assert_eq!(c.fill(c.begin(), ticket(2, 7, 30)).version, 0);
        }
        assert!(c.fill(c.begin(), ticket(2, 7, 30)).version > 0);
    }
}
