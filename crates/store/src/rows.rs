//! Row -> domain mapping, written once for both engines. The schemas agree on column names and on
//! the Rust types read (SQLite's INTEGER decodes as i32 and bool as PostgreSQL's INT4 and BOOLEAN
//! do), so only the row type `R` differs: `sql_store!` instantiates these with each engine's.

/// `user_from`, `bundle_from`, `blob_from`, `artifact_from`, `attachment_from`, `ticket_from`,
/// `template_from`, `job_from` for one row type.
macro_rules! store_rows {
    () => {
        fn user_from(r: &R) -> Result<User> {
            let ents: String = r.try_get("entitlements").map_err(db_err)?;
            Ok(User {
                id: r.try_get("id").map_err(db_err)?,
                login: r.try_get("login").map_err(db_err)?,
                admin: r.try_get("admin").map_err(db_err)?,
                entitlements: serde_json::from_str(&ents).unwrap_or_default(),
                created: r.try_get("created").map_err(db_err)?,
            })
        }

        fn bundle_from(r: &R) -> Result<Bundle> {
            Ok(Bundle {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                version: r.try_get("version").map_err(db_err)?,
                description: r.try_get("description").map_err(db_err)?,
                release: r.try_get("release").map_err(db_err)?,
                install_location: r.try_get("install_location").map_err(db_err)?,
                revision: r.try_get("revision").map_err(db_err)?,
                imported: r.try_get("imported").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }

        fn blob_from(r: &R) -> Result<Option<BlobRef>> {
            let key: Option<String> = r.try_get("blob_key").map_err(db_err)?;
            Ok(match key {
                None => None,
                Some(key) => Some(BlobRef {
                    key,
                    size: r
                        .try_get::<Option<i64>, _>("blob_size")
                        .map_err(db_err)?
                        .unwrap_or(0),
                    sha256: r
                        .try_get::<Option<String>, _>("blob_sha256")
                        .map_err(db_err)?
                        .unwrap_or_default(),
                    md5: r
                        .try_get::<Option<String>, _>("blob_md5")
                        .map_err(db_err)?
                        .unwrap_or_default(),
                    uploaded: r
                        .try_get::<Option<i64>, _>("blob_uploaded")
                        .map_err(db_err)?
                        .unwrap_or(0),
                    // Out of range only if someone wrote garbage: then the sha256 is checked.
                    crc32: r
                        .try_get::<Option<i64>, _>("blob_crc32")
                        .map_err(db_err)?
                        .and_then(|c| u32::try_from(c).ok()),
                }),
            })
        }

        fn artifact_from(r: &R) -> Result<Artifact> {
            Ok(Artifact {
                id: r.try_get("id").map_err(db_err)?,
                bundle_id: r.try_get("bundle_id").map_err(db_err)?,
                parent_id: r.try_get("parent_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                kind: r.try_get("kind").map_err(db_err)?,
                tag: r.try_get("tag").map_err(db_err)?,
                install_location: r.try_get("install_location").map_err(db_err)?,
                blob: blob_from(r)?,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }

        fn attachment_from(r: &R) -> Result<Attachment> {
            let kind: String = r.try_get("kind").map_err(db_err)?;
            Ok(Attachment {
                id: r.try_get("id").map_err(db_err)?,
                bundle_id: r.try_get("bundle_id").map_err(db_err)?,
                kind: AttachmentKind::parse(&kind).ok_or_else(|| {
                    DomainError::Storage(format!("bad attachment kind {kind}").into())
                })?,
                name: r.try_get("name").map_err(db_err)?,
                blob: blob_from(r)?
                    .ok_or_else(|| DomainError::Storage("attachment without blob".into()))?,
            })
        }

        fn ticket_from(r: &R) -> Result<Ticket> {
            let state: String = r.try_get("state").map_err(db_err)?;
            let format: String = r.try_get("format").map_err(db_err)?;
            let key: Option<String> = r.try_get("archive_key").map_err(db_err)?;
            let archive = match key {
                Some(key) => Some(ArchiveRef {
                    key,
                    file_name: r
                        .try_get::<Option<String>, _>("archive_name")
                        .map_err(db_err)?
                        .unwrap_or_default(),
                    size: r
                        .try_get::<Option<i64>, _>("archive_size")
                        .map_err(db_err)?
                        .unwrap_or(0),
                    sha256: r
                        .try_get::<Option<String>, _>("archive_sha256")
                        .map_err(db_err)?
                        .unwrap_or_default(),
                }),
                None => None,
            };
            let kind: String = r.try_get("kind").map_err(db_err)?;
            let kind = TicketKind::parse(&kind)
                .ok_or_else(|| DomainError::Storage(format!("bad ticket kind {kind}").into()))?;
            let template: Option<Id> = r.try_get("template_id").map_err(db_err)?;
            let image = match template {
                Some(template_id) => Some(ImageSpec {
                    template_id,
                    name: r
                        .try_get::<Option<String>, _>("image_name")
                        .map_err(db_err)?
                        .unwrap_or_default(),
                    format: r
                        .try_get::<Option<String>, _>("image_format")
                        .map_err(db_err)?
                        .unwrap_or_default(),
                    compress: r
                        .try_get::<Option<bool>, _>("compress")
                        .map_err(db_err)?
                        .unwrap_or(false),
                    base: match (
                        r.try_get::<Option<Id>, _>("image_base_id")
                            .map_err(db_err)?,
                        r.try_get::<Option<String>, _>("image_base")
                            .map_err(db_err)?,
                    ) {
                        (Some(id), Some(label)) => Some(ImageBase { id, label }),
                        _ => None,
                    },
                }),
                None => None,
            };
            let import = match r
                .try_get::<Option<bool>, _>("import_imported")
                .map_err(db_err)?
            {
                Some(imported) => {
                    let flag = |c: &str| -> Result<bool> {
                        Ok(r.try_get::<Option<bool>, _>(c)
                            .map_err(db_err)?
                            .unwrap_or(false))
                    };
                    Some(ImportSpec {
                        imported,
                        force: flag("import_force")?,
                        reuse_bundles: flag("import_reuse_bundles")?,
                        use_major: flag("import_use_major")?,
                    })
                }
                None => None,
            };
            let takeout = match r.try_get::<Option<String>, _>("params").map_err(db_err)? {
                Some(p) if kind == TicketKind::Takeout => {
                    Some(serde_json::from_str(&p).map_err(|e| {
                        DomainError::Storage(format!("bad takeout params: {e}").into())
                    })?)
                }
                _ => None,
            };
            Ok(Ticket {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                kind,
                image,
                import,
                takeout,
                subject_id: r.try_get("subject_id").map_err(db_err)?,
                subject_name: r.try_get("subject_name").map_err(db_err)?,
                subject_version: r.try_get("subject_version").map_err(db_err)?,
                format: OutputFormat::parse(Some(&format)).unwrap_or(OutputFormat::Yaml),
                state: TicketState::parse(&state).ok_or_else(|| {
                    DomainError::Storage(format!("bad ticket state {state}").into())
                })?,
                percentage: r.try_get("percentage").map_err(db_err)?,
                bytes_loaded: r.try_get("bytes_loaded").map_err(db_err)?,
                bytes_total: r.try_get("bytes_total").map_err(db_err)?,
                eta: r.try_get("eta").map_err(db_err)?,
                message: r.try_get("message").map_err(db_err)?,
                error_message: r.try_get("error_message").map_err(db_err)?,
                archive,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
                expires_at: r.try_get("expires_at").map_err(db_err)?,
            })
        }

        /// The `distro_*` columns of a container template or an appliance.
        pub(crate) fn distribution_from(r: &R) -> Result<Option<DistributionRef>> {
            let name: Option<String> = r.try_get("distro_name").map_err(db_err)?;
            let field = |c: &str| -> Result<String> {
                Ok(r.try_get::<Option<String>, _>(c)
                    .map_err(db_err)?
                    .unwrap_or_default())
            };
            Ok(match name {
                Some(name) => Some(DistributionRef {
                    name,
                    version: field("distro_version")?,
                    arch: field("distro_arch")?,
                }),
                None => None,
            })
        }

        fn template_from(r: &R) -> Result<ContainerTemplate> {
            let distribution = distribution_from(r)?;
            Ok(ContainerTemplate {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                bundle_id: r.try_get("bundle_id").map_err(db_err)?,
                distribution,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }

        fn job_from(r: &R) -> Result<Job> {
            Ok(Job {
                id: r.try_get("id").map_err(db_err)?,
                kind: r.try_get("kind").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                subject: match (
                    r.try_get::<Option<i64>, _>("ticket_id").map_err(db_err)?,
                    r.try_get::<Option<String>, _>("image_export_id")
                        .map_err(db_err)?,
                ) {
                    (Some(t), None) => JobSubject::Ticket(t),
                    (None, Some(e)) => JobSubject::ImageExport(e),
                    _ => {
                        return Err(DomainError::Storage(
                            "a job without exactly one subject".into(),
                        ))
                    }
                },
                attempts: r.try_get("attempts").map_err(db_err)?,
                max_attempts: r.try_get("max_attempts").map_err(db_err)?,
                last_error: r.try_get("last_error").map_err(db_err)?,
            })
        }
    };
}
pub(crate) use store_rows;

/// `bad`, `key_from`, `image_from`, `entry_from`, `export_from` for one row type.
macro_rules! cloud_rows {
    () => {
        fn bad(what: &str, v: &str) -> DomainError {
            DomainError::Storage(format!("unexpected {what} {v:?} in the database").into())
        }

        fn key_from(r: &R) -> Result<SshKey> {
            Ok(SshKey {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                fingerprint: r.try_get("fingerprint").map_err(db_err)?,
                key: r.try_get("key").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
            })
        }

        fn image_from(r: &R) -> Result<Image> {
            let state: String = r.try_get("state").map_err(db_err)?;
            let blob: Option<String> = r.try_get("file_blob").map_err(db_err)?;
            let file = match blob {
                None => None,
                Some(blob_key) => {
                    let c: String = r.try_get("file_compression").map_err(db_err)?;
                    Some(ImageFile {
                        blob_key,
                        size: r.try_get("file_size").map_err(db_err)?,
                        sha1: r.try_get("file_sha1").map_err(db_err)?,
                        md5: r.try_get("file_md5").map_err(db_err)?,
                        compression: Compression::parse(&c)
                            .ok_or_else(|| bad("compression", &c))?,
                    })
                }
            };
            Ok(Image {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                version: r.try_get("version").map_err(db_err)?,
                os: r.try_get("os").map_err(db_err)?,
                kind: r.try_get("type").map_err(db_err)?,
                description: r.try_get("description").map_err(db_err)?,
                state: ImageState::parse(&state).ok_or_else(|| bad("image state", &state))?,
                public: r.try_get("public").map_err(db_err)?,
                published_at: r.try_get("published_at").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
                file,
            })
        }

        fn entry_from(r: &R) -> Result<StorEntry> {
            let kind: String = r.try_get("kind").map_err(db_err)?;
            Ok(StorEntry {
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                path: r.try_get("path").map_err(db_err)?,
                parent: r.try_get("parent").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                kind: EntryKind::parse(&kind).ok_or_else(|| bad("entry kind", &kind))?,
                size: r.try_get("size").map_err(db_err)?,
                md5: r.try_get("md5").map_err(db_err)?,
                content_type: r.try_get("content_type").map_err(db_err)?,
                blob_key: r.try_get("blob_key").map_err(db_err)?,
                etag: r.try_get("etag").map_err(db_err)?,
                mtime: r.try_get("mtime").map_err(db_err)?,
            })
        }

        fn export_from(r: &R) -> Result<ImageExport> {
            let state: String = r.try_get("state").map_err(db_err)?;
            Ok(ImageExport {
                id: r.try_get("id").map_err(db_err)?,
                owner_id: r.try_get("owner_id").map_err(db_err)?,
                image_id: r.try_get("image_id").map_err(db_err)?,
                manta_path: r.try_get("manta_path").map_err(db_err)?,
                state: ExportState::parse(&state).ok_or_else(|| bad("export state", &state))?,
                bytes_copied: r.try_get("bytes_copied").map_err(db_err)?,
                bytes_total: r.try_get("bytes_total").map_err(db_err)?,
                image_path: r.try_get("image_path").map_err(db_err)?,
                manifest_path: r.try_get("manifest_path").map_err(db_err)?,
                error: r.try_get("error").map_err(db_err)?,
                created: r.try_get("created").map_err(db_err)?,
                modified: r.try_get("modified").map_err(db_err)?,
            })
        }
    };
}
pub(crate) use cloud_rows;

/// The columns [`artifacts_from_json`] reads, in its order (for an [`crate::engine::Engine::JSON_ROWS`] SELECT).
pub(crate) const ARTIFACT_JSON_COLUMNS: &str = "id, bundle_id, parent_id, name, kind, tag, \
     install_location, blob_key, blob_size, blob_sha256, blob_md5, blob_uploaded, blob_crc32, \
     created, modified";

/// One artifact row as [`ARTIFACT_JSON_COLUMNS`] lists it.
type ArtifactJson = (
    i64,
    i64,
    Option<i64>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
);

/// Artifacts from one JSON array of rows, sorted by id; the same mapping as `artifact_from`.
pub(crate) fn artifacts_from_json(
    json: &str,
) -> satchel_domain::Result<Vec<satchel_domain::model::Artifact>> {
    use satchel_domain::model::{Artifact, BlobRef};
    let rows: Vec<ArtifactJson> = serde_json::from_str(json).map_err(|e| {
        satchel_domain::DomainError::Storage(format!("reading artifact rows: {e}").into())
    })?;
    let mut out: Vec<Artifact> = rows
        .into_iter()
        .map(|r| Artifact {
            id: r.0,
            bundle_id: r.1,
            parent_id: r.2,
            name: r.3,
            kind: r.4,
            tag: r.5,
            install_location: r.6,
            blob: r.7.map(|key| BlobRef {
                key,
                size: r.8.unwrap_or(0),
                sha256: r.9.unwrap_or_default(),
                md5: r.10.unwrap_or_default(),
                uploaded: r.11.unwrap_or(0),
                crc32: r.12.and_then(|c| u32::try_from(c).ok()),
            }),
            created: r.13,
            modified: r.14,
        })
        .collect();
    // The aggregate's order is not specified on either engine.
    out.sort_unstable_by_key(|a| a.id);
    Ok(out)
}
