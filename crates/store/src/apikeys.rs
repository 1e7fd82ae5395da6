//! `ApiKeyStore` for both engines, written once (`$N` placeholders, which sqlx's SQLite driver
//! accepts too). Instantiated by `sql_store!`, next to `user_from`.

/// Inserts only while the owner holds fewer than `$7` keys (one statement; on PostgreSQL two
/// racing creations may both pass the count, which only bounds the cap loosely).
pub(crate) const CREATE_SQL: &str = "INSERT INTO api_keys
        (owner_id, public_key, secret_sealed, name, description, created)
    SELECT $1, $2, $3, $4, $5, $6
    WHERE (SELECT COUNT(*) FROM api_keys WHERE owner_id = $1) < $7
    RETURNING *";

pub(crate) const LIST_SQL: &str = "SELECT * FROM api_keys WHERE owner_id = $1 ORDER BY id";

pub(crate) const GET_SQL: &str = "SELECT * FROM api_keys WHERE owner_id = $1 AND id = $2";

pub(crate) const DELETE_SQL: &str = "DELETE FROM api_keys WHERE owner_id = $1 AND id = $2";

/// The key's columns under their own names, the user's under `user_from`'s.
pub(crate) const BY_PUBLIC_SQL: &str = "SELECT k.id AS key_id, k.owner_id, k.public_key,
        k.secret_sealed, k.name, k.description, k.created AS key_created, k.last_used,
        u.id, u.login, u.admin, u.entitlements, u.created
    FROM api_keys k JOIN users u ON u.id = k.owner_id
    WHERE k.public_key = $1";

pub(crate) const TOUCH_SQL: &str = "UPDATE api_keys SET last_used = $2
    WHERE id = $1 AND (last_used IS NULL OR last_used <= $3)";

macro_rules! impl_apikeys {
    () => {
        fn api_key_from(r: &R, id: &str, created: &str) -> Result<satchel_domain::apikeys::ApiKey> {
            Ok(satchel_domain::apikeys::ApiKey {
                id: r.try_get(id).map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                public_key: r.try_get("public_key").map_err(db_err)?,
                sealed_secret: r.try_get("secret_sealed").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                description: r.try_get("description").map_err(db_err)?,
                created: r.try_get(created).map_err(db_err)?,
                last_used: r.try_get("last_used").map_err(db_err)?,
            })
        }

        fn api_key_row(r: &R) -> Result<satchel_domain::apikeys::ApiKey> {
            api_key_from(r, "id", "created")
        }

        #[async_trait]
        impl satchel_domain::ports::ApiKeyStore for S {
            async fn create_api_key(
                &self,
                new: &satchel_domain::apikeys::NewApiKey,
                max_per_owner: i64,
            ) -> Result<Option<satchel_domain::apikeys::ApiKey>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query(crate::apikeys::CREATE_SQL)
                        .bind(new.owner_id)
                        .bind(&new.public_key)
                        .bind(&new.sealed_secret)
                        .bind(new.name.as_deref())
                        .bind(new.description.as_deref())
                        .bind(new.created)
                        .bind(max_per_owner),
                    api_key_row,
                )
                .await
            }

            async fn list_api_keys(
                &self,
                owner: Id,
            ) -> Result<Vec<satchel_domain::apikeys::ApiKey>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query(crate::apikeys::LIST_SQL).bind(owner),
                    api_key_row,
                )
                .await
            }

            async fn get_api_key(
                &self,
                owner: Id,
                id: Id,
            ) -> Result<Option<satchel_domain::apikeys::ApiKey>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query(crate::apikeys::GET_SQL).bind(owner).bind(id),
                    api_key_row,
                )
                .await
            }

            async fn delete_api_key(&self, owner: Id, id: Id) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query(crate::apikeys::DELETE_SQL).bind(owner).bind(id),
                )
                .await?
                    > 0)
            }

            async fn api_key_by_public(
                &self,
                public_key: &str,
            ) -> Result<Option<(satchel_domain::apikeys::ApiKey, User)>> {
                let row = sqlx::query(crate::apikeys::BY_PUBLIC_SQL)
                    .bind(public_key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                match row {
                    None => Ok(None),
                    Some(r) => Ok(Some((
                        api_key_from(&r, "key_id", "key_created")?,
                        user_from(&r)?,
                    ))),
                }
            }

            async fn touch_api_key(
                &self,
                id: Id,
                now: Millis,
                unless_after: Millis,
            ) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query(crate::apikeys::TOUCH_SQL)
                        .bind(id)
                        .bind(now)
                        .bind(unless_after),
                )
                .await?
                    > 0)
            }
        }
    };
}
pub(crate) use impl_apikeys;
