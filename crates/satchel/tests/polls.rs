//! Status polls answered from memory (`satchel_domain::polls`): a `304` (or `200`) for a ticket
//! nothing changed makes no store round trip, and the memory never answers with a stale or another
//! user's ticket: after a progress update, completion, cancel (on another instance: scale-out),
//! deletion; a removed user's remembered login stops working within `--login-revalidate`.
//! The proof that the memory path reads nothing is in `/metrics`: `satchel_status_polls_total`
//! (exact: polls answered from memory) and `satchel_store_checkouts_total` (every statement or
//! transaction the store ran, whatever asked for it).

mod common;

use common::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// The server's `/metrics` (as root, the main port).
async fn metrics(s: &Server) -> String {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/metrics", s.port))
        .basic_auth("root", Some("root-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The value of one series (`name` with its labels, as printed), 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

const FROM_MEMORY: &str = "satchel_status_polls_total{answered=\"memory\"}";
const FROM_STORE: &str = "satchel_status_polls_total{answered=\"store\"}";
const CHECKOUTS: &str = "satchel_store_checkouts_total";

/// Waits until the ticket memory is on (on PostgreSQL: its LISTEN connection is up).
async fn memory_live(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics(s).await, "satchel_ticket_cache_live") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the ticket memory never went live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn poll(c: &Client, path: &str, etag: Option<&str>) -> Resp {
    match etag {
        Some(e) => c.req("GET", path, None, &[("If-None-Match", e)]).await,
        None => c.get(path).await,
    }
}

/// Scale-out: two instances on one database with no workers (an export stays queued until
/// cancelled), both memories live, and an export of alice's made on the first: its status path.
async fn two_instances_with_a_queued_export(bundle: &str) -> (Server, Server, String) {
    let s = Server::start(&["--workers", "0"]).await;
    let b = s.second(&["--workers", "0"]).await;
    memory_live(&s).await;
    memory_live(&b).await;
    let a = s.client("alice");
    let msid = a.create_bundle(bundle, "1").await;
    let eid = a.export(msid, "yaml").await;
    let path = format!("/users/alice/mysoftware/{msid}/exports/{eid}/status");
    (s, b, path)
}

/// Polls `path` with `etag` until the answer is not `304`, failing after `limit`: that answer and
/// how long it took.
async fn until_changed(c: &Client, path: &str, etag: &str, limit: Duration) -> (Resp, Duration) {
    let t0 = Instant::now();
    loop {
        let r = poll(c, path, Some(etag)).await;
        if r.status != 304 {
            return (r, t0.elapsed());
        }
        assert!(
            t0.elapsed() < limit,
            "still 304 after {limit:?}: the change never reached these polls"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn unchanged_polls_make_no_store_round_trip() {
    let s = Server::start(&[]).await;
    memory_live(&s).await;
    let a = s.client("alice");
    let msid = a.create_bundle("polled", "1").await;
    a.add_file(msid, None, "a.txt", b"hello").await;
    let eid = a.export(msid, "yaml").await;
    let done = a.wait_export(msid, eid, T).await;
    let etag = done.header("etag").unwrap();
    let path = format!("/users/alice/mysoftware/{msid}/exports/{eid}/status");
    // The first polls read the store and remember the row (and its rendering).
    let first = poll(&a, &path, None).await;
    assert_eq!(first.status, 200);
    assert_eq!(poll(&a, &path, Some(&etag)).await.status, 304);

    let before = metrics(&s).await;
    let (n304, n200) = (200, 50);
    for _ in 0..n304 {
        let r = poll(&a, &path, Some(&etag)).await;
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
        assert_eq!(r.header("last-modified"), first.header("last-modified"));
    }
    for _ in 0..n200 {
        let r = poll(&a, &path, None).await;
        assert_eq!(r.status, 200);
        // The same bytes and headers as the answer rendered from the store.
        assert_eq!(r.body, first.body);
        assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
        assert_eq!(r.header("content-type").as_deref(), Some("application/xml"));
        assert_eq!(r.header("cache-control").as_deref(), Some("no-cache"));
    }
    let after = metrics(&s).await;
    let memory = metric(&after, FROM_MEMORY) - metric(&before, FROM_MEMORY);
    let store = metric(&after, FROM_STORE) - metric(&before, FROM_STORE);
    let checkouts = metric(&after, CHECKOUTS) - metric(&before, CHECKOUTS);
    eprintln!(
        "{} polls: {memory} from memory, {store} from the store, {checkouts} store checkouts \
         (the second scrape's own reads, idle workers' claims, the watcher's pings included)",
        n304 + n200
    );
    assert_eq!(memory, f64::from(n304 + n200));
    assert_eq!(store, 0.0);
    // One read per poll would be 250; what is left is the scrape's and the background's.
    assert!(
        checkouts < 40.0,
        "{checkouts} store checkouts for 250 polls"
    );

    // An admin looking at alice's ticket goes through the store (and gets the same answer).
    let root = s.client("root");
    let r = poll(&root, &path, Some(&etag)).await;
    assert_eq!(r.status, 304);
    let r = poll(&root, &path, None).await;
    assert_eq!(r.body, first.body);
    let m = metrics(&s).await;
    assert_eq!(metric(&m, FROM_STORE) - metric(&after, FROM_STORE), 2.0);
}

/// Polls an export with `If-None-Match` while it runs; whenever the store (the export document,
/// which is read from it) shows something the last poll did not, the next poll with the old ETag
/// must be a `200` at least as far along. Then completion, another user, deletion.
#[tokio::test]
async fn memory_follows_progress_completion_and_deletion() {
    let s = Server::start(&["--export-throttle", "150ms"]).await;
    memory_live(&s).await;
    let a = s.client("alice");
    let msid = a.create_bundle("moving", "1").await;
    a.add_file(msid, None, "big.bin", &noise(8 << 20, 5)).await;
    let eid = a.export(msid, "yaml").await;
    let export = format!("/users/alice/mysoftware/{msid}/exports/{eid}");
    let path = format!("{export}/status");

    let mut last = poll(&a, &path, None).await;
    assert_eq!(last.status, 200);
    let mut etags = vec![last.header("etag").unwrap()];
    let mut seen_changes = 0;
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "export never completed");
        let etag = etags.last().unwrap().clone();
        let pct: i64 = last.field("percentage").unwrap().parse().unwrap();
        let complete = last.field("complete").as_deref() == Some("true");
        if complete {
            break;
        }
        // What the store says now.
        let doc = a.get(&export).await;
        assert_eq!(doc.status, 200);
        let store_pct: i64 = doc.field("percentage").unwrap().parse().unwrap();
        let store_complete = doc.field("complete").as_deref() == Some("true");
        let r = poll(&a, &path, Some(&etag)).await;
        if store_pct != pct || store_complete {
            // The change committed before the store read above: the memory forgot the old row.
            assert_eq!(
                r.status, 200,
                "a 304 for {etag} after the store showed {store_pct}% (poll: {pct}%)"
            );
        }
        match r.status {
            304 => {
                assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            200 => {
                let new = r.header("etag").unwrap();
                let new_pct: i64 = r.field("percentage").unwrap().parse().unwrap();
                assert!(new_pct >= store_pct.min(100), "{new_pct}% < {store_pct}%");
                if new != etag {
                    assert!(!etags.contains(&new), "an old ETag came back: {new}");
                    seen_changes += 1;
                    etags.push(new);
                }
                last = r;
            }
            other => panic!("status poll answered {other}: {}", r.text()),
        }
    }
    assert!(
        seen_changes >= 2,
        "expected progress and completion to change the ETag: {etags:?}"
    );
    // Complete: the final ETag is a 304 from memory, the earlier ones are 200s.
    let final_etag = etags.last().unwrap().clone();
    assert_eq!(poll(&a, &path, Some(&final_etag)).await.status, 304);
    let r = poll(&a, &path, Some(&etags[0])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.field("complete").as_deref(), Some("true"));

    // Another user never sees it, by alice's URL or by their own, with the same answer as for a
    // ticket that does not exist (alice's row is in memory right now).
    let missing = 9_999_999;
    let bob = s.client("bob");
    let r = poll(&bob, &path, Some(&final_etag)).await;
    r.assert_uforge_error(404);
    let nobody = poll(
        &bob,
        &format!("/users/alice/mysoftware/{msid}/exports/{missing}/status"),
        None,
    )
    .await;
    nobody.assert_uforge_error(404);
    assert_eq!(r.error_message(), nobody.error_message());
    let theirs = format!("/users/bob/mysoftware/{msid}/exports/{eid}/status");
    let r = poll(&bob, &theirs, Some(&final_etag)).await;
    r.assert_uforge_error(404);
    let nobody = poll(
        &bob,
        &format!("/users/bob/mysoftware/{msid}/exports/{missing}/status"),
        None,
    )
    .await;
    assert_eq!(
        r.error_message(),
        nobody
            .error_message()
            .replace(&missing.to_string(), &eid.to_string())
    );

    // Deleted: 404 at once, with the message of a missing export.
    let d = a.req("DELETE", &export, None, &[]).await;
    assert!(d.status == 200 || d.status == 204, "{}", d.text());
    let r = poll(&a, &path, Some(&final_etag)).await;
    r.assert_uforge_error(404);
    let nobody = poll(
        &a,
        &format!("/users/alice/mysoftware/{msid}/exports/{missing}/status"),
        None,
    )
    .await;
    assert_eq!(
        r.error_message(),
        nobody
            .error_message()
            .replace(&missing.to_string(), &eid.to_string())
    );
}

/// Scale-out: a cancel (and a delete) made on instance A reaches polls answered from B's memory
/// within 100 ms (+ slack for a debug build on a shared machine), through the `tickets` trigger's
/// NOTIFY.
#[tokio::test]
async fn a_cancel_on_another_instance_reaches_memory_polls() {
    if !SCALEOUT {
        return;
    }
    let (s, b, path) = two_instances_with_a_queued_export("far").await;
    let (on_a, on_b) = (s.client("alice"), b.client("alice"));
    let first = poll(&on_b, &path, None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.field("complete").as_deref(), Some("false"));
    let etag = first.header("etag").unwrap();
    let m0 = metrics(&b).await;
    for _ in 0..20 {
        assert_eq!(poll(&on_b, &path, Some(&etag)).await.status, 304);
    }
    let m1 = metrics(&b).await;
    assert_eq!(metric(&m1, FROM_MEMORY) - metric(&m0, FROM_MEMORY), 20.0);

    let c = on_a.req("DELETE", &path, None, &[]).await;
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.field("cancelled").as_deref(), Some("true"));
    let (seen, took) = until_changed(&on_b, &path, &etag, Duration::from_secs(5)).await;
    eprintln!("cancel on A seen by B's status polls after {took:?}");
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.field("cancelled").as_deref(), Some("true"));
    assert_ne!(seen.header("etag"), Some(etag.clone()));
    assert!(
        took < Duration::from_millis(100 + 400),
        "the cancel took {took:?} to reach B (goal 100 ms)"
    );
    // B remembers the cancelled row; a delete on A reaches it the same way.
    let cancelled = seen.header("etag").unwrap();
    assert_eq!(poll(&on_b, &path, Some(&cancelled)).await.status, 304);
    let d = on_a
        .req("DELETE", path.trim_end_matches("/status"), None, &[])
        .await;
    assert!(d.status == 200 || d.status == 204, "{}", d.text());
    let t0 = Instant::now();
    loop {
        let r = poll(&on_b, &path, Some(&cancelled)).await;
        if r.status == 404 {
            r.assert_uforge_error(404);
            break;
        }
        assert_eq!(r.status, 304);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "B never saw the delete"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("delete on A seen by B after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_millis(500));
}

/// Scale-out: a LISTEN connection that PostgreSQL drops (a restart, a failover, an idle-kill) loses
/// the announcements sent meanwhile, so the memory must not answer from what it had: a change made
/// on A while B's listeners are dead still reaches B's polls, and B's memory comes back afterwards.
#[tokio::test]
async fn a_dropped_listen_connection_never_leaves_a_stale_answer() {
    if !SCALEOUT {
        return;
    }
    let (s, b, path) = two_instances_with_a_queued_export("dropped").await;
    let (on_a, on_b) = (s.client("alice"), b.client("alice"));
    let first = poll(&on_b, &path, None).await;
    assert_eq!(first.status, 200);
    let etag = first.header("etag").unwrap();
    let m0 = metrics(&b).await;
    assert_eq!(poll(&on_b, &path, Some(&etag)).await.status, 304);
    assert_eq!(
        metric(&metrics(&b).await, FROM_MEMORY) - metric(&m0, FROM_MEMORY),
        1.0,
        "answered from memory before the drop"
    );

    // Every listening backend of this database is terminated (both instances'), then the ticket
    // changes on A before anyone listens again.
    let db = sqlx::PgPool::connect(&s.database_url().unwrap())
        .await
        .unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(killed.len() >= 2, "no listener found: {killed:?}");
    let c = on_a.req("DELETE", &path, None, &[]).await;
    assert_eq!(c.status, 200, "{}", c.text());
    let (seen, took) = until_changed(&on_b, &path, &etag, Duration::from_secs(10)).await;
    eprintln!("the change reached B after {took:?} across a dropped LISTEN");
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.field("cancelled").as_deref(), Some("true"));
    // The memory comes back (a new LISTEN), and serves again.
    memory_live(&b).await;
    let now = seen.header("etag").unwrap();
    let m1 = metrics(&b).await;
    assert_eq!(poll(&on_b, &path, Some(&now)).await.status, 304);
    assert_eq!(poll(&on_b, &path, Some(&now)).await.status, 304);
    assert!(metric(&metrics(&b).await, FROM_MEMORY) - metric(&m1, FROM_MEMORY) >= 1.0);
    db.close().await;
}

/// `satchel admin user remove` (another process, writing the database directly) ends a
/// remembered login within `--login-revalidate`, also on the memory path of status polls.
#[tokio::test]
async fn a_removed_users_remembered_login_stops_within_the_bound() {
    let s = Server::start(&["--login-revalidate", "1s"]).await;
    memory_live(&s).await;
    let a = s.client("alice");
    let msid = a.create_bundle("gone", "1").await;
    let eid = a.export(msid, "yaml").await;
    let done = a.wait_export(msid, eid, T).await;
    let etag = done.header("etag").unwrap();
    let path = format!("/users/alice/mysoftware/{msid}/exports/{eid}/status");
    assert_eq!(poll(&a, &path, Some(&etag)).await.status, 304);
    let out = s.admin(&["user", "remove", "alice"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A refused request may take a while to answer (the password is hashed again, slowly in a
    // debug build): what the bound is about is when it was sent.
    let t0 = Instant::now();
    let refused_at = loop {
        let sent = t0.elapsed();
        let r = poll(&a, &path, Some(&etag)).await;
        match r.status {
            401 => {
                r.assert_uforge_error(401);
                break sent;
            }
            // Until the login is rechecked: the remembered row (embedded store: nothing tells
            // this process of another's delete), or, on PostgreSQL, whose trigger announces the
            // ticket's deletion, a 404.
            304 | 404 => {}
            other => panic!("{other}: {}", r.text()),
        }
        assert!(sent < Duration::from_secs(5), "alice still polls after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "removed user's first refused poll was sent {refused_at:?} after the removal (bound: 1 s)"
    );
    assert!(
        refused_at < Duration::from_millis(1000 + 500),
        "refused only {refused_at:?} after the removal (bound 1 s)"
    );
    // And stays refused.
    poll(&a, &path, None).await.assert_uforge_error(401);
}
