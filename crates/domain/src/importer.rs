//! Imports: an uploaded bundle or template archive made into a new bundle (or appliance with its
//! bundles). An import is a ticket (`TicketKind::BundleImport` / `TemplateImport`): created waiting
//! for its upload, queued with its job once the archive is stored, run by [`TicketRunner`], polled,
//! cancelled and deleted like every ticket.
//!
//! The job reads the archive once, streamed, through the hostile-safe reader
//! (`satchel_archive::reader`): every file member goes to a blob of its own under the import's
//! prefix (`service::import_prefix`) as it is read, never into memory. The descriptor is then checked
//! against what was actually read (`import::descriptor`), and what it describes is written with
//! the ticket's completion in one transaction (`ImportStore`). On any refusal or failure the blobs
//! written so far are deleted; a crash leaves them under a live prefix until the ticket ends, and
//! the orphan sweep takes them after.

use crate::export::{Failure, TicketRunner};
use crate::model::*;
use crate::service::{import_prefix, Satchel};
use crate::{DomainError, Result};
use bytes::Bytes;
use futures::Stream;
use tokio_util::sync::CancellationToken;

impl Satchel {
    // ---------------------------------------------------------------- imports

    /// Creates an import of `kind` waiting for its archive.
    pub async fn create_import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        spec: ImportSpec,
    ) -> Result<Ticket> {
        debug_assert!(kind.is_import());
        let owner = self.target(who, uid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        self.quota().check_ticket(owner.id).await?;
        self.store
            .create_ticket(&NewTicket {
                owner_id: owner.id,
                kind,
                image: None,
                import: Some(spec),
                subject_id: 0,
                subject_name: String::new(),
                subject_version: String::new(),
                format: OutputFormat::Yaml,
                max_attempts: self.config.max_attempts,
            })
            .await
    }

    /// An import of `kind` of the user's; imports of the other kind do not exist here.
    pub async fn import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
    ) -> Result<Ticket> {
        let owner = self.target(who, uid).await?;
        match self.store.get_ticket(owner.id, id).await? {
            Some(t) if t.kind == kind => Ok(t),
            _ => Err(DomainError::not_found(format!("import {id}"))),
        }
    }

    pub async fn list_imports(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
    ) -> Result<Vec<Ticket>> {
        self.tickets_of(who, uid, kind).await
    }

    /// Stores the uploaded archive (streamed, bounded by the user's quota and `--max-upload`) and
    /// queues the import. A second upload, or one after a cancel, is refused and its blob removed.
    pub async fn upload_import<S, E>(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
        body: S,
    ) -> Result<Ticket>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let t = self.import(who, uid, kind, id).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        if t.state != TicketState::AwaitingUpload {
            return Err(DomainError::Conflict(format!(
                "import {id} has its archive already (it is {})",
                t.state.as_str()
            )));
        }
        let key = upload_key(t.owner_id, t.id);
        let blob = self.store_upload_at(t.owner_id, &key, body).await?;
        let upload = ArchiveRef {
            key: blob.key.clone(),
            file_name: "upload.tar.gz".into(),
            size: blob.size,
            sha256: blob.sha256,
        };
        let queued = self
            .store
            .queue_import(t.owner_id, t.id, &upload, self.config.max_attempts)
            .await;
        match queued {
            Ok(Some(t)) if t.state == TicketState::Queued => Ok(self.queued(t)),
            Ok(Some(t)) => {
                // Raced with another upload or a cancel: the key is this import's, so only remove
                // it if the ticket does not hold it.
                if t.archive.as_ref().map(|a| &a.key) != Some(&key) {
                    self.delete_blobs(vec![key]).await;
                }
                Err(DomainError::Conflict(format!(
                    "import {id} has its archive already (it is {})",
                    t.state.as_str()
                )))
            }
            Ok(None) => {
                self.delete_blobs(vec![key]).await;
                Err(DomainError::not_found(format!("import {id}")))
            }
            Err(e) => {
                self.delete_blobs(vec![key]).await;
                Err(e)
            }
        }
    }

    pub async fn cancel_import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
    ) -> Result<Cancelled> {
        let t = self.import(who, uid, kind, id).await?;
        self.cancel_resolved(who, t).await
    }

    /// Deletes the import's record (and its upload, if still there). What it created stays: it is
    /// the user's bundle or appliance now.
    pub async fn delete_import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
    ) -> Result<()> {
        let t = self.import(who, uid, kind, id).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let gone = self
            .store
            .delete_ticket(t.owner_id, t.id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("import {id}")))?;
        self.delete_blobs(vec![upload_key(gone.owner_id, gone.id)])
            .await;
        Ok(())
    }
}

/// Where an import's uploaded archive is kept until the import ends.
pub(crate) fn upload_key(owner: Id, ticket: Id) -> String {
    format!("{}upload.tar.gz", import_prefix(owner, ticket))
}

impl TicketRunner {
    /// Deletes an import's upload once the import has ended (no-op for the other kinds).
    pub(crate) async fn discard_upload(&self, t: &Ticket) {
        if t.kind.is_import() {
            let _ = self.blobs.delete(&upload_key(t.owner_id, t.id)).await;
        }
    }

    /// Runs an import: read, check, create, complete; see the module documentation.
    pub(crate) async fn run_import(
        &self,
        t: &Ticket,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let _ = (t, cancel);
        Err(Failure::Permanent("imports are not available yet".into()))
    }
}
