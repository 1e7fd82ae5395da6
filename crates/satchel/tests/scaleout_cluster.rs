//! Two Satchel instances on one PostgreSQL + Garage: 1000 small exports submitted across both, one
//! instance killed with SIGKILL half-way. Every ticket must end complete with a correct archive (or in
//! error with a message), none lost, none left in the queue.

mod common;

use common::{noise, untar, Server};
use futures::StreamExt;
use sha2::Digest;
use std::time::{Duration, Instant};

const EXPORTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_killed_no_export_lost() {
    let s1 = Server::start(&common::UNLIMITED).await;
    let mut s2 = s1.second(&common::UNLIMITED).await;
    let (a1, a2) = (s1.client("alice"), s2.client("alice"));

    // Ten small bundles, each with a file whose bytes identify it.
    let mut bundles = Vec::new();
    for i in 0..10u64 {
        let msid = a1.create_bundle(&format!("b{i}"), "1.0").await;
        let data = noise(2000 + i as usize * 100, i + 11);
        a1.add_file(msid, None, "payload.bin", &data).await;
        bundles.push((msid, data));
    }

    // Submitted across both instances, 16 at a time.
    let started = Instant::now();
    let submitted: Vec<(usize, i64, i64)> = futures::stream::iter(0..EXPORTS)
        .map(|n| {
            let c = if n % 2 == 0 { a1.clone() } else { a2.clone() };
            let msid = bundles[n % bundles.len()].0;
            async move { (n % 10, msid, c.export(msid, "yaml").await) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(submitted.len(), EXPORTS);

    // Kill the second instance once about half the tickets are done.
    let db = sqlx::PgPool::connect(&s1.database_url().unwrap())
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while count("SELECT count(*) FROM tickets WHERE state = 'complete'").await
        < (EXPORTS / 2) as i64
    {
        assert!(Instant::now() < deadline, "exports stalled: {}", s1.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s2.kill9();

    // The survivor finishes everything, taking over the dead instance's leases.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let open = count("SELECT count(*) FROM tickets WHERE state IN ('queued', 'running')").await;
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} exports never finished: {}",
            s1.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    // A job row outlives its ticket's completion briefly (the worker removes it right after), and
    // longer when the killed instance died between the two steps: then the row waits for its lease
    // to run out, and the next claim sees the ticket final and removes it. Either way it must drain.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = count("SELECT count(*) FROM jobs").await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} jobs left in the queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, error_message FROM tickets WHERE state <> 'complete'")
            .fetch_all(&db)
            .await
            .unwrap();
    for (id, msg) in &errors {
        assert!(
            msg.as_deref().is_some_and(|m| !m.is_empty()),
            "ticket {id} ended without a message"
        );
    }
    assert!(errors.is_empty(), "exports ended in error: {errors:?}");

    // Every archive is whole and holds its bundle's bytes; its digest matches the ticket's.
    futures::stream::iter(submitted)
        .for_each_concurrent(16, |(i, msid, eid)| {
            let a1 = a1.clone();
            let want = bundles[i].1.clone();
            async move {
                let r = a1
                    .get(&format!(
                        "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
                    ))
                    .await;
                assert_eq!(r.status, 200, "{eid}: {}", r.text());
                let sha = hex::encode(sha2::Sha256::digest(&r.body));
                assert_eq!(r.header("x-checksum-sha256").as_deref(), Some(sha.as_str()));
                let files = untar(&r.body);
                assert_eq!(
                    files.get(&format!("bundles/b{i}/1.0/payload.bin")),
                    Some(&want),
                    "{eid}"
                );
            }
        })
        .await;
    eprintln!("{EXPORTS} exports across two instances (one killed half-way) in {elapsed:?}");
}

/// CloudAPI `async=true` exports are jobs on the shared queue: one whose instance died holding its
/// lease is finished by another instance once the lease runs out, exactly once; and an instance that
/// is already running (not restarted) picks up exports queued anywhere in the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_image_export_of_a_killed_instance_is_finished_once_by_another() {
    use common::cloud::{keygen, register, Signed};
    // The front door runs no jobs, so nothing runs an export before the test arranges the state a
    // dead instance leaves.
    let front = Server::start(&["--workers", "0"]).await;
    let keys = tempfile::tempdir().unwrap();
    let kp = keygen(keys.path(), "id_alice", "ed25519", None, false);
    register(&front, "alice", "k", &kp);
    let alice = Signed::new(&front, "alice", &kp);
    let data = noise(300_000, 9);
    let id = alice.make_image("takeover", "1.0", "gzip", &data).await;

    let submit = |path: &'static str| {
        let (alice, id) = (&alice, id.clone());
        async move {
            let r = alice
                .call(
                    "POST",
                    &format!("/my/images/{id}?action=export&manta_path={path}&async=true"),
                    None,
                    &[],
                )
                .await;
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
            r.header("location").unwrap()
        }
    };
    let db = sqlx::PgPool::connect(&front.database_url().unwrap())
        .await
        .unwrap();

    // An instance that claimed the export and was killed mid-way leaves its job leased (attempt
    // counted) and the export `running`. An export links its blob instead of copying it and ends in
    // milliseconds, so no real kill lands mid-run reliably: the row is put in the state the dead
    // instance leaves, which is what the takeover reads.
    let loc = submit("/alice/stor/t1").await;
    let eid = loc.rsplit('/').next().unwrap().to_string();
    let held = sqlx::query(
        "UPDATE jobs SET lease_owner = 'satchel-killed', lease_expires = satchel_now_ms() + 3000,
                attempts = attempts + 1 WHERE image_export_id = $1",
    )
    .bind(&eid)
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(
        held.rows_affected(),
        1,
        "the export has its job on the queue"
    );
    sqlx::query("UPDATE image_exports SET state = 'running' WHERE id = $1")
        .bind(&eid)
        .execute(&db)
        .await
        .unwrap();

    // A worker instance started now must leave the held job alone until the lease lapses, then
    // finish it.
    let started = Instant::now();
    let worker = front.second(&["--job-lease", "3s"]).await;
    let poll = |loc: String| {
        let alice = &alice;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let v = alice.get(&loc).await.json();
                if v["state"] == "complete" || v["state"] == "error" {
                    return v;
                }
                assert!(Instant::now() < deadline, "export never finished: {v}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let done = poll(loc).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["image_path"], "/alice/stor/t1.zfs.gz");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the held lease was taken before it lapsed ({:?})",
        started.elapsed()
    );
    assert_eq!(alice.get("/alice/stor/t1.zfs.gz").await.body, data);
    // Once: the takeover was the job's second attempt, and the job is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs")
        .fetch_one(&db)
        .await
        .unwrap()
        > 0
    {
        assert!(Instant::now() < deadline, "the job stayed on the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let objects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stor_entries WHERE path LIKE '/alice/stor/t1%'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(objects, 2, "one image file and one manifest");

    // An export queued through the front door is run by the worker that is already up (it was
    // never restarted, so nothing "resumed at start" can explain it).
    let done = poll(submit("/alice/stor/t2").await).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(alice.get("/alice/stor/t2.zfs.gz").await.body, data);
    drop(worker);
}
