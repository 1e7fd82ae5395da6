//! `UsageStore` and `StatsStore` for both engines, written once: the same SQL (`$N` placeholders, which sqlx's SQLite
//! driver accepts too), with sums cast to BIGINT because PostgreSQL's SUM of BIGINT is NUMERIC.

/// One statement, so the three counts are read in one snapshot.
pub(crate) const USAGE_SQL: &str = "SELECT
    CAST((SELECT COALESCE(SUM(a.blob_size), 0) FROM artifacts a JOIN bundles b ON b.id = a.bundle_id
            WHERE b.owner_id = $1 AND a.blob_key IS NOT NULL)
       + (SELECT COALESCE(SUM(t.blob_size), 0) FROM attachments t JOIN bundles b ON b.id = t.bundle_id
            WHERE b.owner_id = $1)
       + (SELECT COALESCE(SUM(s.blob_size), 0) FROM boot_scripts s JOIN appliances p ON p.id = s.appliance_id
            WHERE p.owner_id = $1 AND s.blob_key IS NOT NULL)
       + (SELECT COALESCE(SUM(archive_size), 0) FROM tickets
            WHERE owner_id = $1 AND archive_key IS NOT NULL AND state = $2)
       + (SELECT COALESCE(SUM(file_size), 0) FROM images WHERE owner_id = $1)
       + (SELECT COALESCE(SUM(size), 0) FROM stor_entries WHERE owner_id = $1) AS BIGINT) AS bytes,
    (SELECT COUNT(*) FROM tickets WHERE owner_id = $1 AND state = $2) AS archives,
    (SELECT COUNT(*) FROM tickets WHERE owner_id = $1 AND state IN ($3, $4))
        AS outstanding";

macro_rules! impl_usage {
    () => {
        #[async_trait]
        impl satchel_domain::ports::UsageStore for S {
            async fn usage(&self, owner: Id) -> Result<Usage> {
                let [queued, running] = crate::tickets::UNFINISHED;
                let row = sqlx::query(crate::usage::USAGE_SQL)
                    .bind(owner)
                    .bind(TicketState::Complete.as_str())
                    .bind(queued.as_str())
                    .bind(running.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(Usage {
                    bytes: row.try_get::<i64, _>("bytes").map_err(db_err)?,
                    archives: row.try_get::<i64, _>("archives").map_err(db_err)?,
                    outstanding: row.try_get::<i64, _>("outstanding").map_err(db_err)?,
                })
            }
        }
    };
}
pub(crate) use impl_usage;

pub(crate) const QUEUE_SQL: &str = "SELECT
    (SELECT COUNT(*) FROM jobs WHERE lease_owner IS NULL OR lease_expires < $1) AS waiting,
    (SELECT COUNT(*) FROM jobs WHERE lease_owner IS NOT NULL AND lease_expires >= $1) AS running,
    (SELECT MIN(created) FROM jobs WHERE lease_owner IS NULL OR lease_expires < $1) AS oldest,
    CAST((SELECT COALESCE(SUM(archive_size), 0) FROM tickets
        WHERE state = $2 AND archive_key IS NOT NULL) AS BIGINT) AS archive_bytes";

macro_rules! impl_stats {
    () => {
        #[async_trait]
        impl satchel_domain::ports::StatsStore for S {
            fn checkouts(&self) -> u64 {
                self.checkouts.load(std::sync::atomic::Ordering::Relaxed)
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn ticket_counts(&self) -> Result<Vec<(String, String, i64)>> {
                let rows = sqlx::query(
                    "SELECT kind, state, COUNT(*) AS n FROM tickets GROUP BY kind, state ORDER BY kind, state",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<String, _>("kind").map_err(db_err)?,
                            r.try_get::<String, _>("state").map_err(db_err)?,
                            r.try_get::<i64, _>("n").map_err(db_err)?,
                        ))
                    })
                    .collect()
            }

            async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
                let r = sqlx::query(crate::usage::QUEUE_SQL)
                    .bind(now)
                    .bind(TicketState::Complete.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(QueueStats {
                    waiting: r.try_get::<i64, _>("waiting").map_err(db_err)?,
                    running: r.try_get::<i64, _>("running").map_err(db_err)?,
                    oldest_waiting: r.try_get::<Option<i64>, _>("oldest").map_err(db_err)?,
                    archive_bytes: r.try_get::<i64, _>("archive_bytes").map_err(db_err)?,
                })
            }
        }
    };
}
pub(crate) use impl_stats;
