//! One behavioural suite for every `Store` implementation. Each `async fn` below takes an
//! `Arc<dyn Store>` and is instantiated by `suite!` twice: `sqlite::<name>` (a temp file) and
//! `postgres::<name>` (a fresh database on a real throwaway server, see `satchel-testkit`), so the
//! engines are held to the same semantics by the same code. Engine-specific behaviour (LISTEN/NOTIFY
//! wake-ups, SQLite's polling default) is tested at the end.

use satchel_domain::model::*;
use satchel_domain::ports::{JobHandler, Store};
use satchel_domain::{DomainError, Result};
use satchel_store::postgres::PostgresStore;
use satchel_store::sqlite::SqliteStore;
use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

const LONG: Duration = Duration::from_secs(60);

/// A store plus whatever must outlive it (temp dir, test database).
struct Engine {
    store: Arc<dyn Store>,
    _keep: Box<dyn Any + Send>,
}

async fn sqlite() -> Engine {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("satchel.db"))
        .await
        .expect("open sqlite");
    Engine {
        store: Arc::new(store),
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
    Engine {
        store: Arc::new(store),
        _keep: Box::new(db),
    }
}

macro_rules! suite {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> satchel_domain::Result<()> {
                    let e = super::sqlite().await;
                    super::$name(e.store.clone()).await
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
        }
    };
}

suite!(
    users_roundtrip,
    delete_user_returns_every_blob_key,
    bundles_are_scoped_by_owner,
    artifacts_nest_and_delete_returns_child_keys,
    attachments_one_per_kind,
    tickets_and_jobs_are_created_together,
    ticket_state_changes_are_conditional,
    expiry,
    claims_oldest_first_and_respects_leases,
    expired_lease_is_claimable_by_another_owner,
    retry_job_respects_delay,
    release_all_leases_frees_every_job,
    concurrent_claims_take_each_job_once,
    racing_finish_ticket_has_one_winner,
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
        owner_id: owner,
        bundle_id: bundle.id,
        bundle_name: bundle.name.clone(),
        bundle_version: bundle.version.clone(),
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
        expires_at,
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
    assert_eq!(job.ticket_id, bob_ticket.id);
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

    let ids: Vec<Id> = s.list_artifacts(b.id).await?.iter().map(|x| x.id).collect();
    assert_eq!(ids, [dir.id, f.id, sub.id, deep.id, sibling.id]);

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
        (t1.owner_id, t1.bundle_id, t1.bundle_name.as_str()),
        (a.id, b.id, "app")
    );
    assert_eq!(t1.bundle_version, "1.0");
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
    assert_eq!(job.ticket_id, t1.id);
    assert_eq!(job.kind, JOB_BUNDLE_EXPORT);
    assert_eq!((job.attempts, job.max_attempts), (1, 3));
    assert_eq!(job.last_error, None);

    assert!(s.delete_ticket(other.id, t1.id).await?.is_none());
    assert_eq!(s.delete_ticket(a.id, t1.id).await?, Some(t1.clone()));
    assert!(s.get_ticket_any(t1.id).await?.is_none());
    // Its job went with it, so the lease holder learns it at the next heartbeat.
    assert!(!s.heartbeat(job.id, "w", LONG).await?);
    let next = s.claim_job("w", LONG).await?.expect("t2's job");
    assert_eq!(next.ticket_id, t2.id);
    assert!(s.claim_job("w", LONG).await?.is_none());
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
        [j1.ticket_id, j2.ticket_id, j3.ticket_id],
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
    assert_eq!((first.ticket_id, first.attempts), (t.id, 1));
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
    let claimed: BTreeSet<Id> = all.iter().map(|j| j.ticket_id).collect();
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
    assert_eq!(job.ticket_id, t.id);

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
            let _ = self.0.send((job.ticket_id, Instant::now()));
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
