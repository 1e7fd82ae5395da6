//! One behavioural suite for every `Store` implementation. Each `async fn` below takes an
//! `Arc<dyn Store>` and is instantiated by `suite!` twice: `sqlite::<name>` (a temp file) and
//! `postgres::<name>` (a fresh database on a real throwaway server, see `satchel-testkit`), so the
//! engines are held to the same semantics by the same code. The `CloudStore` tests (keys, images, the
//! object namespace and its blob reference counts, image exports) take the same engine as both
//! traits. Engine-specific behaviour (LISTEN/NOTIFY wake-ups, SQLite's polling default) is tested at
//! the end.

use satchel_domain::appliance::*;
use satchel_domain::cloud::model::*;
use satchel_domain::idempotency::{Answer, KeyState, NewClaim};
use satchel_domain::model::*;
use satchel_domain::ports::{CloudStore, JobHandler, KeyUse, OneTimeKeys, Store};
use satchel_domain::{DomainError, Result};
use satchel_store::postgres::PostgresStore;
use satchel_store::sqlite::SqliteStore;
use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

const LONG: Duration = Duration::from_secs(60);

/// A store (as both traits) plus whatever must outlive it (temp dir, test database).
struct Engine {
    store: Arc<dyn Store>,
    cloud: Arc<dyn CloudStore>,
    keys: Arc<dyn OneTimeKeys>,
    /// The PostgreSQL database's URL (to open a second "instance" on it).
    url: Option<String>,
    _keep: Box<dyn Any + Send>,
}

async fn sqlite() -> Engine {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("satchel.db"))
        .await
        .expect("open sqlite");
    let store = Arc::new(store);
    Engine {
        store: store.clone(),
        keys: store.clone(),
        cloud: store,
        url: None,
        _keep: Box::new(dir),
    }
}

async fn postgres() -> Engine {
    let db = satchel_testkit::test_database()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let store = PostgresStore::connect(&db.url)
        .await
        .expect("connect postgres");
    let store = Arc::new(store);
    Engine {
        store: store.clone(),
        keys: store.clone(),
        cloud: store,
        url: Some(db.url.clone()),
        _keep: Box::new(db),
    }
}

/// `store:` tests take the `Store`; `cloud:` tests take it as both `Store` and `CloudStore`.
macro_rules! suite {
    (store: [$($name:ident),+ $(,)?], cloud: [$($cname:ident),+ $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> satchel_domain::Result<()> {
                    let e = super::sqlite().await;
                    super::$name(e.store.clone()).await
                }
            )+
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $cname() -> satchel_domain::Result<()> {
                    let e = super::sqlite().await;
                    super::$cname(e.store.clone(), e.cloud.clone()).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> satchel_domain::Result<()> {
                    let e = super::postgres().await;
                    super::$name(e.store.clone()).await
                }
            )+
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $cname() -> satchel_domain::Result<()> {
                    let e = super::postgres().await;
                    super::$cname(e.store.clone(), e.cloud.clone()).await
                }
            )+
        }
    };
}

suite!(
    store: [
    users_roundtrip,
    delete_user_returns_every_blob_key,
    bundles_are_scoped_by_owner,
    artifacts_nest_and_delete_returns_child_keys,
    attachments_one_per_kind,
    bundle_extras_for_all_bundles_at_once,
    tickets_and_jobs_are_created_together,
    ticket_state_changes_are_conditional,
    expiry,
    claims_oldest_first_and_respects_leases,
    expired_lease_is_claimable_by_another_owner,
    retry_job_respects_delay,
    release_all_leases_frees_every_job,
    concurrent_claims_take_each_job_once,
    racing_finish_ticket_has_one_winner,
    templates_are_scoped_and_own_their_images,
    deleting_a_bundle_deletes_its_templates_and_images,
    distributions_are_unique_and_not_removed_while_a_template_names_them,
    cancel_is_conditional_and_scoped,
    imports_wait_for_their_upload_then_queue_a_job,
    a_bundle_import_completes_with_its_bundle_in_one_transaction,
    usage_counts_what_each_user_holds,
    claims_are_fair_across_users,
    idempotency_keys_claim_record_and_expire,
    idempotency_claim_race_has_one_winner,
    idempotency_protocol_waits_replays_and_releases,
    apikeys_are_scoped_capped_and_revocable,
    accounts_are_scoped_capped_and_hold_their_certificates,
    accounts_go_with_their_user,
    secrets_key_rotation_reseals_every_value_once,
    appliances_are_scoped_and_hold_their_parts,
    appliance_with_parts_is_all_or_nothing,
    boot_script_bodies_are_referenced_counted_and_deleted_with_the_user,
    a_takeout_webhook_is_queued_once_with_its_final_move,
    a_takeout_forgets_its_passphrase_when_it_ends,
    notify_secrets_are_made_once_replaced_and_rotated,
    published_images_share_blobs_and_complete_with_their_ticket,
    ],
    cloud: [
    keys_are_scoped_by_owner,
    images_lifecycle,
    stor_namespace,
    stor_list_pages_by_name,
    shared_blob_is_returned_by_the_last_reference,
    link_from_image_needs_the_image_to_hold_the_blob,
    delete_user_returns_image_and_object_blobs,
    image_exports,
    concurrent_delete_image_and_links_never_orphan_a_link,
    concurrent_object_deletes_return_the_shared_blob_once,
    concurrent_mkdir_put_and_delete_keep_the_tree,
    delete_user_racing_object_writes_accounts_for_every_blob,
    blob_references_live_tickets_and_upload_records,
    ],
);

// ---- helpers

async fn user(s: &Arc<dyn Store>, login: &str) -> Result<User> {
    s.create_user(NewUser {
        login: login.into(),
        password_hash: format!("hash-{login}"),
        admin: false,
        entitlements: vec![ENT_SOFTWARE_UPLOAD.into()],
    })
    .await
}

async fn bundle(s: &Arc<dyn Store>, owner: Id, name: &str) -> Result<Bundle> {
    s.create_bundle(owner, name, "1.0", &BundleInput::default())
        .await
}

fn blob(key: &str) -> BlobRef {
    BlobRef {
        key: key.into(),
        size: key.len() as i64 * 100,
        sha256: format!("sha256-{key}"),
        md5: format!("md5-{key}"),
        uploaded: 1_700_000_000_000,
        // Above i32::MAX: a CRC uses the whole u32 range.
        crc32: Some(0xFFFF_0000 | key.len() as u32),
    }
}

fn folder() -> ArtifactInput {
    ArtifactInput {
        kind: Some("folder".into()),
        ..Default::default()
    }
}

async fn ticket(s: &Arc<dyn Store>, owner: Id, bundle: &Bundle) -> Result<Ticket> {
    s.create_ticket(&NewTicket {
        import: None,
        takeout: None,
        owner_id: owner,
        kind: TicketKind::BundleExport,
        image: None,
        subject_id: bundle.id,
        subject_name: bundle.name.clone(),
        subject_version: bundle.version.clone(),
        format: OutputFormat::Json,
        max_attempts: 3,
    })
    .await
}

fn archive(key: &str) -> ArchiveRef {
    ArchiveRef {
        key: key.into(),
        file_name: format!("{key}.tar.gz"),
        size: 4096,
        sha256: format!("sha256-{key}"),
    }
}

fn complete(key: &str, expires_at: Millis) -> Outcome {
    Outcome::Complete {
        archive: archive(key),
        expires_at: Some(expires_at),
    }
}

fn failed(why: &str) -> Outcome {
    Outcome::Error {
        message: "export failed".into(),
        error_message: why.into(),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn image_ticket(
    s: &Arc<dyn Store>,
    owner: Id,
    bundle: &Bundle,
    template: Id,
    compress: bool,
) -> Result<Ticket> {
    s.create_ticket(&NewTicket {
        import: None,
        takeout: None,
        owner_id: owner,
        kind: TicketKind::ContainerImage,
        image: Some(ImageSpec {
            template_id: template,
            name: "img".into(),
            format: "docker".into(),
            compress,
            base: None,
        }),
        subject_id: bundle.id,
        subject_name: bundle.name.clone(),
        subject_version: bundle.version.clone(),
        format: OutputFormat::Yaml,
        max_attempts: 3,
    })
    .await
}

async fn state(s: &Arc<dyn Store>, id: Id) -> Result<Option<TicketState>> {
    Ok(s.get_ticket_any(id).await?.map(|t| t.state))
}

// ---- users

async fn users_roundtrip(s: Arc<dyn Store>) -> Result<()> {
    let before = now_millis();
    let alice = user(&s, "alice").await?;
    assert!(alice.id > 0);
    assert_eq!(alice.login, "alice");
    assert!(!alice.admin);
    assert_eq!(alice.entitlements, vec![ENT_SOFTWARE_UPLOAD.to_string()]);
    assert!(alice.created >= before && alice.created <= now_millis());

    let root = s
        .create_user(NewUser {
            login: "Root".into(),
            password_hash: "h-root".into(),
            admin: true,
            entitlements: vec![],
        })
        .await?;
    assert!(root.admin);
    assert!(root.entitlements.is_empty());
    user(&s, "bob").await?;

    match user(&s, "alice").await {
        Err(DomainError::Conflict(m)) => assert!(m.contains("alice"), "{m}"),
        other => panic!("duplicate login gave {other:?}"),
    }

    let rec = s.user_by_login("alice").await?.expect("alice");
    assert_eq!(rec.user, alice);
    assert_eq!(rec.password_hash, "hash-alice");
    assert!(s.user_by_login("ALICE").await?.is_none());
    assert!(s.user_by_login("nobody").await?.is_none());
    assert_eq!(s.user_by_id(alice.id).await?, Some(alice.clone()));
    assert_eq!(s.user_by_id(root.id).await?, Some(root.clone()));
    assert_eq!(s.user_by_id(-1).await?, None);

    // Byte order, as SQLite sorts: upper case first.
    let logins: Vec<String> = s.list_users().await?.into_iter().map(|u| u.login).collect();
    assert_eq!(logins, ["Root", "alice", "bob"]);

    assert!(s.set_password("alice", "new-hash").await?);
    assert_eq!(
        s.user_by_login("alice")
            .await?
            .expect("alice")
            .password_hash,
        "new-hash"
    );
    assert!(!s.set_password("nobody", "x").await?);
    assert_eq!(
        s.user_by_login("bob").await?.expect("bob").password_hash,
        "hash-bob"
    );
    Ok(())
}

async fn bundle_extras_for_all_bundles_at_once(s: Arc<dyn Store>) -> Result<()> {
    let alice = user(&s, "alice").await?;
    let bob = user(&s, "bob").await?;
    let (b1, b2, empty) = (
        bundle(&s, alice.id, "one").await?,
        bundle(&s, alice.id, "two").await?,
        bundle(&s, alice.id, "empty").await?,
    );
    let bobs = bundle(&s, bob.id, "bobs").await?;
    for (b, name, key) in [
        (&b1, "a", "k1"),
        (&b1, "b", "k22"),
        (&b2, "c", "k333"),
        (&bobs, "d", "bob"),
    ] {
        let f = s
            .create_artifact(b.id, None, name, &Default::default())
            .await?;
        s.set_artifact_blob(b.id, f.id, &blob(key)).await?;
    }
    // A file never uploaded counts nothing.
    s.create_artifact(b2.id, None, "pending", &Default::default())
        .await?;
    s.put_attachment(b1.id, AttachmentKind::License, "LICENSE", &blob("lic"))
        .await?;
    s.put_attachment(b2.id, AttachmentKind::Logo, "logo.png", &blob("logo"))
        .await?;
    s.put_attachment(bobs.id, AttachmentKind::Logo, "bob.png", &blob("bl"))
        .await?;

    let (mut sizes, attachments) = s.bundle_extras(alice.id).await?;
    sizes.sort();
    assert_eq!(sizes, [(b1.id, 200 + 300), (b2.id, 400)]);
    assert!(!sizes.iter().any(|(id, _)| *id == empty.id));
    let got: Vec<(Id, AttachmentKind, String)> = attachments
        .into_iter()
        .map(|a| (a.bundle_id, a.kind, a.blob.key))
        .collect();
    assert_eq!(
        got,
        [
            (b1.id, AttachmentKind::License, "lic".to_string()),
            (b2.id, AttachmentKind::Logo, "logo".to_string()),
        ]
    );
    // Each bundle's own reads agree.
    assert_eq!(
        s.get_attachment(b2.id, AttachmentKind::Logo)
            .await?
            .map(|a| a.blob.key),
        Some("logo".into())
    );
    let (sizes, attachments) = s.bundle_extras(bob.id).await?;
    assert_eq!(sizes, [(bobs.id, 300)]);
    assert_eq!(attachments.len(), 1);
    Ok(())
}

async fn delete_user_returns_every_blob_key(s: Arc<dyn Store>) -> Result<()> {
    let alice = user(&s, "alice").await?;
    let bob = user(&s, "bob").await?;
    let b = bundle(&s, alice.id, "app").await?;
    let dir = s.create_artifact(b.id, None, "dir", &folder()).await?;
    let f = s
        .create_artifact(b.id, Some(dir.id), "f", &Default::default())
        .await?;
    s.set_artifact_blob(b.id, f.id, &blob("art-f")).await?;
    s.put_attachment(b.id, AttachmentKind::License, "LICENSE", &blob("lic"))
        .await?;
    let done = ticket(&s, alice.id, &b).await?;
    assert!(s.finish_ticket(done.id, &complete("arch", 1)).await?);
    let queued = ticket(&s, alice.id, &b).await?;
    let bobs = bundle(&s, bob.id, "bobs").await?;
    s.put_attachment(bobs.id, AttachmentKind::Logo, "logo.png", &blob("bob-logo"))
        .await?;
    let bob_ticket = ticket(&s, bob.id, &bobs).await?;

    let keys = s.delete_user("alice").await?.expect("alice existed");
    assert_eq!(sorted(keys), ["arch", "art-f", "lic"]);
    assert!(s.user_by_login("alice").await?.is_none());
    assert!(s.get_bundle(alice.id, b.id).await?.is_none());
    assert!(s.list_artifacts(b.id).await?.is_empty());
    assert!(s.get_ticket_any(done.id).await?.is_none());
    assert!(s.get_ticket_any(queued.id).await?.is_none());
    // The queued ticket's job went with it: only bob's job is left.
    let job = s.claim_job("w", LONG).await?.expect("bob's job");
    assert_eq!(job.ticket_id().unwrap(), bob_ticket.id);
    assert!(s.claim_job("w", LONG).await?.is_none());

    assert_eq!(
        s.get_bundle(bob.id, bobs.id).await?.map(|b| b.name),
        Some("bobs".to_string())
    );
    assert!(s.delete_user("alice").await?.is_none());
    assert_eq!(
        s.delete_user("bob").await?,
        Some(vec!["bob-logo".to_string()])
    );
    assert!(s.list_users().await?.is_empty());
    Ok(())
}

// ---- bundles, artifacts, attachments

async fn bundles_are_scoped_by_owner(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = user(&s, "b").await?;
    let input = BundleInput {
        description: Some("desc".into()),
        release: Some("r1".into()),
        install_location: Some("/opt/app".into()),
        ..Default::default()
    };
    let b1 = s.create_bundle(a.id, "app", "1.0", &input).await?;
    assert_eq!(
        (b1.owner_id, b1.name.as_str(), b1.version.as_str()),
        (a.id, "app", "1.0")
    );
    assert_eq!(b1.description.as_deref(), Some("desc"));
    assert_eq!(b1.release.as_deref(), Some("r1"));
    assert_eq!(b1.install_location.as_deref(), Some("/opt/app"));
    assert_eq!(b1.revision, 1);
    assert_eq!(b1.created, b1.modified);
    let b2 = bundle(&s, a.id, "lib").await?;
    assert_eq!(b2.description, None);

    assert_eq!(s.get_bundle(a.id, b1.id).await?, Some(b1.clone()));
    assert!(s.get_bundle(b.id, b1.id).await?.is_none());
    let ids: Vec<Id> = s.list_bundles(a.id).await?.iter().map(|x| x.id).collect();
    assert_eq!(ids, [b1.id, b2.id]);
    assert!(s.list_bundles(b.id).await?.is_empty());

    let rename = BundleInput {
        name: Some("app2".into()),
        ..Default::default()
    };
    assert!(s.update_bundle(b.id, b1.id, &rename).await?.is_none());
    assert_eq!(
        s.get_bundle(a.id, b1.id).await?.map(|x| x.revision),
        Some(1)
    );
    let up = s
        .update_bundle(a.id, b1.id, &rename)
        .await?
        .expect("own bundle");
    assert_eq!(up.name, "app2");
    assert_eq!(up.version, "1.0");
    assert_eq!(up.description.as_deref(), Some("desc"));
    assert_eq!(up.install_location.as_deref(), Some("/opt/app"));
    assert_eq!(up.revision, 2);
    assert_eq!(up.created, b1.created);

    let f = s
        .create_artifact(b1.id, None, "f", &Default::default())
        .await?;
    s.set_artifact_blob(b1.id, f.id, &blob("art")).await?;
    s.create_artifact(b1.id, None, "empty", &Default::default())
        .await?;
    s.put_attachment(b1.id, AttachmentKind::Logo, "logo.png", &blob("logo"))
        .await?;

    assert!(s.delete_bundle(b.id, b1.id).await?.is_none());
    assert!(s.get_bundle(a.id, b1.id).await?.is_some());
    let keys = s.delete_bundle(a.id, b1.id).await?.expect("own bundle");
    assert_eq!(sorted(keys), ["art", "logo"]);
    assert!(s.get_bundle(a.id, b1.id).await?.is_none());
    assert!(s.list_artifacts(b1.id).await?.is_empty());
    assert!(s
        .get_attachment(b1.id, AttachmentKind::Logo)
        .await?
        .is_none());
    assert!(s.delete_bundle(a.id, b1.id).await?.is_none());
    assert_eq!(s.delete_bundle(a.id, b2.id).await?, Some(vec![]));
    Ok(())
}

async fn artifacts_nest_and_delete_returns_child_keys(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let other = bundle(&s, a.id, "other").await?;

    let dir = s.create_artifact(b.id, None, "dir", &folder()).await?;
    assert_eq!(dir.kind, "folder");
    assert_eq!((dir.bundle_id, dir.parent_id), (b.id, None));
    let f = s
        .create_artifact(
            b.id,
            Some(dir.id),
            "f.bin",
            &ArtifactInput {
                tag: Some("binary".into()),
                install_location: Some("/usr/bin".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(f.kind, "file");
    assert_eq!(f.parent_id, Some(dir.id));
    assert_eq!(f.tag.as_deref(), Some("binary"));
    assert_eq!(f.blob, None);
    let sub = s
        .create_artifact(b.id, Some(dir.id), "sub", &folder())
        .await?;
    let deep = s
        .create_artifact(b.id, Some(sub.id), "deep", &Default::default())
        .await?;
    let sibling = s
        .create_artifact(b.id, None, "sibling", &Default::default())
        .await?;

    assert_eq!(s.get_artifact(b.id, f.id).await?, Some(f.clone()));
    assert!(s.get_artifact(other.id, f.id).await?.is_none());

    assert_eq!(s.set_artifact_blob(b.id, f.id, &blob("k1")).await?, None);
    assert_eq!(
        s.set_artifact_blob(b.id, f.id, &blob("k2")).await?,
        Some("k1".to_string())
    );
    assert_eq!(s.set_artifact_blob(b.id, deep.id, &blob("kd")).await?, None);
    assert_eq!(
        s.set_artifact_blob(b.id, sibling.id, &blob("ks")).await?,
        None
    );
    match s.set_artifact_blob(other.id, f.id, &blob("x")).await {
        Err(DomainError::NotFound(_)) => {}
        r => panic!("blob on another bundle's artifact gave {r:?}"),
    }
    assert_eq!(
        s.get_artifact(b.id, f.id).await?.and_then(|x| x.blob),
        Some(blob("k2"))
    );

    let renamed = ArtifactInput {
        name: Some("g.bin".into()),
        kind: Some("folder".into()), // kind is fixed at creation
        ..Default::default()
    };
    assert!(s.update_artifact(other.id, f.id, &renamed).await?.is_none());
    let up = s
        .update_artifact(b.id, f.id, &renamed)
        .await?
        .expect("artifact");
    assert_eq!((up.name.as_str(), up.kind.as_str()), ("g.bin", "file"));
    assert_eq!(up.tag.as_deref(), Some("binary"));
    assert_eq!(up.blob, Some(blob("k2")));

    // Five creates, four blob changes and one update each bumped the bundle; the misses did not.
    assert_eq!(
        s.get_bundle(a.id, b.id).await?.map(|x| x.revision),
        Some(11)
    );
    assert_eq!(
        s.get_bundle(a.id, other.id).await?.map(|x| x.revision),
        Some(1)
    );

    let listed = s.list_artifacts(b.id).await?;
    let ids: Vec<Id> = listed.iter().map(|x| x.id).collect();
    assert_eq!(ids, [dir.id, f.id, sub.id, deep.id, sibling.id]);
    // The listing (one aggregated read) holds what single reads do, field for field, names that
    // JSON must escape and a blob recorded before CRCs were included.
    let names = bundle(&s, a.id, "names").await?;
    let odd = s
        .create_artifact(
            names.id,
            None,
            "q\"u\\o\te\n\u{e9}\u{1F600}",
            &Default::default(),
        )
        .await?;
    let mut before_crc = blob("ko");
    before_crc.crc32 = None;
    s.set_artifact_blob(names.id, odd.id, &before_crc).await?;
    let empty = s.create_artifact(names.id, None, "", &folder()).await?;
    for (bundle_id, list) in [
        (b.id, listed),
        (names.id, s.list_artifacts(names.id).await?),
    ] {
        for x in &list {
            assert_eq!(Some(x), s.get_artifact(bundle_id, x.id).await?.as_ref());
        }
    }
    let odd_listed = s.list_artifacts(names.id).await?;
    assert_eq!(odd_listed.len(), 2);
    assert_eq!(odd_listed[0].name, "q\"u\\o\te\n\u{e9}\u{1F600}");
    assert_eq!(odd_listed[0].blob, Some(before_crc));
    assert_eq!(odd_listed[1].id, empty.id);
    assert!(s.list_artifacts(other.id).await?.is_empty());

    assert!(s.delete_artifact(other.id, dir.id).await?.is_none());
    let keys = s.delete_artifact(b.id, dir.id).await?.expect("dir");
    assert_eq!(sorted(keys), ["k2", "kd"]);
    let left: Vec<Id> = s.list_artifacts(b.id).await?.iter().map(|x| x.id).collect();
    assert_eq!(left, [sibling.id]);
    assert!(s.get_artifact(b.id, deep.id).await?.is_none());
    assert!(s.delete_artifact(b.id, dir.id).await?.is_none());
    assert_eq!(
        s.get_bundle(a.id, b.id).await?.map(|x| x.revision),
        Some(12)
    );
    Ok(())
}

async fn attachments_one_per_kind(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let other = bundle(&s, a.id, "other").await?;

    let (lic, old) = s
        .put_attachment(b.id, AttachmentKind::License, "LICENSE", &blob("l1"))
        .await?;
    assert_eq!(old, None);
    assert_eq!(
        (lic.bundle_id, lic.kind, lic.name.as_str()),
        (b.id, AttachmentKind::License, "LICENSE")
    );
    assert_eq!(lic.blob, blob("l1"));

    let (lic2, old) = s
        .put_attachment(b.id, AttachmentKind::License, "COPYING", &blob("l2"))
        .await?;
    assert_eq!(old.as_deref(), Some("l1"));
    assert_eq!(lic2.id, lic.id);
    assert_eq!(lic2.name, "COPYING");
    assert_eq!(lic2.blob, blob("l2"));

    let (logo, old) = s
        .put_attachment(b.id, AttachmentKind::Logo, "logo.png", &blob("g1"))
        .await?;
    assert_eq!(old, None);
    assert_ne!(logo.id, lic.id);

    assert_eq!(
        s.get_attachment(b.id, AttachmentKind::License).await?,
        Some(lic2)
    );
    assert!(s
        .get_attachment(other.id, AttachmentKind::License)
        .await?
        .is_none());
    assert_eq!(
        s.delete_attachment(other.id, AttachmentKind::License)
            .await?,
        None
    );
    assert_eq!(
        s.delete_attachment(b.id, AttachmentKind::License).await?,
        Some("l2".to_string())
    );
    assert_eq!(
        s.delete_attachment(b.id, AttachmentKind::License).await?,
        None
    );
    assert_eq!(
        s.get_attachment(b.id, AttachmentKind::Logo).await?,
        Some(logo)
    );
    // Three puts bumped the bundle.
    assert_eq!(s.get_bundle(a.id, b.id).await?.map(|x| x.revision), Some(4));
    Ok(())
}

// ---- tickets

async fn tickets_and_jobs_are_created_together(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let other = user(&s, "other").await?;
    let b = bundle(&s, a.id, "app").await?;
    let before = now_millis();
    let t1 = ticket(&s, a.id, &b).await?;
    assert_eq!(
        (t1.owner_id, t1.subject_id, t1.subject_name.as_str()),
        (a.id, b.id, "app")
    );
    assert_eq!(t1.subject_version, "1.0");
    assert_eq!(t1.format, OutputFormat::Json);
    assert_eq!(t1.state, TicketState::Queued);
    assert_eq!(t1.message.as_deref(), Some("export queued"));
    assert_eq!((t1.percentage, t1.bytes_loaded, t1.bytes_total), (0, 0, 0));
    assert_eq!(
        (t1.archive.clone(), t1.expires_at, t1.eta),
        (None, None, None)
    );
    assert!(t1.created >= before);
    let t2 = ticket(&s, a.id, &b).await?;

    assert_eq!(s.get_ticket(a.id, t1.id).await?, Some(t1.clone()));
    assert!(s.get_ticket(other.id, t1.id).await?.is_none());
    assert_eq!(s.get_ticket_any(t1.id).await?, Some(t1.clone()));
    assert_eq!(s.list_tickets(a.id).await?, [t1.clone(), t2.clone()]);
    assert!(s.list_tickets(other.id).await?.is_empty());

    let job = s.claim_job("w", LONG).await?.expect("t1's job");
    assert_eq!(job.ticket_id().unwrap(), t1.id);
    assert_eq!(job.kind, JOB_BUNDLE_EXPORT);
    assert_eq!((job.attempts, job.max_attempts), (1, 3));
    assert_eq!(job.last_error, None);

    assert!(s.delete_ticket(other.id, t1.id).await?.is_none());
    assert_eq!(s.delete_ticket(a.id, t1.id).await?, Some(t1.clone()));
    assert!(s.get_ticket_any(t1.id).await?.is_none());
    // Its job went with it, so the lease holder learns it at the next heartbeat.
    assert!(!s.heartbeat(job.id, "w", LONG).await?);
    let next = s.claim_job("w", LONG).await?.expect("t2's job");
    assert_eq!(next.ticket_id().unwrap(), t2.id);
    assert!(s.claim_job("w", LONG).await?.is_none());
    Ok(())
}

async fn usage_counts_what_each_user_holds(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let other = user(&s, "other").await?;
    assert_eq!(s.usage(a.id).await?, Usage::default());
    let b = bundle(&s, a.id, "app").await?;
    let f = s
        .create_artifact(b.id, None, "f", &ArtifactInput::default())
        .await?;
    // Folders and files not yet uploaded hold nothing.
    s.create_artifact(b.id, None, "d", &folder()).await?;
    s.set_artifact_blob(b.id, f.id, &blob("file1")).await?;
    s.put_attachment(b.id, AttachmentKind::License, "l.txt", &blob("lic"))
        .await?;
    let t1 = ticket(&s, a.id, &b).await?;
    let t2 = ticket(&s, a.id, &b).await?;
    let t3 = ticket(&s, a.id, &b).await?;
    assert!(s.mark_running(t1.id).await?);
    let files = blob("file1").size + blob("lic").size;
    assert_eq!(
        s.usage(a.id).await?,
        Usage {
            bytes: files,
            archives: 0,
            outstanding: 3
        }
    );
    // A completed archive counts as kept and its bytes as stored; a failed one as neither.
    assert!(s.finish_ticket(t1.id, &complete("arch", i64::MAX)).await?);
    assert!(s.finish_ticket(t2.id, &failed("no")).await?);
    assert_eq!(
        s.usage(a.id).await?,
        Usage {
            bytes: files + archive("arch").size,
            archives: 1,
            outstanding: 1
        }
    );
    assert!(s.cancel_ticket(a.id, t3.id).await?.is_some());
    assert_eq!(s.usage(a.id).await?.outstanding, 0);
    assert_eq!(s.usage(other.id).await?, Usage::default());
    Ok(())
}

async fn claims_are_fair_across_users(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = user(&s, "b").await?;
    let ba = bundle(&s, a.id, "app").await?;
    let bb = bundle(&s, b.id, "app").await?;
    let a1 = ticket(&s, a.id, &ba).await?;
    let a2 = ticket(&s, a.id, &ba).await?;
    let _a3 = ticket(&s, a.id, &ba).await?;
    let b1 = ticket(&s, b.id, &bb).await?;
    // One running job per user: a's oldest, then b's (queued after all of a's), then nothing.
    let j1 = s.claim_job_fair("w1", LONG, 1).await?.expect("a job");
    assert_eq!(j1.ticket_id().unwrap(), a1.id);
    let j2 = s.claim_job_fair("w2", LONG, 1).await?.expect("b's job");
    assert_eq!(j2.ticket_id().unwrap(), b1.id);
    assert!(s.claim_job_fair("w3", LONG, 1).await?.is_none());
    // With room for two each, a goes on; b has nothing left.
    let j3 = s.claim_job_fair("w3", LONG, 2).await?.expect("a's second");
    assert_eq!(j3.ticket_id().unwrap(), a2.id);
    s.finish_job(j1.id, "w1").await?;
    s.finish_job(j3.id, "w3").await?;
    // Finished jobs free the slot.
    let j4 = s.claim_job_fair("w1", LONG, 1).await?.expect("a's third");
    assert_ne!(j4.ticket_id().unwrap(), b1.id);
    // The unfair claim ignores the cap.
    assert!(
        s.claim_job("w4", LONG).await?.is_none(),
        "nothing else is queued"
    );
    Ok(())
}

async fn templates_are_scoped_and_own_their_images(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let other = user(&s, "other").await?;
    let b = bundle(&s, a.id, "app").await?;
    let b2 = bundle(&s, a.id, "app2").await?;
    let distro = DistributionRef {
        name: "Debian".into(),
        version: "12".into(),
        arch: "x86_64".into(),
    };
    let t1 = s.create_template(a.id, b.id, Some(&distro)).await?;
    assert_eq!((t1.owner_id, t1.bundle_id), (a.id, b.id));
    assert_eq!(t1.distribution.as_ref(), Some(&distro));
    let t2 = s.create_template(a.id, b.id, None).await?;
    assert_eq!(t2.distribution, None);
    // Another user's bundle, or a missing one, cannot get a template.
    assert!(matches!(
        s.create_template(other.id, b.id, None).await,
        Err(DomainError::NotFound(_))
    ));
    assert_eq!(s.get_template(a.id, b.id, t1.id).await?, Some(t1.clone()));
    assert!(s.get_template(other.id, b.id, t1.id).await?.is_none());
    assert!(
        s.get_template(a.id, b2.id, t1.id).await?.is_none(),
        "wrong bundle"
    );
    assert_eq!(
        s.list_templates(a.id, b.id).await?,
        [t1.clone(), t2.clone()]
    );
    assert!(s.list_templates(other.id, b.id).await?.is_empty());

    let i1 = image_ticket(&s, a.id, &b, t1.id, true).await?;
    assert_eq!(i1.kind, TicketKind::ContainerImage);
    assert_eq!(i1.message.as_deref(), Some("generation queued"));
    let spec = i1.image.clone().expect("image spec");
    assert_eq!(
        (
            spec.template_id,
            spec.name.as_str(),
            spec.format.as_str(),
            spec.compress
        ),
        (t1.id, "img", "docker", true)
    );
    let i2 = image_ticket(&s, a.id, &b, t1.id, false).await?;
    assert!(!i2.image.clone().expect("spec").compress);
    let i3 = image_ticket(&s, a.id, &b, t2.id, true).await?;
    let export = ticket(&s, a.id, &b).await?;
    assert_eq!(export.kind, TicketKind::BundleExport);
    assert_eq!(export.image, None);
    assert_eq!(
        s.list_template_images(a.id, t1.id).await?,
        [i1.clone(), i2.clone()]
    );
    assert!(s.list_template_images(other.id, t1.id).await?.is_empty());
    let job = s.claim_job("w", LONG).await?.expect("i1's job");
    assert_eq!(
        (job.ticket_id().unwrap(), job.kind.as_str()),
        (i1.id, JOB_CONTAINER_IMAGE)
    );

    // A completed image is kept until deleted: it never comes up for expiry.
    assert!(s.mark_running(i1.id).await?);
    assert!(
        s.finish_ticket(
            i1.id,
            &Outcome::Complete {
                archive: archive("img1"),
                expires_at: None
            }
        )
        .await?
    );
    assert!(s.tickets_to_expire(i64::MAX, 100).await?.is_empty());
    assert_eq!(
        s.get_ticket(a.id, i1.id).await?.and_then(|t| t.message),
        Some("image generated".into())
    );

    // Deleting a template deletes its images (and their jobs), nothing else.
    assert!(s.delete_template(other.id, b.id, t1.id).await?.is_none());
    let gone = s
        .delete_template(a.id, b.id, t1.id)
        .await?
        .expect("deleted");
    assert_eq!(
        gone.iter().map(|t| t.id).collect::<Vec<_>>(),
        [i1.id, i2.id]
    );
    assert_eq!(
        gone[0].archive.as_ref().map(|a| a.key.as_str()),
        Some("img1")
    );
    assert!(s.get_ticket_any(i1.id).await?.is_none());
    assert!(s.get_ticket_any(i2.id).await?.is_none());
    assert!(
        !s.heartbeat(job.id, "w", LONG).await?,
        "the job went with its ticket"
    );
    assert!(s.get_template(a.id, b.id, t1.id).await?.is_none());
    assert!(s.get_ticket_any(i3.id).await?.is_some());
    assert!(s.get_ticket_any(export.id).await?.is_some());
    // An image for a deleted template is refused by the database, not left dangling.
    assert!(matches!(
        image_ticket(&s, a.id, &b, t1.id, true).await,
        Err(DomainError::NotFound(_))
    ));
    Ok(())
}

async fn distributions_are_unique_and_not_removed_while_a_template_names_them(
    s: Arc<dyn Store>,
) -> Result<()> {
    use satchel_domain::ports::DeletedDistribution;
    let blob = |n: u8| BaseBlob {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
        size: 100 + n as i64,
    };
    let new = NewDistribution {
        name: "Debian".into(),
        version: "12".into(),
        arch: "x86_64".into(),
        config: blob(1),
        layers: vec![blob(2), blob(3)],
    };
    let d = s.create_distribution(&new).await?;
    assert_eq!((d.name.as_str(), d.version.as_str()), ("Debian", "12"));
    assert_eq!(d.layers, vec![blob(2), blob(3)], "layers keep their order");
    assert_eq!(s.get_distribution(d.id).await?, Some(d.clone()));
    // The name is unique in any case, per version and arch.
    let dup = NewDistribution {
        name: "DEBIAN".into(),
        ..new.clone()
    };
    match s.create_distribution(&dup).await {
        Err(DomainError::Conflict(m)) => assert!(m.contains("already registered"), "{m}"),
        other => panic!("a duplicate was not refused: {other:?}"),
    }
    let other_arch = s
        .create_distribution(&NewDistribution {
            arch: "i386".into(),
            ..new.clone()
        })
        .await?;
    assert_eq!(s.list_distributions().await?.len(), 2);

    // A template naming it (another case, the other spelling of its arch) keeps it.
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t = s
        .create_template(
            a.id,
            b.id,
            Some(&DistributionRef {
                name: "debian".into(),
                version: "12".into(),
                arch: "amd64".into(),
            }),
        )
        .await?;
    let spellings = ["x86_64".to_string(), "amd64".to_string()];
    assert_eq!(
        s.delete_distribution(d.id, &spellings).await?,
        DeletedDistribution::InUse(1)
    );
    assert!(s.get_distribution(d.id).await?.is_some());
    // The other arch is not named by it.
    assert!(matches!(
        s.delete_distribution(other_arch.id, &["i386".to_string()])
            .await?,
        DeletedDistribution::Deleted(_)
    ));
    s.delete_template(a.id, b.id, t.id).await?;
    assert_eq!(
        s.delete_distribution(d.id, &spellings).await?,
        DeletedDistribution::Deleted(d.clone())
    );
    assert_eq!(
        s.delete_distribution(d.id, &spellings).await?,
        DeletedDistribution::NotFound
    );
    assert!(s.list_distributions().await?.is_empty());
    Ok(())
}

async fn deleting_a_bundle_deletes_its_templates_and_images(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t = s.create_template(a.id, b.id, None).await?;
    let i = image_ticket(&s, a.id, &b, t.id, true).await?;
    let pending = image_ticket(&s, a.id, &b, t.id, true).await?;
    assert!(s.mark_running(i.id).await?);
    let done = Outcome::Complete {
        archive: archive("img-archive"),
        expires_at: None,
    };
    assert!(s.finish_ticket(i.id, &done).await?);
    let export = ticket(&s, a.id, &b).await?;
    let keys = s.delete_bundle(a.id, b.id).await?.expect("deleted");
    assert!(keys.contains(&"img-archive".to_string()), "{keys:?}");
    assert!(s.get_ticket_any(i.id).await?.is_none());
    assert!(s.get_ticket_any(pending.id).await?.is_none());
    assert!(s.list_templates(a.id, b.id).await?.is_empty());
    // Exports outlive their bundle, as before.
    assert!(s.get_ticket_any(export.id).await?.is_some());
    Ok(())
}

async fn import_ticket(s: &Arc<dyn Store>, owner: Id) -> Result<Ticket> {
    s.create_ticket(&NewTicket {
        takeout: None,
        import: Some(ImportSpec {
            imported: true,
            force: false,
            reuse_bundles: true,
            use_major: false,
        }),
        owner_id: owner,
        kind: TicketKind::BundleImport,
        image: None,
        subject_id: 0,
        subject_name: String::new(),
        subject_version: String::new(),
        format: OutputFormat::Yaml,
        max_attempts: 3,
    })
    .await
}

async fn imports_wait_for_their_upload_then_queue_a_job(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let t = import_ticket(&s, a.id).await?;
    assert_eq!(t.state, TicketState::AwaitingUpload);
    assert_eq!(t.message.as_deref(), Some("waiting for the archive upload"));
    let spec = t.import.expect("import spec");
    assert!(spec.imported && spec.reuse_bundles && !spec.force);
    // No job until the archive is in.
    assert!(s.claim_job("w", LONG).await?.is_none());
    // Another user's import does not exist.
    assert!(s
        .queue_import(b.id, t.id, &archive("up"), 3)
        .await?
        .is_none());
    let q = s
        .queue_import(a.id, t.id, &archive("up"), 3)
        .await?
        .expect("queued");
    assert_eq!(q.state, TicketState::Queued);
    assert_eq!(q.message.as_deref(), Some("import queued"));
    assert_eq!(q.archive.as_ref().map(|a| a.key.as_str()), Some("up"));
    // A second upload moves nothing and queues no second job.
    let again = s
        .queue_import(a.id, t.id, &archive("up2"), 3)
        .await?
        .expect("found");
    assert_eq!(again.state, TicketState::Queued);
    assert_eq!(again.archive.as_ref().map(|a| a.key.as_str()), Some("up"));
    let job = s.claim_job("w", LONG).await?.expect("a job");
    assert_eq!(job.ticket_id(), Some(t.id));
    assert_eq!(job.kind, "bundle_import");
    assert!(s.claim_job("w", LONG).await?.is_none());
    // The import waiting for its upload is not live work (no job writes for it) but can be cancelled.
    let t2 = import_ticket(&s, a.id).await?;
    assert!(!s.live_tickets().await?.iter().any(|l| l.id == t2.id));
    let c = s.cancel_ticket(a.id, t2.id).await?.expect("found");
    assert_eq!(c.state, TicketState::Cancelled);
    assert!(s
        .queue_import(a.id, t2.id, &archive("late"), 3)
        .await?
        .is_some_and(|t| t.state == TicketState::Cancelled));
    Ok(())
}

async fn a_bundle_import_completes_with_its_bundle_in_one_transaction(
    s: Arc<dyn Store>,
) -> Result<()> {
    let a = user(&s, "alice").await?;
    let t = import_ticket(&s, a.id).await?;
    let parts = NewBundleParts {
        imported: true,
        name: "imported é".into(),
        version: "2.0".into(),
        description: Some("d".into()),
        release: None,
        install_location: Some("/opt".into()),
        artifacts: vec![
            NewArtifactPart {
                name: "conf".into(),
                kind: "folder".into(),
                parent: None,
                tag: None,
                install_location: None,
                blob: None,
            },
            NewArtifactPart {
                name: "x.cfg".into(),
                kind: "file".into(),
                parent: Some(0),
                tag: Some("softwarefile".into()),
                install_location: None,
                blob: Some(blob("k1")),
            },
        ],
        license: Some(("LICENSE".into(), blob("k2"))),
        logo: None,
    };
    // Not running yet: nothing is written.
    assert!(s.complete_bundle_import(t.id, &parts).await?.is_none());
    assert!(s.list_bundles(a.id).await?.is_empty());
    s.queue_import(a.id, t.id, &archive("up"), 3).await?;
    assert!(s.mark_running(t.id).await?);
    let b = s
        .complete_bundle_import(t.id, &parts)
        .await?
        .expect("created");
    assert_eq!((b.name.as_str(), b.version.as_str()), ("imported é", "2.0"));
    assert!(b.imported);
    assert!(!bundle(&s, a.id, "made").await?.imported);
    let arts = s.list_artifacts(b.id).await?;
    assert_eq!(arts.len(), 2);
    assert_eq!(arts[1].parent_id, Some(arts[0].id));
    assert_eq!(arts[1].blob.as_ref().map(|b| b.key.as_str()), Some("k1"));
    let lic = s
        .get_attachment(b.id, AttachmentKind::License)
        .await?
        .expect("license");
    assert_eq!(lic.blob.key, "k2");
    let done = s.get_ticket(a.id, t.id).await?.expect("ticket");
    assert_eq!(done.state, TicketState::Complete);
    assert_eq!(done.subject_id, b.id);
    assert_eq!(done.subject_name, "imported é");
    assert!(
        done.archive.is_none(),
        "the upload is dropped from the ticket"
    );
    // A second completion (a retried job) creates nothing more.
    assert!(s.complete_bundle_import(t.id, &parts).await?.is_none());
    assert_eq!(
        s.list_bundles(a.id).await?.len(),
        2,
        "the imported one and \"made\""
    );
    let refs = s
        .referenced_blobs(&["k1".into(), "k2".into(), "up".into()])
        .await?;
    assert!(refs.contains("k1") && refs.contains("k2") && !refs.contains("up"));
    Ok(())
}

async fn cancel_is_conditional_and_scoped(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let other = user(&s, "other").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t = s.create_template(a.id, b.id, None).await?;
    let i = image_ticket(&s, a.id, &b, t.id, true).await?;
    assert!(s.cancel_ticket(other.id, i.id).await?.is_none());
    assert_eq!(state(&s, i.id).await?, Some(TicketState::Queued));
    let c = s.cancel_ticket(a.id, i.id).await?.expect("found");
    assert_eq!(c.state, TicketState::Cancelled);
    assert!(
        !s.mark_running(i.id).await?,
        "a cancelled ticket does not start"
    );
    let done = s.finish_ticket(i.id, &complete("x", 0)).await?;
    assert!(!done, "nor complete");
    // A finished ticket stays as it is.
    let j = image_ticket(&s, a.id, &b, t.id, true).await?;
    assert!(s.mark_running(j.id).await?);
    assert!(s.finish_ticket(j.id, &complete("y", 0)).await?);
    let after = s.cancel_ticket(a.id, j.id).await?.expect("found");
    assert_eq!(after.state, TicketState::Complete);
    Ok(())
}

async fn ticket_state_changes_are_conditional(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t = ticket(&s, a.id, &b).await?;
    let p = |percentage, bytes_loaded| Progress {
        percentage,
        bytes_loaded,
        bytes_total: 1000,
        eta: Some(5_000),
    };

    assert!(!s.update_progress(t.id, &p(10, 100)).await?, "still queued");
    assert!(s.mark_running(t.id).await?);
    assert!(s.mark_running(t.id).await?, "a retried job marks it again");
    let got = s.get_ticket_any(t.id).await?.expect("ticket");
    assert_eq!(got.state, TicketState::Running);
    assert_eq!(got.message.as_deref(), Some("export in progress"));

    assert!(s.update_progress(t.id, &p(42, 420)).await?);
    let got = s.get_ticket_any(t.id).await?.expect("ticket");
    assert_eq!(
        (got.percentage, got.bytes_loaded, got.bytes_total, got.eta),
        (42, 420, 1000, Some(5_000))
    );
    assert!(s.update_progress(t.id, &p(150, 990)).await?);
    assert_eq!(
        s.get_ticket_any(t.id).await?.map(|t| t.percentage),
        Some(100)
    );

    assert!(s.finish_ticket(t.id, &complete("arch", 123_456)).await?);
    let got = s.get_ticket_any(t.id).await?.expect("ticket");
    assert_eq!(got.state, TicketState::Complete);
    assert_eq!(
        (got.percentage, got.bytes_loaded, got.bytes_total, got.eta),
        (100, 1000, 1000, None)
    );
    assert_eq!(got.archive, Some(archive("arch")));
    assert_eq!(got.expires_at, Some(123_456));
    assert_eq!(got.message.as_deref(), Some("export complete"));
    assert_eq!(got.error_message, None);

    assert!(!s.update_progress(t.id, &p(50, 500)).await?);
    assert!(!s.mark_running(t.id).await?);
    assert!(!s.finish_ticket(t.id, &failed("late")).await?);
    assert!(!s.finish_ticket(t.id, &complete("other", 1)).await?);
    assert_eq!(s.get_ticket_any(t.id).await?, Some(got));

    // queued -> error directly (a job that gave up before running).
    let e = ticket(&s, a.id, &b).await?;
    assert!(s.finish_ticket(e.id, &failed("disk full")).await?);
    let got = s.get_ticket_any(e.id).await?.expect("ticket");
    assert_eq!(got.state, TicketState::Error);
    assert_eq!(got.message.as_deref(), Some("export failed"));
    assert_eq!(got.error_message.as_deref(), Some("disk full"));
    assert_eq!(got.archive, None);
    assert!(!s.mark_running(e.id).await?);

    // A deleted (cancelled) ticket cannot be finished or advanced.
    let d = ticket(&s, a.id, &b).await?;
    assert!(s.mark_running(d.id).await?);
    assert!(s.delete_ticket(a.id, d.id).await?.is_some());
    assert!(!s.finish_ticket(d.id, &complete("orphan", 1)).await?);
    assert!(!s.update_progress(d.id, &p(1, 1)).await?);
    assert!(!s.mark_running(d.id).await?);
    assert!(!s.mark_running(d.id + 1000).await?);
    Ok(())
}

async fn expiry(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let now = now_millis();
    let later_past = ticket(&s, a.id, &b).await?;
    let earlier_past = ticket(&s, a.id, &b).await?;
    let future = ticket(&s, a.id, &b).await?;
    let errored = ticket(&s, a.id, &b).await?;
    let queued = ticket(&s, a.id, &b).await?;
    assert!(
        s.finish_ticket(later_past.id, &complete("k1", now - 1_000))
            .await?
    );
    assert!(
        s.finish_ticket(earlier_past.id, &complete("k2", now - 3_000))
            .await?
    );
    assert!(
        s.finish_ticket(future.id, &complete("k3", now + 60_000))
            .await?
    );
    assert!(s.finish_ticket(errored.id, &failed("x")).await?);

    let ids = |v: Vec<Ticket>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.tickets_to_expire(now, 10).await?),
        [earlier_past.id, later_past.id]
    );
    assert_eq!(ids(s.tickets_to_expire(now, 1).await?), [earlier_past.id]);
    assert_eq!(
        ids(s.tickets_to_expire(now - 2_000, 10).await?),
        [earlier_past.id]
    );

    assert!(s.mark_expired(earlier_past.id).await?);
    let got = s.get_ticket_any(earlier_past.id).await?.expect("ticket");
    assert_eq!(got.state, TicketState::Expired);
    assert_eq!(got.message.as_deref(), Some("archive expired and deleted"));
    assert!(!s.mark_expired(earlier_past.id).await?);
    assert!(!s.mark_expired(errored.id).await?);
    assert!(!s.mark_expired(queued.id).await?);
    assert_eq!(state(&s, queued.id).await?, Some(TicketState::Queued));
    assert_eq!(ids(s.tickets_to_expire(now, 10).await?), [later_past.id]);
    assert_eq!(
        ids(s.tickets_to_expire(now + 120_000, 10).await?),
        [later_past.id, future.id]
    );
    Ok(())
}

// ---- job queue

async fn claims_oldest_first_and_respects_leases(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t1 = ticket(&s, a.id, &b).await?;
    let t2 = ticket(&s, a.id, &b).await?;
    let t3 = ticket(&s, a.id, &b).await?;

    let j1 = s.claim_job("A", LONG).await?.expect("job 1");
    let j2 = s.claim_job("B", LONG).await?.expect("job 2");
    let j3 = s.claim_job("A", LONG).await?.expect("job 3");
    assert_eq!(
        [
            j1.ticket_id().unwrap(),
            j2.ticket_id().unwrap(),
            j3.ticket_id().unwrap()
        ],
        [t1.id, t2.id, t3.id]
    );
    assert!([&j1, &j2, &j3].iter().all(|j| j.attempts == 1));
    assert!(
        s.claim_job("C", LONG).await?.is_none(),
        "all three are leased"
    );

    assert!(s.heartbeat(j1.id, "A", LONG).await?);
    assert!(!s.heartbeat(j1.id, "B", LONG).await?, "not B's lease");
    assert!(!s.heartbeat(j1.id + 1000, "A", LONG).await?);

    // finish_job by someone else leaves the job (and A's lease) alone.
    s.finish_job(j1.id, "B").await?;
    assert!(s.heartbeat(j1.id, "A", LONG).await?);
    s.finish_job(j1.id, "A").await?;
    assert!(
        !s.heartbeat(j1.id, "A", LONG).await?,
        "finished job is gone"
    );
    s.finish_job(j2.id, "B").await?;
    s.finish_job(j3.id, "A").await?;
    assert!(s.claim_job("C", LONG).await?.is_none());
    // The tickets are untouched by the queue.
    assert_eq!(state(&s, t1.id).await?, Some(TicketState::Queued));
    Ok(())
}

async fn expired_lease_is_claimable_by_another_owner(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t = ticket(&s, a.id, &b).await?;
    let first = s
        .claim_job("A", Duration::from_millis(150))
        .await?
        .expect("job");
    assert_eq!((first.ticket_id().unwrap(), first.attempts), (t.id, 1));
    assert!(s.claim_job("B", LONG).await?.is_none(), "lease still valid");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = s.claim_job("B", LONG).await?.expect("expired lease");
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2, "the takeover counts as an attempt");
    assert!(!s.heartbeat(first.id, "A", LONG).await?, "A lost the lease");
    assert!(s.heartbeat(first.id, "B", LONG).await?);
    s.finish_job(first.id, "A").await?;
    assert!(
        s.heartbeat(first.id, "B", LONG).await?,
        "A cannot finish it"
    );
    assert!(s.claim_job("C", LONG).await?.is_none());
    Ok(())
}

async fn retry_job_respects_delay(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    ticket(&s, a.id, &b).await?;
    let job = s.claim_job("A", LONG).await?.expect("job");

    s.retry_job(job.id, "B", "not mine", Duration::ZERO).await?;
    assert!(
        s.claim_job("C", LONG).await?.is_none(),
        "a stranger's retry is ignored"
    );
    assert!(s.heartbeat(job.id, "A", LONG).await?);

    let delay = Duration::from_millis(700);
    let retried_at = Instant::now();
    s.retry_job(job.id, "A", "boom", delay).await?;
    assert!(!s.heartbeat(job.id, "A", LONG).await?, "lease given back");
    assert!(s.claim_job("B", LONG).await?.is_none(), "not before delay");
    let again = loop {
        if let Some(j) = s.claim_job("B", LONG).await? {
            break j;
        }
        assert!(retried_at.elapsed() < Duration::from_secs(5), "never due");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        retried_at.elapsed() >= delay - Duration::from_millis(20),
        "claimed after {:?}",
        retried_at.elapsed()
    );
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.last_error.as_deref(), Some("boom"));
    Ok(())
}

async fn release_all_leases_frees_every_job(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    ticket(&s, a.id, &b).await?;
    ticket(&s, a.id, &b).await?;
    let j1 = s.claim_job("dead", LONG).await?.expect("job 1");
    let j2 = s.claim_job("dead", LONG).await?.expect("job 2");
    s.retry_job(j2.id, "dead", "earlier failure", Duration::ZERO)
        .await?;
    let j2 = s.claim_job("dead", LONG).await?.expect("job 2 again");
    // Created after job 2's retry, so it sorts after it (claims go by run_after).
    ticket(&s, a.id, &b).await?;
    assert_eq!(s.release_all_leases().await?, 2);
    assert!(!s.heartbeat(j1.id, "dead", LONG).await?);

    let r1 = s.claim_job("new", LONG).await?.expect("job 1 released");
    let r2 = s.claim_job("new", LONG).await?.expect("job 2 released");
    let r3 = s.claim_job("new", LONG).await?.expect("job 3");
    assert_eq!((r1.id, r1.attempts), (j1.id, 2));
    assert_eq!(
        r1.last_error.as_deref(),
        Some("the server stopped while running this job")
    );
    assert_eq!((r2.id, r2.attempts), (j2.id, 3));
    assert_eq!(r2.last_error.as_deref(), Some("earlier failure"));
    assert_eq!((r3.attempts, r3.last_error), (1, None));
    assert_eq!(s.release_all_leases().await?, 3);
    assert_eq!(s.release_all_leases().await?, 0);
    Ok(())
}

fn idem_claim(
    owner: Id,
    key: &str,
    request: &str,
    body: Option<&str>,
    token: &str,
    now: Millis,
) -> NewClaim {
    NewClaim {
        owner,
        key: key.into(),
        request_hash: request.into(),
        body_hash: body.map(str::to_string),
        token: token.into(),
        now,
        locked_until: now + 30_000,
        expires_at: now + 86_400_000,
    }
}

async fn idempotency_keys_claim_record_and_expire(s: Arc<dyn Store>) -> Result<()> {
    let (a, b) = (user(&s, "a").await?, user(&s, "b").await?);
    let t0: Millis = 1_000_000;
    // First claim wins; a second one (any token) does not while the first is pending.
    assert!(
        s.claim_idempotency_key(&idem_claim(a.id, "k", "R", Some("B"), "t1", t0))
            .await?
    );
    assert!(
        !s.claim_idempotency_key(&idem_claim(a.id, "k", "R", Some("B"), "t2", t0 + 1))
            .await?
    );
    let r = s
        .get_idempotency_key(a.id, "k")
        .await?
        .expect("pending record");
    assert_eq!(
        (
            r.state,
            r.token.as_str(),
            r.request_hash.as_str(),
            r.body_hash.as_deref()
        ),
        (KeyState::Pending, "t1", "R", Some("B"))
    );
    assert_eq!(
        (r.locked_until, r.expires_at, r.answer),
        (t0 + 30_000, t0 + 86_400_000, None)
    );
    // Keys are scoped per user.
    assert!(
        s.claim_idempotency_key(&idem_claim(b.id, "k", "other", None, "tb", t0))
            .await?
    );
    assert!(s.get_idempotency_key(a.id, "nope").await?.is_none());

    // Only the holder renews and records.
    assert!(
        !s.renew_idempotency_key(a.id, "k", "t2", t0 + 60_000)
            .await?
    );
    assert!(
        s.renew_idempotency_key(a.id, "k", "t1", t0 + 60_000)
            .await?
    );
    assert_eq!(
        s.get_idempotency_key(a.id, "k")
            .await?
            .map(|r| r.locked_until),
        Some(t0 + 60_000)
    );
    let answer = Answer {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/xml".into()),
            (
                "location".into(),
                "/api/users/a/mysoftware/1/exports/7".into(),
            ),
        ],
        body: vec![0, 159, 146, 150, b'<', b'x'],
    };
    assert!(
        !s.record_idempotency_key(a.id, "k", "t2", "B", &answer)
            .await?
    );
    assert!(
        s.record_idempotency_key(a.id, "k", "t1", "B", &answer)
            .await?
    );
    assert!(
        !s.record_idempotency_key(a.id, "k", "t1", "B", &answer)
            .await?,
        "recorded once"
    );
    let r = s
        .get_idempotency_key(a.id, "k")
        .await?
        .expect("done record");
    assert_eq!(
        (r.state, r.answer.as_ref()),
        (KeyState::Done, Some(&answer))
    );
    // A done key is never taken over before it expires, nor released, nor renewed.
    assert!(
        !s.claim_idempotency_key(&idem_claim(a.id, "k", "R", Some("B"), "t3", t0 + 3_600_000))
            .await?
    );
    assert!(!s.release_idempotency_key(a.id, "k", "t1").await?);
    assert!(
        !s.renew_idempotency_key(a.id, "k", "t1", t0 + 90_000)
            .await?
    );

    // A pending claim whose lease lapsed is taken over by the same request only.
    assert!(
        s.claim_idempotency_key(&idem_claim(a.id, "up", "U", None, "u1", t0))
            .await?
    );
    let later = t0 + 30_000;
    assert!(
        !s.claim_idempotency_key(&idem_claim(a.id, "up", "other", None, "u2", later))
            .await?
    );
    assert!(
        !s.claim_idempotency_key(&idem_claim(a.id, "up", "U", Some("B"), "u2", later))
            .await?
    );
    assert!(
        !s.claim_idempotency_key(&idem_claim(a.id, "up", "U", None, "u2", later - 1))
            .await?
    );
    assert!(
        s.claim_idempotency_key(&idem_claim(a.id, "up", "U", None, "u3", later))
            .await?
    );
    // The lapsed holder can no longer renew or record; the new one records the upload's digest.
    assert!(
        !s.renew_idempotency_key(a.id, "up", "u1", later + 30_000)
            .await?
    );
    assert!(
        !s.record_idempotency_key(a.id, "up", "u1", "D1", &answer)
            .await?
    );
    assert!(
        s.record_idempotency_key(a.id, "up", "u3", "D3", &answer)
            .await?
    );
    assert_eq!(
        s.get_idempotency_key(a.id, "up")
            .await?
            .and_then(|r| r.body_hash),
        Some("D3".into())
    );

    // A released key is free at once.
    assert!(
        s.claim_idempotency_key(&idem_claim(a.id, "rel", "R", Some("B"), "r1", t0))
            .await?
    );
    assert!(!s.release_idempotency_key(a.id, "rel", "r2").await?);
    assert!(s.release_idempotency_key(a.id, "rel", "r1").await?);
    assert!(s.get_idempotency_key(a.id, "rel").await?.is_none());
    assert!(
        s.claim_idempotency_key(&idem_claim(a.id, "rel", "other", None, "r3", t0))
            .await?
    );

    // After 24 h a key is free for any request, and the sweep drops what expired.
    let day = t0 + 86_400_000;
    assert!(
        !s.claim_idempotency_key(&idem_claim(a.id, "k", "new", None, "n0", day - 1))
            .await?
    );
    assert!(
        s.claim_idempotency_key(&idem_claim(a.id, "k", "new", None, "n1", day))
            .await?
    );
    let r = s
        .get_idempotency_key(a.id, "k")
        .await?
        .expect("fresh claim");
    assert_eq!(
        (r.state, r.request_hash.as_str(), r.answer),
        (KeyState::Pending, "new", None)
    );
    assert_eq!(s.purge_idempotency_keys(day - 1).await?, 0);
    // Expired at `day`: b's "k" and a's "rel" (claimed at t0); a's "up" was taken over 30 s later.
    assert_eq!(s.purge_idempotency_keys(day).await?, 2);
    assert!(s.get_idempotency_key(b.id, "k").await?.is_none());
    assert!(s.get_idempotency_key(a.id, "up").await?.is_some());
    assert!(s.get_idempotency_key(a.id, "k").await?.is_some());

    // A deleted user's keys go with them.
    assert!(
        s.claim_idempotency_key(&idem_claim(b.id, "k", "R", None, "tb2", day))
            .await?
    );
    s.delete_user("b").await?;
    assert_eq!(
        s.purge_idempotency_keys(i64::MAX).await?,
        2,
        "a's k and up are left"
    );
    Ok(())
}

fn new_account(
    key: &satchel_domain::apikeys::SealKey,
    owner: Id,
    name: &str,
    certs: &[(&str, &[u8])],
) -> Result<satchel_domain::accounts::NewAccount> {
    use satchel_domain::accounts::*;
    Ok(NewAccount {
        owner_id: owner,
        name: name.into(),
        kind: AccountKind::Aws,
        platform: "Amazon".into(),
        fields: [("accessKeyId".to_string(), format!("AKIA-{name}"))].into(),
        secrets: seal_value(
            key,
            SealedKind::Account,
            new_uid(),
            format!("{{\"secretAccessKeyId\":\"secret of {name}\"}}").as_bytes(),
        )?,
        created: 7_000,
        certs: certs
            .iter()
            .map(|(n, c)| {
                Ok(NewCert {
                    name: n.to_string(),
                    cert_type: Some("x509".into()),
                    size: c.len() as i64,
                    content: seal_value(key, SealedKind::Cert, new_uid(), c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?,
    })
}

async fn accounts_are_scoped_capped_and_hold_their_certificates(s: Arc<dyn Store>) -> Result<()> {
    use satchel_domain::accounts::*;
    let key = satchel_domain::apikeys::SealKey::random();
    let (a, b) = (user(&s, "a").await?, user(&s, "b").await?);
    let one = s
        .create_account(
            &new_account(&key, a.id, "one", &[("k.pem", b"PEM ONE")])?,
            2,
        )
        .await?
        .expect("under the cap");
    assert_eq!(one.kind, AccountKind::Aws);
    assert_eq!(
        one.fields.get("accessKeyId").map(String::as_str),
        Some("AKIA-one")
    );
    assert_eq!(one.certs.len(), 1);
    assert_eq!(one.certs[0].size, 7);
    assert_eq!(
        open_value(&key, SealedKind::Cert, &one.certs[0].content)?.expose(),
        b"PEM ONE"
    );
    assert_eq!(
        open_value(&key, SealedKind::Account, &one.secrets)?.expose(),
        br#"{"secretAccessKeyId":"secret of one"}"#
    );
    let two = s
        .create_account(&new_account(&key, a.id, "two", &[])?, 2)
        .await?
        .expect("at the cap");
    assert!(
        s.create_account(&new_account(&key, a.id, "three", &[])?, 2)
            .await?
            .is_none(),
        "over the cap"
    );
    let theirs = s
        .create_account(&new_account(&key, b.id, "theirs", &[])?, 2)
        .await?
        .expect("b's own cap");
    let ids = |v: Vec<Account>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_accounts(a.id).await?), vec![one.id, two.id]);
    assert_eq!(ids(s.list_accounts(b.id).await?), vec![theirs.id]);
    assert_eq!(s.get_account(a.id, one.id).await?, Some(one.clone()));
    assert_eq!(s.get_account(b.id, one.id).await?, None, "scoped by owner");
    assert_eq!(s.list_accounts(a.id).await?[0].certs, one.certs);

    // Update keeps the binding id; a write with another row's id changes nothing.
    let upd = AccountUpdate {
        name: "one renamed".into(),
        platform: "Amazon AWS".into(),
        fields: [("accessKeyId".to_string(), "AKIA-new".to_string())].into(),
        secrets: seal_value(&key, SealedKind::Account, one.secrets.uid.clone(), b"{}")?,
        modified: 9_000,
    };
    assert!(s.update_account(b.id, one.id, &upd).await?.is_none());
    let mut stray = upd.clone();
    stray.secrets.uid = new_uid();
    assert!(s.update_account(a.id, one.id, &stray).await?.is_none());
    let updated = s
        .update_account(a.id, one.id, &upd)
        .await?
        .expect("updated");
    assert_eq!(updated.name, "one renamed");
    assert_eq!(updated.modified, 9_000);
    assert_eq!(updated.secrets, upd.secrets);
    assert_eq!(updated.certs, one.certs, "certificates untouched");

    // Certificates: capped, replaced, deleted.
    let nc = |n: &str| -> Result<NewCert> {
        Ok(NewCert {
            name: n.into(),
            cert_type: None,
            size: 0,
            content: seal_value(&key, SealedKind::Cert, new_uid(), b"")?,
        })
    };
    let c2 = s
        .add_account_cert(one.id, &nc("two.pem")?, 2)
        .await?
        .expect("second");
    assert!(s
        .add_account_cert(one.id, &nc("three.pem")?, 2)
        .await?
        .is_none());
    let content = seal_value(&key, SealedKind::Cert, c2.content.uid.clone(), b"NEW")?;
    let set = s
        .set_account_cert(one.id, c2.id, "renamed.pem", 3, &content)
        .await?
        .expect("set");
    assert_eq!((set.name.as_str(), set.size), ("renamed.pem", 3));
    assert!(
        s.set_account_cert(two.id, c2.id, "x", 3, &content)
            .await?
            .is_none(),
        "other account"
    );
    assert!(!s.delete_account_cert(two.id, c2.id).await?);
    assert!(s.delete_account_cert(one.id, c2.id).await?);
    assert_eq!(
        s.get_account(a.id, one.id).await?.expect("one").certs.len(),
        1
    );

    assert!(!s.delete_account(b.id, one.id).await?, "scoped by owner");
    assert!(s.delete_account(a.id, one.id).await?);
    assert!(!s.delete_account(a.id, one.id).await?);
    assert_eq!(s.get_account(a.id, one.id).await?, None);
    Ok(())
}

async fn accounts_go_with_their_user(s: Arc<dyn Store>) -> Result<()> {
    use satchel_domain::accounts::*;
    let key = satchel_domain::apikeys::SealKey::random();
    let (a, b) = (user(&s, "a").await?, user(&s, "b").await?);
    let acc = s
        .create_account(&new_account(&key, a.id, "gone", &[("c.pem", b"C")])?, 10)
        .await?
        .expect("created");
    s.create_account(&new_account(&key, b.id, "kept", &[])?, 10)
        .await?
        .expect("created");
    s.delete_user("a").await?.expect("deleted");
    assert!(s.get_account(a.id, acc.id).await?.is_none());
    let left = s.sealed_page(SealedKind::Cert, "none", 0, 100).await?;
    assert!(left.is_empty(), "the certificates went with the account");
    let left = s.sealed_page(SealedKind::Account, "none", 0, 100).await?;
    assert_eq!(left.len(), 1, "b's account stays");
    assert_eq!(s.list_accounts(b.id).await?.len(), 1);
    Ok(())
}

async fn secrets_key_rotation_reseals_every_value_once(s: Arc<dyn Store>) -> Result<()> {
    use satchel_domain::accounts::*;
    use satchel_domain::apikeys::SealKey;
    let (old, new) = (SealKey::random(), SealKey::random());
    let a = user(&s, "a").await?;
    let mut made = Vec::new();
    for i in 0..5 {
        let n = format!("acc{i}");
        made.push(
            s.create_account(
                &new_account(&old, a.id, &n, &[("k.pem", n.as_bytes())])?,
                100,
            )
            .await?
            .expect("created"),
        );
    }
    // A crash after the first row: that row is already sealed with the new key.
    let first = &made[0];
    let plain = open_value(&old, SealedKind::Account, &first.secrets)?;
    let moved = seal_value(
        &new,
        SealedKind::Account,
        first.secrets.uid.clone(),
        plain.expose(),
    )?;
    assert!(
        s.reseal(SealedKind::Account, first.id, &old.key_id(), &moved)
            .await?
    );
    assert!(
        !s.reseal(SealedKind::Account, first.id, &old.key_id(), &moved)
            .await?,
        "conditional on the old key"
    );

    // A takeout still queued holds its passphrase sealed in its parameters; one that ended does not.
    let queued = takeout_ticket(&s, &a, None).await?;
    let pass = seal_value(
        &old,
        SealedKind::TakeoutPassphrase,
        new_uid(),
        b"correct horse",
    )?;
    let mut spec = queued.takeout.clone().expect("a takeout");
    spec.credentials = Credentials::Encrypted;
    spec.passphrase = Some(SealedParam {
        uid: pass.uid.clone(),
        key_id: pass.key_id.clone(),
        blob: hex::encode(&pass.blob),
    });
    s.set_takeout_spec(queued.id, &spec).await?;
    // Takeouts without a passphrase are passed over.
    for _ in 0..3 {
        takeout_ticket(&s, &a, None).await?;
    }

    let done = rotate(s.as_ref(), &old, &new).await?;
    assert_eq!(
        done,
        Rotation {
            resealed: 4 + 5 + 1,
            foreign: 0
        }
    );
    let held = s
        .get_ticket_any(queued.id)
        .await?
        .and_then(|t| t.takeout)
        .and_then(|t| t.passphrase)
        .expect("still sealed");
    let held = Sealed {
        uid: held.uid,
        key_id: held.key_id,
        blob: hex::decode(held.blob).expect("hex"),
    };
    assert_eq!(held.key_id, new.key_id());
    assert_eq!(held.uid, pass.uid, "bound to the same id");
    assert_eq!(
        open_value(&new, SealedKind::TakeoutPassphrase, &held)?.expose(),
        b"correct horse"
    );
    assert!(open_value(&old, SealedKind::TakeoutPassphrase, &held).is_err());
    for acc in s.list_accounts(a.id).await? {
        assert_eq!(acc.secrets.key_id, new.key_id());
        assert!(open_value(&old, SealedKind::Account, &acc.secrets).is_err());
        let v = open_value(&new, SealedKind::Account, &acc.secrets)?;
        assert!(v.expose_str().contains(&format!("secret of {}", acc.name)));
        assert_eq!(
            open_value(&new, SealedKind::Cert, &acc.certs[0].content)?.expose(),
            acc.name.as_bytes()
        );
    }
    // A rerun has nothing left to do; the same key twice is refused.
    assert_eq!(rotate(s.as_ref(), &old, &new).await?, Rotation::default());
    assert!(rotate(s.as_ref(), &new, &new).await.is_err());
    // Rotating with a key that sealed nothing leaves every row alone and says so.
    let third = SealKey::random();
    let stray = rotate(s.as_ref(), &third, &SealKey::random()).await?;
    assert_eq!(
        stray,
        Rotation {
            resealed: 0,
            foreign: 11
        }
    );
    Ok(())
}

fn new_key(owner: Id, public: &str) -> satchel_domain::apikeys::NewApiKey {
    satchel_domain::apikeys::NewApiKey {
        owner_id: owner,
        public_key: public.into(),
        sealed_secret: vec![1, 0, 255, 7],
        name: Some(format!("name of {public}")),
        description: None,
        created: 5_000,
    }
}

async fn apikeys_are_scoped_capped_and_revocable(s: Arc<dyn Store>) -> Result<()> {
    let (a, b) = (user(&s, "a").await?, user(&s, "b").await?);
    let k1 = s
        .create_api_key(&new_key(a.id, "P1"), 2)
        .await?
        .expect("under the cap");
    assert_eq!(
        (
            k1.owner_id,
            k1.public_key.as_str(),
            k1.sealed_secret.as_slice()
        ),
        (a.id, "P1", &[1u8, 0, 255, 7][..])
    );
    assert_eq!(
        (k1.name.as_deref(), k1.description.as_deref()),
        (Some("name of P1"), None)
    );
    assert_eq!((k1.created, k1.last_used), (5_000, None));
    let k2 = s
        .create_api_key(&new_key(a.id, "P2"), 2)
        .await?
        .expect("under the cap");
    assert!(
        s.create_api_key(&new_key(a.id, "P3"), 2).await?.is_none(),
        "a holds 2"
    );
    // The cap is per owner; public keys are unique across owners.
    let kb = s
        .create_api_key(&new_key(b.id, "PB"), 2)
        .await?
        .expect("b's first");
    match s.create_api_key(&new_key(b.id, "P1"), 2).await {
        Err(DomainError::Conflict(_)) => {}
        other => panic!("{other:?}"),
    }

    let ids = |v: Vec<satchel_domain::apikeys::ApiKey>| v.iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_api_keys(a.id).await?), vec![k1.id, k2.id]);
    assert_eq!(ids(s.list_api_keys(b.id).await?), vec![kb.id]);
    assert_eq!(s.get_api_key(a.id, k1.id).await?, Some(k1.clone()));
    assert_eq!(s.get_api_key(b.id, k1.id).await?, None, "scoped by owner");

    let (found, owner) = s.api_key_by_public("P1").await?.expect("P1");
    assert_eq!((found, owner), (k1.clone(), a.clone()));
    assert!(s.api_key_by_public("p1").await?.is_none(), "exact match");
    assert!(s.api_key_by_public("nope").await?.is_none());

    // last_used: written when unset or older than the bound, else left alone.
    assert!(s.touch_api_key(k1.id, 10_000, 0).await?);
    assert!(
        !s.touch_api_key(k1.id, 20_000, 9_000).await?,
        "used at 10 000"
    );
    assert!(s.touch_api_key(k1.id, 80_000, 20_000).await?);
    assert_eq!(
        s.get_api_key(a.id, k1.id).await?.and_then(|k| k.last_used),
        Some(80_000)
    );
    assert_eq!(
        s.get_api_key(a.id, k2.id).await?.and_then(|k| k.last_used),
        None
    );

    // Deleting is scoped and final; a user's keys go with the user.
    assert!(!s.delete_api_key(b.id, k1.id).await?);
    assert!(s.delete_api_key(a.id, k1.id).await?);
    assert!(!s.delete_api_key(a.id, k1.id).await?);
    assert!(s.api_key_by_public("P1").await?.is_none());
    s.delete_user("a").await?;
    assert!(s.api_key_by_public("P2").await?.is_none());
    assert!(s.api_key_by_public("PB").await?.is_some());
    Ok(())
}

/// The domain's protocol over the engine: a retry waits for the first request, then replays its
/// answer (or says it is still in progress); another body is refused at once; a dropped claim frees
/// the key.
async fn idempotency_protocol_waits_replays_and_releases(s: Arc<dyn Store>) -> Result<()> {
    use satchel_domain::idempotency::{body_hash, request_hash, Begin, Config, Idempotency};
    let a = user(&s, "a").await?;
    let config = Config {
        wait: Duration::from_millis(300),
        ..Config::default()
    };
    let idem = Idempotency::with_config(s.clone(), config.clone());
    let (req, body) = (request_hash("POST", "/x?y=1"), body_hash(b"doc"));
    let Begin::Run(claim) = idem.begin(a.id, "k", &req, Some(&body)).await? else {
        panic!("the first request runs");
    };
    match idem.begin(a.id, "k", &req, Some(&body)).await {
        Err(DomainError::Conflict(m)) if m.contains("still in progress") => {}
        other => panic!("{other:?}"),
    }
    let t = Instant::now();
    for (r, b) in [
        (req.clone(), body_hash(b"other")),
        (request_hash("POST", "/x?y=2"), body.clone()),
    ] {
        match idem.begin(a.id, "k", &r, Some(&b)).await {
            Err(DomainError::Conflict(m)) if m.contains("different request") => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "refused without waiting"
    );

    // A retry arriving while the first runs gets the first answer once it is recorded.
    let waiter = tokio::spawn({
        let (s, config, req, body) = (s.clone(), config.clone(), req.clone(), body.clone());
        async move {
            Idempotency::with_config(s, config)
                .begin(a.id, "k", &req, Some(&body))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = Answer {
        status: 201,
        headers: vec![("location".into(), "/api/x/1".into())],
        body: b"<x/>".to_vec(),
    };
    assert!(claim.record(&body, &answer).await?);
    match waiter.await.expect("waiter") {
        Ok(Begin::Replay(got)) => assert_eq!(got, answer),
        other => panic!("{other:?}"),
    }
    // A streamed upload's retry is told which digest its body must have.
    let up = request_hash("POST", "/upload");
    let Begin::Run(claim) = idem.begin(a.id, "u", &up, None).await? else {
        panic!("the first upload runs");
    };
    assert!(claim.record("d1gest", &answer).await?);
    match idem.begin(a.id, "u", &up, None).await? {
        Begin::ReplayIfBody {
            body_hash,
            answer: got,
        } => {
            assert_eq!((body_hash.as_str(), got), ("d1gest", answer.clone()))
        }
        other => panic!("{other:?}"),
    }

    // Released, or dropped mid-request (a client gone): the key is free again.
    let Begin::Run(claim) = idem.begin(a.id, "r", &req, Some(&body)).await? else {
        panic!("runs");
    };
    claim.release().await;
    let Begin::Run(claim) = idem.begin(a.id, "r", &req, Some(&body)).await? else {
        panic!("runs again after a release");
    };
    drop(claim);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.get_idempotency_key(a.id, "r").await?.is_some() {
        assert!(Instant::now() < deadline, "a dropped claim is released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        idem.begin(a.id, "r", &req, Some(&body)).await?,
        Begin::Run(_)
    ));
    Ok(())
}

/// Many requests claiming one key at once (on PostgreSQL: on separate connections, as instances
/// would): exactly one holds it.
async fn idempotency_claim_race_has_one_winner(s: Arc<dyn Store>) -> Result<()> {
    const RACERS: usize = 32;
    let a = user(&s, "a").await?;
    let start = Arc::new(Barrier::new(RACERS));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..RACERS {
        let (s, start) = (s.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            let token = format!("t{n}");
            let c = idem_claim(a.id, "race", "R", Some("B"), &token, now_millis());
            Ok::<_, DomainError>(s.claim_idempotency_key(&c).await?.then_some(token))
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = tasks.join_next().await {
        winners.extend(r.expect("racer task")?);
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let r = s.get_idempotency_key(a.id, "race").await?.expect("record");
    assert_eq!(r.token, winners[0]);
    Ok(())
}

async fn concurrent_claims_take_each_job_once(s: Arc<dyn Store>) -> Result<()> {
    const JOBS: usize = 50;
    const CLAIMERS: usize = 8;
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let mut tickets = BTreeSet::new();
    for _ in 0..JOBS {
        tickets.insert(ticket(&s, a.id, &b).await?.id);
    }
    let start = Arc::new(Barrier::new(CLAIMERS));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..CLAIMERS {
        let (s, start) = (s.clone(), start.clone());
        tasks.spawn(async move {
            let owner = format!("claimer-{n}");
            start.wait().await;
            let mut got = Vec::new();
            while let Some(job) = s.claim_job(&owner, LONG).await? {
                // Hold on to the lease like a worker would while claiming more.
                assert!(s.heartbeat(job.id, &owner, LONG).await?);
                got.push(job);
            }
            Ok::<_, DomainError>(got)
        });
    }
    let mut all = Vec::new();
    let mut busy_claimers = 0;
    while let Some(r) = tasks.join_next().await {
        let got = r.expect("claimer task")?;
        busy_claimers += usize::from(!got.is_empty());
        all.extend(got);
    }
    assert_eq!(all.len(), JOBS, "every job claimed exactly once");
    let ids: HashSet<Id> = all.iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), JOBS, "no job claimed twice");
    let claimed: BTreeSet<Id> = all.iter().map(|j| j.ticket_id().unwrap()).collect();
    assert_eq!(claimed, tickets);
    assert!(all.iter().all(|j| j.attempts == 1));
    assert!(busy_claimers >= 1);
    assert!(s.claim_job("late", LONG).await?.is_none());
    Ok(())
}

async fn racing_finish_ticket_has_one_winner(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    for round in 0..20 {
        let t = ticket(&s, a.id, &b).await?;
        assert!(s.mark_running(t.id).await?);
        let start = Arc::new(Barrier::new(2));
        let racer = |outcome: Outcome| {
            let (s, start, id) = (s.clone(), start.clone(), t.id);
            tokio::spawn(async move {
                start.wait().await;
                s.finish_ticket(id, &outcome).await
            })
        };
        let done = racer(complete(&format!("arch-{round}"), 1));
        let fail = racer(failed("cancelled"));
        let done = done.await.expect("task")?;
        let fail = fail.await.expect("task")?;
        assert!(done ^ fail, "round {round}: complete={done} error={fail}");
        let expected = if done {
            TicketState::Complete
        } else {
            TicketState::Error
        };
        let got = s.get_ticket_any(t.id).await?.expect("ticket");
        assert_eq!(got.state, expected);
        // The loser changed nothing: no archive on an errored ticket, no error on a complete one.
        assert_eq!(got.archive.is_some(), done);
        assert_eq!(got.error_message.is_some(), fail);
    }
    Ok(())
}

// ---- cloud helpers

const T0: Millis = 1_700_000_000_000;

fn image(id: &str, owner: Id, name: &str, version: &str, public: bool) -> Image {
    Image {
        id: id.into(),
        owner_id: owner,
        name: name.into(),
        version: version.into(),
        os: "smartos".into(),
        kind: "zone-dataset".into(),
        description: None,
        state: ImageState::Unactivated,
        public,
        published_at: None,
        created: T0,
        file: None,
    }
}

fn image_file(key: &str) -> ImageFile {
    ImageFile {
        blob_key: key.into(),
        size: 1000 + key.len() as i64,
        sha1: format!("sha1-{key}"),
        md5: format!("md5-{key}"),
        compression: Compression::Gzip,
    }
}

/// A private, unactivated image of `owner` (named like its id) whose file is the blob `key`.
async fn image_with_file(c: &Arc<dyn CloudStore>, owner: Id, id: &str, key: &str) -> Result<()> {
    c.create_image(&image(id, owner, id, "1.0", false)).await?;
    assert_eq!(
        c.set_image_file(owner, id, &image_file(key)).await?,
        Some(None)
    );
    Ok(())
}

fn split(path: &str) -> (String, String) {
    let (parent, name) = path.rsplit_once('/').expect("a path below a parent");
    (parent.into(), name.into())
}

/// A directory entry exactly as `stor_mkdir` stores it.
fn dir(owner: Id, path: &str) -> StorEntry {
    let (parent, name) = split(path);
    StorEntry {
        owner_id: owner,
        path: path.into(),
        parent,
        name,
        kind: EntryKind::Directory,
        size: 0,
        md5: None,
        content_type: None,
        blob_key: None,
        etag: format!("etag-{path}"),
        mtime: T0,
    }
}

fn object(owner: Id, path: &str, key: &str) -> StorEntry {
    let (parent, name) = split(path);
    StorEntry {
        owner_id: owner,
        path: path.into(),
        parent,
        name,
        kind: EntryKind::Object,
        size: 10 * key.len() as i64,
        md5: Some(format!("md5-{key}")),
        content_type: Some("application/octet-stream".into()),
        blob_key: Some(key.into()),
        etag: format!("etag-{key}"),
        mtime: T0 + 1,
    }
}

fn done(replaced: Option<&str>) -> StorPut {
    StorPut::Done {
        replaced_blob: replaced.map(str::to_string),
    }
}

fn deleted(blob: Option<&str>) -> StorDelete {
    StorDelete::Deleted {
        blob: blob.map(str::to_string),
    }
}

fn names(entries: &[StorEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

fn export(id: &str, owner: Id, state: ExportState, created: Millis) -> ImageExport {
    ImageExport {
        id: id.into(),
        owner_id: owner,
        image_id: format!("img-{id}"),
        manta_path: format!("/someone/stor/{id}"),
        state,
        bytes_copied: 0,
        bytes_total: 0,
        image_path: None,
        manifest_path: None,
        error: None,
        created,
        modified: created,
    }
}

// ---- cloud: keys and images

async fn keys_are_scoped_by_owner(s: Arc<dyn Store>, c: Arc<dyn CloudStore>) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let before = now_millis();
    let laptop = c
        .add_key(a.id, "laptop", "aa:01", "ssh-ed25519 AAAA1 laptop")
        .await?;
    assert!(laptop.id > 0);
    assert_eq!(
        (
            laptop.owner_id,
            laptop.name.as_str(),
            laptop.fingerprint.as_str(),
            laptop.key.as_str()
        ),
        (a.id, "laptop", "aa:01", "ssh-ed25519 AAAA1 laptop")
    );
    assert!(laptop.created >= before && laptop.created <= now_millis());
    let desk = c
        .add_key(a.id, "desk", "aa:02", "ssh-ed25519 AAAA2 desk")
        .await?;
    match c.add_key(a.id, "laptop", "aa:03", "ssh-ed25519 X").await {
        Err(DomainError::Conflict(_)) => {}
        r => panic!("a duplicate key name gave {r:?}"),
    }
    match c.add_key(a.id, "other", "aa:01", "ssh-ed25519 X").await {
        Err(DomainError::Conflict(_)) => {}
        r => panic!("a duplicate fingerprint gave {r:?}"),
    }
    // Unique per owner only.
    let bobs = c
        .add_key(b.id, "laptop", "aa:01", "ssh-ed25519 BBBB bob")
        .await?;
    assert_eq!(bobs.owner_id, b.id);
    // By name in byte order, as SQLite sorts: upper case first.
    let zed = c
        .add_key(a.id, "Zed", "aa:04", "ssh-ed25519 AAAA4 Zed")
        .await?;
    assert_eq!(
        c.list_keys(a.id).await?,
        [zed.clone(), desk.clone(), laptop.clone()]
    );
    assert_eq!(c.list_keys(b.id).await?, std::slice::from_ref(&bobs));

    assert_eq!(c.get_key(a.id, "laptop").await?, Some(laptop.clone()));
    assert_eq!(c.get_key(a.id, "aa:02").await?, Some(desk.clone()));
    assert_eq!(c.get_key(b.id, "laptop").await?, Some(bobs.clone()));
    assert_eq!(c.get_key(b.id, "aa:01").await?, Some(bobs.clone()));
    assert_eq!(c.get_key(b.id, "desk").await?, None);
    assert_eq!(c.get_key(b.id, "aa:02").await?, None);
    assert_eq!(c.get_key(a.id, "nope").await?, None);

    // A name that is another key's fingerprint: the fingerprint match wins, for get and delete.
    let odd = c
        .add_key(a.id, "aa:02", "aa:05", "ssh-ed25519 AAAA5 odd")
        .await?;
    assert_eq!(c.get_key(a.id, "aa:02").await?, Some(desk.clone()));
    assert!(!c.delete_key(b.id, "desk").await?);
    assert!(c.delete_key(a.id, "aa:02").await?);
    assert_eq!(c.get_key(a.id, "aa:02").await?, Some(odd.clone()));
    assert_eq!(c.get_key(a.id, "desk").await?, None);
    assert!(c.delete_key(a.id, "laptop").await?);
    assert!(!c.delete_key(a.id, "laptop").await?);
    assert_eq!(c.list_keys(a.id).await?, [zed, odd]);
    assert_eq!(c.list_keys(b.id).await?, [bobs]);
    Ok(())
}

async fn images_lifecycle(s: Arc<dyn Store>, c: Arc<dyn CloudStore>) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let base2 = Image {
        description: Some("the base".into()),
        ..image("img-a1", a.id, "base", "2.0", false)
    };
    let base10 = image("img-a2", a.id, "base", "10.0", false);
    let public = Image {
        state: ImageState::Active,
        published_at: Some(T0 + 500),
        ..image("img-b1", b.id, "Pub", "1.0", true)
    };
    let private = image("img-b2", b.id, "zzz", "1.0", false);
    for i in [&base2, &base10, &public, &private] {
        c.create_image(i).await?;
    }
    match c
        .create_image(&image("img-a1", b.id, "dup", "1", false))
        .await
    {
        Err(DomainError::Conflict(_)) => {}
        r => panic!("a duplicate image id gave {r:?}"),
    }
    assert_eq!(c.get_image("img-a1").await?, Some(base2.clone()));
    assert_eq!(c.get_image("img-b1").await?, Some(public.clone()));
    assert_eq!(c.get_image("img-b2").await?, Some(private.clone()));
    assert_eq!(c.get_image("nope").await?, None);
    // Own images and everyone's public ones, by name then version, in byte order.
    assert_eq!(
        c.list_images(a.id).await?,
        [public.clone(), base10.clone(), base2.clone()]
    );
    assert_eq!(
        c.list_images(b.id).await?,
        [public.clone(), private.clone()]
    );

    // The file: only the owner's, only while unactivated; each replacement returns the old key.
    assert!(!c.activate_image(a.id, "img-a1", T0).await?, "no file yet");
    assert_eq!(
        c.set_image_file(b.id, "img-a1", &image_file("f1")).await?,
        None
    );
    assert_eq!(
        c.set_image_file(a.id, "nope", &image_file("f1")).await?,
        None
    );
    assert_eq!(
        c.set_image_file(a.id, "img-a1", &image_file("f1")).await?,
        Some(None)
    );
    assert_eq!(
        c.get_image("img-a1").await?.and_then(|i| i.file),
        Some(image_file("f1"))
    );
    assert_eq!(
        c.set_image_file(a.id, "img-a1", &image_file("f2")).await?,
        Some(Some("f1".into()))
    );
    let xz = ImageFile {
        compression: Compression::Xz,
        ..image_file("f10")
    };
    assert_eq!(c.set_image_file(a.id, "img-a2", &xz).await?, Some(None));
    assert_eq!(c.get_image("img-a2").await?.and_then(|i| i.file), Some(xz));

    assert!(!c.activate_image(b.id, "img-a1", T0 + 1000).await?);
    assert!(c.activate_image(a.id, "img-a1", T0 + 1000).await?);
    assert!(!c.activate_image(a.id, "img-a1", T0 + 2000).await?);
    let active = Image {
        state: ImageState::Active,
        published_at: Some(T0 + 1000),
        file: Some(image_file("f2")),
        ..base2.clone()
    };
    assert_eq!(c.get_image("img-a1").await?, Some(active.clone()));
    assert_eq!(
        c.set_image_file(a.id, "img-a1", &image_file("f3")).await?,
        None,
        "an active image's file is immutable"
    );
    assert_eq!(c.get_image("img-a1").await?, Some(active));

    // Deleting returns the file's key; another owner's image does not exist.
    assert_eq!(c.delete_image(b.id, "img-a1").await?, None);
    assert_eq!(
        c.delete_image(a.id, "img-a1").await?,
        Some(Some("f2".into()))
    );
    assert_eq!(c.get_image("img-a1").await?, None);
    assert_eq!(c.delete_image(a.id, "img-a1").await?, None);
    assert_eq!(c.delete_image(b.id, "img-b2").await?, Some(None), "no file");
    let left: Vec<String> = c
        .list_images(a.id)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, ["img-b1", "img-a2"]);
    Ok(())
}

// ---- cloud: the object namespace

async fn stor_namespace(s: Arc<dyn Store>, c: Arc<dyn CloudStore>) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let (d, sub, f) = ("/alice/stor/a", "/alice/stor/a/b", "/alice/stor/a/f");

    assert_eq!(
        c.stor_mkdir(&dir(a.id, sub), false).await?,
        StorMkdir::NoParent
    );
    assert_eq!(c.stor_get(a.id, sub).await?, None);
    assert_eq!(c.stor_mkdir(&dir(a.id, d), true).await?, StorMkdir::Created);
    assert_eq!(c.stor_mkdir(&dir(a.id, d), true).await?, StorMkdir::Existed);
    assert_eq!(c.stor_get(a.id, d).await?, Some(dir(a.id, d)));
    // Another owner's directory is nobody's parent but its owner's.
    assert_eq!(c.stor_get(b.id, d).await?, None);
    assert_eq!(
        c.stor_mkdir(&dir(b.id, "/alice/stor/a/x"), false).await?,
        StorMkdir::NoParent
    );
    assert_eq!(
        c.stor_put(&object(b.id, "/alice/stor/a/x", "bk"), false, None)
            .await?,
        StorPut::NoParent
    );

    assert_eq!(
        c.stor_mkdir(&dir(a.id, sub), false).await?,
        StorMkdir::Created
    );
    let f1 = object(a.id, f, "k1");
    assert_eq!(c.stor_put(&f1, false, None).await?, done(None));
    assert_eq!(c.stor_get(a.id, f).await?, Some(f1.clone()));
    assert_eq!(
        c.stor_mkdir(&dir(a.id, f), false).await?,
        StorMkdir::IsObject
    );
    assert_eq!(c.stor_get(a.id, f).await?, Some(f1.clone()));

    // The parent must exist, as a directory.
    assert_eq!(
        c.stor_put(&object(a.id, "/alice/stor/x/y", "k9"), false, None)
            .await?,
        StorPut::NoParent
    );
    assert_eq!(
        c.stor_put(&object(a.id, "/alice/stor/a/f/y", "k9"), false, None)
            .await?,
        StorPut::NoParent
    );
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/a/f/y"), false).await?,
        StorMkdir::NoParent
    );
    assert_eq!(c.stor_get(a.id, "/alice/stor/x/y").await?, None);
    assert_eq!(c.stor_get(a.id, "/alice/stor/a/f/y").await?, None);

    // A directory in the way stays.
    assert_eq!(
        c.stor_put(&object(a.id, d, "k9"), true, None).await?,
        StorPut::IsDirectory
    );
    assert_eq!(c.stor_get(a.id, d).await?, Some(dir(a.id, d)));

    // Replacing returns the old blob and stores the new entry whole.
    let f2 = StorEntry {
        content_type: Some("text/plain".into()),
        md5: None,
        ..object(a.id, f, "k2")
    };
    assert_eq!(c.stor_put(&f2, false, None).await?, done(Some("k1")));
    assert_eq!(c.stor_get(a.id, f).await?, Some(f2.clone()));
    // The same blob again: nothing to delete.
    let f2b = StorEntry {
        etag: "etag-again".into(),
        mtime: f2.mtime + 1,
        ..f2.clone()
    };
    assert_eq!(c.stor_put(&f2b, false, None).await?, done(None));
    assert_eq!(c.stor_get(a.id, f).await?, Some(f2b));

    let bobs = object(b.id, "/bob/stor/f", "bk");
    assert_eq!(c.stor_put(&bobs, true, None).await?, done(None));

    assert_eq!(c.stor_delete(a.id, d).await?, StorDelete::NotEmpty);
    assert_eq!(
        c.stor_delete(a.id, "/alice/stor/nope").await?,
        StorDelete::Missing
    );
    assert_eq!(c.stor_delete(b.id, f).await?, StorDelete::Missing);
    assert_eq!(c.stor_delete(a.id, sub).await?, deleted(None));
    assert_eq!(
        c.stor_delete(a.id, d).await?,
        StorDelete::NotEmpty,
        "f is left"
    );
    assert_eq!(c.stor_delete(a.id, f).await?, deleted(Some("k2")));
    assert_eq!(c.stor_delete(a.id, f).await?, StorDelete::Missing);
    assert_eq!(c.stor_delete(a.id, d).await?, deleted(None));
    assert_eq!(c.stor_get(a.id, d).await?, None);
    assert_eq!(
        c.stor_put(&object(a.id, "/alice/stor/a/g", "k3"), false, None)
            .await?,
        StorPut::NoParent
    );
    assert_eq!(c.stor_get(b.id, "/bob/stor/f").await?, Some(bobs));
    Ok(())
}

async fn stor_list_pages_by_name(s: Arc<dyn Store>, c: Arc<dyn CloudStore>) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let d = "/alice/stor/d";
    assert_eq!(c.stor_mkdir(&dir(a.id, d), true).await?, StorMkdir::Created);
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/e"), true).await?,
        StorMkdir::Created
    );
    assert_eq!(
        c.stor_put(&object(a.id, "/alice/stor/e/z", "kz"), false, None)
            .await?,
        done(None)
    );
    for name in ["f", "C", "a2", "a10"] {
        let o = object(a.id, &format!("{d}/{name}"), &format!("k{name}"));
        assert_eq!(c.stor_put(&o, false, None).await?, done(None));
    }
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/d/b"), false).await?,
        StorMkdir::Created
    );

    // Byte order (upper case first, "a10" before "a2"), as SQLite compares.
    let all = c.stor_list(a.id, d, None, 100).await?;
    assert_eq!(names(&all), ["C", "a10", "a2", "b", "f"]);
    assert_eq!(all[3], dir(a.id, "/alice/stor/d/b"));
    assert_eq!(all[4], object(a.id, "/alice/stor/d/f", "kf"));
    assert_eq!(names(&c.stor_list(a.id, d, None, 2).await?), ["C", "a10"]);
    assert_eq!(
        names(&c.stor_list(a.id, d, Some("a10"), 2).await?),
        ["a2", "b"]
    );
    assert_eq!(names(&c.stor_list(a.id, d, Some("b"), 2).await?), ["f"]);
    assert!(c.stor_list(a.id, d, Some("f"), 2).await?.is_empty());
    // The marker need not be an entry.
    assert_eq!(
        names(&c.stor_list(a.id, d, Some("a"), 100).await?),
        ["a10", "a2", "b", "f"]
    );
    // A negative limit is no limit on both engines (SQLite's LIMIT semantics).
    assert_eq!(c.stor_list(a.id, d, None, -1).await?, all);
    assert_eq!(
        names(&c.stor_list(a.id, "/alice/stor", None, 100).await?),
        ["d", "e"]
    );
    assert!(c
        .stor_list(a.id, "/alice/stor/d/b", None, 100)
        .await?
        .is_empty());
    assert!(c.stor_list(b.id, d, None, 100).await?.is_empty());
    Ok(())
}

// ---- cloud: blob reference counts

async fn shared_blob_is_returned_by_the_last_reference(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    let a = user(&s, "alice").await?;
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/e"), true).await?,
        StorMkdir::Created
    );

    // One image file linked into two objects: the image and the first object release nothing,
    // the last reference returns the blob.
    image_with_file(&c, a.id, "img-1", "shared").await?;
    let one = object(a.id, "/alice/stor/e/one", "shared");
    let two = object(a.id, "/alice/stor/e/two", "shared");
    assert_eq!(c.stor_put(&one, false, Some("img-1")).await?, done(None));
    assert_eq!(c.stor_put(&two, false, Some("img-1")).await?, done(None));
    assert_eq!(c.stor_get(a.id, &one.path).await?, Some(one.clone()));
    assert_eq!(c.delete_image(a.id, "img-1").await?, Some(None));
    assert_eq!(c.stor_delete(a.id, &one.path).await?, deleted(None));
    assert_eq!(
        c.stor_delete(a.id, &two.path).await?,
        deleted(Some("shared"))
    );

    // Overwriting a linked object: its old blob is still the image's file.
    image_with_file(&c, a.id, "img-2", "f2").await?;
    let three = "/alice/stor/e/three";
    assert_eq!(
        c.stor_put(&object(a.id, three, "f2"), false, Some("img-2"))
            .await?,
        done(None)
    );
    assert_eq!(
        c.stor_put(&object(a.id, three, "fresh"), false, None)
            .await?,
        done(None)
    );
    // Linking over an unshared blob returns that blob.
    assert_eq!(
        c.stor_put(&object(a.id, three, "f2"), false, Some("img-2"))
            .await?,
        done(Some("fresh"))
    );
    // Replacing the image's file while an object links it: nothing to delete yet...
    assert_eq!(
        c.set_image_file(a.id, "img-2", &image_file("f2b")).await?,
        Some(None)
    );
    // ...until the object goes.
    assert_eq!(c.stor_delete(a.id, three).await?, deleted(Some("f2")));
    // An unlinked file replaced is returned by set_image_file itself.
    assert_eq!(
        c.set_image_file(a.id, "img-2", &image_file("f2c")).await?,
        Some(Some("f2b".into()))
    );
    // Re-linking an object to the blob it already has deletes nothing.
    let four = object(a.id, "/alice/stor/e/four", "f2c");
    assert_eq!(c.stor_put(&four, false, Some("img-2")).await?, done(None));
    assert_eq!(c.stor_put(&four, false, Some("img-2")).await?, done(None));
    assert_eq!(c.delete_image(a.id, "img-2").await?, Some(None));
    assert_eq!(c.stor_delete(a.id, &four.path).await?, deleted(Some("f2c")));
    assert!(c
        .stor_list(a.id, "/alice/stor/e", None, 100)
        .await?
        .is_empty());
    Ok(())
}

async fn link_from_image_needs_the_image_to_hold_the_blob(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/e"), true).await?,
        StorMkdir::Created
    );
    let keep = object(a.id, "/alice/stor/e/keep", "kept");
    assert_eq!(c.stor_put(&keep, false, None).await?, done(None));

    // The image's file changed since the caller read it.
    image_with_file(&c, a.id, "img-1", "old").await?;
    assert_eq!(
        c.set_image_file(a.id, "img-1", &image_file("new")).await?,
        Some(Some("old".into()))
    );
    let stale = object(a.id, "/alice/stor/e/x", "old");
    assert_eq!(
        c.stor_put(&stale, false, Some("img-1")).await?,
        StorPut::SourceGone
    );
    assert_eq!(c.stor_get(a.id, &stale.path).await?, None);
    // Refused over an existing object, which stays as it was.
    assert_eq!(
        c.stor_put(&object(a.id, &keep.path, "old"), false, Some("img-1"))
            .await?,
        StorPut::SourceGone
    );
    assert_eq!(c.stor_get(a.id, &keep.path).await?, Some(keep.clone()));
    // The parent is checked first.
    assert_eq!(
        c.stor_put(
            &object(a.id, "/alice/stor/no/x", "old"),
            false,
            Some("img-1")
        )
        .await?,
        StorPut::NoParent
    );
    let fresh = object(a.id, "/alice/stor/e/x", "new");
    assert_eq!(c.stor_put(&fresh, false, Some("img-1")).await?, done(None));

    // The image is gone.
    assert_eq!(c.delete_image(a.id, "img-1").await?, Some(None));
    assert_eq!(
        c.stor_put(
            &object(a.id, "/alice/stor/e/y", "new"),
            false,
            Some("img-1")
        )
        .await?,
        StorPut::SourceGone
    );
    assert_eq!(c.stor_get(a.id, "/alice/stor/e/y").await?, None);

    // An image without a file, and another owner's image (even a public one), are no source.
    c.create_image(&image("img-empty", a.id, "empty", "1", false))
        .await?;
    assert_eq!(
        c.stor_put(
            &object(a.id, "/alice/stor/e/z", "none"),
            false,
            Some("img-empty")
        )
        .await?,
        StorPut::SourceGone
    );
    c.create_image(&image("img-b", b.id, "bobs", "1", true))
        .await?;
    assert_eq!(
        c.set_image_file(b.id, "img-b", &image_file("bob-blob"))
            .await?,
        Some(None)
    );
    assert_eq!(
        c.stor_put(
            &object(a.id, "/alice/stor/e/z", "bob-blob"),
            false,
            Some("img-b")
        )
        .await?,
        StorPut::SourceGone
    );
    assert_eq!(c.stor_get(a.id, "/alice/stor/e/z").await?, None);
    assert_eq!(
        c.stor_put(&object(a.id, "/alice/stor/e/z", "x"), false, Some("nope"))
            .await?,
        StorPut::SourceGone
    );
    assert_eq!(
        c.stor_delete(a.id, &fresh.path).await?,
        deleted(Some("new"))
    );
    Ok(())
}

async fn delete_user_returns_image_and_object_blobs(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let bun = bundle(&s, a.id, "app").await?;
    let art = s
        .create_artifact(bun.id, None, "f", &Default::default())
        .await?;
    s.set_artifact_blob(bun.id, art.id, &blob("art")).await?;
    image_with_file(&c, a.id, "img-a", "img-file").await?;
    image_with_file(&c, a.id, "img-a2", "img-file2").await?;
    c.create_image(&image("img-nofile", a.id, "n", "1", false))
        .await?;
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/e"), true).await?,
        StorMkdir::Created
    );
    for name in ["linked", "linked2"] {
        let o = object(a.id, &format!("/alice/stor/e/{name}"), "img-file");
        assert_eq!(c.stor_put(&o, false, Some("img-a")).await?, done(None));
    }
    assert_eq!(
        c.stor_put(&object(a.id, "/alice/stor/e/own", "obj"), false, None)
            .await?,
        done(None)
    );
    c.add_key(a.id, "k", "aa:01", "ssh-ed25519 A").await?;
    c.create_image_export(&export("exp-a", a.id, ExportState::Queued, T0), 3)
        .await?;
    image_with_file(&c, b.id, "img-b", "bob-file").await?;
    assert_eq!(
        c.stor_put(&object(b.id, "/bob/stor/o", "bob-obj"), true, None)
            .await?,
        done(None)
    );

    // Every blob once, though the image file is referenced three times.
    let keys = s.delete_user("alice").await?.expect("alice existed");
    assert_eq!(sorted(keys), ["art", "img-file", "img-file2", "obj"]);
    assert_eq!(c.get_image("img-a").await?, None);
    assert_eq!(c.get_image("img-nofile").await?, None);
    assert_eq!(c.stor_get(a.id, "/alice/stor/e").await?, None);
    assert_eq!(c.stor_get(a.id, "/alice/stor/e/own").await?, None);
    assert!(c.list_keys(a.id).await?.is_empty());
    assert_eq!(c.get_image_export(a.id, "exp-a").await?, None);
    assert_eq!(c.get_image_export_any("exp-a").await?, None);
    // Its job went with it.
    assert!(s.claim_job("w", Duration::from_secs(30)).await?.is_none());

    assert_eq!(
        c.list_images(b.id)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        ["img-b"]
    );
    let keys = s.delete_user("bob").await?.expect("bob existed");
    assert_eq!(sorted(keys), ["bob-file", "bob-obj"]);
    Ok(())
}

// ---- the orphan sweep's questions

async fn blob_references_live_tickets_and_upload_records(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let bun = bundle(&s, a.id, "app").await?;
    let art = s
        .create_artifact(bun.id, None, "f", &Default::default())
        .await?;
    s.set_artifact_blob(bun.id, art.id, &blob("art")).await?;
    s.put_attachment(bun.id, AttachmentKind::Logo, "logo.png", &blob("logo"))
        .await?;
    let finished = ticket(&s, a.id, &bun).await?;
    assert!(s.finish_ticket(finished.id, &complete("arch", T0)).await?);
    let old = ticket(&s, a.id, &bun).await?;
    assert!(s.finish_ticket(old.id, &complete("old-arch", T0)).await?);
    assert!(s.mark_expired(old.id).await?);
    let errored = ticket(&s, a.id, &bun).await?;
    assert!(s.finish_ticket(errored.id, &failed("boom")).await?);
    let queued = ticket(&s, a.id, &bun).await?;
    let running = ticket(&s, a.id, &bun).await?;
    assert!(s.mark_running(running.id).await?);
    let t = s.create_template(a.id, bun.id, None).await?;
    let img = image_ticket(&s, a.id, &bun, t.id, true).await?;
    image_with_file(&c, b.id, "img-b", "img-file").await?;
    assert_eq!(
        c.stor_put(&object(b.id, "/bob/stor/o", "obj"), true, None)
            .await?,
        done(None)
    );
    let deleted = ticket(&s, a.id, &bun).await?;
    assert!(
        s.finish_ticket(deleted.id, &complete("gone-arch", T0))
            .await?
    );
    assert!(s.delete_ticket(a.id, deleted.id).await?.is_some());

    // Referenced: files, attachments, complete archives, image files, objects; across users.
    let ask: Vec<String> = [
        "art",
        "logo",
        "arch",
        "old-arch",
        "gone-arch",
        "img-file",
        "obj",
        "nothing",
        "art",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    let got: BTreeSet<String> = s.referenced_blobs(&ask).await?.into_iter().collect();
    assert_eq!(
        got.iter().map(String::as_str).collect::<Vec<_>>(),
        ["arch", "art", "img-file", "logo", "obj"]
    );
    assert!(s.referenced_blobs(&[]).await?.is_empty());
    // More keys than one statement takes.
    let mut many: Vec<String> = (0..1203).map(|i| format!("u/1/files/{i}")).collect();
    many.push("obj".into());
    many.insert(0, "art".into());
    let got = s.referenced_blobs(&many).await?;
    assert_eq!(got.len(), 2);
    assert!(got.contains("art") && got.contains("obj"));

    // Live: queued and running tickets of every kind, nothing finished.
    let live: Vec<Id> = s.live_tickets().await?.into_iter().map(|t| t.id).collect();
    assert_eq!(live, [queued.id, running.id, img.id]);
    let _ = errored;

    // Upload records: stale by their last touch, oldest first; forgetting is idempotent.
    s.record_upload("k1", "u1", 100).await?;
    s.record_upload("k2", "u2", 200).await?;
    s.record_upload("k1", "u3", 400).await?;
    s.touch_upload("k1", "u1", 300).await?;
    let stale = |v: Vec<satchel_domain::ports::PendingUpload>| {
        v.into_iter()
            .map(|u| (u.key, u.upload_id, u.touched))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stale(s.stale_uploads(250, 10).await?),
        [("k2".to_string(), "u2".to_string(), 200)]
    );
    assert_eq!(
        stale(s.stale_uploads(300, 10).await?),
        [
            ("k2".to_string(), "u2".to_string(), 200),
            ("k1".to_string(), "u1".to_string(), 300)
        ]
    );
    assert_eq!(stale(s.stale_uploads(1000, 1).await?).len(), 1);
    s.forget_upload("k2", "u2").await?;
    s.forget_upload("k2", "u2").await?;
    s.forget_upload("k1", "u1").await?;
    assert_eq!(
        stale(s.stale_uploads(1000, 10).await?),
        [("k1".to_string(), "u3".to_string(), 400)]
    );
    // Recording again (a retried begin) only refreshes it.
    s.record_upload("k1", "u3", 500).await?;
    assert_eq!(s.stale_uploads(450, 10).await?, []);
    Ok(())
}

// ---- cloud: image exports

async fn image_exports(s: Arc<dyn Store>, c: Arc<dyn CloudStore>) -> Result<()> {
    let a = user(&s, "alice").await?;
    let b = user(&s, "bob").await?;
    let e1 = export("e1", a.id, ExportState::Queued, T0 + 20);
    let e2 = export("e2", a.id, ExportState::Running, T0 + 30);
    let e3 = export("e3", b.id, ExportState::Complete, T0 + 10);
    let e4 = export("e4", b.id, ExportState::Queued, T0 + 5);
    for e in [&e1, &e2, &e3, &e4] {
        c.create_image_export(e, 3).await?;
    }
    match c.create_image_export(&e1, 3).await {
        Err(DomainError::Conflict(_)) => {}
        r => panic!("a duplicate export id gave {r:?}"),
    }
    // Each export is a job on the queue (the refused duplicate added none), for its owner.
    let mut jobs = BTreeSet::new();
    while let Some(j) = s.claim_job("w", Duration::from_secs(30)).await? {
        assert_eq!(j.kind, JOB_IMAGE_EXPORT);
        assert_eq!(j.ticket_id(), None);
        assert_eq!(j.max_attempts, 3);
        let JobSubject::ImageExport(id) = j.subject else {
            panic!("an image export job without its export: {j:?}");
        };
        jobs.insert((id, j.owner_id));
    }
    assert_eq!(
        jobs,
        BTreeSet::from([
            ("e1".to_string(), a.id),
            ("e2".to_string(), a.id),
            ("e3".to_string(), b.id),
            ("e4".to_string(), b.id),
        ])
    );
    assert_eq!(c.get_image_export_any("e3").await?, Some(e3.clone()));
    assert_eq!(c.get_image_export_any("nope").await?, None);
    assert_eq!(c.get_image_export(a.id, "e1").await?, Some(e1.clone()));
    assert_eq!(c.get_image_export(b.id, "e1").await?, None);
    assert_eq!(c.get_image_export(b.id, "e3").await?, Some(e3.clone()));
    assert_eq!(c.get_image_export(a.id, "nope").await?, None);

    let e1r = ImageExport {
        state: ExportState::Running,
        bytes_copied: 512,
        bytes_total: 4096,
        modified: T0 + 25,
        ..e1.clone()
    };
    c.update_image_export(&e1r).await?;
    assert_eq!(c.get_image_export(a.id, "e1").await?, Some(e1r.clone()));
    let e2c = ImageExport {
        state: ExportState::Complete,
        bytes_copied: 4096,
        bytes_total: 4096,
        image_path: Some("/alice/stor/img.zfs.gz".into()),
        manifest_path: Some("/alice/stor/img.imgmanifest".into()),
        modified: T0 + 40,
        ..e2.clone()
    };
    c.update_image_export(&e2c).await?;
    assert_eq!(c.get_image_export(a.id, "e2").await?, Some(e2c));
    let e4x = ImageExport {
        state: ExportState::Error,
        error: Some("image deleted".into()),
        modified: T0 + 50,
        ..e4.clone()
    };
    c.update_image_export(&e4x).await?;
    assert_eq!(c.get_image_export(b.id, "e4").await?, Some(e4x));
    assert_eq!(c.get_image_export_any("e1").await?, Some(e1r));
    Ok(())
}

// ---- cloud: concurrency

/// Each image is deleted while two objects link its file. Whatever the interleaving, a blob handed
/// back for deletion is referenced by no object afterwards, and a blob not handed back is still
/// referenced (else it would leak): exactly when no link got in.
async fn concurrent_delete_image_and_links_never_orphan_a_link(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    const IMAGES: usize = 24;
    enum Op {
        Delete(usize, Option<Option<String>>),
        Link(usize, String, StorPut),
    }
    let a = user(&s, "alice").await?;
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/race"), true).await?,
        StorMkdir::Created
    );
    for i in 0..IMAGES {
        image_with_file(&c, a.id, &format!("img-{i}"), &format!("blob-{i}")).await?;
    }
    let start = Arc::new(Barrier::new(IMAGES * 3));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..IMAGES {
        let (c2, start2) = (c.clone(), start.clone());
        tasks.spawn(async move {
            start2.wait().await;
            Ok::<_, DomainError>(Op::Delete(
                i,
                c2.delete_image(a.id, &format!("img-{i}")).await?,
            ))
        });
        for link in ["x", "y"] {
            let (c2, start2) = (c.clone(), start.clone());
            tasks.spawn(async move {
                start2.wait().await;
                let e = object(
                    a.id,
                    &format!("/alice/stor/race/{i}-{link}"),
                    &format!("blob-{i}"),
                );
                let put = c2.stor_put(&e, false, Some(&format!("img-{i}"))).await?;
                Ok(Op::Link(i, e.path, put))
            });
        }
    }
    let mut returned: Vec<Option<Option<String>>> = vec![None; IMAGES];
    let mut linked: Vec<Vec<String>> = vec![Vec::new(); IMAGES];
    while let Some(r) = tasks.join_next().await {
        match r.expect("task")? {
            Op::Delete(i, got) => returned[i] = Some(got.expect("the image existed")),
            Op::Link(i, path, put) => match put {
                StorPut::Done {
                    replaced_blob: None,
                } => linked[i].push(path),
                StorPut::SourceGone => {
                    assert_eq!(c.stor_get(a.id, &path).await?, None, "{path}")
                }
                other => panic!("{path}: {other:?}"),
            },
        }
    }
    let mut lost_the_race = 0;
    for i in 0..IMAGES {
        let key = format!("blob-{i}");
        let returned = returned[i].clone().expect("delete ran");
        if returned.is_some() {
            lost_the_race += 1;
        }
        assert_eq!(
            returned,
            linked[i].is_empty().then(|| key.clone()),
            "image {i}: links {:?}",
            linked[i]
        );
        for path in &linked[i] {
            let got = c.stor_get(a.id, path).await?.expect("linked object");
            assert_eq!(got.blob_key.as_deref(), Some(key.as_str()));
        }
        // The links release the blob exactly once, with the last of them.
        let n = linked[i].len();
        for (k, path) in linked[i].iter().enumerate() {
            let want = (k + 1 == n).then_some(key.as_str());
            assert_eq!(c.stor_delete(a.id, path).await?, deleted(want));
        }
    }
    eprintln!("{lost_the_race} of {IMAGES} images were deleted before any link");
    assert!(c
        .stor_list(a.id, "/alice/stor/race", None, 1000)
        .await?
        .is_empty());
    Ok(())
}

/// The last two references to a blob removed at once: exactly one of the deletes returns it. Rounds
/// run one after another, each pair released together, so the two deletes overlap as much as
/// possible.
async fn concurrent_object_deletes_return_the_shared_blob_once(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    const ROUNDS: usize = 40;
    let a = user(&s, "alice").await?;
    assert_eq!(
        c.stor_mkdir(&dir(a.id, "/alice/stor/race"), true).await?,
        StorMkdir::Created
    );
    for r in 0..ROUNDS {
        let (img, key) = (format!("img-{r}"), format!("blob-{r}"));
        image_with_file(&c, a.id, &img, &key).await?;
        for link in ["x", "y"] {
            let o = object(a.id, &format!("/alice/stor/race/{r}-{link}"), &key);
            assert_eq!(c.stor_put(&o, false, Some(&img)).await?, done(None));
        }
        assert_eq!(c.delete_image(a.id, &img).await?, Some(None));

        let start = Arc::new(Barrier::new(2));
        let racer = |link: &str| {
            let (c, start, path) = (
                c.clone(),
                start.clone(),
                format!("/alice/stor/race/{r}-{link}"),
            );
            tokio::spawn(async move {
                start.wait().await;
                c.stor_delete(a.id, &path).await
            })
        };
        let (x, y) = (racer("x"), racer("y"));
        let mut released = Vec::new();
        for got in [x.await.expect("task")?, y.await.expect("task")?] {
            match got {
                StorDelete::Deleted { blob } => released.extend(blob),
                other => panic!("round {r}: {other:?}"),
            }
        }
        assert_eq!(released, [key], "round {r}");
    }
    Ok(())
}

/// mkdir twice, write a child and delete the directory, all at once: either the delete came first
/// (everything else finds no parent) or it found the directory not empty, and the racing mkdirs
/// report Created and Existed, never a unique violation.
async fn concurrent_mkdir_put_and_delete_keep_the_tree(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    const ROUNDS: usize = 16;
    enum Op {
        Mkdir(usize, StorMkdir),
        Put(usize, StorPut),
        Delete(usize, StorDelete),
    }
    let a = user(&s, "alice").await?;
    for r in 0..ROUNDS {
        assert_eq!(
            c.stor_mkdir(&dir(a.id, &format!("/alice/stor/t{r}")), true)
                .await?,
            StorMkdir::Created
        );
    }
    let start = Arc::new(Barrier::new(ROUNDS * 4));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..ROUNDS {
        let top = format!("/alice/stor/t{r}");
        for _ in 0..2 {
            let (c2, start2, sub) = (c.clone(), start.clone(), format!("{top}/sub"));
            tasks.spawn(async move {
                start2.wait().await;
                Ok::<_, DomainError>(Op::Mkdir(r, c2.stor_mkdir(&dir(a.id, &sub), false).await?))
            });
        }
        let (c2, start2, obj) = (c.clone(), start.clone(), format!("{top}/obj"));
        tasks.spawn(async move {
            start2.wait().await;
            let e = object(a.id, &obj, &format!("k{r}"));
            Ok(Op::Put(r, c2.stor_put(&e, false, None).await?))
        });
        let (c2, start2, top) = (c.clone(), start.clone(), top.clone());
        tasks.spawn(async move {
            start2.wait().await;
            Ok(Op::Delete(r, c2.stor_delete(a.id, &top).await?))
        });
    }
    let mut mkdirs: Vec<Vec<StorMkdir>> = vec![Vec::new(); ROUNDS];
    let mut puts: Vec<Option<StorPut>> = vec![None; ROUNDS];
    let mut deletes: Vec<Option<StorDelete>> = vec![None; ROUNDS];
    while let Some(res) = tasks.join_next().await {
        match res.expect("task")? {
            Op::Mkdir(r, m) => mkdirs[r].push(m),
            Op::Put(r, p) => puts[r] = Some(p),
            Op::Delete(r, d) => deletes[r] = Some(d),
        }
    }
    for r in 0..ROUNDS {
        let top = format!("/alice/stor/t{r}");
        let children = names(&c.stor_list(a.id, &top, None, 100).await?)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        match deletes[r].clone().expect("delete ran") {
            StorDelete::Deleted { blob: None } => {
                assert_eq!(mkdirs[r], [StorMkdir::NoParent, StorMkdir::NoParent]);
                assert_eq!(puts[r], Some(StorPut::NoParent));
                assert_eq!(c.stor_get(a.id, &top).await?, None);
                assert!(children.is_empty(), "round {r}: orphans {children:?}");
            }
            StorDelete::NotEmpty => {
                let mut m = mkdirs[r].clone();
                m.sort_by_key(|m| matches!(m, StorMkdir::Existed));
                assert_eq!(m, [StorMkdir::Created, StorMkdir::Existed], "round {r}");
                assert_eq!(puts[r], Some(done(None)), "round {r}");
                assert_eq!(children, ["obj", "sub"], "round {r}");
            }
            other => panic!("round {r}: {other:?}"),
        }
    }
    Ok(())
}

/// delete_user while the user's objects are being overwritten: every blob a write stored is handed
/// back exactly once, either by the write that replaced it or by delete_user; writes after the
/// delete fail; and nothing deadlocks (delete_user takes the cloud writers' lock before the user row).
async fn delete_user_racing_object_writes_accounts_for_every_blob(
    s: Arc<dyn Store>,
    c: Arc<dyn CloudStore>,
) -> Result<()> {
    const WRITERS: usize = 8;
    const VERSIONS: usize = 30;
    let a = user(&s, "alice").await?;
    let start = Arc::new(Barrier::new(WRITERS + 1));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (c, start) = (c.clone(), start.clone());
        writers.spawn(async move {
            start.wait().await;
            let (mut stored, mut released) = (Vec::new(), Vec::new());
            for v in 0..VERSIONS {
                let key = format!("k{w}-{v}");
                match c
                    .stor_put(
                        &object(a.id, &format!("/alice/stor/o{w}"), &key),
                        true,
                        None,
                    )
                    .await
                {
                    Ok(StorPut::Done { replaced_blob }) => {
                        stored.push(key);
                        released.extend(replaced_blob);
                    }
                    // The owner is gone: the insert fails its foreign key (NotFound, not a 500).
                    Err(DomainError::NotFound(_)) => break,
                    other => panic!("writer {w}: {other:?}"),
                }
            }
            (stored, released)
        });
    }
    start.wait().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut returned = s.delete_user("alice").await?.expect("alice existed");
    let (mut stored, mut released) = (Vec::new(), Vec::new());
    while let Some(r) = writers.join_next().await {
        let (st, rel) = r.expect("writer");
        stored.extend(st);
        released.extend(rel);
    }
    returned.extend(released);
    assert_eq!(sorted(returned), sorted(stored));
    assert!(c
        .stor_list(a.id, "/alice/stor", None, 100)
        .await?
        .is_empty());
    Ok(())
}

// ---- engine-specific: waking idle workers

/// SQLite has no cross-process signal: the default wait just sleeps the timeout.
#[tokio::test]
async fn sqlite_wait_for_jobs_polls() -> Result<()> {
    let e = sqlite().await;
    let s = e.store.clone();
    let a = user(&s, "a").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t = Instant::now();
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for_jobs(Duration::from_millis(300)).await })
    };
    ticket(&s, a.id, &b).await?;
    assert!(!waiter.await.expect("waiter"));
    assert!(t.elapsed() >= Duration::from_millis(300));
    Ok(())
}

/// Two stores on one database stand for two instances: B's wait ends as soon as A enqueues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wait_for_jobs_wakes_on_enqueue_by_another_instance() -> Result<()> {
    let db = satchel_testkit::test_database()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (a, b) = (
        PostgresStore::connect(&db.url).await?,
        PostgresStore::connect(&db.url).await?,
    );
    // Listen up front (as a server would at start) so no NOTIFY can precede the LISTEN.
    a.listen().await?;
    b.listen().await?;
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(a), Arc::new(b));

    // Nothing enqueued: the wait runs its full timeout.
    let t = Instant::now();
    assert!(!b.wait_for_jobs(Duration::from_millis(300)).await);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let wait = |s: Arc<dyn Store>| {
        tokio::spawn(async move {
            let r = s.wait_for_jobs(Duration::from_secs(10)).await;
            (r, Instant::now())
        })
    };
    let u = user(&a, "a").await?;
    let bundle = bundle(&a, u.id, "app").await?;
    let waiter = wait(b.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let enqueued = Instant::now();
    let t = ticket(&a, u.id, &bundle).await?;
    let (woken, at) = waiter.await.expect("waiter");
    assert!(woken, "timed out instead of being notified");
    let latency = at.duration_since(enqueued);
    assert!(latency < Duration::from_secs(1), "woke after {latency:?}");
    let job = b.claim_job("B", LONG).await?.expect("the new job");
    assert_eq!(job.ticket_id().unwrap(), t.id);

    // A job given back for an immediate retry wakes the other instance too. (Drain the spare
    // wake-up A kept from its own enqueue, see `wake_all` in postgres.rs.)
    assert!(a.wait_for_jobs(Duration::from_millis(50)).await);
    let waiter = wait(a.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let retried = Instant::now();
    b.retry_job(job.id, "B", "moved", Duration::ZERO).await?;
    let (woken, at) = waiter.await.expect("waiter");
    assert!(woken);
    assert!(at.duration_since(retried) < Duration::from_secs(1));
    Ok(())
}

/// End to end through the job runtime: a worker pool on instance B, idle with a 30 s poll, runs a
/// job enqueued on instance A within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_idle_worker_on_another_instance_starts_promptly() -> Result<()> {
    struct Record(tokio::sync::mpsc::UnboundedSender<(Id, Instant)>);
    #[async_trait::async_trait]
    impl JobHandler for Record {
        async fn run(&self, job: &Job, _: tokio_util::sync::CancellationToken) -> Result<()> {
            let _ = self.0.send((job.ticket_id().unwrap(), Instant::now()));
            Ok(())
        }
        async fn give_up(&self, _: &Job, _: &str) -> Result<()> {
            Ok(())
        }
    }

    let db = satchel_testkit::test_database()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).await?);
    let b = PostgresStore::connect(&db.url).await?;
    b.listen().await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pool = satchel_jobs::WorkerPool::start(
        Arc::new(b),
        Arc::new(Record(tx)),
        satchel_jobs::PoolConfig {
            workers: 2,
            idle_poll: Duration::from_secs(30),
            ..Default::default()
        },
    );
    // Let both workers find the queue empty and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let u = user(&a, "a").await?;
    let bundle = bundle(&a, u.id, "app").await?;
    let enqueued = Instant::now();
    let t = ticket(&a, u.id, &bundle).await?;
    let (ran, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the idle worker never ran the job")
        .expect("handler channel");
    assert_eq!(ran, t.id);
    let latency = at.duration_since(enqueued);
    assert!(
        latency < Duration::from_secs(1),
        "started after {latency:?}"
    );
    pool.shutdown().await;
    Ok(())
}

/// The expiry sweep runs on one instance per period: claims by two instances on one database, one
/// winner until the period is over, then the next claim wins again.
#[tokio::test]
async fn postgres_periodic_claims_have_one_holder_per_period() -> Result<()> {
    let db = satchel_testkit::test_database()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (
        Arc::new(PostgresStore::connect(&db.url).await?),
        Arc::new(PostgresStore::connect(&db.url).await?),
    );
    let period = Duration::from_millis(400);
    assert!(a.claim_periodic("sweep", "a", period).await?);
    assert!(!b.claim_periodic("sweep", "b", period).await?);
    assert!(
        !a.claim_periodic("sweep", "a", period).await?,
        "not twice in one period"
    );
    // Another task name is independent.
    assert!(b.claim_periodic("other", "b", period).await?);
    tokio::time::sleep(period + Duration::from_millis(100)).await;
    // Racing claims after expiry: exactly one wins.
    let (x, y) = tokio::join!(
        a.claim_periodic("sweep", "a", period),
        b.claim_periodic("sweep", "b", period)
    );
    assert!(x? ^ y?, "exactly one instance wins a period");
    Ok(())
}

#[tokio::test]
async fn sqlite_periodic_claims_always_succeed() -> Result<()> {
    let e = sqlite().await;
    assert!(
        e.store
            .claim_periodic("sweep", "a", Duration::from_secs(60))
            .await?
    );
    assert!(
        e.store
            .claim_periodic("sweep", "a", Duration::from_secs(60))
            .await?
    );
    Ok(())
}

/// A handler that panics costs an attempt, not a worker: the job is retried, then given up, and no
/// lease is left renewed by an orphaned heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_then_given_up() -> Result<()> {
    struct Panics(
        tokio::sync::mpsc::UnboundedSender<(Id, String)>,
        std::sync::atomic::AtomicUsize,
    );
    #[async_trait::async_trait]
    impl JobHandler for Panics {
        async fn run(&self, _: &Job, _: tokio_util::sync::CancellationToken) -> Result<()> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("handler bug");
        }
        async fn give_up(&self, job: &Job, why: &str) -> Result<()> {
            let _ = self.0.send((job.ticket_id().unwrap(), why.to_string()));
            Ok(())
        }
    }
    let e = sqlite().await;
    let s = e.store.clone();
    let u = user(&s, "a").await?;
    let b = bundle(&s, u.id, "app").await?;
    let t = ticket(&s, u.id, &b).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = Arc::new(Panics(tx, std::sync::atomic::AtomicUsize::new(0)));
    let pool = satchel_jobs::WorkerPool::start(
        s.clone(),
        handler.clone(),
        satchel_jobs::PoolConfig {
            workers: 1,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_millis(50),
            idle_poll: Duration::from_millis(20),
            retry_backoff: Duration::from_millis(10),
            ..Default::default()
        },
    );
    let (ticket_id, why) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the job was never given up (a dead worker or a stuck lease)")
        .expect("channel");
    assert_eq!(ticket_id, t.id);
    assert!(why.contains("panicked"), "{why}");
    let runs = handler.1.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(runs, 3, "max_attempts runs, each one counted");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        s.claim_job("other", Duration::from_secs(1))
            .await?
            .is_none(),
        "job removed"
    );
    pool.shutdown().await;
    Ok(())
}

// ---- one-time download keys, on both engines

macro_rules! keys_suite {
    ($($name:ident),+ $(,)?) => {
        mod keys_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> satchel_domain::Result<()> {
                    let e = super::sqlite().await;
                    let k = e.keys.clone();
                    super::$name(e.store.clone(), vec![k]).await
                }
            )+
        }
        mod keys_postgres {
            $(
                /// Two store instances on one database stand for two Satchel instances.
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> satchel_domain::Result<()> {
                    let e = super::postgres().await;
                    let url = e.url.clone().expect("postgres url");
                    let other: std::sync::Arc<dyn satchel_domain::ports::OneTimeKeys> = std::sync::Arc::new(
                        satchel_store::postgres::PostgresStore::connect(&url).await?,
                    );
                    super::$name(e.store.clone(), vec![e.keys.clone(), other]).await
                }
            )+
        }
    };
}

keys_suite!(one_time_keys_lifecycle, one_time_key_race_has_one_winner);

async fn one_time_keys_lifecycle(s: Arc<dyn Store>, k: Vec<Arc<dyn OneTimeKeys>>) -> Result<()> {
    let u = user(&s, "alice").await?;
    let now = now_millis();
    let (a, b) = (&k[0], k.last().unwrap_or(&k[0]));
    a.issue_key("h1", u.id, "image:1", now + 60_000).await?;
    // A check reports without consuming, as consume_key would judge it.
    assert_eq!(b.check_key("h1", "image:2", now).await?, KeyUse::Unknown);
    assert_eq!(
        b.check_key("h1", "image:1", now).await?,
        KeyUse::Usable { owner_id: u.id }
    );
    assert_eq!(
        a.check_key("h1", "image:1", now + 60_000).await?,
        KeyUse::Expired
    );
    assert_eq!(a.check_key("nope", "image:1", now).await?, KeyUse::Unknown);
    // The wrong resource neither consumes it nor reveals it exists.
    assert_eq!(b.consume_key("h1", "image:2", now).await?, KeyUse::Unknown);
    assert_eq!(
        b.consume_key("h1", "image:1", now).await?,
        KeyUse::Consumed { owner_id: u.id }
    );
    assert_eq!(
        a.consume_key("h1", "image:1", now).await?,
        KeyUse::AlreadyUsed
    );
    assert_eq!(
        b.check_key("h1", "image:1", now).await?,
        KeyUse::AlreadyUsed
    );
    assert_eq!(
        a.consume_key("nope", "image:1", now).await?,
        KeyUse::Unknown
    );
    // Expiry is judged at the consuming request's time.
    a.issue_key("h2", u.id, "image:1", now + 1_000).await?;
    assert_eq!(
        b.consume_key("h2", "image:1", now + 1_000).await?,
        KeyUse::Expired
    );
    assert_eq!(
        b.consume_key("h2", "image:1", now + 999).await?,
        KeyUse::Consumed { owner_id: u.id }
    );
    // Hashes are unique.
    assert!(matches!(
        a.issue_key("h1", u.id, "image:9", now + 60_000).await,
        Err(DomainError::Conflict(_))
    ));
    // Housekeeping drops expired keys only.
    a.issue_key("h3", u.id, "image:1", now + 500).await?;
    a.issue_key("h4", u.id, "image:1", now + 90_000).await?;
    assert_eq!(a.purge_keys(now + 60_001).await?, 3);
    assert_eq!(b.consume_key("h3", "image:1", now).await?, KeyUse::Unknown);
    assert_eq!(
        b.consume_key("h4", "image:1", now).await?,
        KeyUse::Consumed { owner_id: u.id }
    );
    Ok(())
}

/// 100 parallel consumers of one key (spread over every instance given): exactly one wins.
async fn one_time_key_race_has_one_winner(
    s: Arc<dyn Store>,
    k: Vec<Arc<dyn OneTimeKeys>>,
) -> Result<()> {
    let u = user(&s, "alice").await?;
    for round in 0..3 {
        let hash = format!("race-{round}");
        k[0].issue_key(&hash, u.id, "image:7", now_millis() + 60_000)
            .await?;
        let barrier = Arc::new(Barrier::new(100));
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (keys, barrier, hash) = (k[i % k.len()].clone(), barrier.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                keys.consume_key(&hash, "image:7", now_millis()).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.expect("task")? {
                KeyUse::Consumed { owner_id } => {
                    assert_eq!(owner_id, u.id);
                    won += 1;
                }
                KeyUse::AlreadyUsed => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(won, 1, "round {round}: exactly one of 100 consumers wins");
    }
    Ok(())
}

// ---- appliance templates

fn new_appliance(name: &str) -> NewAppliance {
    NewAppliance {
        name: name.into(),
        version: "1.0".into(),
        description: Some("an appliance".into()),
        distribution: Some(DistributionRef {
            name: "CentOS".into(),
            version: "7".into(),
            arch: "x86_64".into(),
        }),
        imported: false,
    }
}

fn script(name: &str, order: i64, kind: BootType) -> NewBootScript {
    NewBootScript {
        name: name.into(),
        order,
        kind,
    }
}

fn pkg(name: &str, version: Option<&str>) -> OsPackage {
    OsPackage {
        name: name.into(),
        version: version.map(str::to_string),
        arch: Some("x86_64".into()),
    }
}

fn ids(bundles: &[Bundle]) -> Vec<Id> {
    bundles.iter().map(|b| b.id).collect()
}

async fn appliances_are_scoped_and_hold_their_parts(s: Arc<dyn Store>) -> Result<()> {
    let alice = user(&s, "alice").await?;
    let bob = user(&s, "bob").await?;
    let (b1, b2, b3) = (
        bundle(&s, alice.id, "one").await?,
        bundle(&s, alice.id, "two").await?,
        bundle(&s, alice.id, "three").await?,
    );
    let bobs = bundle(&s, bob.id, "bobs").await?;
    let a = s.create_appliance(alice.id, &new_appliance("web")).await?;
    assert_eq!(a.name, "web");
    assert_eq!(
        a.distribution.as_ref().map(|d| d.arch.as_str()),
        Some("x86_64")
    );

    // Scoped by owner: bob sees nothing of alice's.
    assert!(s.get_appliance(bob.id, a.id).await?.is_none());
    assert!(s.appliance_parts(bob.id, a.id).await?.is_none());
    assert!(s.list_appliances(bob.id).await?.is_empty());
    assert!(s
        .update_appliance(bob.id, a.id, &ApplianceInput::default())
        .await?
        .is_none());
    assert!(s.delete_appliance(bob.id, a.id).await?.is_none());
    assert_eq!(
        s.find_appliance(alice.id, "web", "1.0")
            .await?
            .map(|x| x.id),
        Some(a.id)
    );
    assert!(s.find_appliance(alice.id, "web", "2.0").await?.is_none());
    assert!(s.find_appliance(bob.id, "web", "1.0").await?.is_none());

    let up = s
        .update_appliance(
            alice.id,
            a.id,
            &ApplianceInput {
                version: Some("1.1".into()),
                ..Default::default()
            },
        )
        .await?
        .expect("updated");
    assert_eq!((up.name.as_str(), up.version.as_str()), ("web", "1.1"));
    assert_eq!(up.description.as_deref(), Some("an appliance"));

    // Bundles: ordered, repeated ids once, another user's bundle is not found (and changes nothing).
    s.set_appliance_bundles(alice.id, a.id, &[b2.id, b1.id, b2.id])
        .await?;
    let parts = s.appliance_parts(alice.id, a.id).await?.expect("parts");
    assert_eq!(ids(&parts.bundles), [b2.id, b1.id]);
    let e = s
        .set_appliance_bundles(alice.id, a.id, &[b3.id, bobs.id])
        .await;
    assert!(matches!(e, Err(DomainError::NotFound(_))), "{e:?}");
    let e = s.attach_bundle(alice.id, a.id, bobs.id).await;
    assert!(matches!(e, Err(DomainError::NotFound(_))), "{e:?}");
    let parts = s.appliance_parts(alice.id, a.id).await?.expect("parts");
    assert_eq!(ids(&parts.bundles), [b2.id, b1.id]);
    s.attach_bundle(alice.id, a.id, b3.id).await?;
    s.attach_bundle(alice.id, a.id, b3.id).await?;
    let parts = s.appliance_parts(alice.id, a.id).await?.expect("parts");
    assert_eq!(ids(&parts.bundles), [b2.id, b1.id, b3.id]);
    assert!(s.detach_bundle(a.id, b1.id).await?);
    assert!(!s.detach_bundle(a.id, b1.id).await?);
    // Deleting a bundle detaches it.
    s.delete_bundle(alice.id, b2.id).await?;
    let parts = s.appliance_parts(alice.id, a.id).await?.expect("parts");
    assert_eq!(ids(&parts.bundles), [b3.id]);

    // OS profile: one per appliance, renamed in place, packages replaced as a whole.
    assert!(s.get_os_profile(a.id).await?.is_none());
    let p = s.set_os_profile(a.id, "Minimal").await?;
    let p2 = s.set_os_profile(a.id, "Server").await?;
    assert_eq!((p2.id, p2.name.as_str()), (p.id, "Server"));
    s.set_os_packages(p.id, &[pkg("vim", Some("8.0")), pkg("curl", None)])
        .await?;
    s.set_os_packages(p.id, &[pkg("nginx", None), pkg("bash", Some("5"))])
        .await?;
    assert_eq!(
        s.list_os_packages(p.id).await?,
        [pkg("nginx", None), pkg("bash", Some("5"))]
    );

    // Boot scripts: by order then id; a body switch returns the previous key.
    let late = s
        .create_boot_script(a.id, &script("late.sh", 20, BootType::EveryBoot))
        .await?;
    let early = s
        .create_boot_script(a.id, &script("early.sh", 10, BootType::FirstBoot))
        .await?;
    assert!(late.blob.is_none());
    let order: Vec<_> = s
        .list_boot_scripts(a.id)
        .await?
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(order, [early.id, late.id]);
    assert_eq!(
        s.set_boot_script_blob(a.id, late.id, &blob("bs1")).await?,
        Some(None)
    );
    assert_eq!(
        s.set_boot_script_blob(a.id, late.id, &blob("bs2")).await?,
        Some(Some("bs1".to_string()))
    );
    assert_eq!(
        s.set_boot_script_blob(a.id, 999_999, &blob("bs3")).await?,
        None
    );
    let changed = s
        .update_boot_script(
            a.id,
            late.id,
            &BootScriptInput {
                order: Some(1),
                kind: Some(BootType::FirstBoot),
                ..Default::default()
            },
        )
        .await?
        .expect("updated");
    assert_eq!(
        (changed.order, changed.kind, changed.name.as_str()),
        (1, BootType::FirstBoot, "late.sh")
    );
    assert_eq!(changed.blob.map(|b| b.key), Some("bs2".to_string()));

    let parts = s.appliance_parts(alice.id, a.id).await?.expect("parts");
    assert_eq!(parts.os_profile.map(|p| p.name), Some("Server".to_string()));
    assert_eq!(parts.packages.len(), 2);
    assert_eq!(
        parts.boot_scripts.iter().map(|b| b.id).collect::<Vec<_>>(),
        [late.id, early.id]
    );

    assert_eq!(s.delete_boot_script(a.id, early.id).await?, Some(None));
    assert_eq!(s.delete_boot_script(a.id, early.id).await?, None);

    // Deleting the appliance returns its bodies' keys and leaves its bundles alone.
    assert_eq!(
        s.delete_appliance(alice.id, a.id).await?,
        Some(vec!["bs2".to_string()])
    );
    assert!(s.get_appliance(alice.id, a.id).await?.is_none());
    assert!(s.get_os_profile(a.id).await?.is_none());
    assert!(s.list_boot_scripts(a.id).await?.is_empty());
    assert!(s.get_bundle(alice.id, b3.id).await?.is_some());
    assert!(s.delete_appliance(alice.id, a.id).await?.is_none());
    Ok(())
}

async fn appliance_with_parts_is_all_or_nothing(s: Arc<dyn Store>) -> Result<()> {
    let alice = user(&s, "alice").await?;
    let bob = user(&s, "bob").await?;
    let b = bundle(&s, alice.id, "app").await?;
    let bobs = bundle(&s, bob.id, "bobs").await?;
    let parts = |bundles: Vec<Id>, keys: &[&str]| NewApplianceParts {
        appliance: new_appliance("imported"),
        bundles,
        os_profile: Some(NewOsProfile {
            name: "Minimal".into(),
            packages: vec![pkg("vim", None)],
        }),
        boot_scripts: keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    script(&format!("{k}.sh"), i as i64, BootType::FirstBoot),
                    blob(k),
                )
            })
            .collect(),
    };

    // A bundle of another user fails the whole write.
    let e = s
        .create_appliance_with_parts(alice.id, &parts(vec![b.id, bobs.id], &["x"]), None)
        .await;
    assert!(matches!(e, Err(DomainError::NotFound(_))), "{e:?}");
    assert!(s.list_appliances(alice.id).await?.is_empty());
    assert!(s.referenced_blobs(&["x".to_string()]).await?.is_empty());

    let (first, gone) = s
        .create_appliance_with_parts(alice.id, &parts(vec![b.id], &["k1", "k2"]), None)
        .await?;
    assert!(gone.is_empty());
    let got = s.appliance_parts(alice.id, first.id).await?.expect("parts");
    assert_eq!(ids(&got.bundles), [b.id]);
    assert_eq!(got.packages, [pkg("vim", None)]);
    assert_eq!(
        got.boot_scripts
            .iter()
            .map(|x| x.blob.as_ref().map(|b| b.key.as_str()))
            .collect::<Vec<_>>(),
        [Some("k1"), Some("k2")]
    );

    // Replacing another user's appliance, or a missing one, fails and writes nothing.
    let theirs = s.create_appliance(bob.id, &new_appliance("theirs")).await?;
    let e = s
        .create_appliance_with_parts(alice.id, &parts(vec![b.id], &["k3"]), Some(theirs.id))
        .await;
    assert!(matches!(e, Err(DomainError::NotFound(_))), "{e:?}");
    assert!(s.get_appliance(bob.id, theirs.id).await?.is_some());
    assert_eq!(s.list_appliances(alice.id).await?.len(), 1);
    // A failed replacement keeps the old appliance.
    let e = s
        .create_appliance_with_parts(alice.id, &parts(vec![bobs.id], &["k3"]), Some(first.id))
        .await;
    assert!(matches!(e, Err(DomainError::NotFound(_))), "{e:?}");
    assert!(s.get_appliance(alice.id, first.id).await?.is_some());

    // Replacing: the old one goes in the same transaction; keys the new one reuses are kept.
    let (second, gone) = s
        .create_appliance_with_parts(alice.id, &parts(vec![b.id], &["k2", "k3"]), Some(first.id))
        .await?;
    assert_eq!(gone, ["k1"]);
    assert!(s.get_appliance(alice.id, first.id).await?.is_none());
    let list = s.list_appliances(alice.id).await?;
    assert_eq!(list.iter().map(|a| a.id).collect::<Vec<_>>(), [second.id]);
    assert_eq!(
        s.find_appliance(alice.id, "imported", "1.0")
            .await?
            .map(|a| a.id),
        Some(second.id)
    );
    assert!(s.get_bundle(alice.id, b.id).await?.is_some());
    Ok(())
}

async fn boot_script_bodies_are_referenced_counted_and_deleted_with_the_user(
    s: Arc<dyn Store>,
) -> Result<()> {
    let alice = user(&s, "alice").await?;
    let bob = user(&s, "bob").await?;
    let a = s.create_appliance(alice.id, &new_appliance("web")).await?;
    let bs = s
        .create_boot_script(a.id, &script("run.sh", 1, BootType::EveryBoot))
        .await?;
    let before = s.usage(alice.id).await?.bytes;
    s.set_boot_script_blob(a.id, bs.id, &blob("body")).await?;
    assert_eq!(s.usage(alice.id).await?.bytes, before + blob("body").size);
    assert_eq!(s.usage(bob.id).await?.bytes, 0);
    let refs = s
        .referenced_blobs(&["body".to_string(), "other".to_string()])
        .await?;
    assert_eq!(refs, HashSet::from(["body".to_string()]));

    let keys = s.delete_user("alice").await?.expect("alice existed");
    assert_eq!(keys, ["body"]);
    assert!(s.referenced_blobs(&["body".to_string()]).await?.is_empty());
    Ok(())
}

async fn takeout_ticket(s: &Arc<dyn Store>, owner: &User, notify: Option<&str>) -> Result<Ticket> {
    s.create_ticket(&NewTicket {
        import: None,
        takeout: Some(TakeoutSpec {
            format: TakeoutFormat::Zip,
            include: TakeoutPart::ALL.to_vec(),
            credentials: Credentials::Omitted,
            passphrase: None,
            notify_url: notify.map(String::from),
        }),
        owner_id: owner.id,
        kind: TicketKind::Takeout,
        image: None,
        subject_id: owner.id,
        subject_name: owner.login.clone(),
        subject_version: String::new(),
        format: OutputFormat::Yaml,
        max_attempts: 3,
    })
    .await
}

/// A takeout's sealed passphrase goes with its move to a final state, whichever (given up,
/// cancelled while queued, complete), and the rest of its parameters stay.
async fn a_takeout_forgets_its_passphrase_when_it_ends(s: Arc<dyn Store>) -> Result<()> {
    let a = user(&s, "a").await?;
    let mut made = Vec::new();
    for _ in 0..3 {
        let t = takeout_ticket(&s, &a, Some("https://hooks.example.com/x")).await?;
        let mut spec = t.takeout.clone().expect("a takeout");
        spec.credentials = Credentials::Encrypted;
        spec.passphrase = Some(SealedParam {
            uid: format!("takeout-{}", t.id),
            key_id: "k1".into(),
            blob: "00ff".into(),
        });
        s.set_takeout_spec(t.id, &spec).await?;
        let held = s.get_ticket_any(t.id).await?.and_then(|t| t.takeout);
        assert_eq!(
            held.as_ref().and_then(|t| t.passphrase.as_ref()),
            spec.passphrase.as_ref()
        );
        made.push(t.id);
    }
    assert!(
        s.finish_ticket(made[0], &failed("gave up after 3 attempts"))
            .await?
    );
    assert!(s.cancel_ticket(a.id, made[1]).await?.is_some());
    assert!(
        s.finish_ticket(made[2], &complete("k", now_millis() + 1000))
            .await?
    );
    for id in made {
        let spec = s
            .get_ticket_any(id)
            .await?
            .and_then(|t| t.takeout)
            .expect("the ticket keeps its parameters");
        assert!(
            spec.passphrase.is_none(),
            "ticket {id} still holds its passphrase"
        );
        assert_eq!(spec.credentials, Credentials::Encrypted);
        assert_eq!(
            spec.notify_url.as_deref(),
            Some("https://hooks.example.com/x")
        );
    }
    Ok(())
}

/// The delivery row and its job come with the move to a final state (complete, error, cancelled),
/// in its transaction, once per ticket; a takeout without `notify_url` gets none.
async fn a_takeout_webhook_is_queued_once_with_its_final_move(s: Arc<dyn Store>) -> Result<()> {
    use satchel_domain::notify::DeliveryState;
    let a = user(&s, "a").await?;
    let url = "https://hooks.example.com/satchel?x=1";
    let done = takeout_ticket(&s, &a, Some(url)).await?;
    assert_eq!(
        s.get_ticket_any(done.id)
            .await?
            .and_then(|t| t.takeout)
            .and_then(|t| t.notify_url)
            .as_deref(),
        Some(url),
        "stored with the ticket's parameters"
    );
    let quiet = takeout_ticket(&s, &a, None).await?;
    let cancelled = takeout_ticket(&s, &a, Some(url)).await?;
    // The three takeout jobs themselves.
    for _ in 0..3 {
        let j = s.claim_job("w", LONG).await?.expect("a takeout job");
        assert_eq!(j.kind, JOB_TAKEOUT);
        s.finish_job(j.id, "w").await?;
    }
    assert!(
        s.delivery(done.id).await?.is_none(),
        "nothing before the end"
    );
    assert!(
        s.finish_ticket(done.id, &complete("k1", now_millis() + 1000))
            .await?
    );
    assert!(s.finish_ticket(quiet.id, &failed("boom")).await?);
    assert!(s.cancel_ticket(a.id, cancelled.id).await?.is_some());
    // Moves that do not happen queue nothing more.
    assert!(!s.finish_ticket(done.id, &failed("late")).await?);
    s.cancel_ticket(a.id, done.id).await?;
    assert!(s.delivery(quiet.id).await?.is_none());
    let d = s.delivery(done.id).await?.expect("queued");
    assert_eq!(
        (d.url.as_str(), d.state, d.attempts),
        (url, DeliveryState::Pending, 0)
    );
    assert_eq!(d.owner_id, a.id);
    assert!(s.delivery(cancelled.id).await?.is_some());

    let mut jobs = Vec::new();
    while let Some(j) = s.claim_job("w", LONG).await? {
        assert_eq!(j.kind, JOB_TAKEOUT_NOTIFY);
        jobs.push(j.ticket_id().unwrap());
    }
    jobs.sort();
    assert_eq!(jobs, [done.id, cancelled.id], "one job per delivery");

    // Attempts count, the first one's time stays; delivered once, then never pending again.
    let d1 = s
        .begin_delivery_attempt(done.id, 1000)
        .await?
        .expect("pending");
    let d2 = s
        .begin_delivery_attempt(done.id, 2000)
        .await?
        .expect("pending");
    assert_eq!((d1.attempts, d2.attempts), (1, 2));
    assert_eq!(
        (d1.first_attempt, d2.first_attempt),
        (Some(1000), Some(1000))
    );
    s.delivery_error(done.id, "HTTP 500").await?;
    assert!(
        s.end_delivery(done.id, DeliveryState::Delivered, None, 3000)
            .await?
    );
    assert!(
        !s.end_delivery(done.id, DeliveryState::Failed, Some("x"), 4000)
            .await?
    );
    assert!(s.begin_delivery_attempt(done.id, 5000).await?.is_none());
    let d = s.delivery(done.id).await?.expect("kept");
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(
        (d.last_error.as_deref(), d.finished),
        (Some("HTTP 500"), Some(3000))
    );
    // The delivery goes with its ticket.
    s.delete_ticket(a.id, cancelled.id).await?;
    assert!(s.delivery(cancelled.id).await?.is_none());
    Ok(())
}

/// A user's signing secret: made once (a second maker learns it lost), replaced by a rotation,
/// re-sealed by a key rotation like the account secrets.
async fn notify_secrets_are_made_once_replaced_and_rotated(s: Arc<dyn Store>) -> Result<()> {
    use satchel_domain::accounts::*;
    use satchel_domain::apikeys::SealKey;
    let (old, new) = (SealKey::random(), SealKey::random());
    let a = user(&s, "a").await?;
    let b = user(&s, "b").await?;
    assert!(s.notify_secret(a.id).await?.is_none());
    let first = seal_value(&old, SealedKind::NotifySecret, new_uid(), b"whsec_1")?;
    let second = seal_value(&old, SealedKind::NotifySecret, new_uid(), b"whsec_2")?;
    assert!(s.create_notify_secret(a.id, &first).await?);
    assert!(!s.create_notify_secret(a.id, &second).await?, "made once");
    assert_eq!(s.notify_secret(a.id).await?, Some(first.clone()));
    s.replace_notify_secret(a.id, &second).await?;
    assert_eq!(s.notify_secret(a.id).await?, Some(second.clone()));
    s.replace_notify_secret(b.id, &first).await?;
    let done = rotate(s.as_ref(), &old, &new).await?;
    assert_eq!(done.resealed, 2);
    let now = s.notify_secret(a.id).await?.expect("kept");
    assert_eq!(now.key_id, new.key_id());
    assert_eq!(
        open_value(&new, SealedKind::NotifySecret, &now)?.expose(),
        b"whsec_2"
    );
    assert!(open_value(&old, SealedKind::NotifySecret, &now).is_err());
    assert_eq!(rotate(s.as_ref(), &old, &new).await?.resealed, 0);
    Ok(())
}

fn pblob(owner: Id, hex: char, size: i64) -> PublishedBlob {
    let digest = format!("sha256:{}", hex.to_string().repeat(64));
    PublishedBlob {
        key: format!("u/{owner}/registry/blobs/{digest}"),
        digest,
        size,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

async fn publish_ticket(s: &Arc<dyn Store>, owner: Id, image: Id, tag: &str) -> Result<Ticket> {
    s.create_ticket(&NewTicket {
        import: None,
        takeout: None,
        owner_id: owner,
        kind: TicketKind::ImagePublish,
        image: None,
        subject_id: image,
        subject_name: "app".into(),
        subject_version: tag.into(),
        format: OutputFormat::Yaml,
        max_attempts: 3,
    })
    .await
}

fn published(image: Id, tag: &str, blobs: Vec<PublishedBlob>) -> NewPublished {
    NewPublished {
        image_ticket_id: image,
        repository: "app".into(),
        tag: tag.into(),
        manifest_digest: blobs[0].digest.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        manifest_size: blobs[0].size,
        blobs,
    }
}

async fn published_images_share_blobs_and_complete_with_their_ticket(
    s: Arc<dyn Store>,
) -> Result<()> {
    let a = user(&s, "a").await?;
    let other = user(&s, "other").await?;
    let b = bundle(&s, a.id, "app").await?;
    let t = s.create_template(a.id, b.id, None).await?;
    let i = image_ticket(&s, a.id, &b, t.id, false).await?;
    // Only a running publish ticket completes, and then with its reference.
    let p1 = publish_ticket(&s, a.id, i.id, "1.0").await?;
    let one = published(
        i.id,
        "1.0",
        vec![pblob(a.id, 'a', 10), pblob(a.id, 'c', 100)],
    );
    assert!(!s.complete_publish(p1.id, &one).await?, "a queued ticket");
    assert!(s.published(a.id, p1.id).await?.is_none());
    assert!(s.mark_running(p1.id).await?);
    assert!(s.complete_publish(p1.id, &one).await?);
    assert_eq!(state(&s, p1.id).await?, Some(TicketState::Complete));
    assert!(!s.complete_publish(p1.id, &one).await?, "twice");
    let p = s.published(a.id, p1.id).await?.expect("recorded");
    assert_eq!((p.total_size, p.tag.as_str()), (110, "1.0"));
    assert!(s.published(other.id, p1.id).await?.is_none());
    // Found by tag or digest, scoped by owner and repository.
    let digest = pblob(a.id, 'a', 10).digest;
    assert_eq!(
        s.find_published(a.id, "app", "1.0")
            .await?
            .map(|p| p.ticket_id),
        Some(p1.id)
    );
    assert_eq!(
        s.find_published(a.id, "app", &digest)
            .await?
            .map(|p| p.ticket_id),
        Some(p1.id)
    );
    assert!(s.find_published(other.id, "app", "1.0").await?.is_none());
    assert!(s.find_published(a.id, "other", "1.0").await?.is_none());
    let layer = pblob(a.id, 'c', 100);
    assert_eq!(
        s.published_blob(a.id, "app", &layer.digest).await?,
        Some(layer.clone())
    );
    assert!(s
        .published_blob(other.id, "app", &layer.digest)
        .await?
        .is_none());
    // A second tag shares the layer; the blobs are referenced (the sweep keeps them).
    let p2 = publish_ticket(&s, a.id, i.id, "2.0").await?;
    assert!(s.mark_running(p2.id).await?);
    let two = published(
        i.id,
        "2.0",
        vec![pblob(a.id, 'b', 10), pblob(a.id, 'c', 100)],
    );
    assert!(s.complete_publish(p2.id, &two).await?);
    assert_eq!(s.list_published(a.id).await?.len(), 2);
    let refd = s.referenced_blobs(std::slice::from_ref(&layer.key)).await?;
    assert!(refd.contains(&layer.key));
    // Unpublishing 1.0 frees only what 2.0 does not hold; unpublishing 2.0 frees the rest.
    assert!(s.delete_publish(other.id, p1.id).await?.is_none());
    let (gone, keys) = s.delete_publish(a.id, p1.id).await?.expect("deleted");
    assert_eq!(gone.id, p1.id);
    assert_eq!(keys, vec![pblob(a.id, 'a', 10).key]);
    assert!(s.find_published(a.id, "app", "1.0").await?.is_none());
    assert_eq!(
        s.unreferenced_registry_blobs(&[layer.key.clone(), pblob(a.id, 'a', 10).key])
            .await?,
        vec![pblob(a.id, 'a', 10).key]
    );
    let (_, keys) = s.delete_publish(a.id, p2.id).await?.expect("deleted");
    assert_eq!(
        sorted(keys),
        sorted(vec![pblob(a.id, 'b', 10).key, layer.key.clone()])
    );
    assert!(s.list_published(a.id).await?.is_empty());
    Ok(())
}
