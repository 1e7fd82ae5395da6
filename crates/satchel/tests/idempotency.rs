//! `Idempotency-Key` over HTTP against the real binary, on both faces: a retry with the same key and
//! request gets the first answer (same ticket, status and document, `Idempotent-Replayed: true`), the
//! same key on another request is `409` in the face's error format, errors are not remembered, and
//! racing retries create one ticket (across two instances on PostgreSQL in the scale-out binary,
//! which includes this file).

mod common;

use common::cloud::{keygen, md5_b64, register, Signed};
use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;

fn exports(login: &str, msid: i64, format: &str) -> String {
    format!("/users/{login}/mysoftware/{msid}/exports?outputFormat={format}")
}

async fn post_key(c: &Client, path: &str, body: Option<Vec<u8>>, key: &str) -> Resp {
    c.req("POST", path, body, &[("Idempotency-Key", key)]).await
}

async fn total(c: &Client, path: &str) -> i64 {
    let r = c.get(path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.field("total").unwrap().parse().unwrap()
}

fn assert_replay_of(first: &Resp, again: &Resp) {
    assert_eq!(again.status, first.status, "{}", again.text());
    assert_eq!(again.body, first.body, "the same document");
    for h in ["content-type", "location"] {
        assert_eq!(again.header(h), first.header(h), "{h}");
    }
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
}

#[tokio::test]
async fn export_retries_with_one_key_give_the_first_ticket() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.client("alice"), s.client("bob"));
    let msid = a.create_bundle("app", "1").await;
    let other = a.create_bundle("other", "1").await;
    a.add_file(msid, None, "f.bin", b"bytes").await;

    let first = post_key(&a, &exports("alice", msid, "yaml"), None, "k-1").await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = post_key(&a, &exports("alice", msid, "yaml"), None, "k-1").await;
    assert_replay_of(&first, &again);
    // The key's quoted form (the IETF draft's structured-field string) is the same key.
    let quoted = post_key(&a, &exports("alice", msid, "yaml"), None, "\"k-1\"").await;
    assert_replay_of(&first, &quoted);
    assert_eq!(total(&a, "/users/alice/mysoftware/exports").await, 1);

    // The same key on another request: another query, another bundle, another method's body.
    for path in [
        exports("alice", msid, "json"),
        exports("alice", other, "yaml"),
    ] {
        let r = post_key(&a, &path, None, "k-1").await;
        r.assert_uforge_error(409);
        assert!(
            r.error_message().contains("different request"),
            "{}",
            r.text()
        );
    }
    // Keys are scoped per user: bob's "k-1" is his own.
    let bm = b.create_bundle("bapp", "1").await;
    let r = post_key(&b, &exports("bob", bm, "yaml"), None, "k-1").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("idempotent-replayed"), None);
    // Without a key every POST is a new ticket.
    a.export(msid, "yaml").await;
    a.export(msid, "yaml").await;
    assert_eq!(total(&a, "/users/alice/mysoftware/exports").await, 3);
    assert_eq!(total(&b, "/users/bob/mysoftware/exports").await, 1);

    // Malformed keys are refused before anything happens.
    for bad in ["x".repeat(256), String::new(), "a\tb".into()] {
        let r = post_key(&a, &exports("alice", msid, "yaml"), None, &bad).await;
        r.assert_uforge_error(400);
        assert!(
            r.error_message().contains("Idempotency-Key"),
            "{}",
            r.text()
        );
    }
    assert_eq!(total(&a, "/users/alice/mysoftware/exports").await, 3);
}

#[tokio::test]
async fn a_failed_request_does_not_keep_its_key() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("app", "1").await;
    a.add_file(msid, None, "f.bin", b"bytes").await;
    // Errors are not recorded: the same request is retried for real once it can succeed, and even
    // another request may use the key.
    post_key(&a, &exports("alice", msid, "zip"), None, "e")
        .await
        .assert_uforge_error(400);
    post_key(&a, &exports("alice", msid + 1000, "yaml"), None, "e")
        .await
        .assert_uforge_error(404);
    let first = post_key(&a, &exports("alice", msid, "yaml"), None, "e").await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_replay_of(
        &first,
        &post_key(&a, &exports("alice", msid, "yaml"), None, "e").await,
    );
    // Unauthenticated and unentitled callers never reach the key.
    let mut anon = a.clone();
    anon.password = "wrong".into();
    post_key(&anon, &exports("alice", msid, "yaml"), None, "e")
        .await
        .assert_uforge_error(401);
    assert_eq!(total(&a, "/users/alice/mysoftware/exports").await, 1);
}

/// The acceptance test: racing retries of one ticket creation, with one key, give one ticket. In the
/// scale-out binary they are spread over two instances sharing PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_retries_give_one_ticket_across_instances() {
    const RETRIES: usize = 24;
    let s = Server::start(&[]).await;
    let second = if SCALEOUT {
        Some(s.second(&[]).await)
    } else {
        None
    };
    let mut clients = vec![s.client("alice")];
    if let Some(o) = &second {
        clients.push(o.client("alice"));
    }
    let a = clients[0].clone();
    let msid = a.create_bundle("race", "1").await;
    a.add_file(msid, None, "f.bin", &noise(10_000, 3)).await;

    for round in 0..3 {
        let key = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(RETRIES));
        let mut tasks = Vec::new();
        for n in 0..RETRIES {
            let (c, barrier, key) = (
                clients[n % clients.len()].clone(),
                barrier.clone(),
                key.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                post_key(&c, &exports("alice", msid, "yaml"), None, &key).await
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let first: Vec<&Resp> = answers
            .iter()
            .filter(|r| r.header("idempotent-replayed").is_none())
            .collect();
        assert_eq!(first.len(), 1, "exactly one request ran");
        for r in &answers {
            assert_eq!(r.status, 201, "{}", r.text());
            assert_eq!(r.body, first[0].body);
        }
    }
    assert_eq!(total(&a, "/users/alice/mysoftware/exports").await, 3);
    if let Some(o) = &second {
        assert_eq!(
            total(&o.client("alice"), "/users/alice/mysoftware/exports").await,
            3
        );
    }
    // The tickets are real: they complete.
    let id = {
        let r = post_key(&a, &exports("alice", msid, "yaml"), None, "race-0").await;
        r.id()
    };
    let done = a.wait_export(msid, id, Duration::from_secs(60)).await;
    assert_eq!(
        done.field("complete").as_deref(),
        Some("true"),
        "{}",
        done.text()
    );
}

#[tokio::test]
async fn upload_retries_store_the_body_once() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("up", "1").await;
    let said = a.create_artifact(msid, None, "data.bin", "file").await;
    let path = format!("/users/alice/mysoftware/{msid}/artifacts/{said}/bin/data.bin");
    let data = noise(300_000, 7);

    let first = post_key(&a, &path, Some(data.clone()), "up-1").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let blobs = s.blobs().await.len();
    let again = post_key(&a, &path, Some(data.clone()), "up-1").await;
    assert_replay_of(&first, &again);
    assert_eq!(s.blobs().await.len(), blobs, "a replay stores nothing");
    // Another body (same length, one byte off) under the same key.
    let mut other = data.clone();
    other[150_000] ^= 1;
    for body in [other, data[..1000].to_vec(), Vec::new()] {
        let r = post_key(&a, &path, Some(body), "up-1").await;
        r.assert_uforge_error(409);
    }
    assert_eq!(s.blobs().await.len(), blobs);
    assert_eq!(a.get(&path).await.body, data, "the first upload's content");

    // License and logo uploads too.
    for (kind, file) in [("licenses", "LICENSE.txt"), ("logo", "logo.png")] {
        let p = format!("/users/alice/mysoftware/{msid}/{kind}/1/{file}");
        let first = post_key(&a, &p, Some(b"first".to_vec()), kind).await;
        assert_eq!(first.status, 200, "{}", first.text());
        assert_replay_of(
            &first,
            &post_key(&a, &p, Some(b"first".to_vec()), kind).await,
        );
        post_key(&a, &p, Some(b"second".to_vec()), kind)
            .await
            .assert_uforge_error(409);
    }
}

/// A retry arriving while the first request is still uploading waits for it, then gets its answer.
#[tokio::test]
async fn a_retry_during_the_first_upload_waits_for_its_answer() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("slow", "1").await;
    let said = a.create_artifact(msid, None, "slow.bin", "file").await;
    let url = a.url(&format!(
        "/users/alice/mysoftware/{msid}/artifacts/{said}/bin/slow.bin"
    ));
    let data = noise(200_000, 9);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let first = {
        let (a, url) = (a.clone(), url.clone());
        tokio::spawn(async move {
            let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
            let r = a
                .http
                .post(&url)
                .basic_auth(&a.login, Some(&a.password))
                .header("Idempotency-Key", "slow")
                .body(body)
                .send()
                .await
                .unwrap();
            let replayed = r.headers().get("idempotent-replayed").cloned();
            (
                r.status().as_u16(),
                replayed,
                r.bytes().await.unwrap().to_vec(),
            )
        })
    };
    tx.send(Ok(data[..100_000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retry = {
        let (a, url, data) = (a.clone(), url.clone(), data.clone());
        tokio::spawn(async move {
            let r = a
                .http
                .post(&url)
                .basic_auth(&a.login, Some(&a.password))
                .header("Idempotency-Key", "slow")
                .body(data)
                .send()
                .await
                .unwrap();
            let replayed = r.headers().get("idempotent-replayed").cloned();
            (
                r.status().as_u16(),
                replayed,
                r.bytes().await.unwrap().to_vec(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!retry.is_finished(), "the retry waits for the first upload");
    tx.send(Ok(data[100_000..].to_vec())).await.unwrap();
    drop(tx);
    let (s1, r1, b1) = first.await.unwrap();
    let (s2, r2, b2) = retry.await.unwrap();
    assert_eq!((s1, s2), (200, 200), "{}", String::from_utf8_lossy(&b2));
    assert!(r1.is_none());
    assert_eq!(r2.as_ref().map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(b1, b2);
    assert_eq!(a.get(&url[a.base.len()..]).await.body, data);
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn image_generation_retries_give_one_image() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("img", "1").await;
    a.add_file(msid, None, "f.bin", b"bytes").await;
    let tpl = format!("/users/alice/mysoftware/{msid}/templates");
    let r = a.req("POST", &tpl, Some(Vec::new()), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let images = format!("{tpl}/{}/images", r.id());
    let doc = |name: &str| {
        format!("<ns1:image xmlns:ns1=\"{NS}\"><format><name>docker</name></format><name>{name}</name></ns1:image>")
            .into_bytes()
    };
    let first = post_key(&a, &images, Some(doc("one")), "img").await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_replay_of(
        &first,
        &post_key(&a, &images, Some(doc("one")), "img").await,
    );
    let r = post_key(&a, &images, Some(doc("two")), "img").await;
    r.assert_uforge_error(409);
    assert_eq!(total(&a, &images).await, 1);
    // A caller without the entitlement is refused before the key or the document is looked at.
    let carol = s.client("carol");
    let cm = "/users/carol/mysoftware/1/templates/1/images";
    post_key(&carol, cm, Some(doc("one")), "img")
        .await
        .assert_uforge_error(403);
}

#[tokio::test]
async fn cloudapi_image_creation_and_export_retries() {
    let s = Server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let kp = keygen(dir.path(), "id_ed25519", "ed25519", None, false);
    register(&s, "alice", "ed", &kp);
    let alice = Signed::new(&s, "alice", &kp);
    let create = |name: &str| {
        serde_json::to_vec(&serde_json::json!({
            "name": name, "version": "1.0.0", "os": "linux", "type": "zvol"
        }))
        .unwrap()
    };
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "img-1"),
    ];
    let first = alice
        .call("POST", "/my/images", Some(create("foo")), &headers)
        .await;
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let again = alice
        .call("POST", "/my/images", Some(create("foo")), &headers)
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("content-md5").unwrap(), md5_b64(&again.body));
    assert_eq!(again.header("api-version").as_deref(), Some("7.2.0"));
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    let listed = alice.get("/my/images?state=all").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    alice
        .call("POST", "/my/images", Some(create("bar")), &headers)
        .await
        .assert_error(409, "Conflict");
    alice
        .call("POST", "/my/images", Some(b"{".to_vec()), &headers[..1])
        .await
        .assert_error(400, "InvalidContent");

    // ExportImage (asynchronous: it creates an export job) once per key.
    let id = alice
        .make_image("exp", "1.0.0", "none", &noise(5000, 4))
        .await;
    assert_eq!(alice.mkdir("/alice/stor/out").await.status, 204);
    let export = |dest: &str| {
        format!("/my/images/{id}?action=export&manta_path=/alice/stor/{dest}&async=true")
    };
    let key = [("idempotency-key", "exp-1")];
    let first = alice.call("POST", &export("out"), None, &key).await;
    assert_eq!(
        first.status,
        202,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let again = alice.call("POST", &export("out"), None, &key).await;
    assert_eq!((again.status, &again.body), (202, &first.body));
    assert_eq!(first.json()["id"], again.json()["id"]);
    alice
        .call("POST", &export("elsewhere"), None, &key)
        .await
        .assert_error(409, "Conflict");
    alice
        .call("POST", &export("out"), None, &[("idempotency-key", "")])
        .await
        .assert_error(409, "InvalidArgument");
}
