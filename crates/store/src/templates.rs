//! Container templates (`TemplateStore`) for both engines, written once. `delete_template` locks the
//! template and its image tickets (`Engine::FOR_UPDATE`; SQLite's write lock, taken at `BEGIN
//! IMMEDIATE`, covers them already), so an image finishing meanwhile either published before its
//! archive key is read here, or finds its ticket gone and removes its own archive. Instantiated by
//! `sql_store!`, next to the row mappers.

/// A template's images (their tickets), oldest first.
pub(crate) const IMAGES_SQL: &str =
    "SELECT * FROM tickets WHERE template_id = $1 AND owner_id = $2 ORDER BY id";

macro_rules! impl_templates {
    () => {
        #[async_trait]
        impl satchel_domain::ports::TemplateStore for S {
            async fn create_template(
                &self,
                owner: Id,
                bundle: Id,
                distribution: Option<&DistributionRef>,
            ) -> Result<ContainerTemplate> {
                // Only under a bundle of the owner's: the INSERT selects nothing otherwise.
                let row = sqlx::query(
                    "INSERT INTO container_templates (owner_id, bundle_id, distro_name, distro_version, distro_arch, created, modified)
                     SELECT $1, $2, $3, $4, $5, $6, $6 WHERE EXISTS (SELECT 1 FROM bundles WHERE id = $2 AND owner_id = $1)
                     RETURNING *",
                )
                    .bind(owner)
                    .bind(bundle)
                    .bind(distribution.map(|d| d.name.clone()))
                    .bind(distribution.map(|d| d.version.clone()))
                    .bind(distribution.map(|d| d.arch.clone()))
                    .bind(now_millis())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                match row {
                    Some(r) => template_from(&r),
                    None => Err(DomainError::not_found(format!("mySoftware {bundle}"))),
                }
            }

            async fn get_template(
                &self,
                owner: Id,
                bundle: Id,
                id: Id,
            ) -> Result<Option<ContainerTemplate>> {
                let q = sqlx::query(
                    "SELECT * FROM container_templates WHERE id = $1 AND owner_id = $2 AND bundle_id = $3",
                )
                .bind(id)
                .bind(owner)
                .bind(bundle);
                fetch_opt(&self.pool, q, template_from).await
            }

            async fn list_templates(
                &self,
                owner: Id,
                bundle: Id,
            ) -> Result<Vec<ContainerTemplate>> {
                let q = sqlx::query(
                    "SELECT * FROM container_templates WHERE owner_id = $1 AND bundle_id = $2 ORDER BY id",
                )
                .bind(owner)
                .bind(bundle);
                fetch_vec(&self.pool, q, template_from).await
            }

            async fn delete_template(
                &self,
                owner: Id,
                bundle: Id,
                id: Id,
            ) -> Result<Option<Vec<Ticket>>> {
                // Its images' tickets go by the cascade: forgotten after the commit.
                let _forget = self.tickets.forget_owner(owner);
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let exists = sqlx::query(&format!(
                    "SELECT 1 FROM container_templates WHERE id = $1 AND owner_id = $2 AND bundle_id = $3{}",
                    S::FOR_UPDATE
                ))
                    .bind(id)
                    .bind(owner)
                    .bind(bundle)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if exists.is_none() {
                    return Ok(None);
                }
                let images = sqlx::query(&format!(
                    "{}{}",
                    crate::templates::IMAGES_SQL,
                    S::FOR_UPDATE
                ))
                .bind(id)
                .bind(owner)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                let images = images.iter().map(ticket_from).collect::<Result<Vec<_>>>()?;
                // The cascade removes the images' tickets, and their jobs with them.
                sqlx::query("DELETE FROM container_templates WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(images))
            }

            async fn list_template_images(&self, owner: Id, template: Id) -> Result<Vec<Ticket>> {
                fetch_vec(
                    &self.pool,
                    sqlx::query(crate::templates::IMAGES_SQL)
                        .bind(template)
                        .bind(owner),
                    ticket_from,
                )
                .await
            }
        }
    };
}
pub(crate) use impl_templates;
