//! Imports (`ImportStore`) for both engines, written once: queueing an uploaded archive, and the one
//! transaction in which what an import creates appears together with its ticket's completion.
//! The ticket row is locked first (`FOR UPDATE`; SQLite's write lock covers it), so a cancel or a
//! second worker that took over the job either happens before (and nothing is written) or after
//! (and finds the ticket complete). Instantiated by `sql_store!`, next to the row mappers.

macro_rules! impl_imports {
    () => {
        /// Inserts a bundle with its artifacts and attachments inside `tx`, for `owner`.
        pub(crate) async fn insert_bundle_parts(
            tx: &mut Tx<'_>,
            owner: Id,
            parts: &NewBundleParts,
        ) -> Result<Bundle> {
            let now = now_millis();
            let row = sqlx::query(
                "INSERT INTO bundles (owner_id, name, version, description, release, install_location, created, modified, imported)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) RETURNING *",
            )
            .bind(owner)
            .bind(&parts.name)
            .bind(&parts.version)
            .bind(&parts.description)
            .bind(&parts.release)
            .bind(&parts.install_location)
            .bind(now)
            .bind(parts.imported)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)?;
            let bundle = bundle_from(&row)?;
            let mut ids: Vec<Id> = Vec::with_capacity(parts.artifacts.len());
            for a in &parts.artifacts {
                let parent = match a.parent {
                    Some(i) => Some(*ids.get(i).ok_or_else(|| {
                        DomainError::Internal(
                            format!("artifact {} names a later parent", a.name).into(),
                        )
                    })?),
                    None => None,
                };
                let b = a.blob.as_ref();
                let id: Id = sqlx::query_scalar(
                    "INSERT INTO artifacts (bundle_id, parent_id, name, kind, tag, install_location,
                        blob_key, blob_size, blob_sha256, blob_md5, blob_uploaded, created, modified, blob_crc32)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13) RETURNING id",
                )
                .bind(bundle.id)
                .bind(parent)
                .bind(&a.name)
                .bind(&a.kind)
                .bind(&a.tag)
                .bind(&a.install_location)
                .bind(b.map(|b| b.key.clone()))
                .bind(b.map(|b| b.size))
                .bind(b.map(|b| b.sha256.clone()))
                .bind(b.map(|b| b.md5.clone()))
                .bind(b.map(|b| b.uploaded))
                .bind(now)
                .bind(b.and_then(|b| b.crc32).map(i64::from))
                .fetch_one(&mut **tx)
                .await
                .map_err(db_err)?;
                ids.push(id);
            }
            for (kind, att) in [
                (AttachmentKind::License, &parts.license),
                (AttachmentKind::Logo, &parts.logo),
            ] {
                let Some((name, blob)) = att else { continue };
                sqlx::query(
                    "INSERT INTO attachments (bundle_id, kind, name, blob_key, blob_size, blob_sha256, blob_md5, blob_uploaded, blob_crc32)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(bundle.id)
                .bind(kind.as_str())
                .bind(name)
                .bind(&blob.key)
                .bind(blob.size)
                .bind(&blob.sha256)
                .bind(&blob.md5)
                .bind(blob.uploaded)
                .bind(blob.crc32.map(i64::from))
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            }
            Ok(bundle)
        }

        /// Locks the import `ticket` if it is running, and returns its owner.
        pub(crate) async fn lock_running_import(tx: &mut Tx<'_>, ticket: Id) -> Result<Option<Id>> {
            sqlx::query_scalar(&format!(
                "SELECT owner_id FROM tickets WHERE id = $1 AND state = $2{}",
                S::FOR_UPDATE
            ))
            .bind(ticket)
            .bind(TicketState::Running.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)
        }

        /// Completes the locked, running import `ticket` with what it created (`subject`).
        pub(crate) async fn complete_import(
            tx: &mut Tx<'_>,
            ticket: Id,
            subject: Id,
            name: &str,
            version: &str,
        ) -> Result<()> {
            let to = crate::tickets::Move::to(TicketState::Complete, 6);
            let sql = format!(
                "UPDATE tickets SET {}, percentage = 100, bytes_loaded = bytes_total, eta = NULL,
                    error_message = NULL, archive_key = NULL, archive_name = NULL, archive_size = NULL,
                    archive_sha256 = NULL, subject_id = $1, subject_name = $2, subject_version = $3,
                    modified = $4
                 WHERE id = $5 AND {}",
                to.set, to.guard
            );
            let q = sqlx::query(&sql)
                .bind(subject)
                .bind(name)
                .bind(version)
                .bind(now_millis())
                .bind(ticket);
            to.bind(q).execute(&mut **tx).await.map_err(db_err)?;
            Ok(())
        }

        #[async_trait]
        impl satchel_domain::ports::ImportStore for S {
            async fn queue_import(
                &self,
                owner: Id,
                id: Id,
                upload: &ArchiveRef,
                max_attempts: i32,
            ) -> Result<Option<Ticket>> {
                let _forget = self.tickets.forget_ticket(id);
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let to = crate::tickets::Move::to(TicketState::Queued, 8);
                let sql = format!(
                    "UPDATE tickets SET {}, archive_key = $1, archive_name = $2, archive_size = $3,
                        archive_sha256 = $4, bytes_total = $3, modified = $5
                     WHERE id = $6 AND owner_id = $7 AND {}",
                    to.set, to.guard
                );
                let q = sqlx::query(&sql)
                    .bind(&upload.key)
                    .bind(&upload.file_name)
                    .bind(upload.size)
                    .bind(&upload.sha256)
                    .bind(now_millis())
                    .bind(id)
                    .bind(owner);
                let moved = to.bind(q).execute(&mut *tx).await.map_err(db_err)?.rows_affected();
                if moved > 0 {
                    let kind: String = sqlx::query_scalar("SELECT kind FROM tickets WHERE id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    sqlx::query(&format!(
                        "INSERT INTO jobs (kind, owner_id, ticket_id, max_attempts, run_after, created)
                         VALUES ($1, $2, $3, $4, {}, $5)",
                        S::NOW
                    ))
                    .bind(&kind)
                    .bind(owner)
                    .bind(id)
                    .bind(max_attempts)
                    .bind(now_millis())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    S::notify_jobs(&mut tx, id).await?;
                }
                let t = sqlx::query("SELECT * FROM tickets WHERE id = $1 AND owner_id = $2")
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                t.as_ref().map(ticket_from).transpose()
            }

            async fn complete_bundle_import(
                &self,
                ticket: Id,
                bundle: &NewBundleParts,
            ) -> Result<Option<Bundle>> {
                let _forget = self.tickets.forget_ticket(ticket);
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let Some(owner) = lock_running_import(&mut tx, ticket).await? else {
                    return Ok(None);
                };
                let b = insert_bundle_parts(&mut tx, owner, bundle).await?;
                complete_import(&mut tx, ticket, b.id, &b.name, &b.version).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(b))
            }

            async fn complete_template_import(
                &self,
                ticket: Id,
                bundles: &[ImportedBundle],
                appliance: &satchel_domain::appliance::NewApplianceParts,
                replace: Option<Id>,
            ) -> Result<Option<(satchel_domain::appliance::Appliance, Vec<String>)>> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                let Some(owner) = lock_running_import(&mut tx, ticket).await? else {
                    return Ok(None);
                };
                // The ticket, and the exports of an appliance it replaces: the owner's tickets.
                let _forget = self.tickets.forget_owner(owner);
                let mut ids = Vec::with_capacity(bundles.len());
                for b in bundles {
                    ids.push(match b {
                        ImportedBundle::Existing(id) => *id,
                        ImportedBundle::New(parts) => {
                            insert_bundle_parts(&mut tx, owner, parts).await?.id
                        }
                    });
                }
                let mut parts = appliance.clone();
                parts.bundles = ids;
                let (a, gone) = insert_appliance_parts(&mut tx, owner, &parts, replace).await?;
                complete_import(&mut tx, ticket, a.id, &a.name, &a.version).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some((a, gone)))
            }
        }
    };
}
pub(crate) use impl_imports;
