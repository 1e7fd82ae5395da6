//! Registered base distributions (`DistributionStore`) for both engines, written once. The
//! descriptors are JSON text columns; removal refuses, in the same statement, while a container
//! template names the distribution. Instantiated by `sql_store!`.

use satchel_domain::model::{BaseBlob, Distribution, Id, Millis};
use satchel_domain::{DomainError, Result};

pub(crate) fn blobs_from(config: &str, layers: &str) -> Result<(BaseBlob, Vec<BaseBlob>)> {
    let bad = |e: serde_json::Error| DomainError::Storage(satchel_domain::Cause::of(e));
    Ok((
        serde_json::from_str(config).map_err(bad)?,
        serde_json::from_str(layers).map_err(bad)?,
    ))
}

pub(crate) fn json(config: &BaseBlob, layers: &[BaseBlob]) -> Result<(String, String)> {
    let bad = |e: serde_json::Error| DomainError::Internal(satchel_domain::Cause::of(e));
    Ok((
        serde_json::to_string(config).map_err(bad)?,
        serde_json::to_string(layers).map_err(bad)?,
    ))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn distribution(
    id: Id,
    name: String,
    version: String,
    arch: String,
    config: &str,
    layers: &str,
    created: Millis,
) -> Result<Distribution> {
    let (config, layers) = blobs_from(config, layers)?;
    Ok(Distribution {
        id,
        name,
        version,
        arch,
        config,
        layers,
        created,
    })
}

/// Counts the templates naming a distribution: its name in any case (`$1`, lowercased), its version
/// (`$2`), one of its arch spellings (`$3...`).
pub(crate) fn templates_on(arches: usize) -> String {
    let list: Vec<String> = (0..arches.max(1)).map(|i| format!("${}", i + 3)).collect();
    format!(
        "SELECT COUNT(*) FROM container_templates WHERE lower(distro_name) = $1 AND distro_version = $2 \
         AND distro_arch IN ({})",
        list.join(", ")
    )
}

macro_rules! impl_distributions {
    () => {
        fn base_distribution_from(r: &R) -> Result<Distribution> {
            crate::distributions::distribution(
                r.try_get("id").map_err(db_err)?,
                r.try_get("name").map_err(db_err)?,
                r.try_get("version").map_err(db_err)?,
                r.try_get("arch").map_err(db_err)?,
                &r.try_get::<String, _>("config").map_err(db_err)?,
                &r.try_get::<String, _>("layers").map_err(db_err)?,
                r.try_get("created").map_err(db_err)?,
            )
        }

        #[async_trait]
        impl satchel_domain::ports::DistributionStore for S {
            async fn create_distribution(&self, new: &NewDistribution) -> Result<Distribution> {
                let (config, layers) = crate::distributions::json(&new.config, &new.layers)?;
                let row = sqlx::query(
                    "INSERT INTO distributions (name, name_key, version, arch, config, layers, created)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                )
                .bind(&new.name)
                .bind(new.name.to_lowercase())
                .bind(&new.version)
                .bind(&new.arch)
                .bind(config)
                .bind(layers)
                .bind(now_millis())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| match db_err(e) {
                    DomainError::Conflict(_) => DomainError::Conflict(format!(
                        "distribution {} {} {} is already registered",
                        new.name, new.version, new.arch
                    )),
                    e => e,
                })?;
                base_distribution_from(&row)
            }

            async fn list_distributions(&self) -> Result<Vec<Distribution>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query("SELECT * FROM distributions ORDER BY name_key, version, arch, id"),
                    base_distribution_from,
                )
                .await
            }

            async fn get_distribution(&self, id: Id) -> Result<Option<Distribution>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query("SELECT * FROM distributions WHERE id = $1").bind(id),
                    base_distribution_from,
                )
                .await
            }

            async fn delete_distribution(
                &self,
                id: Id,
                arches: &[String],
            ) -> Result<satchel_domain::ports::DeletedDistribution> {
                use satchel_domain::ports::DeletedDistribution;
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let row = sqlx::query(&format!(
                    "SELECT * FROM distributions WHERE id = $1{}",
                    S::FOR_UPDATE
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(row) = row else {
                    return Ok(DeletedDistribution::NotFound);
                };
                let d = base_distribution_from(&row)?;
                let sql = crate::distributions::templates_on(arches.len());
                let mut q = sqlx::query_scalar::<_, i64>(&sql)
                    .bind(d.name.to_lowercase())
                    .bind(&d.version);
                if arches.is_empty() {
                    q = q.bind(&d.arch);
                }
                for a in arches {
                    q = q.bind(a);
                }
                let used: i64 = q.fetch_one(&mut *tx).await.map_err(db_err)?;
                if used > 0 {
                    return Ok(DeletedDistribution::InUse(used));
                }
                sqlx::query("DELETE FROM distributions WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(DeletedDistribution::Deleted(d))
            }
        }
    };
}
pub(crate) use impl_distributions;
