//! `RegistryStore` (published images and their blobs) for both engines, written once. A reference
//! is written in the transaction that completes its publish ticket (the ticket row is locked
//! first, so a cancel or delete racing the completion either wins and nothing is written, or
//! waits); unpublishing deletes the ticket and decides, in the same transaction, which of its
//! blobs no other reference holds. Instantiated by `sql_store!`, next to the row mappers.

macro_rules! impl_registry {
    () => {
        fn published_from(r: &R) -> Result<Published> {
            Ok(Published {
                ticket_id: r.try_get("ticket_id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                image_ticket_id: r.try_get("image_ticket_id").map_err(db_err)?,
                repository: r.try_get("repository").map_err(db_err)?,
                tag: r.try_get("tag").map_err(db_err)?,
                manifest_digest: r.try_get("manifest_digest").map_err(db_err)?,
                media_type: r.try_get("media_type").map_err(db_err)?,
                manifest_size: r.try_get("manifest_size").map_err(db_err)?,
                total_size: r.try_get("total_size").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
            })
        }

        fn published_blob_from(r: &R) -> Result<PublishedBlob> {
            Ok(PublishedBlob {
                digest: r.try_get("digest").map_err(db_err)?,
                key: r.try_get("blob_key").map_err(db_err)?,
                size: r.try_get("size").map_err(db_err)?,
                media_type: r.try_get("media_type").map_err(db_err)?,
            })
        }

        #[async_trait]
        impl satchel_domain::ports::RegistryStore for S {
            async fn complete_publish(&self, ticket: Id, p: &NewPublished) -> Result<bool> {
                let _forget = self.tickets.forget_ticket(ticket);
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let owner: Option<Id> = sqlx::query_scalar(&format!(
                    "SELECT owner_id FROM tickets WHERE id = $1 AND state = $2 AND kind = $3{}",
                    S::FOR_UPDATE
                ))
                .bind(ticket)
                .bind(TicketState::Running.as_str())
                .bind(TicketKind::ImagePublish.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(owner) = owner else {
                    return Ok(false);
                };
                let now = now_millis();
                let total: i64 = p.blobs.iter().map(|b| b.size).sum();
                sqlx::query(
                    "INSERT INTO published_images (ticket_id, owner_id, image_ticket_id, repository, tag,
                        manifest_digest, media_type, manifest_size, total_size, created)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(ticket)
                .bind(owner)
                .bind(p.image_ticket_id)
                .bind(&p.repository)
                .bind(&p.tag)
                .bind(&p.manifest_digest)
                .bind(&p.media_type)
                .bind(p.manifest_size)
                .bind(total)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                for b in &p.blobs {
                    // A layout may list one blob twice (a config equal to a layer): keep one row.
                    sqlx::query(
                        "INSERT INTO published_blobs (ticket_id, owner_id, digest, blob_key, size, media_type)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ticket_id, digest) DO NOTHING",
                    )
                    .bind(ticket)
                    .bind(owner)
                    .bind(&b.digest)
                    .bind(&b.key)
                    .bind(b.size)
                    .bind(&b.media_type)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                let to = crate::tickets::Move::to(TicketState::Complete, 4);
                let sql = format!(
                    "UPDATE tickets SET {}, percentage = 100, bytes_loaded = bytes_total, eta = NULL,
                        error_message = NULL, bytes_total = $1, modified = $2
                     WHERE id = $3 AND {}",
                    to.set, to.guard
                );
                let q = sqlx::query(&sql).bind(total).bind(now).bind(ticket);
                to.bind(q).execute(&mut *tx).await.map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(true)
            }

            async fn published(&self, owner: Id, ticket: Id) -> Result<Option<Published>> {
                let q = sqlx::query(
                    "SELECT * FROM published_images WHERE ticket_id = $1 AND owner_id = $2",
                )
                .bind(ticket)
                .bind(owner);
                fetch_opt(&self.pool, q, published_from).await
            }

            async fn list_published(&self, owner: Id) -> Result<Vec<Published>> {
                let q = sqlx::query(
                    "SELECT * FROM published_images WHERE owner_id = $1 ORDER BY ticket_id",
                )
                .bind(owner);
                fetch_vec(&self.pool, q, published_from).await
            }

            async fn find_published(
                &self,
                owner: Id,
                repository: &str,
                reference: &str,
            ) -> Result<Option<Published>> {
                // By digest several tags may match: any of them serves the same bytes.
                let q = sqlx::query(
                    "SELECT * FROM published_images WHERE owner_id = $1 AND repository = $2
                        AND (tag = $3 OR manifest_digest = $3) ORDER BY ticket_id LIMIT 1",
                )
                .bind(owner)
                .bind(repository)
                .bind(reference);
                fetch_opt(&self.pool, q, published_from).await
            }

            async fn published_blob(
                &self,
                owner: Id,
                repository: &str,
                digest: &str,
            ) -> Result<Option<PublishedBlob>> {
                let q = sqlx::query(
                    "SELECT b.* FROM published_blobs b JOIN published_images p ON p.ticket_id = b.ticket_id
                     WHERE p.owner_id = $1 AND p.repository = $2 AND b.digest = $3
                     ORDER BY b.ticket_id LIMIT 1",
                )
                .bind(owner)
                .bind(repository)
                .bind(digest);
                fetch_opt(&self.pool, q, published_blob_from).await
            }

            async fn published_blobs(&self, ticket: Id) -> Result<Vec<PublishedBlob>> {
                let q = sqlx::query(
                    "SELECT * FROM published_blobs WHERE ticket_id = $1 ORDER BY digest",
                )
                .bind(ticket);
                fetch_vec(&self.pool, q, published_blob_from).await
            }

            async fn delete_publish(
                &self,
                owner: Id,
                ticket: Id,
            ) -> Result<Option<(Ticket, Vec<String>)>> {
                let _forget = self.tickets.forget_ticket(ticket);
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                // Serialises with other unpublishes and completions of this owner's references.
                sqlx::query(&format!("SELECT id FROM users WHERE id = $1{}", S::FOR_UPDATE))
                    .bind(owner)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let keys: Vec<String> = sqlx::query_scalar(
                    "SELECT blob_key FROM published_blobs WHERE ticket_id = $1 AND owner_id = $2",
                )
                .bind(ticket)
                .bind(owner)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                let row = sqlx::query(
                    "DELETE FROM tickets WHERE id = $1 AND owner_id = $2 AND kind = $3 RETURNING *",
                )
                .bind(ticket)
                .bind(owner)
                .bind(TicketKind::ImagePublish.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let t = ticket_from(&row)?;
                let mut gone = Vec::new();
                for k in keys {
                    let held: Option<String> = sqlx::query_scalar(
                        "SELECT blob_key FROM published_blobs WHERE blob_key = $1 LIMIT 1",
                    )
                    .bind(&k)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    if held.is_none() {
                        gone.push(k);
                    }
                }
                tx.commit().await.map_err(db_err)?;
                Ok(Some((t, gone)))
            }

            async fn unreferenced_registry_blobs(&self, keys: &[String]) -> Result<Vec<String>> {
                let mut out = Vec::new();
                for k in keys {
                    let held: Option<String> = sqlx::query_scalar(
                        "SELECT blob_key FROM published_blobs WHERE blob_key = $1 LIMIT 1",
                    )
                    .bind(k)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                    if held.is_none() {
                        out.push(k.clone());
                    }
                }
                Ok(out)
            }
        }
    };
}
pub(crate) use impl_registry;
