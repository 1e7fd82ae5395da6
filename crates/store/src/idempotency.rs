//! `IdempotencyStore` for both engines, written once (`$N` placeholders, which sqlx's SQLite driver
//! accepts too). The claim is one upsert whose `DO UPDATE` only applies to a record that expired or
//! to a pending one whose lease lapsed for the same request; both engines apply it atomically per
//! row (PostgreSQL makes a racing insert wait for the first and then re-check the condition), so of
//! racing claims, on any number of instances, exactly one returns a row.

pub(crate) const CLAIM_SQL: &str = "INSERT INTO idempotency_keys
        (owner_id, idem_key, request_hash, body_hash, state, token, locked_until, created, expires_at)
    VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8)
    ON CONFLICT (owner_id, idem_key) DO UPDATE SET
        request_hash = excluded.request_hash, body_hash = excluded.body_hash, state = 'pending',
        token = excluded.token, locked_until = excluded.locked_until, status = NULL,
        headers = NULL, response = NULL, created = excluded.created,
        expires_at = excluded.expires_at
    WHERE idempotency_keys.expires_at <= excluded.created
       OR (idempotency_keys.state = 'pending'
           AND idempotency_keys.locked_until <= excluded.created
           AND idempotency_keys.request_hash = excluded.request_hash
           AND COALESCE(idempotency_keys.body_hash, '') = COALESCE(excluded.body_hash, ''))
    RETURNING token";

pub(crate) const GET_SQL: &str = "SELECT request_hash, body_hash, state, token, locked_until,
        expires_at, status, headers, response
    FROM idempotency_keys WHERE owner_id = $1 AND idem_key = $2";

pub(crate) const RENEW_SQL: &str = "UPDATE idempotency_keys SET locked_until = $4
    WHERE owner_id = $1 AND idem_key = $2 AND token = $3 AND state = 'pending'";

pub(crate) const RECORD_SQL: &str = "UPDATE idempotency_keys
    SET state = 'done', body_hash = $4, status = $5, headers = $6, response = $7
    WHERE owner_id = $1 AND idem_key = $2 AND token = $3 AND state = 'pending'";

pub(crate) const RELEASE_SQL: &str = "DELETE FROM idempotency_keys
    WHERE owner_id = $1 AND idem_key = $2 AND token = $3 AND state = 'pending'";

pub(crate) const PURGE_SQL: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";

macro_rules! impl_idempotency {
    () => {
        #[async_trait]
        impl satchel_domain::ports::IdempotencyStore for S {
            async fn claim_idempotency_key(
                &self,
                c: &satchel_domain::idempotency::NewClaim,
            ) -> Result<bool> {
                let row = sqlx::query(crate::idempotency::CLAIM_SQL)
                    .bind(c.owner)
                    .bind(&c.key)
                    .bind(&c.request_hash)
                    .bind(c.body_hash.as_deref())
                    .bind(&c.token)
                    .bind(c.locked_until)
                    .bind(c.now)
                    .bind(c.expires_at)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(row.is_some())
            }

            async fn get_idempotency_key(
                &self,
                owner: Id,
                key: &str,
            ) -> Result<Option<satchel_domain::idempotency::KeyRecord>> {
                use satchel_domain::idempotency::{Answer, KeyRecord, KeyState};
                let Some(r) = sqlx::query(crate::idempotency::GET_SQL)
                    .bind(owner)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                else {
                    return Ok(None);
                };
                let state: String = r.try_get("state").map_err(db_err)?;
                let state = KeyState::parse(&state).ok_or_else(|| {
                    DomainError::Storage(format!("unknown idempotency state {state:?}").into())
                })?;
                let status: Option<i32> = r.try_get("status").map_err(db_err)?;
                let answer = match (state, status) {
                    (KeyState::Done, Some(status)) => Some(Answer {
                        status: u16::try_from(status).map_err(|_| {
                            DomainError::Storage(format!("bad recorded status {status}").into())
                        })?,
                        headers: Answer::parse_headers(
                            &r.try_get::<Option<String>, _>("headers")
                                .map_err(db_err)?
                                .unwrap_or_default(),
                        ),
                        body: r
                            .try_get::<Option<Vec<u8>>, _>("response")
                            .map_err(db_err)?
                            .unwrap_or_default(),
                    }),
                    _ => None,
                };
                Ok(Some(KeyRecord {
                    request_hash: r.try_get("request_hash").map_err(db_err)?,
                    body_hash: r.try_get("body_hash").map_err(db_err)?,
                    state,
                    token: r.try_get("token").map_err(db_err)?,
                    locked_until: r.try_get("locked_until").map_err(db_err)?,
                    expires_at: r.try_get("expires_at").map_err(db_err)?,
                    answer,
                }))
            }

            async fn renew_idempotency_key(
                &self,
                owner: Id,
                key: &str,
                token: &str,
                locked_until: Millis,
            ) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query(crate::idempotency::RENEW_SQL)
                        .bind(owner)
                        .bind(key)
                        .bind(token)
                        .bind(locked_until),
                )
                .await?
                    == 1)
            }

            async fn record_idempotency_key(
                &self,
                owner: Id,
                key: &str,
                token: &str,
                body_hash: &str,
                answer: &satchel_domain::idempotency::Answer,
            ) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query(crate::idempotency::RECORD_SQL)
                        .bind(owner)
                        .bind(key)
                        .bind(token)
                        .bind(body_hash)
                        .bind(i32::from(answer.status))
                        .bind(answer.headers_text())
                        .bind(answer.body.as_slice()),
                )
                .await?
                    == 1)
            }

            async fn release_idempotency_key(
                &self,
                owner: Id,
                key: &str,
                token: &str,
            ) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query(crate::idempotency::RELEASE_SQL)
                        .bind(owner)
                        .bind(key)
                        .bind(token),
                )
                .await?
                    == 1)
            }

            async fn purge_idempotency_keys(&self, now: Millis) -> Result<u64> {
                affected(
                    &self.pool,
                    sqlx::query(crate::idempotency::PURGE_SQL).bind(now),
                )
                .await
            }
        }
    };
}
pub(crate) use impl_idempotency;
