//! Appliance templates (`ApplianceStore`) for both engines, written once. Writes that change more
//! than one row lock the appliance row first (`Engine::FOR_UPDATE`; SQLite's write lock, taken at
//! `BEGIN IMMEDIATE`, covers them already), the order `delete_user` takes them in after the user
//! and its bundles, so a boot script body switched meanwhile is never missed by it.
//! `appliance_parts` reads in one snapshot (`Engine::BEGIN_SNAPSHOT`). Instantiated by
//! `sql_store!`, next to the row mappers.

macro_rules! impl_appliances {
    () => {
        use satchel_domain::appliance::{
            Appliance, ApplianceInput, ApplianceParts, BootScript, BootScriptInput, BootType,
            NewAppliance, NewApplianceParts, NewBootScript, OsPackage, OsProfile,
        };

        fn appliance_from(r: &R) -> Result<Appliance> {
            let distribution = distribution_from(r)?;
            Ok(Appliance {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                version: r.try_get("version").map_err(db_err)?,
                description: r.try_get("description").map_err(db_err)?,
                distribution,
                imported: r.try_get("imported").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }

        fn os_profile_from(r: &R) -> Result<OsProfile> {
            Ok(OsProfile {
                id: r.try_get("id").map_err(db_err)?,
                appliance_id: r.try_get("appliance_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }

        fn os_package_from(r: &R) -> Result<OsPackage> {
            Ok(OsPackage {
                name: r.try_get("name").map_err(db_err)?,
                version: r.try_get("version").map_err(db_err)?,
                arch: r.try_get("arch").map_err(db_err)?,
            })
        }

        fn boot_script_from(r: &R) -> Result<BootScript> {
            let kind: String = r.try_get("boot_type").map_err(db_err)?;
            Ok(BootScript {
                id: r.try_get("id").map_err(db_err)?,
                appliance_id: r.try_get("appliance_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                order: r.try_get("boot_order").map_err(db_err)?,
                kind: BootType::parse(&kind).ok_or_else(|| {
                    DomainError::Storage(format!("bad boot script type {kind}").into())
                })?,
                blob: blob_from(r)?,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }

        /// Locks the owner's appliance for the transaction; false if there is none.
        async fn lock_appliance(tx: &mut Tx<'_>, owner: Option<Id>, id: Id) -> Result<bool> {
            let row = sqlx::query(&format!(
                "SELECT 1 FROM appliances WHERE id = $1 AND ($2 IS NULL OR owner_id = $2){}",
                S::FOR_UPDATE
            ))
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?;
            Ok(row.is_some())
        }

        async fn touch_appliance(tx: &mut Tx<'_>, id: Id) -> Result<()> {
            sqlx::query("UPDATE appliances SET modified = $1 WHERE id = $2")
                .bind(now_millis())
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            Ok(())
        }

        /// Appends `bundle` at `position` if it is `owner`'s; NotFound otherwise.
        async fn link_bundle(
            tx: &mut Tx<'_>,
            owner: Id,
            appliance: Id,
            bundle: Id,
            position: i64,
        ) -> Result<()> {
            let n = sqlx::query(
                "INSERT INTO appliance_bundles (appliance_id, bundle_id, position)
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM bundles WHERE id = $2 AND owner_id = $4)",
            )
            .bind(appliance)
            .bind(bundle)
            .bind(position)
            .bind(owner)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if n == 0 {
                return Err(DomainError::not_found(format!("mySoftware {bundle}")));
            }
            Ok(())
        }

        /// The appliance's bundle list becomes `bundles` (repeated ids once, first place kept).
        async fn replace_links(
            tx: &mut Tx<'_>,
            owner: Id,
            appliance: Id,
            bundles: &[Id],
        ) -> Result<()> {
            sqlx::query("DELETE FROM appliance_bundles WHERE appliance_id = $1")
                .bind(appliance)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            let mut seen = std::collections::HashSet::new();
            let mut position = 0;
            for &b in bundles {
                if seen.insert(b) {
                    link_bundle(tx, owner, appliance, b, position).await?;
                    position += 1;
                }
            }
            Ok(())
        }

        async fn insert_packages(tx: &mut Tx<'_>, profile: Id, pkgs: &[OsPackage]) -> Result<()> {
            for (i, p) in pkgs.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO appliance_pkgs (profile_id, position, name, version, arch) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(profile)
                .bind(i as i64)
                .bind(&p.name)
                .bind(&p.version)
                .bind(&p.arch)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            }
            Ok(())
        }

        async fn insert_boot_script(
            tx: &mut Tx<'_>,
            appliance: Id,
            s: &NewBootScript,
            blob: Option<&BlobRef>,
        ) -> Result<BootScript> {
            let now = now_millis();
            let row = sqlx::query(
                "INSERT INTO boot_scripts (appliance_id, name, boot_order, boot_type, blob_key, blob_size, blob_sha256, blob_md5, blob_uploaded, created, modified, blob_crc32)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) RETURNING *",
            )
            .bind(appliance)
            .bind(&s.name)
            .bind(s.order)
            .bind(s.kind.as_str())
            .bind(blob.map(|b| b.key.clone()))
            .bind(blob.map(|b| b.size))
            .bind(blob.map(|b| b.sha256.clone()))
            .bind(blob.map(|b| b.md5.clone()))
            .bind(blob.map(|b| b.uploaded))
            .bind(now)
            .bind(blob.and_then(|b| b.crc32).map(i64::from))
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)?;
            boot_script_from(&row)
        }

        /// Deletes the owner's appliance; its boot scripts' blob keys, or None if there is none.
    /// `create_appliance_with_parts` inside `tx` (template imports write their bundles in
    /// the same transaction).
    pub(crate) async fn insert_appliance_parts(
        tx: &mut Tx<'_>,
        owner: Id,
        new: &NewApplianceParts,
        replace: Option<Id>,
    ) -> Result<(Appliance, Vec<String>)> {
            let mut gone = match replace {
                Some(old) => delete_appliance_tx(tx, owner, old)
                    .await?
                    .ok_or_else(|| DomainError::not_found(format!("appliance {old}")))?,
                None => Vec::new(),
            };
            let a = &new.appliance;
            let d = a.distribution.as_ref();
            let now = now_millis();
            let row = sqlx::query(
                "INSERT INTO appliances (owner_id, name, version, description, distro_name, distro_version, distro_arch, created, modified, imported)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING *",
            )
            .bind(owner)
            .bind(&a.name)
            .bind(&a.version)
            .bind(&a.description)
            .bind(d.map(|d| d.name.clone()))
            .bind(d.map(|d| d.version.clone()))
            .bind(d.map(|d| d.arch.clone()))
            .bind(now)
            .bind(a.imported)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)?;
            let appliance = appliance_from(&row)?;
            replace_links(tx, owner, appliance.id, &new.bundles).await?;
            if let Some(p) = &new.os_profile {
                let pid: i64 = sqlx::query_scalar(
                    "INSERT INTO appliance_os_profiles (appliance_id, name, created, modified) VALUES ($1, $2, $3, $3) RETURNING id",
                )
                .bind(appliance.id)
                .bind(&p.name)
                .bind(now)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_err)?;
                insert_packages(tx, pid, &p.packages).await?;
            }
            for (s, blob) in &new.boot_scripts {
                insert_boot_script(tx, appliance.id, s, Some(blob)).await?;
            }
            // A key the new parts reuse, or that another script still holds, stays.
            let mut kept = Vec::new();
            for k in gone.drain(..) {
                let used = sqlx::query("SELECT 1 FROM boot_scripts WHERE blob_key = $1")
                    .bind(&k)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_err)?;
                if used.is_none() {
                    kept.push(k);
                }
            }
            Ok((appliance, kept))
        }

        async fn delete_appliance_tx(
            tx: &mut Tx<'_>,
            owner: Id,
            id: Id,
        ) -> Result<Option<Vec<String>>> {
            if !lock_appliance(tx, Some(owner), id).await? {
                return Ok(None);
            }
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT blob_key FROM boot_scripts WHERE appliance_id = $1 AND blob_key IS NOT NULL",
            )
            .bind(id)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
            // The cascade removes the profile, packages, boot scripts and bundle links; never the
            // bundles themselves.
            sqlx::query("DELETE FROM appliances WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            Ok(Some(keys))
        }

        #[async_trait]
        impl satchel_domain::ports::ApplianceStore for S {
            async fn create_appliance(&self, owner: Id, new: &NewAppliance) -> Result<Appliance> {
                let parts = NewApplianceParts {
                    appliance: new.clone(),
                    bundles: Vec::new(),
                    os_profile: None,
                    boot_scripts: Vec::new(),
                };
                Ok(self.create_appliance_with_parts(owner, &parts, None).await?.0)
            }

            async fn get_appliance(&self, owner: Id, id: Id) -> Result<Option<Appliance>> {
                let q = sqlx::query("SELECT * FROM appliances WHERE id = $1 AND owner_id = $2")
                    .bind(id)
                    .bind(owner);
                fetch_opt(&self.pool, q, appliance_from).await
            }

            async fn list_appliances(&self, owner: Id) -> Result<Vec<Appliance>> {
                let q = sqlx::query("SELECT * FROM appliances WHERE owner_id = $1 ORDER BY id")
                    .bind(owner);
                fetch_vec(&self.pool, q, appliance_from).await
            }

            async fn find_appliance(
                &self,
                owner: Id,
                name: &str,
                version: &str,
            ) -> Result<Option<Appliance>> {
                let q = sqlx::query(
                    "SELECT * FROM appliances WHERE owner_id = $1 AND name = $2 AND version = $3 ORDER BY id LIMIT 1",
                )
                .bind(owner)
                .bind(name)
                .bind(version);
                fetch_opt(&self.pool, q, appliance_from).await
            }

            async fn update_appliance(
                &self,
                owner: Id,
                id: Id,
                input: &ApplianceInput,
            ) -> Result<Option<Appliance>> {
                let d = input.distribution.as_ref();
                let q = sqlx::query(
                    "UPDATE appliances SET name = COALESCE($1, name), version = COALESCE($2, version),
                        description = COALESCE($3, description), distro_name = COALESCE($4, distro_name),
                        distro_version = COALESCE($5, distro_version), distro_arch = COALESCE($6, distro_arch),
                        modified = $7
                     WHERE id = $8 AND owner_id = $9 RETURNING *",
                )
                .bind(&input.name)
                .bind(&input.version)
                .bind(&input.description)
                .bind(d.map(|d| d.name.clone()))
                .bind(d.map(|d| d.version.clone()))
                .bind(d.map(|d| d.arch.clone()))
                .bind(now_millis())
                .bind(id)
                .bind(owner);
                fetch_opt(&self.pool, q, appliance_from).await
            }

            async fn delete_appliance(&self, owner: Id, id: Id) -> Result<Option<Vec<String>>> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                let keys = delete_appliance_tx(&mut tx, owner, id).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(keys)
            }

            async fn appliance_parts(&self, owner: Id, id: Id) -> Result<Option<ApplianceParts>> {
                let mut tx = self.pool.begin_with(S::BEGIN_SNAPSHOT).await.map_err(db_err)?;
                let Some(row) =
                    sqlx::query("SELECT * FROM appliances WHERE id = $1 AND owner_id = $2")
                        .bind(id)
                        .bind(owner)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                else {
                    return Ok(None);
                };
                let appliance = appliance_from(&row)?;
                let bundles = sqlx::query(
                    "SELECT b.* FROM appliance_bundles ab JOIN bundles b ON b.id = ab.bundle_id
                     WHERE ab.appliance_id = $1 ORDER BY ab.position, b.id",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(bundle_from)
                .collect::<Result<Vec<_>>>()?;
                let os_profile = sqlx::query("SELECT * FROM appliance_os_profiles WHERE appliance_id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .as_ref()
                    .map(os_profile_from)
                    .transpose()?;
                let packages = match &os_profile {
                    Some(p) => sqlx::query(
                        "SELECT * FROM appliance_pkgs WHERE profile_id = $1 ORDER BY position, id",
                    )
                    .bind(p.id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(os_package_from)
                    .collect::<Result<Vec<_>>>()?,
                    None => Vec::new(),
                };
                let boot_scripts = sqlx::query(
                    "SELECT * FROM boot_scripts WHERE appliance_id = $1 ORDER BY boot_order, id",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(boot_script_from)
                .collect::<Result<Vec<_>>>()?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(ApplianceParts {
                    appliance,
                    bundles,
                    os_profile,
                    packages,
                    boot_scripts,
                }))
            }

            async fn create_appliance_with_parts(
                &self,
                owner: Id,
                new: &NewApplianceParts,
                replace: Option<Id>,
            ) -> Result<(Appliance, Vec<String>)> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                let done = insert_appliance_parts(&mut tx, owner, new, replace).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(done)
            }

            async fn set_appliance_bundles(
                &self,
                owner: Id,
                appliance: Id,
                bundles: &[Id],
            ) -> Result<()> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                if !lock_appliance(&mut tx, Some(owner), appliance).await? {
                    return Err(DomainError::not_found(format!("appliance {appliance}")));
                }
                replace_links(&mut tx, owner, appliance, bundles).await?;
                touch_appliance(&mut tx, appliance).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(())
            }

            async fn attach_bundle(&self, owner: Id, appliance: Id, bundle: Id) -> Result<()> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                if !lock_appliance(&mut tx, Some(owner), appliance).await? {
                    return Err(DomainError::not_found(format!("appliance {appliance}")));
                }
                let position: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(MAX(position), -1) + 1 AS BIGINT) FROM appliance_bundles WHERE appliance_id = $1",
                )
                .bind(appliance)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                let linked = sqlx::query(
                    "SELECT 1 FROM appliance_bundles WHERE appliance_id = $1 AND bundle_id = $2",
                )
                .bind(appliance)
                .bind(bundle)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if linked.is_none() {
                    link_bundle(&mut tx, owner, appliance, bundle, position).await?;
                    touch_appliance(&mut tx, appliance).await?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(())
            }

            async fn detach_bundle(&self, appliance: Id, bundle: Id) -> Result<bool> {
                let q = sqlx::query(
                    "DELETE FROM appliance_bundles WHERE appliance_id = $1 AND bundle_id = $2",
                )
                .bind(appliance)
                .bind(bundle);
                Ok(affected(&self.pool, q).await? > 0)
            }

            async fn get_os_profile(&self, appliance: Id) -> Result<Option<OsProfile>> {
                let q = sqlx::query("SELECT * FROM appliance_os_profiles WHERE appliance_id = $1")
                    .bind(appliance);
                fetch_opt(&self.pool, q, os_profile_from).await
            }

            async fn set_os_profile(&self, appliance: Id, name: &str) -> Result<OsProfile> {
                let row = sqlx::query(
                    "INSERT INTO appliance_os_profiles (appliance_id, name, created, modified) VALUES ($1, $2, $3, $3)
                     ON CONFLICT (appliance_id) DO UPDATE SET name = excluded.name, modified = excluded.modified
                     RETURNING *",
                )
                .bind(appliance)
                .bind(name)
                .bind(now_millis())
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
                os_profile_from(&row)
            }

            async fn delete_os_profile(&self, appliance: Id) -> Result<bool> {
                let q = sqlx::query("DELETE FROM appliance_os_profiles WHERE appliance_id = $1")
                    .bind(appliance);
                Ok(affected(&self.pool, q).await? > 0)
            }

            async fn list_os_packages(&self, profile: Id) -> Result<Vec<OsPackage>> {
                let q = sqlx::query(
                    "SELECT * FROM appliance_pkgs WHERE profile_id = $1 ORDER BY position, id",
                )
                .bind(profile);
                fetch_vec(&self.pool, q, os_package_from).await
            }

            async fn set_os_packages(&self, profile: Id, pkgs: &[OsPackage]) -> Result<()> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                // Two replacements at once must not interleave their rows.
                let locked = sqlx::query(&format!(
                    "SELECT 1 FROM appliance_os_profiles WHERE id = $1{}",
                    S::FOR_UPDATE
                ))
                .bind(profile)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if locked.is_none() {
                    return Err(DomainError::not_found(format!("osProfile {profile}")));
                }
                sqlx::query("DELETE FROM appliance_pkgs WHERE profile_id = $1")
                    .bind(profile)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                insert_packages(&mut tx, profile, pkgs).await?;
                sqlx::query("UPDATE appliance_os_profiles SET modified = $1 WHERE id = $2")
                    .bind(now_millis())
                    .bind(profile)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(())
            }

            async fn create_boot_script(
                &self,
                appliance: Id,
                new: &NewBootScript,
            ) -> Result<BootScript> {
                let mut tx = self.pool.begin_with(S::BEGIN).await.map_err(db_err)?;
                let s = insert_boot_script(&mut tx, appliance, new, None).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(s)
            }

            async fn get_boot_script(&self, appliance: Id, id: Id) -> Result<Option<BootScript>> {
                let q = sqlx::query("SELECT * FROM boot_scripts WHERE id = $1 AND appliance_id = $2")
                    .bind(id)
                    .bind(appliance);
                fetch_opt(&self.pool, q, boot_script_from).await
            }

            async fn list_boot_scripts(&self, appliance: Id) -> Result<Vec<BootScript>> {
                let q = sqlx::query(
                    "SELECT * FROM boot_scripts WHERE appliance_id = $1 ORDER BY boot_order, id",
                )
                .bind(appliance);
                fetch_vec(&self.pool, q, boot_script_from).await
            }

            async fn update_boot_script(
                &self,
                appliance: Id,
                id: Id,
                input: &BootScriptInput,
            ) -> Result<Option<BootScript>> {
                let q = sqlx::query(
                    "UPDATE boot_scripts SET name = COALESCE($1, name), boot_order = COALESCE($2, boot_order),
                        boot_type = COALESCE($3, boot_type), modified = $4
                     WHERE id = $5 AND appliance_id = $6 RETURNING *",
                )
                .bind(&input.name)
                .bind(input.order)
                .bind(input.kind.map(|k| k.as_str()))
                .bind(now_millis())
                .bind(id)
                .bind(appliance);
                fetch_opt(&self.pool, q, boot_script_from).await
            }

            async fn delete_boot_script(
                &self,
                appliance: Id,
                id: Id,
            ) -> Result<Option<Option<String>>> {
                let key: Option<Option<String>> = sqlx::query_scalar(
                    "DELETE FROM boot_scripts WHERE id = $1 AND appliance_id = $2 RETURNING blob_key",
                )
                .bind(id)
                .bind(appliance)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(key)
            }

            async fn set_boot_script_blob(
                &self,
                appliance: Id,
                id: Id,
                blob: &BlobRef,
            ) -> Result<Option<Option<String>>> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                if !lock_appliance(&mut tx, None, appliance).await? {
                    return Ok(None);
                }
                let old: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT blob_key FROM boot_scripts WHERE id = $1 AND appliance_id = $2",
                )
                .bind(id)
                .bind(appliance)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(old) = old else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE boot_scripts SET blob_key = $1, blob_size = $2, blob_sha256 = $3, blob_md5 = $4,
                        blob_uploaded = $5, modified = $5, blob_crc32 = $7 WHERE id = $6",
                )
                .bind(&blob.key)
                .bind(blob.size)
                .bind(&blob.sha256)
                .bind(&blob.md5)
                .bind(blob.uploaded)
                .bind(id)
                .bind(blob.crc32.map(i64::from))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(old))
            }
        }
    };
}
pub(crate) use impl_appliances;
