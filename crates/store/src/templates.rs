//! Container templates (`TemplateStore`) for both engines, written once: the engines differ only in
//! placeholders and in how `delete_template` locks (SQLite takes the write lock at `BEGIN IMMEDIATE`;
//! PostgreSQL locks the template and its image tickets `FOR UPDATE`, so an image finishing meanwhile
//! either published before its archive key is read here, or finds its ticket gone and removes its own
//! archive). Instantiated inside each engine's module, where its row mappers are.

macro_rules! impl_templates {
    (
        $store:ty,
        begin: $begin:literal,
        create: $create:literal,
        get: $get:literal,
        list: $list:literal,
        lock: $lock:literal,
        images_locked: $images_locked:literal,
        delete: $delete:literal,
        images: $images:literal $(,)?
    ) => {
        #[async_trait]
        impl satchel_domain::ports::TemplateStore for $store {
            async fn create_template(
                &self,
                owner: Id,
                bundle: Id,
                distribution: Option<&DistributionRef>,
            ) -> Result<ContainerTemplate> {
                // Only under a bundle of the owner's: the INSERT selects nothing otherwise.
                let row = sqlx::query($create)
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
                let row = sqlx::query($get)
                    .bind(id)
                    .bind(owner)
                    .bind(bundle)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(template_from).transpose()
            }

            async fn list_templates(
                &self,
                owner: Id,
                bundle: Id,
            ) -> Result<Vec<ContainerTemplate>> {
                let rows = sqlx::query($list)
                    .bind(owner)
                    .bind(bundle)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(template_from).collect()
            }

            async fn delete_template(
                &self,
                owner: Id,
                bundle: Id,
                id: Id,
            ) -> Result<Option<Vec<Ticket>>> {
                let mut tx = self.pool.begin_with($begin).await.map_err(db_err)?;
                let exists = sqlx::query($lock)
                    .bind(id)
                    .bind(owner)
                    .bind(bundle)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if exists.is_none() {
                    return Ok(None);
                }
                let images = sqlx::query($images_locked)
                    .bind(id)
                    .bind(owner)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let images = images.iter().map(ticket_from).collect::<Result<Vec<_>>>()?;
                // The cascade removes the images' tickets, and their jobs with them.
                sqlx::query($delete)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(images))
            }

            async fn list_template_images(&self, owner: Id, template: Id) -> Result<Vec<Ticket>> {
                let rows = sqlx::query($images)
                    .bind(template)
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(ticket_from).collect()
            }
        }
    };
}
pub(crate) use impl_templates;
