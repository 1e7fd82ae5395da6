//! What operators rely on, against the real server: `/metrics` (parsed as Prometheus text),
//! `/healthz`, `/readyz`, JSON logs, per-user request rates, slow clients, and SIGTERM.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn root_url(s: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", s.port)
}

fn sample<'a>(
    m: &'a prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    m.samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let mport = free_port();
    let s = Server::start(&["--metrics-listen", &format!("127.0.0.1:{mport}")]).await;
    let alice = s.client("alice");
    let msid = alice.create_bundle("m", "1").await;
    alice.add_file(msid, None, "f.txt", b"hello metrics").await;
    let eid = alice.export(msid, "yaml").await;
    alice.wait_export(msid, eid, Duration::from_secs(30)).await;
    let dl = alice
        .get(&format!(
            "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
        ))
        .await;
    assert_eq!(dl.status, 200);
    s.client("nobody")
        .get("/users/nobody")
        .await
        .assert_uforge_error(401);

    let http = reqwest::Client::new();
    assert_eq!(
        http.get(root_url(&s, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(root_url(&s, "/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let text = http
        .get(format!("http://127.0.0.1:{mport}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let m = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let created = sample(
        &m,
        "satchel_http_requests_total",
        &[
            ("face", "uforge"),
            ("method", "POST"),
            ("route", "/api/users/:uid/mysoftware"),
            ("status", "201"),
        ],
    )
    .expect("bundle creations counted under their route template");
    assert_eq!(value(created), 1.0);
    assert!(
        !text.contains("/api/users/alice/"),
        "raw paths must not become labels"
    );
    let done = sample(
        &m,
        "satchel_tickets",
        &[("kind", "bundle_export"), ("state", "complete")],
    )
    .expect("tickets by kind and state");
    assert_eq!(value(done), 1.0);
    assert!(value(sample(&m, "satchel_auth_failures_total", &[]).unwrap()) >= 1.0);
    assert!(sample(&m, "satchel_jobs_waiting", &[]).is_some());
    assert!(sample(&m, "satchel_jobs_oldest_waiting_age_seconds", &[]).is_some());
    assert!(value(sample(&m, "satchel_http_response_bytes_total", &[]).unwrap()) > 0.0);
    assert!(value(sample(&m, "satchel_archive_bytes", &[]).unwrap()) > 0.0);
    assert!(m
        .samples
        .iter()
        .any(|s| s.metric == "satchel_http_request_duration_seconds_count"));

    // On the main port, metrics are for administrators.
    let main = root_url(&s, "/metrics");
    assert_eq!(http.get(&main).send().await.unwrap().status(), 401);
    let r = http
        .get(&main)
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(&main)
        .basic_auth("root", Some("root-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("satchel_http_requests_total"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_colours() {
    let s = Server::start(&["--log-format", "json"]).await;
    s.client("alice").get("/users/alice").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = s.log();
    let mut n = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
        n += 1;
    }
    assert!(n > 0);
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in a file");
}

#[tokio::test]
async fn text_logs_have_no_colours_when_not_a_terminal() {
    let s = Server::start(&[]).await;
    s.client("alice").get("/users/alice").await;
    assert!(!s.log().contains('\u{1b}'), "{}", s.log());
}

#[tokio::test]
async fn one_users_request_rate_is_bounded_without_touching_others() {
    let s = Server::start(&["--user-rate", "2"]).await;
    let alice = s.client("alice");
    let bob = s.client("bob");
    let mut limited = None;
    // A burst of 10 s worth (20) is allowed, then about 2 per second.
    for _ in 0..40 {
        let r = alice.get("/users/alice").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("alice is rate limited");
    r.assert_uforge_error(429);
    assert!(r.header("retry-after").is_some());
    assert!(
        r.error_message().contains("too many requests"),
        "{}",
        r.text()
    );
    assert_eq!(bob.get("/users/bob").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_do_not_stop_others_and_are_dropped() {
    let s = Server::start(&["--header-timeout", "2s"]).await;
    let addr = format!("127.0.0.1:{}", s.port);
    // 500 connections sending a request head a byte at a time, never finishing it.
    let slow: Vec<std::net::TcpStream> = (0..500)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    let dripper = {
        let mut conns: Vec<_> = slow.iter().map(|c| c.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for _ in 0..4 {
                for c in conns.iter_mut() {
                    let _ = c.write_all(b"a");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // Meanwhile a normal client exports and downloads.
    let t = Instant::now();
    let alice = s.client("alice");
    let msid = alice.create_bundle("busy", "1").await;
    let data = noise(1 << 20, 5);
    alice.add_file(msid, None, "f.bin", &data).await;
    let eid = alice.export(msid, "yaml").await;
    alice.wait_export(msid, eid, Duration::from_secs(30)).await;
    let dl = alice
        .get(&format!(
            "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
        ))
        .await;
    assert_eq!(dl.status, 200);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    dripper.join().unwrap();
    // Past the header deadline every slow connection has been closed by the server.
    std::thread::sleep(Duration::from_secs(2));
    let mut closed = 0;
    for mut c in slow {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        match c.read(&mut buf) {
            Ok(_) | Err(_) => closed += 1,
        }
    }
    assert_eq!(closed, 500);
    // And the server is still fine.
    assert_eq!(alice.get("/users/alice").await.status, 200);
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let s = Server::start(&["--max-header-bytes", "16384"]).await;
    let r = reqwest::Client::new()
        .get(format!("{}/status", s.base()))
        .header("X-Big", "a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(s.client("alice").get("/users/alice").await.status, 200);
}

#[tokio::test]
async fn sigterm_stops_promptly_and_the_interrupted_export_resumes() {
    let mut s = Server::start(&["--export-throttle", "100ms", "--shutdown-grace", "5s"]).await;
    let alice = s.client("alice");
    let msid = alice.create_bundle("term", "1").await;
    alice
        .add_file(msid, None, "f.bin", &noise(6 << 20, 9))
        .await;
    let eid = alice.export(msid, "yaml").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let child = s.child.as_mut().unwrap();
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}: {}", s.log());
    assert!(s.log().contains("shutting down"), "{}", s.log());
    s.child = None;
    // The interrupted export is picked up again by the next server and completes.
    let out = s.admin(&["user", "list"], None);
    assert!(out.status.success());
    s.extra.clear();
    s.spawn().await;
    let st = alice.wait_export(msid, eid, Duration::from_secs(60)).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
}
