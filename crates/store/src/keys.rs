//! One-time download keys for both engines. The SQL is the same on SQLite and PostgreSQL apart from
//! placeholders, so one implementation serves both: `consume_key` is a single conditional
//! UPDATE (`used_at IS NULL AND expires_at > now`), which both engines apply atomically per row, so
//! racing consumers, in one process or across instances, see exactly one success.

use satchel_domain::model::Millis;
use satchel_domain::ports::KeyUse;

pub(crate) fn classify(
    row: Option<(Option<Millis>, Millis, String)>,
    resource: &str,
    now: Millis,
) -> KeyUse {
    match row {
        Some((_, _, r)) if r != resource => KeyUse::Unknown,
        Some((Some(_), _, _)) => KeyUse::AlreadyUsed,
        Some((None, exp, _)) if exp <= now => KeyUse::Expired,
        // Not used, not expired, yet the UPDATE did not take it: only possible if it was used
        // between the two statements, which is a use all the same.
        Some((None, _, _)) => KeyUse::AlreadyUsed,
        None => KeyUse::Unknown,
    }
}

pub(crate) const INSERT_SQL: &str =
    "INSERT INTO download_keys (key_hash, owner_id, resource, expires_at, created)
    VALUES ($1, $2, $3, $4, $5)";

pub(crate) const CONSUME_SQL: &str = "UPDATE download_keys SET used_at = $1
    WHERE key_hash = $2 AND resource = $3 AND used_at IS NULL AND expires_at > $1 RETURNING owner_id";

pub(crate) const LOOK_SQL: &str =
    "SELECT used_at, expires_at, resource FROM download_keys WHERE key_hash = $1";

pub(crate) const CHECK_SQL: &str =
    "SELECT used_at, expires_at, resource, owner_id FROM download_keys WHERE key_hash = $1";

pub(crate) const PURGE_SQL: &str = "DELETE FROM download_keys WHERE expires_at < $1";

/// Instantiated by `sql_store!`.
macro_rules! impl_keys {
    () => {
        #[async_trait]
        impl satchel_domain::ports::OneTimeKeys for S {
            async fn issue_key(
                &self,
                key_hash: &str,
                owner: Id,
                resource: &str,
                expires_at: Millis,
            ) -> Result<()> {
                sqlx::query(crate::keys::INSERT_SQL)
                    .bind(key_hash)
                    .bind(owner)
                    .bind(resource)
                    .bind(expires_at)
                    .bind(now_millis())
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn consume_key(
                &self,
                key_hash: &str,
                resource: &str,
                now: Millis,
            ) -> Result<satchel_domain::ports::KeyUse> {
                let owner: Option<Id> = sqlx::query_scalar(crate::keys::CONSUME_SQL)
                    .bind(now)
                    .bind(key_hash)
                    .bind(resource)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                if let Some(owner_id) = owner {
                    return Ok(satchel_domain::ports::KeyUse::Consumed { owner_id });
                }
                let row: Option<(Option<Millis>, Millis, String)> =
                    sqlx::query_as(crate::keys::LOOK_SQL)
                        .bind(key_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                Ok(crate::keys::classify(row, resource, now))
            }

            async fn check_key(
                &self,
                key_hash: &str,
                resource: &str,
                now: Millis,
            ) -> Result<satchel_domain::ports::KeyUse> {
                let row: Option<(Option<Millis>, Millis, String, Id)> =
                    sqlx::query_as(crate::keys::CHECK_SQL)
                        .bind(key_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                Ok(match row {
                    Some((None, exp, r, owner_id)) if r == resource && exp > now => {
                        satchel_domain::ports::KeyUse::Usable { owner_id }
                    }
                    row => crate::keys::classify(row.map(|(u, e, r, _)| (u, e, r)), resource, now),
                })
            }

            async fn purge_keys(&self, before: Millis) -> Result<u64> {
                let q = sqlx::query(crate::keys::PURGE_SQL).bind(before);
                affected(&self.pool, q).await
            }
        }
    };
}
pub(crate) use impl_keys;
