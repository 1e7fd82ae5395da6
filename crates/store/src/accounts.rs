//! `AccountStore` for both engines, written once. Sealed values are stored as given (the store never
//! sees a key); an account is read with its certificates (two statements in one snapshot).
//! Instantiated by `sql_store!`.

macro_rules! impl_accounts {
    () => {
        use satchel_domain::accounts::{
            Account, AccountCert, AccountKind, AccountUpdate, NewAccount, NewCert, Sealed,
            SealedKind, SealedRow,
        };

        fn account_from(r: &R) -> Result<Account> {
            let kind: String = r.try_get("kind").map_err(db_err)?;
            let fields: String = r.try_get("fields").map_err(db_err)?;
            Ok(Account {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                kind: AccountKind::parse(&kind).map_err(|_| {
                    DomainError::Storage(format!("bad account kind {kind}").into())
                })?,
                platform: r.try_get("platform").map_err(db_err)?,
                fields: serde_json::from_str(&fields)
                    .map_err(|e| DomainError::Storage(satchel_domain::Cause::of(e)))?,
                secrets: Sealed {
                    uid: r.try_get("seal_uid").map_err(db_err)?,
                    key_id: r.try_get("key_id").map_err(db_err)?,
                    blob: r.try_get("secrets_sealed").map_err(db_err)?,
                },
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
                certs: Vec::new(),
            })
        }

        fn cert_from(r: &R) -> Result<AccountCert> {
            Ok(AccountCert {
                id: r.try_get("id").map_err(db_err)?,
                account_id: r.try_get("account_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                cert_type: r.try_get("cert_type").map_err(db_err)?,
                size: r.try_get("size").map_err(db_err)?,
                content: Sealed {
                    uid: r.try_get("seal_uid").map_err(db_err)?,
                    key_id: r.try_get("key_id").map_err(db_err)?,
                    blob: r.try_get("content_sealed").map_err(db_err)?,
                },
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }

        fn fields_json(fields: &std::collections::BTreeMap<String, String>) -> Result<String> {
            serde_json::to_string(fields)
                .map_err(|e| DomainError::Internal(satchel_domain::Cause::of(e)))
        }

        async fn insert_cert(tx: &mut Tx<'_>, account: Id, c: &NewCert, now: Millis) -> Result<AccountCert> {
            let row = sqlx::query(
                "INSERT INTO account_certs
                    (account_id, name, cert_type, size, seal_uid, key_id, content_sealed, created, modified)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING *",
            )
            .bind(account)
            .bind(&c.name)
            .bind(c.cert_type.as_deref())
            .bind(c.size)
            .bind(&c.content.uid)
            .bind(&c.content.key_id)
            .bind(&c.content.blob)
            .bind(now)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)?;
            cert_from(&row)
        }

        /// The owner's accounts (or the one `id`), each with its certificates, in one snapshot.
        async fn read_accounts(pool: &sqlx::Pool<Db>, owner: Id, id: Option<Id>) -> Result<Vec<Account>> {
            let mut tx = pool.begin_with(S::BEGIN_SNAPSHOT).await.map_err(db_err)?;
            let rows = sqlx::query(
                "SELECT * FROM accounts WHERE owner_id = $1 AND ($2 IS NULL OR id = $2) ORDER BY id",
            )
            .bind(owner)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            let mut accounts = rows.iter().map(account_from).collect::<Result<Vec<_>>>()?;
            if !accounts.is_empty() {
                let certs = sqlx::query(
                    "SELECT c.* FROM account_certs c JOIN accounts a ON a.id = c.account_id
                     WHERE a.owner_id = $1 AND ($2 IS NULL OR a.id = $2) ORDER BY c.id",
                )
                .bind(owner)
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
                let mut by_account: std::collections::HashMap<Id, Vec<AccountCert>> =
                    std::collections::HashMap::new();
                for r in &certs {
                    let c = cert_from(r)?;
                    by_account.entry(c.account_id).or_default().push(c);
                }
                for a in &mut accounts {
                    a.certs = by_account.remove(&a.id).unwrap_or_default();
                }
            }
            tx.commit().await.map_err(db_err)?;
            Ok(accounts)
        }

        /// The takeouts' sealed passphrases not sealed with `not_key`, after ticket `after`: they
        /// live in the tickets' JSON parameters, so tickets are read a page at a time until
        /// `limit` passphrases are found or none are left.
        async fn takeout_passphrases(
            pool: &sqlx::Pool<Db>,
            not_key: &str,
            after: Id,
            limit: i64,
        ) -> Result<Vec<SealedRow>> {
            let mut out = Vec::new();
            let mut cursor = after;
            loop {
                let rows: Vec<(Id, Option<String>)> = sqlx::query_as(
                    "SELECT id, params FROM tickets WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(TicketKind::Takeout.as_str())
                .bind(cursor)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let Some(last) = rows.last() else { break };
                cursor = last.0;
                for (id, params) in rows {
                    let Some(p) = params
                        .and_then(|p| serde_json::from_str::<TakeoutSpec>(&p).ok())
                        .and_then(|spec| spec.passphrase)
                    else {
                        continue;
                    };
                    if p.key_id == not_key {
                        continue;
                    }
                    // Not hex: reported by the rotation as a value it cannot open.
                    let blob = hex::decode(&p.blob).unwrap_or_default();
                    out.push(SealedRow {
                        kind: SealedKind::TakeoutPassphrase,
                        id,
                        sealed: Sealed {
                            uid: p.uid,
                            key_id: p.key_id,
                            blob,
                        },
                    });
                }
                if out.len() as i64 >= limit {
                    break;
                }
            }
            Ok(out)
        }

        /// Replaces ticket `id`'s sealed passphrase with `sealed` if it is still the one sealed by
        /// `from_key` with `sealed`'s binding id (the job may have dropped it meanwhile).
        async fn reseal_takeout_passphrase(
            pool: &sqlx::Pool<Db>,
            id: Id,
            from_key: &str,
            sealed: &Sealed,
        ) -> Result<bool> {
            let mut tx = pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
            let params: Option<Option<String>> = sqlx::query_scalar(&format!(
                "SELECT params FROM tickets WHERE id = $1 AND kind = $2{}",
                S::FOR_UPDATE
            ))
            .bind(id)
            .bind(TicketKind::Takeout.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let Some(mut spec) = params
                .flatten()
                .and_then(|p| serde_json::from_str::<TakeoutSpec>(&p).ok())
            else {
                return Ok(false);
            };
            match &spec.passphrase {
                Some(p) if p.key_id == from_key && p.uid == sealed.uid => {}
                _ => return Ok(false),
            }
            spec.passphrase = Some(satchel_domain::model::SealedParam {
                uid: sealed.uid.clone(),
                key_id: sealed.key_id.clone(),
                blob: hex::encode(&sealed.blob),
            });
            takeout_spec_update(id, &spec)?
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(true)
        }

        #[async_trait]
        impl satchel_domain::ports::AccountStore for S {
            async fn create_account(&self, new: &NewAccount, max_per_owner: i64) -> Result<Option<Account>> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                // The user row's lock serialises creations of one owner, so the cap holds on
                // PostgreSQL too (SQLite's one writer does that already).
                sqlx::query(&format!("SELECT 1 FROM users WHERE id = $1{}", S::FOR_UPDATE))
                    .bind(new.owner_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let row = sqlx::query(
                    "INSERT INTO accounts
                        (owner_id, name, kind, platform, fields, seal_uid, key_id, secrets_sealed, created, modified)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $9
                     WHERE (SELECT COUNT(*) FROM accounts WHERE owner_id = $1) < $10
                     RETURNING *",
                )
                .bind(new.owner_id)
                .bind(&new.name)
                .bind(new.kind.xsi_type())
                .bind(&new.platform)
                .bind(fields_json(&new.fields)?)
                .bind(&new.secrets.uid)
                .bind(&new.secrets.key_id)
                .bind(&new.secrets.blob)
                .bind(new.created)
                .bind(max_per_owner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let mut account = account_from(&row)?;
                for c in &new.certs {
                    account.certs.push(insert_cert(&mut tx, account.id, c, new.created).await?);
                }
                tx.commit().await.map_err(db_err)?;
                Ok(Some(account))
            }

            async fn list_accounts(&self, owner: Id) -> Result<Vec<Account>> {
                read_accounts(&self.pool, owner, None).await
            }

            async fn get_account(&self, owner: Id, id: Id) -> Result<Option<Account>> {
                Ok(read_accounts(&self.pool, owner, Some(id)).await?.pop())
            }

            async fn update_account(&self, owner: Id, id: Id, u: &AccountUpdate) -> Result<Option<Account>> {
                let n = affected(
                    &self.pool,
                    sqlx::query(
                        "UPDATE accounts SET name = $3, platform = $4, fields = $5, key_id = $6,
                            secrets_sealed = $7, modified = $8
                         WHERE owner_id = $1 AND id = $2 AND seal_uid = $9",
                    )
                    .bind(owner)
                    .bind(id)
                    .bind(&u.name)
                    .bind(&u.platform)
                    .bind(fields_json(&u.fields)?)
                    .bind(&u.secrets.key_id)
                    .bind(&u.secrets.blob)
                    .bind(u.modified)
                    .bind(&u.secrets.uid),
                )
                .await?;
                if n == 0 {
                    return Ok(None);
                }
                self.get_account(owner, id).await
            }

            async fn delete_account(&self, owner: Id, id: Id) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query("DELETE FROM accounts WHERE owner_id = $1 AND id = $2")
                        .bind(owner)
                        .bind(id),
                )
                .await?
                    > 0)
            }

            async fn add_account_cert(&self, account: Id, new: &NewCert, max: i64) -> Result<Option<AccountCert>> {
                let mut tx = self.pool.begin_with(S::BEGIN_LOCKING).await.map_err(db_err)?;
                let locked = sqlx::query(&format!("SELECT 1 FROM accounts WHERE id = $1{}", S::FOR_UPDATE))
                    .bind(account)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if locked.is_none() {
                    return Err(DomainError::not_found(format!("credAccount {account}")));
                }
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM account_certs WHERE account_id = $1")
                    .bind(account)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if n >= max {
                    return Ok(None);
                }
                let now = now_millis();
                let cert = insert_cert(&mut tx, account, new, now).await?;
                sqlx::query("UPDATE accounts SET modified = $2 WHERE id = $1")
                    .bind(account)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(Some(cert))
            }

            async fn set_account_cert(
                &self,
                account: Id,
                cert: Id,
                name: &str,
                size: i64,
                content: &Sealed,
            ) -> Result<Option<AccountCert>> {
                fetch_opt(
                    &self.pool,
                    sqlx::query(
                        "UPDATE account_certs SET name = $3, size = $4, key_id = $5, content_sealed = $6,
                            modified = $7
                         WHERE account_id = $1 AND id = $2 AND seal_uid = $8 RETURNING *",
                    )
                    .bind(account)
                    .bind(cert)
                    .bind(name)
                    .bind(size)
                    .bind(&content.key_id)
                    .bind(&content.blob)
                    .bind(now_millis())
                    .bind(&content.uid),
                    cert_from,
                )
                .await
            }

            async fn delete_account_cert(&self, account: Id, cert: Id) -> Result<bool> {
                Ok(affected(
                    &self.pool,
                    sqlx::query("DELETE FROM account_certs WHERE account_id = $1 AND id = $2")
                        .bind(account)
                        .bind(cert),
                )
                .await?
                    > 0)
            }

            async fn sealed_page(
                &self,
                kind: SealedKind,
                not_key: &str,
                after: Id,
                limit: i64,
            ) -> Result<Vec<SealedRow>> {
                let sql = match kind {
                    // In the tickets' JSON parameters, not a column of its own.
                    SealedKind::TakeoutPassphrase => {
                        return takeout_passphrases(&self.pool, not_key, after, limit).await;
                    }
                    SealedKind::Account => {
                        "SELECT id, seal_uid, key_id, secrets_sealed AS sealed FROM accounts
                         WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3"
                    }
                    SealedKind::Cert => {
                        "SELECT id, seal_uid, key_id, content_sealed AS sealed FROM account_certs
                         WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3"
                    }
                    SealedKind::NotifySecret => {
                        "SELECT id, seal_uid, key_id, secret_sealed AS sealed FROM notify_secrets
                         WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3"
                    }
                };
                fn row(r: &R) -> Result<(Id, Sealed)> {
                    Ok((
                        r.try_get("id").map_err(db_err)?,
                        Sealed {
                            uid: r.try_get("seal_uid").map_err(db_err)?,
                            key_id: r.try_get("key_id").map_err(db_err)?,
                            blob: r.try_get("sealed").map_err(db_err)?,
                        },
                    ))
                }
                let rows = fetch_vec(
                    &self.pool,
                    sqlx::query(sql).bind(not_key).bind(after).bind(limit),
                    row,
                )
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, sealed)| SealedRow { kind, id, sealed })
                    .collect())
            }

            async fn reseal(&self, kind: SealedKind, id: Id, from_key: &str, sealed: &Sealed) -> Result<bool> {
                let sql = match kind {
                    SealedKind::TakeoutPassphrase => {
                        let _forget = self.tickets.forget_ticket(id);
                        return reseal_takeout_passphrase(&self.pool, id, from_key, sealed).await;
                    }
                    SealedKind::Account => {
                        "UPDATE accounts SET key_id = $3, secrets_sealed = $4
                         WHERE id = $1 AND key_id = $2 AND seal_uid = $5"
                    }
                    SealedKind::Cert => {
                        "UPDATE account_certs SET key_id = $3, content_sealed = $4
                         WHERE id = $1 AND key_id = $2 AND seal_uid = $5"
                    }
                    SealedKind::NotifySecret => {
                        "UPDATE notify_secrets SET key_id = $3, secret_sealed = $4
                         WHERE id = $1 AND key_id = $2 AND seal_uid = $5"
                    }
                };
                Ok(affected(
                    &self.pool,
                    sqlx::query(sql)
                        .bind(id)
                        .bind(from_key)
                        .bind(&sealed.key_id)
                        .bind(&sealed.blob)
                        .bind(&sealed.uid),
                )
                .await?
                    > 0)
            }
        }
    };
}
pub(crate) use impl_accounts;
