//! UForge API key pairs against the real server: creation (the secret shown once), listing with the
//! last use, requests signed as the SDK's `UForgeApiKeyAuth` signs them (the bundle export flow),
//! revocation, and every kind of wrong key refused like a wrong password.

mod common;

use common::*;
use satchel_domain::apikeys::sign;
use std::time::Duration;

struct KeyPair {
    id: i64,
    public: String,
    secret: String,
}

async fn create_key(c: &Client, uid: &str, name: &str) -> (KeyPair, Resp) {
    let doc = format!(
        "<ns1:apiKeyPair xmlns:ns1=\"{NS}\"><name>{name}</name><description>made by a test</description></ns1:apiKeyPair>"
    );
    let r = c
        .req(
            "POST",
            &format!("/users/{uid}/apikeys"),
            Some(doc.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let k = KeyPair {
        id: r.id(),
        public: r.field("publicKey").expect("publicKey"),
        secret: r.field("secretKey").expect("the secret, once"),
    };
    (k, r)
}

/// A request as the SDK sends it with `apikeys=`: `apiKey` among the query parameters, then
/// `&signature=` + urlencode(base64(HMAC-SHA1(secret, URL below the base, without its first '/')))).
async fn signed(
    s: &Server,
    method: &str,
    path: &str,
    public: &str,
    secret: &str,
    body: Option<Vec<u8>>,
) -> Resp {
    let sep = if path.contains('?') { '&' } else { '?' };
    let relative = format!("{path}{sep}apiKey={public}");
    let sig = sign(secret, &relative);
    let sig = enc(&sig);
    raw(s, method, &format!("{relative}&signature={sig}"), body).await
}

async fn raw(s: &Server, method: &str, path_and_query: &str, body: Option<Vec<u8>>) -> Resp {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = reqwest::Client::new()
        .request(m, format!("{}{path_and_query}", s.base()))
        .header("Accept", "application/xml")
        .header("Content-Type", "application/xml");
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apikey_pairs_sign_the_export_flow_and_are_revocable() {
    let mut s = Server::start(&[]).await;
    let alice = s.client("alice");
    let (k, created) = create_key(&alice, "alice", "ci").await;
    assert_eq!(created.header("cache-control").as_deref(), Some("no-store"));
    assert!(created
        .text()
        .contains("<ns0:apiKeyPair xmlns:ns0=\"http://www.usharesoft.com/uforge\">"));
    assert_eq!(created.field("name").as_deref(), Some("ci"));
    assert_eq!(
        created.field("uri"),
        Some(format!("users/alice/apikeys/{}", k.id))
    );
    assert_eq!(created.field("lastModified"), None, "never used yet");
    assert!(k.public.len() >= 32 && k.public.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(k.public, k.secret);

    // The whole export flow, signed with the key (no Basic credentials anywhere).
    let doc = format!("<ns1:mySoftware xmlns:ns1=\"{NS}\"><name>keyed</name><version>1.0</version></ns1:mySoftware>");
    let (p, sk) = (k.public.as_str(), k.secret.as_str());
    let r = signed(
        &s,
        "POST",
        "/users/alice/mysoftware",
        p,
        sk,
        Some(doc.into_bytes()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let msid = r.id();
    let doc = format!("<ns1:softwareArtifact xmlns:ns1=\"{NS}\"><name>a.txt</name><type>file</type></ns1:softwareArtifact>");
    let r = signed(
        &s,
        "POST",
        &format!("/users/alice/mysoftware/{msid}/artifacts"),
        p,
        sk,
        Some(doc.into_bytes()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let said = r.id();
    let data = noise(100_000, 7);
    let r = signed(
        &s,
        "POST",
        &format!("/users/alice/mysoftware/{msid}/artifacts/{said}/bin/a.txt"),
        p,
        sk,
        Some(data.clone()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = signed(
        &s,
        "POST",
        &format!("/users/alice/mysoftware/{msid}/exports?outputFormat=yaml"),
        p,
        sk,
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let eid = r.id();
    let mut done = false;
    for _ in 0..400 {
        let r = signed(
            &s,
            "GET",
            &format!("/users/alice/mysoftware/{msid}/exports/{eid}/status"),
            p,
            sk,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ne!(r.field("error").as_deref(), Some("true"), "{}", r.text());
        if r.field("complete").as_deref() == Some("true") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the export did not complete");
    let r = signed(
        &s,
        "GET",
        &format!("/users/alice/mysoftware/{msid}/exports/{eid}/downloads"),
        p,
        sk,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let files = untar(&r.body);
    assert!(
        files.values().any(|v| *v == data),
        "the upload is in the archive"
    );

    // Listed with its last use, never with its secret (XML and JSON).
    let list = alice.get("/users/alice/apikeys").await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list.text().contains("<ns0:apiKeyPairs xmlns:ns0=\"http://www.usharesoft.com/uforge\"><total>1</total><apiKeyPairs><apiKeyPair>"), "{}", list.text());
    assert_eq!(list.field("publicKey").as_deref(), Some(p));
    assert!(
        list.field("lastModified").is_some(),
        "last use: {}",
        list.text()
    );
    assert!(!list.text().contains(sk) && list.field("secretKey").is_none());
    let one = alice.get(&format!("/users/alice/apikeys/{}", k.id)).await;
    assert_eq!(one.status, 200);
    assert!(!one.text().contains(sk) && one.field("lastModified").is_some());
    let json = alice
        .req(
            "GET",
            "/users/alice/apikeys",
            None,
            &[("Accept", "application/json")],
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["apiKeyPairs"]["apiKeyPair"][0]["publicKey"], p);
    assert_eq!(v["apiKeyPairs"]["apiKeyPair"][0]["dbId"], k.id);
    assert!(v["apiKeyPairs"]["apiKeyPair"][0].get("secretKey").is_none());
    assert!(!json.text().contains(sk));

    // The seal key is kept (0600) and keys survive a restart.
    if !SCALEOUT {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(s.dir.path().join("apikey-seal.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let raw = std::fs::read(s.dir.path().join("satchel.db")).unwrap();
        assert!(
            !raw.windows(sk.len()).any(|w| w == sk.as_bytes()),
            "the secret is sealed"
        );
    }
    s.kill9();
    s.spawn().await;
    let r = signed(&s, "GET", "/users/alice/mysoftware", p, sk, None).await;
    assert_eq!(r.status, 200, "after a restart: {}", r.text());

    // Revoked: refused like a wrong password, at once.
    let r = alice
        .req(
            "DELETE",
            &format!("/users/alice/apikeys/{}", k.id),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = signed(&s, "GET", "/users/alice/mysoftware", p, sk, None).await;
    r.assert_uforge_error(401);
    let mut wrong = s.client("alice");
    wrong.password = "not-her-password".into();
    let w = wrong.get("/users/alice/mysoftware").await;
    w.assert_uforge_error(401);
    assert_eq!(r.error_message(), w.error_message());
    alice
        .get(&format!("/users/alice/apikeys/{}", k.id))
        .await
        .assert_uforge_error(404);
    assert!(!s.log().contains(sk), "the secret is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_signatures_and_other_users_keys_are_refused_like_a_wrong_password() {
    let s = Server::start(&[]).await;
    let (alice, bob, carol, root) = (
        s.client("alice"),
        s.client("bob"),
        s.client("carol"),
        s.client("root"),
    );
    let (a, _) = create_key(&alice, "alice", "a").await;
    let (b, _) = create_key(&bob, "bob", "b").await;
    let mut wrong = s.client("alice");
    wrong.password = "nope".into();
    let password_refusal = wrong.get("/users/alice/mysoftware").await;
    password_refusal.assert_uforge_error(401);
    let like_a_wrong_password = |r: Resp| {
        r.assert_uforge_error(401);
        assert_eq!(r.error_message(), password_refusal.error_message());
        assert!(r.header("www-authenticate").is_some());
    };
    let path = "/users/alice/mysoftware";
    assert_eq!(
        signed(&s, "GET", path, &a.public, &a.secret, None)
            .await
            .status,
        200
    );

    // Signed with another secret (bob's), or with alice's over another URL, or tampered with.
    like_a_wrong_password(signed(&s, "GET", path, &a.public, &b.secret, None).await);
    let sig = sign(
        &a.secret,
        &format!("/users/bob/mysoftware?apiKey={}", a.public),
    );
    let sig = enc(&sig);
    like_a_wrong_password(
        raw(
            &s,
            "GET",
            &format!("{path}?apiKey={}&signature={sig}", a.public),
            None,
        )
        .await,
    );
    let sig = sign(&a.secret, &format!("{path}?apiKey={}", a.public));
    let sig = enc(&sig);
    like_a_wrong_password(
        raw(
            &s,
            "GET",
            &format!("{path}?apiKey={}&x=1&signature={sig}", a.public),
            None,
        )
        .await,
    );
    like_a_wrong_password(
        raw(
            &s,
            "GET",
            &format!("{path}?apiKey={}&signature=AAAA", a.public),
            None,
        )
        .await,
    );
    like_a_wrong_password(
        raw(
            &s,
            "GET",
            &format!("{path}?apiKey={}&signature=%%%", a.public),
            None,
        )
        .await,
    );
    like_a_wrong_password(signed(&s, "GET", path, "NoSuchPublicKey", &a.secret, None).await);
    // No signature at all: refused too (with what is missing).
    raw(&s, "GET", &format!("{path}?apiKey={}", a.public), None)
        .await
        .assert_uforge_error(401);

    // Bob's own pair is bob: alice's things do not exist for him, as with his password.
    let r = signed(&s, "GET", path, &b.public, &b.secret, None).await;
    r.assert_uforge_error(404);
    assert_eq!(r.error_message(), bob.get(path).await.error_message());
    let r = signed(
        &s,
        "GET",
        "/users/alice/apikeys",
        &b.public,
        &b.secret,
        None,
    )
    .await;
    r.assert_uforge_error(404);
    bob.req(
        "DELETE",
        &format!("/users/alice/apikeys/{}", a.id),
        None,
        &[],
    )
    .await
    .assert_uforge_error(404);
    carol
        .get("/users/alice/apikeys")
        .await
        .assert_uforge_error(404);
    assert_eq!(
        signed(&s, "GET", path, &a.public, &a.secret, None)
            .await
            .status,
        200,
        "still alice's"
    );

    // An admin manages anyone's keys; a user without entitlements still manages her own.
    let (r, _) = create_key(&root, "alice", "by-root").await;
    assert_eq!(
        signed(&s, "GET", path, &r.public, &r.secret, None)
            .await
            .status,
        200
    );
    let list = root.get("/users/alice/apikeys").await;
    assert_eq!(list.field("total").as_deref(), Some("2"), "{}", list.text());
    let (c, _) = create_key(&carol, "carol", "c").await;
    assert_eq!(
        signed(
            &s,
            "GET",
            "/users/carol/mysoftware",
            &c.public,
            &c.secret,
            None
        )
        .await
        .status,
        200
    );
    let r = carol
        .req("GET", &format!("/users/carol/apikeys/{}", a.id), None, &[])
        .await;
    r.assert_uforge_error(404);

    // A deleted user's keys go with them.
    let out = s.admin(&["user", "remove", "bob"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    like_a_wrong_password(
        signed(
            &s,
            "GET",
            "/users/bob/mysoftware",
            &b.public,
            &b.secret,
            None,
        )
        .await,
    );
}

/// Every instance on one database must share the seal key: with it, a key made on one works on
/// another; without it, it is refused (and the server says why in its log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apikey_seal_is_shared_by_instances() {
    if !SCALEOUT {
        return;
    }
    let s = Server::start(&[]).await;
    let (k, _) = create_key(&s.client("alice"), "alice", "shared").await;
    let file = s.dir.path().join("apikey-seal.key");
    let file = file.to_str().unwrap();
    let same = s.second(&["--apikey-seal-file", file]).await;
    assert_eq!(
        signed(
            &same,
            "GET",
            "/users/alice/mysoftware",
            &k.public,
            &k.secret,
            None
        )
        .await
        .status,
        200
    );
    let other = s.second(&[]).await;
    signed(
        &other,
        "GET",
        "/users/alice/mysoftware",
        &k.public,
        &k.secret,
        None,
    )
    .await
    .assert_uforge_error(401);
    assert!(other
        .log()
        .contains("does not open with this server's seal key"));
}

/// What Python's urlencode does to base64 text.
fn enc(sig: &str) -> String {
    sig.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}
