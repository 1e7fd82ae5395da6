//! `BlobRefStore` for both engines, written once: the same SQL (`$N` placeholders, which sqlx's
//! SQLite driver accepts too; a repeated `$N` is the same parameter on both).

/// Keys checked per statement: far below SQLite's limit of 32766 parameters.
pub(crate) const KEYS_PER_QUERY: usize = 500;

/// Which of `n` keys (`$1..$n`) a row references, one IN list per column that holds blob keys.
/// Only a complete ticket (state `$n+1`) keeps its archive: an expired one's was deleted (or is an
/// orphan now), and an unfinished one has not recorded it yet (the sweep protects live tickets by
/// their keys).
pub(crate) fn referenced_sql(n: usize) -> String {
    let list = (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let complete = n + 1;
    format!(
        "SELECT blob_key AS k FROM artifacts WHERE blob_key IN ({list})
         UNION SELECT blob_key FROM attachments WHERE blob_key IN ({list})
         UNION SELECT blob_key FROM boot_scripts WHERE blob_key IN ({list})
         UNION SELECT archive_key FROM tickets WHERE state = ${complete} AND archive_key IN ({list})
         UNION SELECT file_blob FROM images WHERE file_blob IN ({list})
         UNION SELECT blob_key FROM stor_entries WHERE blob_key IN ({list})
         UNION SELECT blob_key FROM published_blobs WHERE blob_key IN ({list})"
    )
}

/// `$1`, `$2`: the unfinished states.
pub(crate) const LIVE_SQL: &str = "SELECT * FROM tickets WHERE state IN ($1, $2) ORDER BY id";

pub(crate) const RECORD_SQL: &str =
    "INSERT INTO blob_uploads (blob_key, upload_id, started, touched)
    VALUES ($1, $2, $3, $3)
    ON CONFLICT (blob_key, upload_id) DO UPDATE SET touched = excluded.touched";

pub(crate) const TOUCH_SQL: &str =
    "UPDATE blob_uploads SET touched = $3 WHERE blob_key = $1 AND upload_id = $2";

pub(crate) const FORGET_SQL: &str =
    "DELETE FROM blob_uploads WHERE blob_key = $1 AND upload_id = $2";

pub(crate) const STALE_SQL: &str = "SELECT blob_key, upload_id, touched FROM blob_uploads
    WHERE touched <= $1 ORDER BY touched, blob_key, upload_id LIMIT $2";

/// Instantiated by `sql_store!`, next to the `ticket_from` row mapper.
macro_rules! impl_blob_refs {
    () => {
        #[async_trait]
        impl satchel_domain::ports::BlobRefStore for S {
            async fn referenced_blobs(
                &self,
                keys: &[String],
            ) -> Result<std::collections::HashSet<String>> {
                let mut out = std::collections::HashSet::new();
                for chunk in keys.chunks(crate::blobrefs::KEYS_PER_QUERY) {
                    let sql = crate::blobrefs::referenced_sql(chunk.len());
                    let mut q = sqlx::query_scalar::<_, String>(&sql);
                    for k in chunk {
                        q = q.bind(k);
                    }
                    q = q.bind(TicketState::Complete.as_str());
                    out.extend(q.fetch_all(&self.pool).await.map_err(db_err)?);
                }
                Ok(out)
            }

            async fn live_tickets(&self) -> Result<Vec<Ticket>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query(crate::blobrefs::LIVE_SQL)
                        .bind(crate::tickets::UNFINISHED[0].as_str())
                        .bind(crate::tickets::UNFINISHED[1].as_str()),
                    ticket_from,
                )
                .await
            }

            async fn record_upload(&self, key: &str, upload_id: &str, now: Millis) -> Result<()> {
                sqlx::query(crate::blobrefs::RECORD_SQL)
                    .bind(key)
                    .bind(upload_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn touch_upload(&self, key: &str, upload_id: &str, now: Millis) -> Result<()> {
                sqlx::query(crate::blobrefs::TOUCH_SQL)
                    .bind(key)
                    .bind(upload_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn forget_upload(&self, key: &str, upload_id: &str) -> Result<()> {
                sqlx::query(crate::blobrefs::FORGET_SQL)
                    .bind(key)
                    .bind(upload_id)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn stale_uploads(
                &self,
                before: Millis,
                limit: i64,
            ) -> Result<Vec<satchel_domain::ports::PendingUpload>> {
                let rows = sqlx::query(crate::blobrefs::STALE_SQL)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                rows.iter()
                    .map(|r| {
                        Ok(satchel_domain::ports::PendingUpload {
                            key: r.try_get("blob_key").map_err(db_err)?,
                            upload_id: r.try_get("upload_id").map_err(db_err)?,
                            touched: r.try_get("touched").map_err(db_err)?,
                        })
                    })
                    .collect()
            }
        }
    };
}
pub(crate) use impl_blob_refs;
