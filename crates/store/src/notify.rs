//! `NotifyStore` for both engines, written once: the users' sealed webhook signing secrets
//! (`notify_secrets`, opaque here) and one delivery row per ticket (`deliveries`), plus
//! `after_final_move`, which `Store::finish_ticket` and `cancel_ticket` call inside their
//! transaction. Instantiated by `sql_store!`.

macro_rules! impl_notify {
    () => {
        use satchel_domain::accounts::Sealed as NotifySealed;
        use satchel_domain::notify::{Delivery, DeliveryState};

        fn delivery_from(r: &R) -> Result<Delivery> {
            let state: String = r.try_get("state").map_err(db_err)?;
            Ok(Delivery {
                ticket_id: r.try_get("ticket_id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                url: r.try_get("url").map_err(db_err)?,
                state: DeliveryState::parse(&state).ok_or_else(|| {
                    DomainError::Storage(format!("bad delivery state {state}").into())
                })?,
                attempts: r.try_get("attempts").map_err(db_err)?,
                first_attempt: r.try_get("first_attempt").map_err(db_err)?,
                last_error: r.try_get("last_error").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
                finished: r.try_get("finished").map_err(db_err)?,
            })
        }

        /// Within the transaction that just moved ticket `id` to a final state, for a takeout:
        /// - its sealed passphrase goes: no job will run for it again, and a takeout that failed,
        ///   gave up or was cancelled (even while queued) must not keep it until it is deleted;
        /// - with a `notify_url`, its delivery row and job, once (the row's primary key is the
        ///   ticket: a second final move, which the ticket rules do not allow anyway, queues
        ///   nothing).
        async fn after_final_move(tx: &mut Tx<'_>, id: Id) -> Result<()> {
            let row = sqlx::query("SELECT * FROM tickets WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_err)?;
            let Some(t) = row.as_ref().map(ticket_from).transpose()? else {
                return Ok(());
            };
            if let Some(spec) = t.takeout.as_ref().filter(|s| s.passphrase.is_some()) {
                let spec = satchel_domain::model::TakeoutSpec {
                    passphrase: None,
                    ..spec.clone()
                };
                takeout_spec_update(id, &spec)?
                    .execute(&mut **tx)
                    .await
                    .map_err(db_err)?;
            }
            let Some(url) = t.takeout.as_ref().and_then(|s| s.notify_url.clone()) else {
                return Ok(());
            };
            let now = now_millis();
            let r = sqlx::query(
                "INSERT INTO deliveries (ticket_id, owner_id, url, state, created)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ticket_id) DO NOTHING",
            )
            .bind(t.id)
            .bind(t.owner_id)
            .bind(&url)
            .bind(DeliveryState::Pending.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
            if r.rows_affected() == 0 {
                return Ok(());
            }
            sqlx::query(&format!(
                "INSERT INTO jobs (kind, owner_id, ticket_id, max_attempts, run_after, created)
                 VALUES ($1, $2, $3, $4, {}, $5)",
                S::NOW
            ))
            .bind(JOB_TAKEOUT_NOTIFY)
            .bind(t.owner_id)
            .bind(t.id)
            .bind(satchel_domain::notify::JOB_MAX_ATTEMPTS)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
            S::notify_jobs(tx, t.id).await
        }

        #[async_trait]
        impl satchel_domain::ports::NotifyStore for S {
            async fn create_notify_secret(&self, owner: Id, sealed: &NotifySealed) -> Result<bool> {
                let now = now_millis();
                let q = sqlx::query(
                    "INSERT INTO notify_secrets (owner_id, seal_uid, key_id, secret_sealed, created, modified)
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (owner_id) DO NOTHING",
                )
                .bind(owner)
                .bind(&sealed.uid)
                .bind(&sealed.key_id)
                .bind(&sealed.blob)
                .bind(now);
                Ok(affected(&self.pool, q).await? > 0)
            }

            async fn replace_notify_secret(&self, owner: Id, sealed: &NotifySealed) -> Result<()> {
                // A new `seal_uid` too: a key rotation running meanwhile (conditional on the old
                // uid) cannot write the previous secret back over this one.
                let now = now_millis();
                let q = sqlx::query(
                    "INSERT INTO notify_secrets (owner_id, seal_uid, key_id, secret_sealed, created, modified)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (owner_id) DO UPDATE SET seal_uid = excluded.seal_uid,
                        key_id = excluded.key_id, secret_sealed = excluded.secret_sealed,
                        modified = excluded.modified",
                )
                .bind(owner)
                .bind(&sealed.uid)
                .bind(&sealed.key_id)
                .bind(&sealed.blob)
                .bind(now);
                affected(&self.pool, q).await?;
                Ok(())
            }

            async fn notify_secret(&self, owner: Id) -> Result<Option<NotifySealed>> {
                fn row(r: &R) -> Result<NotifySealed> {
                    Ok(NotifySealed {
                        uid: r.try_get("seal_uid").map_err(db_err)?,
                        key_id: r.try_get("key_id").map_err(db_err)?,
                        blob: r.try_get("secret_sealed").map_err(db_err)?,
                    })
                }
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT seal_uid, key_id, secret_sealed FROM notify_secrets WHERE owner_id = $1")
                        .bind(owner),
                    row,
                )
                .await
            }

            async fn delivery(&self, ticket: Id) -> Result<Option<Delivery>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT * FROM deliveries WHERE ticket_id = $1").bind(ticket),
                    delivery_from,
                )
                .await
            }

            async fn begin_delivery_attempt(&self, ticket: Id, now: Millis) -> Result<Option<Delivery>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query(
                        "UPDATE deliveries SET attempts = attempts + 1,
                            first_attempt = COALESCE(first_attempt, $2)
                         WHERE ticket_id = $1 AND state = $3 RETURNING *",
                    )
                    .bind(ticket)
                    .bind(now)
                    .bind(DeliveryState::Pending.as_str()),
                    delivery_from,
                )
                .await
            }

            async fn delivery_error(&self, ticket: Id, error: &str) -> Result<()> {
                affected(
                    &self.pool,
                    sqlx::query("UPDATE deliveries SET last_error = $2 WHERE ticket_id = $1 AND state = $3")
                        .bind(ticket)
                        .bind(error)
                        .bind(DeliveryState::Pending.as_str()),
                )
                .await?;
                Ok(())
            }

            async fn end_delivery(
                &self,
                ticket: Id,
                to: DeliveryState,
                error: Option<&str>,
                now: Millis,
            ) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query(
                        "UPDATE deliveries SET state = $2, last_error = COALESCE($3, last_error), finished = $4
                         WHERE ticket_id = $1 AND state = $5",
                    )
                    .bind(ticket)
                    .bind(to.as_str())
                    .bind(error)
                    .bind(now)
                    .bind(DeliveryState::Pending.as_str()),
                )
                .await?
                    > 0)
            }
        }
    };
}
pub(crate) use impl_notify;
