//! Cancel for every ticket kind, and imports (bundle and template archives), over HTTP against the
//! real server, on the embedded default (and again on PostgreSQL + Garage through `scaleout.rs`).

mod common;

use common::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn export_path(msid: i64, eid: i64) -> String {
    format!("/users/alice/mysoftware/{msid}/exports/{eid}")
}

/// Waits until the export is visibly under way (running, some bytes written).
async fn wait_running(a: &Client, status: &str) {
    let deadline = Instant::now() + T;
    loop {
        let st = a.get(status).await;
        let loaded: i64 = st
            .field("bytesLoaded")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if loaded > 0 && st.field("complete").as_deref() == Some("false") {
            return;
        }
        assert!(Instant::now() < deadline, "never started: {}", st.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no blob (published or staging) of the export's archive is left; how long it took.
async fn archive_gone(s: &Server, eid: i64, since: Instant) -> Duration {
    let needle = format!("/exports/{eid}/");
    loop {
        let left: Vec<_> = s
            .blobs()
            .await
            .into_iter()
            .filter(|(k, _)| k.contains(&needle))
            .collect();
        if left.is_empty() {
            return since.elapsed();
        }
        assert!(since.elapsed() < T, "partial output left: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bundle export of 1 GiB cancelled mid-way: the ticket says cancelled at once, the worker stops
/// within a second (its partial archive removed), the download answers 409, and cancelling again
/// or cancelling a finished export changes nothing and says so.
#[tokio::test]
async fn cancelling_a_bundle_export_stops_it_within_a_second() {
    // The throttle (per chunk) keeps the 1 GiB export running long enough to cancel it mid-way.
    let s = Server::start(&["--export-throttle", "5ms"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1").await;
    a.add_file(msid, None, "big.bin", &vec![0u8; 1 << 30]).await;
    let eid = a.export(msid, "yaml").await;
    let p = export_path(msid, eid);
    wait_running(&a, &format!("{p}/status")).await;

    // Someone else cannot cancel it.
    s.client("bob")
        .req("DELETE", &format!("{p}/status"), None, &[])
        .await
        .assert_uforge_error(404);
    let r = a.req("DELETE", &format!("{p}/status"), None, &[]).await;
    let cancelled_at = Instant::now();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("cancelled").as_deref(), Some("true"));
    assert_eq!(r.field("complete").as_deref(), Some("false"));
    assert_eq!(r.field("message").as_deref(), Some("cancelled"));
    let took = archive_gone(&s, eid, cancelled_at).await;
    assert!(took <= Duration::from_secs(1), "the job took {took:?} to stop");
    let st = a.get(&format!("{p}/status")).await;
    assert_eq!(st.field("cancelled").as_deref(), Some("true"));
    let r = a.get(&format!("{p}/downloads")).await;
    r.assert_uforge_error(409);
    assert!(r.error_message().contains("cancelled"), "{}", r.text());
    // Again: nothing to cancel, and it says so.
    let r = a.req("DELETE", &format!("{p}/status"), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.field("message")
            .unwrap_or_default()
            .contains("nothing to cancel: the ticket is already cancelled"),
        "{}",
        r.text()
    );

    // A finished export stays finished.
    let small = a.create_bundle("small", "1").await;
    a.add_file(small, None, "a.txt", b"hello").await;
    let done = a.export(small, "yaml").await;
    let sp = export_path(small, done);
    a.wait_export(small, done, T).await;
    let r = a.req("DELETE", &format!("{sp}/status"), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("complete").as_deref(), Some("true"));
    assert_eq!(r.field("cancelled").as_deref(), Some("false"));
    assert!(
        r.field("message")
            .unwrap_or_default()
            .contains("already complete"),
        "{}",
        r.text()
    );
    let r = a.get(&format!("{sp}/downloads")).await;
    assert_eq!(r.status, 200);
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

/// On two instances sharing PostgreSQL and Garage, a cancel made on the one without workers stops
/// the job running on the other.
#[tokio::test]
async fn a_cancel_reaches_the_worker_on_another_instance() {
    if !SCALEOUT {
        return; // one instance only on the embedded default
    }
    let s = Server::start(&["--export-throttle", "5ms"]).await;
    let api = s.second(&["--workers", "0"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1").await;
    a.add_file(msid, None, "big.bin", &vec![0u8; 256 << 20]).await;
    let eid = a.export(msid, "yaml").await;
    let p = export_path(msid, eid);
    wait_running(&a, &format!("{p}/status")).await;
    let r = api
        .client("alice")
        .req("DELETE", &format!("{p}/status"), None, &[])
        .await;
    let at = Instant::now();
    assert_eq!(r.field("cancelled").as_deref(), Some("true"), "{}", r.text());
    let took = archive_gone(&s, eid, at).await;
    assert!(took <= Duration::from_secs(1), "the job took {took:?} to stop");
    // (`api` has no workers: the job that stopped was the first instance's.)
}
