//! Takeout webhooks (`notifyUrl`) against the real server (embedded default; again on PostgreSQL +
//! Garage, with two instances sharing the queue, through `scaleout.rs`): a receiver in the test
//! fails the first deliveries, then accepts exactly one; every request is signed with the secret the
//! `201` showed once; a rotated secret signs what follows; private addresses are refused unless the
//! server allows them.

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

/// Fast retries: the schedule is the production one, scaled down.
const FAST: [&str; 5] = [
    "--notify-allow-private",
    "--notify-retry-base",
    "200ms",
    "--notify-retry-cap",
    "1s",
];

#[derive(Debug, Clone)]
struct Hit {
    signature: String,
    delivery: String,
    content_type: String,
    body: Vec<u8>,
    accepted: bool,
}

type Hits = Arc<Mutex<Vec<Hit>>>;

/// A receiver on 127.0.0.1 answering 500 to its first `fail_first` requests, then 200.
async fn receiver(fail_first: usize) -> (String, Hits) {
    let hits: Hits = Arc::default();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let h = h.clone();
            async move {
                let get = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let mut v = h.lock().unwrap();
                let accepted = v.len() >= fail_first;
                v.push(Hit {
                    signature: get("satchel-signature"),
                    delivery: get("satchel-delivery"),
                    content_type: get("content-type"),
                    body: body.to_vec(),
                    accepted,
                });
                if accepted {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/hook?from=satchel"), hits)
}

/// What the README tells receivers to do: HMAC-SHA256 over "<t>.<body>" with the secret's text.
fn verify(secret: &str, hit: &Hit) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in hit.signature.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn create(c: &Client, notify: &str, headers: &[(&str, &str)]) -> Resp {
    c.req(
        "POST",
        &format!("/users/{}/takeouts?notifyUrl={}", c.login, encode(notify)),
        None,
        headers,
    )
    .await
}

async fn wait_hits(hits: &Hits, n: usize) -> Vec<Hit> {
    let deadline = Instant::now() + T;
    loop {
        let v = hits.lock().unwrap().clone();
        if v.len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} deliveries: {v:?}",
            v.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_done(c: &Client, id: i64) -> Resp {
    let deadline = Instant::now() + T;
    loop {
        let r = c.get(&format!("/users/{}/takeouts/{id}", c.login)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if ["complete", "error", "cancelled"]
            .iter()
            .any(|f| r.field(f).as_deref() == Some("true"))
        {
            return r;
        }
        assert!(Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_takeout_posts_its_final_status_once_signed_after_failed_attempts() {
    let s = Server::start(&FAST).await;
    // Scale-out: a second instance on the same database runs jobs too; still one delivery.
    let _other = if SCALEOUT {
        Some(s.second(&FAST).await)
    } else {
        None
    };
    let (url, hits) = receiver(2).await;
    let a = s.client("alice");
    let m = a.create_bundle("hooked", "1").await;
    a.add_file(m, None, "a.txt", b"hello").await;

    let r = create(&a, &url, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r
        .field("notifySecret")
        .expect("the first 201 shows the secret");
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert_eq!(r.field("notifyUrl").as_deref(), Some(url.as_str()));
    let id = r.id();

    let got = wait_hits(&hits, 3).await;
    // Retries are seconds apart here; wait past a few more of them: nothing else arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_later = hits.lock().unwrap().clone();
    assert_eq!(got_later.len(), 3, "{got_later:?}");
    assert_eq!(
        got.iter().map(|h| h.accepted).collect::<Vec<_>>(),
        [false, false, true],
        "two refused, then exactly one accepted"
    );
    let doc = wait_done(&a, id).await;
    assert_eq!(doc.field("complete").as_deref(), Some("true"));
    let digest = doc.field("digest").unwrap();
    for h in &got {
        assert!(verify(&secret, h), "{h:?}");
        assert!(!verify("whsec_wrong", h));
        assert_eq!(h.content_type, "application/json");
        assert_eq!(h.delivery, id.to_string());
        let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(v["ticket"], id);
        assert_eq!(v["kind"], "takeout");
        assert_eq!(v["state"], "complete");
        assert_eq!(v["percentage"], 100);
        assert_eq!(format!("sha256:{}", v["sha256"].as_str().unwrap()), digest);
        assert!(v["size"].as_i64().unwrap() > 0);
        assert_eq!(
            v["downloadUri"],
            format!("users/alice/takeouts/{id}/downloads")
        );
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        // A tampered body does not verify.
        let mut forged = h.clone();
        forged.body = String::from_utf8_lossy(&h.body)
            .replace("complete", "cancelled")
            .into_bytes();
        assert!(!verify(&secret, &forged));
    }
    // The secret is never shown again: not in the takeout, not in the next one's 201.
    assert!(doc.field("notifySecret").is_none());
    let r = create(&a, &url, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.field("notifySecret").is_none(), "{}", r.text());
    let got = wait_hits(&hits, 4).await;
    assert!(verify(&secret, &got[3]) && got[3].accepted);
    assert!(!s.log().contains(&secret), "the secret is never logged");
    if let Some(o) = &_other {
        assert!(!o.log().contains(&secret));
    }
}

#[tokio::test]
async fn a_rotated_secret_signs_later_deliveries_and_replays_never_show_one() {
    let s = Server::start(&FAST).await;
    let (url, hits) = receiver(0).await;
    let a = s.client("alice");
    let r = create(&a, &url, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let first = r.field("notifySecret").unwrap();
    let got = wait_hits(&hits, 1).await;
    assert!(verify(&first, &got[0]));

    let r = a.req("POST", "/users/alice/notifysecret", None, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let second = r.field("secret").unwrap();
    assert_ne!(first, second);
    // Only its owner (or an admin) rotates it.
    let r = s
        .client("bob")
        .req("POST", "/users/alice/notifysecret", None, &[])
        .await;
    r.assert_uforge_error(404);

    let r = create(&a, &url, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.field("notifySecret").is_none());
    let got = wait_hits(&hits, 2).await;
    assert!(verify(&second, &got[1]), "signed with the new secret");
    assert!(!verify(&first, &got[1]));

    // Bob's first takeout with an Idempotency-Key: the 201 shows his secret, its replay does not
    // (nor is it stored with the key).
    let b = s.client("bob");
    let key = [("Idempotency-Key", "bob-takeout-1")];
    let r1 = create(&b, &url, &key).await;
    assert_eq!(r1.status, 201, "{}", r1.text());
    let bobs = r1.field("notifySecret").expect("shown once");
    let r2 = create(&b, &url, &key).await;
    assert_eq!(r2.status, 201, "{}", r2.text());
    assert_eq!(r2.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(r2.id(), r1.id());
    assert!(r2.field("notifySecret").is_none(), "{}", r2.text());
    let got = wait_hits(&hits, 3).await;
    assert!(verify(&bobs, &got[2]));
}

#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_without_the_setting() {
    let s = Server::start(&[
        "--notify-retry-base",
        "100ms",
        "--notify-retry-cap",
        "200ms",
        "--notify-retry-for",
        "1s",
    ])
    .await;
    let (url, hits) = receiver(0).await;
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let a = s.client("alice");
    let long = format!("https://example.com/{}", "a".repeat(3000));
    for bad in [
        url.as_str(),
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "not a url",
        long.as_str(),
    ] {
        let r = create(&a, bad, &[]).await;
        r.assert_uforge_error(400);
        assert!(r.error_message().contains("notifyUrl"), "{}", r.text());
    }
    assert!(a
        .get("/users/alice/takeouts")
        .await
        .field("takeout")
        .is_none());

    // A name is checked where it resolves, at delivery: refused, retried, given up.
    let by_name = format!("http://localhost:{port}/hook");
    let r = create(&a, &by_name, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.field("notifySecret").unwrap();
    wait_done(&a, r.id()).await;
    let deadline = Instant::now() + T;
    while !s.log().contains("takeout webhook given up") {
        assert!(Instant::now() < deadline, "{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        hits.lock().unwrap().is_empty(),
        "nothing reached the receiver"
    );
    let log = s.log();
    assert!(log.contains("resolves only to loopback"), "{log}");
    assert!(!log.contains(&secret));
}
