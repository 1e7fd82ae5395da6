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
