//! The narrow traits the outer layers implement: metadata + job queue in one database (`Store`), and
//! the handler the job runtime calls (`JobHandler`). SQLite and PostgreSQL implement `Store` alike.

use crate::appliance::*;
use crate::cloud::model::*;
use crate::model::*;
use crate::Result;
use async_trait::async_trait;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[async_trait]
pub trait Store:
    TemplateStore
    + DistributionStore
    + ApplianceStore
    + UsageStore
    + StatsStore
    + IdempotencyStore
    + ApiKeyStore
    + AccountStore
    + BlobRefStore
    + ImportStore
    + NotifyStore
    + RegistryStore
    + Send
    + Sync
    + 'static
{
    // ---- users
    async fn create_user(&self, new: NewUser) -> Result<User>;
    async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    async fn user_by_id(&self, id: Id) -> Result<Option<User>>;
    /// Deletes the user and everything they own; returns the blob keys to delete.
    async fn delete_user(&self, login: &str) -> Result<Option<Vec<String>>>;
    async fn set_password(&self, login: &str, password_hash: &str) -> Result<bool>;

    // ---- software bundles (every call is scoped by owner: another user's bundle does not exist)
    async fn create_bundle(
        &self,
        owner: Id,
        name: &str,
        version: &str,
        input: &BundleInput,
    ) -> Result<Bundle>;
    async fn get_bundle(&self, owner: Id, id: Id) -> Result<Option<Bundle>>;
    /// For all of `owner`'s bundles at once, what their documents show besides their rows: the
    /// summed size of their uploaded files (bundles without files are absent) and every license and
    /// logo. Two statements, whatever the number of bundles.
    async fn bundle_extras(&self, owner: Id) -> Result<(Vec<(Id, i64)>, Vec<Attachment>)>;
    async fn list_bundles(&self, owner: Id) -> Result<Vec<Bundle>>;
    async fn update_bundle(&self, owner: Id, id: Id, input: &BundleInput)
        -> Result<Option<Bundle>>;
    /// Returns the blob keys that the caller must delete, or None when there was no such bundle.
    async fn delete_bundle(&self, owner: Id, id: Id) -> Result<Option<Vec<String>>>;

    // ---- artifacts (scoped by bundle, which the caller has already resolved for the owner)
    async fn create_artifact(
        &self,
        bundle: Id,
        parent: Option<Id>,
        name: &str,
        input: &ArtifactInput,
    ) -> Result<Artifact>;
    async fn get_artifact(&self, bundle: Id, id: Id) -> Result<Option<Artifact>>;
    async fn list_artifacts(&self, bundle: Id) -> Result<Vec<Artifact>>;
    async fn update_artifact(
        &self,
        bundle: Id,
        id: Id,
        input: &ArtifactInput,
    ) -> Result<Option<Artifact>>;
    /// Deletes the artifact and its children; returns their blob keys.
    async fn delete_artifact(&self, bundle: Id, id: Id) -> Result<Option<Vec<String>>>;
    /// Points the artifact at a new blob; returns the previous blob key (to delete), or Err NotFound.
    async fn set_artifact_blob(&self, bundle: Id, id: Id, blob: &BlobRef)
        -> Result<Option<String>>;

    // ---- license / logo: at most one of each per bundle
    async fn put_attachment(
        &self,
        bundle: Id,
        kind: AttachmentKind,
        name: &str,
        blob: &BlobRef,
    ) -> Result<(Attachment, Option<String>)>;
    async fn get_attachment(&self, bundle: Id, kind: AttachmentKind) -> Result<Option<Attachment>>;
    async fn delete_attachment(&self, bundle: Id, kind: AttachmentKind) -> Result<Option<String>>;

    // ---- tickets and their jobs
    /// Creates the ticket and its job in one transaction.
    async fn create_ticket(&self, new: &NewTicket) -> Result<Ticket>;
    async fn get_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>>;
    async fn get_ticket_any(&self, id: Id) -> Result<Option<Ticket>>;
    async fn list_tickets(&self, owner: Id) -> Result<Vec<Ticket>>;
    /// Deletes the ticket (and its job); returns it so the caller can delete its archive.
    async fn delete_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>>;
    /// Replaces a takeout's parameters (to drop its sealed passphrase once the job is over).
    async fn set_takeout_spec(&self, id: Id, spec: &TakeoutSpec) -> Result<()>;
    /// queued -> running. False if the ticket is gone or not queued/running.
    async fn mark_running(&self, id: Id) -> Result<bool>;
    /// Only while running; false if the ticket is gone or no longer running.
    async fn update_progress(&self, id: Id, p: &Progress) -> Result<bool>;
    /// running|queued -> complete|error, conditionally. False if the ticket moved on (deleted, cancelled).
    async fn finish_ticket(&self, id: Id, outcome: &Outcome) -> Result<bool>;
    /// Completed tickets whose retention has passed.
    async fn tickets_to_expire(&self, now: Millis, limit: i64) -> Result<Vec<Ticket>>;
    /// complete -> expired, conditionally.
    async fn mark_expired(&self, id: Id) -> Result<bool>;

    /// queued|running -> cancelled, conditionally; the ticket as it is afterwards (None: not found).
    async fn cancel_ticket(&self, owner: Id, id: Id) -> Result<Option<Ticket>>;

    // ---- job queue
    /// Claims the oldest runnable job for `owner` with a lease, counting the attempt.
    async fn claim_job(&self, owner: &str, lease: Duration) -> Result<Option<Job>> {
        self.claim_job_fair(owner, lease, u32::MAX).await
    }
    /// Like `claim_job`, fairly across users: jobs of users already running `per_user` jobs are
    /// skipped, and the user running the fewest goes first.
    async fn claim_job_fair(
        &self,
        owner: &str,
        lease: Duration,
        per_user: u32,
    ) -> Result<Option<Job>>;
    /// Extends the lease; false if the job is no longer ours (gone, or taken over).
    async fn heartbeat(&self, job: Id, owner: &str, lease: Duration) -> Result<bool>;
    /// Removes a finished job.
    async fn finish_job(&self, job: Id, owner: &str) -> Result<()>;
    /// Gives the job back for a later retry.
    async fn retry_job(&self, job: Id, owner: &str, error: &str, delay: Duration) -> Result<()>;
    /// Whether this instance should run the periodic task `name` now: across all instances sharing
    /// the store, at most one claim succeeds per `period`. A single-instance engine always says yes.
    async fn claim_periodic(&self, _name: &str, _owner: &str, _period: Duration) -> Result<bool> {
        Ok(true)
    }
    /// Drops every lease at once (embedded mode at start: the single instance that held them is dead).
    async fn release_all_leases(&self) -> Result<u64>;
    /// Waits until a job may have become runnable (a ticket was created or a job given back, possibly
    /// by another instance), or `timeout` passes. True if woken by such a signal. Wake-ups can be
    /// spurious, so callers still just try `claim_job`. The default has no signal and sleeps the whole
    /// `timeout`, which is polling (right for the embedded store, whose only writer wakes its own
    /// workers directly); PostgreSQL overrides it with LISTEN/NOTIFY.
    async fn wait_for_jobs(&self, timeout: Duration) -> bool {
        tokio::time::sleep(timeout).await;
        false
    }

    // ---- what this process remembers
    /// The memory of ticket rows that status polls answer from (`crate::polls`), kept current by
    /// this store: it forgets a ticket whenever it writes it, and (PostgreSQL) whenever another
    /// process announces a change; the first call starts listening for those. None: every poll
    /// reads the store.
    fn ticket_cache(&self) -> Option<std::sync::Arc<crate::polls::TicketCache>> {
        None
    }
}

/// What a user holds now, for quotas. A supertrait of `Store`, written once for both engines.
#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    async fn usage(&self, owner: Id) -> Result<Usage>;
}

/// `Idempotency-Key` records, scoped by user (the protocol is in `crate::idempotency`). A supertrait
/// of `Store`, written once for both engines.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Inserts the key as pending, or takes over a record that expired, or a pending one whose lease
    /// lapsed for the same request. One conditional statement: of racing claims exactly one is true.
    async fn claim_idempotency_key(&self, claim: &crate::idempotency::NewClaim) -> Result<bool>;
    async fn get_idempotency_key(
        &self,
        owner: Id,
        key: &str,
    ) -> Result<Option<crate::idempotency::KeyRecord>>;
    /// Extends a pending claim's lease; false if `token` no longer holds it.
    async fn renew_idempotency_key(
        &self,
        owner: Id,
        key: &str,
        token: &str,
        locked_until: Millis,
    ) -> Result<bool>;
    /// pending -> done with the answer, if `token` still holds the key.
    async fn record_idempotency_key(
        &self,
        owner: Id,
        key: &str,
        token: &str,
        body_hash: &str,
        answer: &crate::idempotency::Answer,
    ) -> Result<bool>;
    /// Deletes a pending claim held by `token`.
    async fn release_idempotency_key(&self, owner: Id, key: &str, token: &str) -> Result<bool>;
    /// Drops records that expired at or before `now` (housekeeping); returns how many.
    async fn purge_idempotency_keys(&self, now: Millis) -> Result<u64>;
}

/// UForge API key pairs (`crate::apikeys`), scoped by owner but for the lookup that authenticates.
/// A supertrait of `Store`, written once for both engines.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    /// Inserts the key unless its owner already holds `max_per_owner` (then `None`); a taken
    /// public key is `Conflict`.
    async fn create_api_key(
        &self,
        new: &crate::apikeys::NewApiKey,
        max_per_owner: i64,
    ) -> Result<Option<crate::apikeys::ApiKey>>;
    async fn list_api_keys(&self, owner: Id) -> Result<Vec<crate::apikeys::ApiKey>>;
    async fn get_api_key(&self, owner: Id, id: Id) -> Result<Option<crate::apikeys::ApiKey>>;
    async fn delete_api_key(&self, owner: Id, id: Id) -> Result<bool>;
    /// The key with this public part and its user, as they are now (one read per request, so a
    /// deleted key or user is refused at once, on every instance).
    async fn api_key_by_public(
        &self,
        public_key: &str,
    ) -> Result<Option<(crate::apikeys::ApiKey, User)>>;
    /// Sets `last_used = now` unless it is already after `unless_after` (bounded writes).
    async fn touch_api_key(&self, id: Id, now: Millis, unless_after: Millis) -> Result<bool>;
}

/// Cloud accounts (`crate::accounts`) with their certificate files, scoped by owner (the
/// rotation's two calls read and write across owners). Sealed values are opaque here. A
/// supertrait of `Store`, written once for both engines.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Inserts the account and its certificates unless the owner already holds `max_per_owner`
    /// (then `None`).
    async fn create_account(
        &self,
        new: &crate::accounts::NewAccount,
        max_per_owner: i64,
    ) -> Result<Option<crate::accounts::Account>>;
    async fn list_accounts(&self, owner: Id) -> Result<Vec<crate::accounts::Account>>;
    async fn get_account(&self, owner: Id, id: Id) -> Result<Option<crate::accounts::Account>>;
    async fn update_account(
        &self,
        owner: Id,
        id: Id,
        update: &crate::accounts::AccountUpdate,
    ) -> Result<Option<crate::accounts::Account>>;
    async fn delete_account(&self, owner: Id, id: Id) -> Result<bool>;
    /// Adds a certificate unless the account holds `max` already (then `None`).
    async fn add_account_cert(
        &self,
        account: Id,
        new: &crate::accounts::NewCert,
        max: i64,
    ) -> Result<Option<crate::accounts::AccountCert>>;
    async fn set_account_cert(
        &self,
        account: Id,
        cert: Id,
        name: &str,
        size: i64,
        content: &crate::accounts::Sealed,
    ) -> Result<Option<crate::accounts::AccountCert>>;
    async fn delete_account_cert(&self, account: Id, cert: Id) -> Result<bool>;
    /// Up to `limit` sealed values of `kind` with ids above `after`, in id order, skipping those
    /// sealed by `not_key` (a rotation's new key).
    async fn sealed_page(
        &self,
        kind: crate::accounts::SealedKind,
        not_key: &str,
        after: Id,
        limit: i64,
    ) -> Result<Vec<crate::accounts::SealedRow>>;
    /// Writes `sealed` over the value if it is still sealed by `from_key`; false otherwise.
    async fn reseal(
        &self,
        kind: crate::accounts::SealedKind,
        id: Id,
        from_key: &str,
        sealed: &crate::accounts::Sealed,
    ) -> Result<bool>;
}

/// What operators watch: reachability and the queue. A supertrait of `Store`, written once.
#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// One round trip to the database.
    async fn ping(&self) -> Result<()>;
    /// Tickets by (kind, state).
    async fn ticket_counts(&self) -> Result<Vec<(String, String, i64)>>;
    /// Jobs waiting to be claimed (no live lease) and when the oldest of them was queued.
    async fn queue_stats(&self, now: Millis) -> Result<QueueStats>;
    /// Database connections handed back to the pool so far: one per statement or transaction,
    /// so a request path that adds none made no round trip (what `/metrics` shows to prove the
    /// status polls' memory path).
    fn checkouts(&self) -> u64 {
        0
    }
}

/// Container templates, scoped by owner and bundle. Their images are tickets of kind
/// `ContainerImage` (created with `Store::create_ticket`, read with `Store::get_ticket`). A supertrait of
/// `Store`, so an `Arc<dyn Store>` answers these too; both engines implement it from one macro.
#[async_trait]
pub trait TemplateStore: Send + Sync + 'static {
    async fn create_template(
        &self,
        owner: Id,
        bundle: Id,
        distribution: Option<&DistributionRef>,
    ) -> Result<ContainerTemplate>;
    async fn get_template(
        &self,
        owner: Id,
        bundle: Id,
        id: Id,
    ) -> Result<Option<ContainerTemplate>>;
    async fn list_templates(&self, owner: Id, bundle: Id) -> Result<Vec<ContainerTemplate>>;
    /// Deletes the template with its images (tickets and jobs); returns the images deleted.
    async fn delete_template(&self, owner: Id, bundle: Id, id: Id) -> Result<Option<Vec<Ticket>>>;
    async fn list_template_images(&self, owner: Id, template: Id) -> Result<Vec<Ticket>>;
}

/// Registered base distributions (`crate::distribution`): global, written by admins. A supertrait of
/// `Store`, written once for both engines.
#[async_trait]
pub trait DistributionStore: Send + Sync + 'static {
    /// A duplicate name (any case), version and arch is `Conflict`.
    async fn create_distribution(&self, new: &NewDistribution) -> Result<Distribution>;
    async fn list_distributions(&self) -> Result<Vec<Distribution>>;
    async fn get_distribution(&self, id: Id) -> Result<Option<Distribution>>;
    /// Deletes it unless a container template names it: a template whose distribution has this
    /// name (any case) and version and one of `arches` (the spellings of its architecture).
    async fn delete_distribution(&self, id: Id, arches: &[String]) -> Result<DeletedDistribution>;
}

/// What `DistributionStore::delete_distribution` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletedDistribution {
    Deleted(Distribution),
    NotFound,
    /// Not deleted: this many container templates name it.
    InUse(i64),
}

/// Appliance templates (`crate::appliance`), scoped by owner; their parts (bundle links, OS profile,
/// packages, boot scripts) by the appliance, which the domain has resolved for the owner. A
/// supertrait of `Store`, written once for both engines.
#[async_trait]
pub trait ApplianceStore: Send + Sync + 'static {
    async fn create_appliance(&self, owner: Id, new: &NewAppliance) -> Result<Appliance>;
    async fn get_appliance(&self, owner: Id, id: Id) -> Result<Option<Appliance>>;
    /// By id.
    async fn list_appliances(&self, owner: Id) -> Result<Vec<Appliance>>;
    /// The oldest of the owner's appliances with exactly this name and version.
    async fn find_appliance(
        &self,
        owner: Id,
        name: &str,
        version: &str,
    ) -> Result<Option<Appliance>>;
    async fn update_appliance(
        &self,
        owner: Id,
        id: Id,
        input: &ApplianceInput,
    ) -> Result<Option<Appliance>>;
    /// Deletes the appliance with its profile and boot scripts (never its bundles); returns the
    /// boot scripts' blob keys to delete, or None when there was no such appliance.
    async fn delete_appliance(&self, owner: Id, id: Id) -> Result<Option<Vec<String>>>;
    /// Everything an export needs, read in one snapshot.
    async fn appliance_parts(&self, owner: Id, id: Id) -> Result<Option<ApplianceParts>>;
    /// Writes the appliance, its bundle links (bundles of `owner`, else NotFound), OS profile,
    /// packages and boot scripts (bodies already uploaded) in one transaction. With
    /// `replace = Some(old)`, deletes `owner`'s appliance `old` in the same transaction (NotFound
    /// if there is none) and returns the blob keys nothing references any more.
    async fn create_appliance_with_parts(
        &self,
        owner: Id,
        new: &NewApplianceParts,
        replace: Option<Id>,
    ) -> Result<(Appliance, Vec<String>)>;

    // ---- bundles of an appliance (the caller resolved the appliance for `owner`)
    /// Replaces the appliance's bundle list (bundles of `owner`, else NotFound; in this order,
    /// repeated ids once).
    async fn set_appliance_bundles(&self, owner: Id, appliance: Id, bundles: &[Id]) -> Result<()>;
    /// Appends a bundle of `owner` (NotFound otherwise); already attached: unchanged.
    async fn attach_bundle(&self, owner: Id, appliance: Id, bundle: Id) -> Result<()>;
    /// False when the bundle was not attached.
    async fn detach_bundle(&self, appliance: Id, bundle: Id) -> Result<bool>;

    // ---- OS profile (one per appliance) and its packages
    async fn get_os_profile(&self, appliance: Id) -> Result<Option<OsProfile>>;
    /// Creates the profile, or renames it (its packages stay).
    async fn set_os_profile(&self, appliance: Id, name: &str) -> Result<OsProfile>;
    async fn delete_os_profile(&self, appliance: Id) -> Result<bool>;
    async fn list_os_packages(&self, profile: Id) -> Result<Vec<OsPackage>>;
    /// Replaces the profile's package list.
    async fn set_os_packages(&self, profile: Id, pkgs: &[OsPackage]) -> Result<()>;

    // ---- boot scripts
    async fn create_boot_script(&self, appliance: Id, new: &NewBootScript) -> Result<BootScript>;
    async fn get_boot_script(&self, appliance: Id, id: Id) -> Result<Option<BootScript>>;
    /// By boot order, then id.
    async fn list_boot_scripts(&self, appliance: Id) -> Result<Vec<BootScript>>;
    async fn update_boot_script(
        &self,
        appliance: Id,
        id: Id,
        input: &BootScriptInput,
    ) -> Result<Option<BootScript>>;
    /// Ok(Some(body's blob key, if any)) when deleted.
    async fn delete_boot_script(&self, appliance: Id, id: Id) -> Result<Option<Option<String>>>;
    /// Points the script at a new body; Ok(Some(previous key, if any)), or Ok(None): no such script.
    async fn set_boot_script_blob(
        &self,
        appliance: Id,
        id: Id,
        blob: &BlobRef,
    ) -> Result<Option<Option<String>>>;
}

/// The writes that make imports all-or-nothing: the uploaded archive queues the import, and what the
/// import creates appears together with its ticket's completion, in one transaction, or not at all
/// (a job killed and retried can never create twice). A supertrait of `Store`, written once.
#[async_trait]
pub trait ImportStore: Send + Sync + 'static {
    /// awaiting_upload -> queued with `upload` as its archive, and its job, in one transaction.
    /// None: no such import of `owner`; otherwise the ticket as it is afterwards (not `Queued`:
    /// it had an archive already, or was cancelled).
    async fn queue_import(
        &self,
        owner: Id,
        id: Id,
        upload: &ArchiveRef,
        max_attempts: i32,
    ) -> Result<Option<Ticket>>;
    /// Creates the bundle with its files, license and logo and completes the running import
    /// `ticket` with it (its upload dropped from the ticket), in one transaction. None, with
    /// nothing written, when the ticket is no longer running (cancelled, deleted, finished).
    async fn complete_bundle_import(
        &self,
        ticket: Id,
        bundle: &NewBundleParts,
    ) -> Result<Option<Bundle>>;
    /// Creates the template's new bundles and the appliance holding them (in `bundles`' order, its
    /// own `bundles` list ignored), replacing appliance `replace` of the same owner if given, and
    /// completes the running import `ticket` with it, in one transaction. None, with nothing
    /// written, when the ticket is no longer running; otherwise the appliance and the blob keys the
    /// replaced appliance no longer needs.
    async fn complete_template_import(
        &self,
        ticket: Id,
        bundles: &[ImportedBundle],
        appliance: &crate::appliance::NewApplianceParts,
        replace: Option<Id>,
    ) -> Result<Option<(crate::appliance::Appliance, Vec<String>)>>;
}

/// What the job runtime calls for each claimed job. `cancel` fires when the lease is lost or the
/// ticket disappears; the handler must stop promptly and leave nothing half-published.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, job: &Job, cancel: CancellationToken) -> Result<()>;
    /// Called when a job has used all its attempts, so its ticket can end in `error`.
    async fn give_up(&self, job: &Job, error: &str) -> Result<()>;
    /// How long a failed attempt of `job` waits before the next one; None: the pool's own
    /// backoff. (Webhook deliveries keep their own schedule: `crate::notify::RetryPolicy`.)
    fn retry_delay(&self, _job: &Job) -> Option<Duration> {
        None
    }
}

/// Takeout webhooks (`crate::notify`): each user's sealed signing secret, and one delivery record
/// per ticket (queued by `Store::finish_ticket` / `cancel_ticket` in their transaction, with its
/// job, when the ticket has a `notify_url`). A supertrait of `Store`, written once.
#[async_trait]
pub trait NotifyStore: Send + Sync + 'static {
    /// Stores `sealed` as the owner's secret unless they have one; true if this call stored it.
    async fn create_notify_secret(
        &self,
        owner: Id,
        sealed: &crate::accounts::Sealed,
    ) -> Result<bool>;
    /// Stores `sealed` as the owner's secret, replacing theirs if any.
    async fn replace_notify_secret(
        &self,
        owner: Id,
        sealed: &crate::accounts::Sealed,
    ) -> Result<()>;
    async fn notify_secret(&self, owner: Id) -> Result<Option<crate::accounts::Sealed>>;
    async fn delivery(&self, ticket: Id) -> Result<Option<crate::notify::Delivery>>;
    /// Counts an attempt of a pending delivery (its first one's time is kept); the delivery as it
    /// is afterwards, or None when it is not pending (delivered, failed, gone).
    async fn begin_delivery_attempt(
        &self,
        ticket: Id,
        now: Millis,
    ) -> Result<Option<crate::notify::Delivery>>;
    /// Records why the last attempt failed, while pending.
    async fn delivery_error(&self, ticket: Id, error: &str) -> Result<()>;
    /// pending -> `to` (delivered or failed), conditionally: false if it was not pending.
    async fn end_delivery(
        &self,
        ticket: Id,
        to: crate::notify::DeliveryState,
        error: Option<&str>,
        now: Millis,
    ) -> Result<bool>;
}

/// Keys, images, the object namespace and async image exports (the CloudAPI side). A separate, narrow
/// trait so the UForge side does not depend on it; both engines implement both traits.
#[async_trait]
pub trait CloudStore: Send + Sync + 'static {
    // ---- SSH keys, scoped by owner. Names and fingerprints are unique per owner (Conflict otherwise).
    async fn add_key(&self, owner: Id, name: &str, fingerprint: &str, key: &str) -> Result<SshKey>;
    async fn list_keys(&self, owner: Id) -> Result<Vec<SshKey>>;
    /// By name or by MD5 fingerprint.
    async fn get_key(&self, owner: Id, name_or_fp: &str) -> Result<Option<SshKey>>;
    async fn delete_key(&self, owner: Id, name_or_fp: &str) -> Result<bool>;

    // ---- images. `get_image` is unscoped: the domain decides who may see it (owner, or public).
    async fn create_image(&self, image: &Image) -> Result<()>;
    async fn get_image(&self, id: &str) -> Result<Option<Image>>;
    /// The owner's images and every public one.
    async fn list_images(&self, owner: Id) -> Result<Vec<Image>>;
    /// Only while unactivated. Ok(None): no such image of this owner, or not unactivated;
    /// Ok(Some(old)): done, `old` is the replaced file's blob key.
    async fn set_image_file(
        &self,
        owner: Id,
        id: &str,
        file: &ImageFile,
    ) -> Result<Option<Option<String>>>;
    /// unactivated (with a file) -> active, conditionally.
    async fn activate_image(&self, owner: Id, id: &str, now: Millis) -> Result<bool>;
    /// Sets name, version and description of an owner's image; false if there is none.
    async fn update_image(
        &self,
        owner: Id,
        id: &str,
        name: &str,
        version: &str,
        description: Option<&str>,
    ) -> Result<bool>;
    /// Inserts `copy` (sharing `source`'s file blob) only while `source` is still an active image
    /// with that blob, holding it so that a concurrent delete of `source` sees the copy's
    /// reference (and keeps the blob); false if `source` is gone or changed.
    async fn clone_image(&self, source: &str, copy: &Image) -> Result<bool>;
    /// Ok(Some(blob)) when deleted, with the file's blob key to delete (None when an exported
    /// object still shares it).
    async fn delete_image(&self, owner: Id, id: &str) -> Result<Option<Option<String>>>;

    // ---- the object namespace. Parent checks happen in the same transaction as the write.
    async fn stor_get(&self, owner: Id, path: &str) -> Result<Option<StorEntry>>;
    /// Children of `dir`, by name, after `marker`, at most `limit`.
    async fn stor_list(
        &self,
        owner: Id,
        dir: &str,
        marker: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StorEntry>>;
    /// Creates or replaces an object. `parent_is_root` skips the parent check (area roots always exist).
    /// With `link_from_image`, the entry shares that image's file blob and is only written if the
    /// image still holds `entry.blob_key` (else `SourceGone`). A replaced blob is returned for
    /// deletion only when nothing else references it.
    async fn stor_put(
        &self,
        entry: &StorEntry,
        parent_is_root: bool,
        link_from_image: Option<&str>,
    ) -> Result<StorPut>;
    async fn stor_mkdir(&self, entry: &StorEntry, parent_is_root: bool) -> Result<StorMkdir>;
    async fn stor_delete(&self, owner: Id, path: &str) -> Result<StorDelete>;

    // ---- async image exports
    /// Records the export and enqueues its job (kind [`crate::model::JOB_IMAGE_EXPORT`]) in one
    /// transaction, like `Store::create_ticket`.
    async fn create_image_export(&self, e: &ImageExport, max_attempts: i32) -> Result<()>;
    async fn get_image_export(&self, owner: Id, id: &str) -> Result<Option<ImageExport>>;
    async fn update_image_export(&self, e: &ImageExport) -> Result<()>;
    /// Any user's export (the job runner's read; the face reads with `get_image_export`).
    async fn get_image_export_any(&self, id: &str) -> Result<Option<ImageExport>>;
}

/// What consuming a one-time download key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUse {
    /// This call consumed it (exactly one call ever sees this per key).
    Consumed {
        owner_id: Id,
    },
    /// `check_key` only: it could be consumed now (nothing was written).
    Usable {
        owner_id: Id,
    },
    AlreadyUsed,
    Expired,
    /// No such key, or a key for another resource (the two are indistinguishable on purpose).
    Unknown,
}

/// One-time download keys: stored only as a hash, bound to one resource, expiring, and consumed by
/// one conditional UPDATE so that any number of racing requests, on any number of instances, give
/// exactly one `Consumed`.
#[async_trait]
pub trait OneTimeKeys: Send + Sync + 'static {
    async fn issue_key(
        &self,
        key_hash: &str,
        owner: Id,
        resource: &str,
        expires_at: Millis,
    ) -> Result<()>;
    async fn consume_key(&self, key_hash: &str, resource: &str, now: Millis) -> Result<KeyUse>;
    /// What `consume_key` would find, without consuming (`Usable` instead of `Consumed`): lets a
    /// request that will send nothing (a 416, a 304) answer without spending the key.
    async fn check_key(&self, key_hash: &str, resource: &str, now: Millis) -> Result<KeyUse>;
    /// Drops keys that expired before `before` (housekeeping); returns how many.
    async fn purge_keys(&self, before: Millis) -> Result<u64>;
}

/// What the orphan sweep (`crate::sweep`) asks before it deletes a blob, and the record of the
/// multipart uploads running on S3 (which object_store cannot list, so a crash would leave their
/// parts for ever). A supertrait of `Store`, written once for both engines.
#[async_trait]
pub trait BlobRefStore: Send + Sync + 'static {
    /// Which of `keys` a row references: an artifact's, attachment's or boot script's file, a complete ticket's
    /// archive, an image's file, an object. (An expired or failed ticket's archive is not kept.)
    async fn referenced_blobs(&self, keys: &[String]) -> Result<std::collections::HashSet<String>>;
    /// Tickets whose job may still write their archive (queued or running).
    async fn live_tickets(&self) -> Result<Vec<Ticket>>;
    /// Records a multipart upload before its first part is sent.
    async fn record_upload(&self, key: &str, upload_id: &str, now: Millis) -> Result<()>;
    /// The upload is still sending parts.
    async fn touch_upload(&self, key: &str, upload_id: &str, now: Millis) -> Result<()>;
    /// The upload completed or was aborted.
    async fn forget_upload(&self, key: &str, upload_id: &str) -> Result<()>;
    /// Recorded uploads last touched at or before `before`, the longest idle first.
    async fn stale_uploads(&self, before: Millis, limit: i64) -> Result<Vec<PendingUpload>>;
}

/// A multipart upload recorded by [`BlobRefStore::record_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub touched: Millis,
}

/// Published images (pimages) and their content-addressed blobs, read by the pull endpoint. A
/// supertrait of `Store`, written once for both engines (`store/src/registry.rs`).
#[async_trait]
pub trait RegistryStore: Send + Sync + 'static {
    /// Completes the running publish `ticket` with its reference and blobs in one transaction.
    /// False when it is not running any more (cancelled or deleted): nothing is written then. A
    /// tag published meanwhile by another ticket is a `Conflict`.
    async fn complete_publish(&self, ticket: Id, p: &NewPublished) -> Result<bool>;
    /// The reference a complete publish ticket of `owner` recorded.
    async fn published(&self, owner: Id, ticket: Id) -> Result<Option<Published>>;
    /// Every reference of `owner`, oldest first.
    async fn list_published(&self, owner: Id) -> Result<Vec<Published>>;
    /// The reference `repository:reference` of `owner`, `reference` a tag or a manifest digest.
    async fn find_published(
        &self,
        owner: Id,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Published>>;
    /// A blob of one of `owner`'s references in `repository`.
    async fn published_blob(
        &self,
        owner: Id,
        repository: &str,
        digest: &str,
    ) -> Result<Option<PublishedBlob>>;
    /// The blobs a reference holds (manifest first).
    async fn published_blobs(&self, ticket: Id) -> Result<Vec<PublishedBlob>>;
    /// Deletes the publish ticket of `owner` (its reference goes with it, FK cascade) and answers
    /// it with the keys of its blobs that no other reference holds any more, decided in the same
    /// transaction.
    async fn delete_publish(&self, owner: Id, ticket: Id) -> Result<Option<(Ticket, Vec<String>)>>;
    /// Of `keys`, those no reference holds.
    async fn unreferenced_registry_blobs(&self, keys: &[String]) -> Result<Vec<String>>;
}
