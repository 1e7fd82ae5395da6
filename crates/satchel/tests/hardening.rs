//! Hostile input against the real server: XML shaped to be slow to parse, crowds of logins, revoked
//! users, quotas. Timing bounds here are generous (debug build, shared CI machine); the release-build
//! figures are measured by hand and quoted in the issue notes.

mod common;

use common::cloud::{keygen, register, Signed};
use common::*;
use std::time::{Duration, Instant};

/// A `mySoftware` document whose root carries `n` attributes: quadratic to deserialize as is.
fn attribute_bomb(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 12 + 200);
    s.push_str("<ns1:mySoftware xmlns:ns1=\"http://www.usharesoft.com/uforge\"");
    for i in 0..n {
        s.push_str(&format!(" a{i}=\"1\""));
    }
    s.push_str("><name>x</name><version>1</version></ns1:mySoftware>");
    s.into_bytes()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `f` until `done` is set, returning the slowest answer's latency.
async fn slowest_while<F, Fut>(
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    f: F,
) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) || n == 0 {
        let t = Instant::now();
        let status = f().await;
        assert_eq!(status, 200);
        worst = worst.max(t.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attribute_bomb_is_refused_at_once_and_the_server_stays_responsive() {
    let s = Server::start(&[]).await;
    let alice = s.client("alice");
    // Warm the login cache so the probe measures parsing, not argon2.
    assert_eq!(alice.get("/users/alice").await.status, 200);
    let bomb = attribute_bomb(90_000);
    assert!(bomb.len() < 1 << 20, "under the document limit");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = reqwest::Client::new();
    let status_url = format!("{}/status", s.base());
    let poller = tokio::spawn(slowest_while(done.clone(), move || {
        let (http, url) = (http.clone(), status_url.clone());
        async move { http.get(&url).send().await.unwrap().status().as_u16() }
    }));
    let mut bombs = Vec::new();
    for _ in 0..4 {
        let (alice, bomb) = (alice.clone(), bomb.clone());
        bombs.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = alice
                .req("POST", "/users/alice/mysoftware", Some(bomb), &[])
                .await;
            (r, t.elapsed())
        }));
    }
    for b in bombs {
        let (r, took) = b.await.unwrap();
        r.assert_uforge_error(400);
        assert!(r.error_message().contains("attributes"), "{}", r.text());
        // Quadratic parsing took 40 s per document; a linear refusal is milliseconds.
        assert!(took < Duration::from_secs(3), "refusal took {took:?}");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let worst = poller.await.unwrap();
    assert!(worst < Duration::from_secs(1), "status took {worst:?}");

    // Nothing was created, and ordinary documents still parse.
    let list = alice.get("/users/alice/mysoftware").await;
    assert!(!list.text().contains("<name>x</name>"), "{}", list.text());
    assert!(alice.create_bundle("ok", "1").await > 0);
}

#[tokio::test]
async fn deep_and_wide_documents_are_refused_with_the_limit_named() {
    let s = Server::start(&[]).await;
    let alice = s.client("alice");
    let deep = format!(
        "<mySoftware>{}{}</mySoftware>",
        "<x>".repeat(100),
        "</x>".repeat(100)
    );
    let r = alice
        .req(
            "POST",
            "/users/alice/mysoftware",
            Some(deep.into_bytes()),
            &[],
        )
        .await;
    r.assert_uforge_error(400);
    assert!(r.error_message().contains("nested deeper"), "{}", r.text());
    let wide = format!("<mySoftware>{}</mySoftware>", "<x/>".repeat(30_000));
    let r = alice
        .req(
            "POST",
            "/users/alice/mysoftware",
            Some(wide.into_bytes()),
            &[],
        )
        .await;
    r.assert_uforge_error(400);
    assert!(r.error_message().contains("elements"), "{}", r.text());
}

#[tokio::test]
async fn a_caller_without_the_entitlement_never_gets_a_body_parsed() {
    let s = Server::start(&[]).await;
    let carol = s.client("carol");
    // Malformed and hostile bodies alike answer 403: the entitlement is checked first.
    for body in [attribute_bomb(20_000), b"<not xml".to_vec()] {
        // The body is never read, so the server may close the connection while the client is
        // still sending it: a reset is that same refusal, and the answer is read on a retry.
        let mut answer = None;
        for _ in 0..5 {
            answer = carol
                .try_req("POST", "/users/carol/mysoftware", body.clone())
                .await;
            if answer.is_some() {
                break;
            }
        }
        let r = answer.expect("an answer to one of five attempts");
        r.assert_uforge_error(403);
        assert!(r.error_message().contains("entitlement"), "{}", r.text());
    }
}

/// A remembered login answers from memory for at most `--login-revalidate` after its last check
/// against the store (1 s by default): a user removed by `satchel admin` (another process) is
/// refused within that bound, no longer at the very next request. With `--login-revalidate 0s`
/// every request rechecks, and the next request is refused.
#[tokio::test]
async fn a_removed_user_is_refused_within_the_revalidation_bound() {
    let s = Server::start(&[]).await;
    let alice = s.client("alice");
    assert_eq!(alice.get("/users/alice").await.status, 200);
    assert_eq!(alice.get("/users/alice").await.status, 200, "cached login");
    let out = s.admin(&["user", "remove", "alice"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // When the refused request was sent is what counts (refusing takes an argon2 check).
    let t0 = Instant::now();
    let refused_at = loop {
        let sent = t0.elapsed();
        let r = alice.get("/users/alice").await;
        if r.status == 401 {
            r.assert_uforge_error(401);
            break sent;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(sent < Duration::from_secs(5), "still logged in after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused_at < Duration::from_millis(1000 + 500),
        "still logged in {refused_at:?} after the removal (bound 1 s)"
    );

    // Re-added with another password: the old one stays refused, the new one works.
    let out = s.admin(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--entitlement",
            "software_upload",
        ],
        Some("new-pw\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    alice.get("/users/alice").await.assert_uforge_error(401);
    let fresh = Client {
        password: "new-pw".into(),
        ..alice.clone()
    };
    assert_eq!(fresh.get("/users/alice").await.status, 200);

    // Rechecked on every request: refused at the next one.
    let s = Server::start(&["--login-revalidate", "0s"]).await;
    let bob = s.client("bob");
    assert_eq!(bob.get("/users/bob").await.status, 200);
    assert_eq!(bob.get("/users/bob").await.status, 200, "cached login");
    let out = s.admin(&["user", "remove", "bob"], None);
    assert!(out.status.success());
    bob.get("/users/bob").await.assert_uforge_error(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_of_wrong_passwords_is_bounded_and_a_cached_user_keeps_working() {
    let s = Server::start(&[]).await;
    let pid = s.child.as_ref().unwrap().id();
    let bob = s.client("bob");
    assert_eq!(bob.get("/users/bob").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let bob = bob.clone();
        tokio::spawn(slowest_while(done.clone(), move || {
            let bob = bob.clone();
            async move { bob.get("/users/bob").await.status }
        }))
    };
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut crowd = Vec::new();
    for i in 0..256 {
        let c = Client {
            login: if i % 2 == 0 {
                "alice".into()
            } else {
                format!("nobody{i}")
            },
            password: format!("wrong-{i}"),
            ..s.client("alice")
        };
        crowd.push(tokio::spawn(async move { c.get("/users/alice").await }));
    }
    let (mut unauthorized, mut throttled) = (0, 0);
    for c in crowd {
        let r = c.await.unwrap();
        match r.status {
            401 => unauthorized += 1,
            429 => {
                r.assert_uforge_error(429);
                let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!(secs >= 1);
                throttled += 1;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let worst = poller.await.unwrap();
    sampler.await.unwrap();
    let grew_mib = peak
        .load(std::sync::atomic::Ordering::SeqCst)
        .saturating_sub(before)
        / 1024;
    eprintln!(
        "storm: {unauthorized} x 401, {throttled} x 429, RSS +{grew_mib} MiB, slowest cached poll {worst:?}"
    );
    assert!(throttled > 0, "the crowd must be throttled");
    assert!(grew_mib <= 64, "RSS grew by {grew_mib} MiB");
    assert!(worst < Duration::from_secs(2), "cached poll took {worst:?}");
    // The cached user is never throttled, even from the throttled address.
    assert_eq!(bob.get("/users/bob").await.status, 200);
    // A throttled address is told so before any hashing, with the right password too. The buckets
    // refill over time (a slow, loaded machine may have taken a minute over the storm), so they are
    // drained again, one wrong password at a time (a concurrent drain is partly refused as "busy",
    // which records no failure), until the throttle answers; the right password follows at once.
    let mut throttled_now = false;
    for i in 0..64 {
        let c = Client {
            password: format!("wrong-again-{i}"),
            ..s.client("alice")
        };
        let r = c.get("/users/alice").await;
        match r.status {
            401 => {}
            429 => {
                throttled_now = true;
                break;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(
        throttled_now,
        "64 wrong passwords in a row were never throttled"
    );
    let fresh_alice = s.client("alice");
    let r = fresh_alice.get("/users/alice").await;
    r.assert_uforge_error(429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_of_cold_logins_of_one_user_hashes_once() {
    let mport = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Server::start(&["--metrics-listen", &format!("127.0.0.1:{mport}")]).await;
    let pid = s.child.as_ref().unwrap().id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let alice = s.client("alice");
    let t = Instant::now();
    let crowd: Vec<_> = (0..64)
        .map(|_| {
            let a = alice.clone();
            tokio::spawn(async move { a.get("/users/alice").await.status })
        })
        .collect();
    for c in crowd {
        assert_eq!(c.await.unwrap(), 200);
    }
    let grew_mib = rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!("64 cold logins: {:?}, RSS +{grew_mib} MiB", t.elapsed());
    assert!(grew_mib <= 64, "RSS grew by {grew_mib} MiB");
    let metrics = reqwest::get(format!("http://127.0.0.1:{mport}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // One argon2 check for 64 identical credentials in flight (the admin tool's own checks run in
    // other processes).
    assert!(
        metrics.contains("\nsatchel_password_checks_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn quotas_refuse_clearly_and_only_the_user_over_them() {
    let s = Server::start(&["--quota-tickets", "2", "--quota-bytes", "300000"]).await;
    let alice = s.client("alice");
    let bob = s.client("bob");
    let msid = alice.create_bundle("q", "1").await;
    alice
        .add_file(msid, None, "a.bin", &noise(200_000, 1))
        .await;

    // Over the byte quota: the upload is refused with the quota named, and nothing is kept.
    let said = alice.create_artifact(msid, None, "b.bin", "file").await;
    let r = alice
        .try_req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/artifacts/{said}/bin/b.bin"),
            noise(200_000, 2),
        )
        .await;
    if let Some(r) = r {
        r.assert_uforge_error(403);
        assert!(r.error_message().contains("quota"), "{}", r.text());
    }
    // Bob is not affected by alice's usage.
    let bmsid = bob.create_bundle("q", "1").await;
    bob.add_file(bmsid, None, "a.bin", &noise(200_000, 3)).await;

    // Outstanding tickets: two queue, the third is refused until one finishes.
    let q = Server::start(&["--quota-tickets", "2", "--export-throttle", "200ms"]).await;
    let alice = q.client("alice");
    let msid = alice.create_bundle("t", "1").await;
    alice
        .add_file(msid, None, "a.bin", &noise(3 << 20, 4))
        .await;
    let path = format!("/users/alice/mysoftware/{msid}/exports?outputFormat=yaml");
    let mut created = 0;
    let mut refused = None;
    for _ in 0..3 {
        let r = alice.req("POST", &path, None, &[]).await;
        match r.status {
            201 => created += 1,
            _ => refused = Some(r),
        }
    }
    assert_eq!(created, 2);
    let r = refused.expect("the third export is refused");
    r.assert_uforge_error(403);
    assert!(r.error_message().contains("quota exceeded"), "{}", r.text());
    let bob = q.client("bob");
    let bmsid = bob.create_bundle("t", "1").await;
    bob.export(bmsid, "yaml").await;
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_and_keeps_earlier_data() {
    if SCALEOUT {
        return; // a bucket cannot be filled here; the local store is the one with a disk
    }
    let mut s = Server::start(&["--max-attempts", "1"]).await;
    s.kill9();
    let blobs = s.dir.path().join("blobs");
    let _ = std::fs::remove_dir_all(&blobs);
    let _fs = Tmpfs::mount(&blobs, "24m");
    s.spawn().await;

    let alice = s.client("alice");
    let msid = alice.create_bundle("full", "1").await;
    let (a, d) = (noise(10 << 20, 11), noise(10 << 20, 12));
    let aid = alice.add_file(msid, None, "a.bin", &a).await;
    let did = alice.add_file(msid, None, "d.bin", &d).await;
    let kept = s.blobs().await;
    assert_eq!(kept.len(), 2, "{kept:?}");

    // An upload that does not fit: 507 in the face's format (unless the connection closes first,
    // which is how a server refuses the rest of a body), and nothing of it is left behind.
    let said = alice.create_artifact(msid, None, "b.bin", "file").await;
    let r = alice
        .try_req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/artifacts/{said}/bin/b.bin"),
            noise(8 << 20, 13),
        )
        .await;
    if let Some(r) = r {
        r.assert_uforge_error(507);
        assert!(r.error_message().contains("no space"), "{}", r.text());
    }
    assert_eq!(s.blobs().await, kept, "no partial upload survives");

    let r = alice
        .req(
            "DELETE",
            &format!("/users/alice/mysoftware/{msid}/artifacts/{said}"),
            None,
            &[],
        )
        .await;
    assert!(r.status < 300, "{}", r.text());

    // An export that does not fit ends in error, and publishes nothing.
    let eid = alice.export(msid, "yaml").await;
    let st = alice.wait_export(msid, eid, Duration::from_secs(60)).await;
    assert_eq!(st.field("error").as_deref(), Some("true"), "{}", st.text());
    assert!(
        st.field("errorMessage")
            .unwrap_or_default()
            .contains("space"),
        "{}",
        st.text()
    );
    assert_eq!(s.blobs().await, kept, "no partial archive survives");

    // Earlier data is intact, and the server still works once there is room.
    for (id, data) in [(aid, &a), (did, &d)] {
        let r = alice
            .get(&format!(
                "/users/alice/mysoftware/{msid}/artifacts/{id}/bin"
            ))
            .await;
        assert_eq!(r.status, 200);
        assert!(r.body == *data, "file {id} changed");
    }
    alice.add_file(msid, None, "small.txt", b"fits").await;
}

#[tokio::test]
async fn the_byte_quota_holds_on_the_cloudapi_face_too() {
    let s = Server::start(&["--quota-bytes", "100000"]).await;
    let dir = tempfile::tempdir().unwrap();
    let kp = keygen(dir.path(), "id_ed", "ed25519", None, false);
    register(&s, "alice", "ed", &kp);
    let alice = Signed::new(&s, "alice", &kp);
    assert_eq!(alice.mkdir("/alice/stor/q").await.status, 204);
    let r = alice
        .call("PUT", "/alice/stor/q/a", Some(noise(60_000, 1)), &[])
        .await;
    assert_eq!(r.status, 204);
    // 60 000 + 60 000 is over 100 000: refused in CloudAPI's format, nothing stored.
    let r = alice
        .call("PUT", "/alice/stor/q/b", Some(noise(60_000, 2)), &[])
        .await;
    r.assert_error(403, "QuotaExceeded");
    assert!(r.json()["message"].as_str().unwrap().contains("quota"));
    assert_eq!(alice.get("/alice/stor/q/b").await.status, 404);
    // The UForge face counts the same bytes.
    let uf = s.client("alice");
    let msid = uf.create_bundle("q", "1").await;
    let said = uf.create_artifact(msid, None, "f", "file").await;
    if let Some(r) = uf
        .try_req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/artifacts/{said}/bin/f"),
            noise(60_000, 3),
        )
        .await
    {
        r.assert_uforge_error(403);
    }
}
