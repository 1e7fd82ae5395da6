//! Durability: SIGKILL mid-export, restart, retention expiry, and tickets that are not ready.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Kill -9 the server while exports are running; after a restart on the same directory every ticket
/// ends complete with a correct archive (or error with a message) and nothing stays running.
#[tokio::test]
async fn sigkill_mid_export_then_restart() {
    // The throttle makes each export take seconds, so the kill lands mid-archive.
    let mut s = Server::start(&["--export-throttle", "40ms", "--workers", "2"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1").await;
    let data = noise(24 << 20, 11);
    a.add_file(msid, None, "big.bin", &data).await;
    a.add_file(msid, None, "t.txt", &b"text ".repeat(100_000))
        .await;
    let eids = vec![
        a.export(msid, "yaml").await,
        a.export(msid, "json").await,
        a.export(msid, "yaml").await,
    ];
    // Wait until an export is visibly in progress.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = a
            .get(&format!(
                "/users/alice/mysoftware/{msid}/exports/{}/status",
                eids[0]
            ))
            .await;
        let pct: i32 = st.field("percentage").unwrap().parse().unwrap();
        if pct > 5 && st.field("complete").as_deref() == Some("false") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "export never started: {}",
            st.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not downloadable while running: a 4xx uforgeError saying so.
    let r = a
        .get(&format!(
            "/users/alice/mysoftware/{msid}/exports/{}/downloads",
            eids[0]
        ))
        .await;
    r.assert_uforge_error(409);
    assert!(r.error_message().contains("not ready"), "{}", r.text());
    s.kill9();
    // No archive was published under the final name by the dead server.
    let published: Vec<_> = s
        .blobs()
        .await
        .into_iter()
        .filter(|(p, _)| p.ends_with("archive.tar.gz"))
        .collect();
    assert!(published.is_empty(), "{published:?}");

    s.extra = vec!["--workers".into(), "2".into()]; // restart at full speed
    s.spawn().await;
    let a = s.client("alice");
    for eid in &eids {
        let st = a.wait_export(msid, *eid, Duration::from_secs(120)).await;
        assert_eq!(
            st.field("complete").as_deref(),
            Some("true"),
            "{}",
            st.text()
        );
        let dl = a
            .get(&format!(
                "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
            ))
            .await;
        assert_eq!(dl.status, 200);
        let files = untar(&dl.body);
        assert!(
            files["bundles/big/1/big.bin"] == data,
            "archive content differs after restart"
        );
    }
    // Embedded: the restarted server released the dead one's leases at start. Scale-out: instances
    // share the queue, so it took them over when they expired instead.
    if !common::SCALEOUT {
        assert!(s.log().contains("resuming jobs"), "{}", s.log());
    }
}

#[tokio::test]
async fn completed_archives_expire() {
    let s = Server::start(&["--retention", "1s", "--sweep-interval", "200ms"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("short-lived", "1").await;
    a.add_file(msid, None, "f", b"bytes").await;
    let eid = a.export(msid, "yaml").await;
    a.wait_export(msid, eid, Duration::from_secs(30)).await;
    let path = format!("/users/alice/mysoftware/{msid}/exports/{eid}");
    assert_eq!(a.get(&format!("{path}/downloads")).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = a.get(&format!("{path}/status")).await;
        if st.field("message").as_deref() == Some("archive expired and deleted") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", st.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = a.get(&format!("{path}/downloads")).await;
    r.assert_uforge_error(410);
    assert!(r.error_message().contains("expired"));
    assert!(s
        .blobs()
        .await
        .iter()
        .all(|(p, _)| !p.ends_with("archive.tar.gz")));
}

#[tokio::test]
async fn deleting_a_running_export_stops_it_and_leaves_nothing() {
    let s = Server::start(&["--export-throttle", "30ms"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("slow", "1").await;
    a.add_file(msid, None, "n.bin", &noise(8 << 20, 5)).await;
    let eid = a.export(msid, "yaml").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = a
        .req(
            "DELETE",
            &format!("/users/alice/mysoftware/{msid}/exports/{eid}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    a.get(&format!(
        "/users/alice/mysoftware/{msid}/exports/{eid}/status"
    ))
    .await
    .assert_uforge_error(404);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = s.blobs().await;
    assert!(
        left.iter().all(|(p, _)| !p.contains("/exports/")),
        "{left:?}"
    );
    // A bundle deleted before its export runs: the ticket ends in error with both messages set.
    let msid2 = a.create_bundle("gone", "1").await;
    a.add_file(msid2, None, "x", b"x").await;
    let slow = a.export(msid, "yaml").await; // occupies a worker
    let eid2 = a.export(msid2, "yaml").await;
    let eid3 = a.export(msid2, "yaml").await;
    let _ = slow;
    assert_eq!(
        a.req(
            "DELETE",
            &format!("/users/alice/mysoftware/{msid2}"),
            None,
            &[]
        )
        .await
        .status,
        204
    );
    for e in [eid2, eid3] {
        let st = a.wait_export(msid2, e, Duration::from_secs(60)).await;
        if st.field("error").as_deref() == Some("true") {
            assert!(st.field("message").is_some());
            let m = st.field("errorMessage").unwrap();
            assert!(
                m.contains("deleted") || m.contains("missing"),
                "{}",
                st.text()
            );
            return;
        }
    }
}
