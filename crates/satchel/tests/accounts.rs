//! Cloud accounts against the real server: the SDK's `xsi:type` documents in and out, secrets
//! masked unless the owner reveals them, owner scoping, certificate files, and the promise that a
//! known secret stored through HTTP appears nowhere in plaintext (the SQLite file and its WAL, the
//! blob store, the server's TRACE log, a `pg_dump` of the PostgreSQL database), before and after a
//! key rotation with `satchel admin secrets rotate`. Runs on both engines (see `scaleout.rs`).

mod common;

use base64::Engine;
use common::*;
use std::path::PathBuf;

const AWS_SECRET: &str = "aws-SECRET-7f3a9c1e-do-not-leak";
const OS_PASSWORD: &str = "os-PASSWORD-b41d2e77-do-not-leak";
const CERT_SECRET: &str =
    "-----BEGIN PRIVATE KEY-----cert-SECRET-91c0a3f5-----END PRIVATE KEY-----";
const NEW_PASSWORD: &str = "os-PASSWORD-2nd-c0ffee11-do-not-leak";
const BAD_DOC_SECRET: &str = "refused-SECRET-5eed5eed-do-not-leak";

fn aws_doc(name: &str) -> Vec<u8> {
    let cert = base64::engine::general_purpose::STANDARD.encode(CERT_SECRET);
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><ns1:credAccount xmlns:ns1="http://www.usharesoft.com/uforge" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:CredAccountAws"><name>{name}</name><targetPlatform><name>Amazon</name></targetPlatform><certificates><certificate><content>{cert}</content><name>ec2.pem</name><type>ec2PrivateKey</type></certificate></certificates><accessKeyId>AKIAEXAMPLE</accessKeyId><accountNumber>123456789012</accountNumber><secretAccessKeyId>{AWS_SECRET}</secretAccessKeyId></ns1:credAccount>"#
    )
    .into_bytes()
}

fn openstack_doc(name: &str, password: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><ns1:credAccount xmlns:ns1="http://www.usharesoft.com/uforge" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:CredAccountOpenStack"><name>{name}</name><targetPlatform><name>OpenStack</name></targetPlatform><glanceUrl>http://glance.example:9292</glanceUrl><keystoneUrl>http://keystone.example:5000</keystoneUrl><login>demo</login><password>{password}</password><keystoneVersion>v3</keystoneVersion></ns1:credAccount>"#
    )
    .into_bytes()
}

async fn create(c: &Client, uid: &str, doc: Vec<u8>) -> Resp {
    c.req("POST", &format!("/users/{uid}/accounts"), Some(doc), &[])
        .await
}

#[tokio::test]
async fn accounts_round_trip_masked_scoped_and_typed() {
    let s = Server::start(&[]).await;
    let (alice, bob, carol, root) = (
        s.client("alice"),
        s.client("bob"),
        s.client("carol"),
        s.client("root"),
    );
    let r = create(&alice, "alice", aws_doc("aws one")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = r.text();
    assert!(t.contains(r#"xsi:type="ns0:CredAccountAws""#), "{t}");
    assert!(
        t.contains("<secretAccessKeyId>********</secretAccessKeyId>"),
        "{t}"
    );
    assert!(t.contains("<accessKeyId>AKIAEXAMPLE</accessKeyId>"), "{t}");
    assert!(
        t.contains("<type>aws</type>") && t.contains("<name>ec2.pem</name>"),
        "{t}"
    );
    assert!(!t.contains(AWS_SECRET) && !t.contains("<content>"), "{t}");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let aws = r.id();
    let r = create(&alice, "alice", openstack_doc("os one", OS_PASSWORD)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let os = r.id();

    // Listed, masked, each with its subtype.
    let r = alice.get("/users/alice/accounts").await;
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.contains("<total>2</total>"), "{t}");
    assert!(t.contains(r#"xsi:type="ns0:CredAccountOpenStack""#), "{t}");
    assert!(t.contains("<password>********</password>"), "{t}");
    assert!(!t.contains(OS_PASSWORD) && !t.contains(AWS_SECRET), "{t}");

    // Revealed to the owner only.
    let r = alice
        .get(&format!("/users/alice/accounts/{aws}?reveal=true"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.field("secretAccessKeyId").as_deref(), Some(AWS_SECRET));
    let content = r.field("content").expect("certificate content");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap(),
        CERT_SECRET.as_bytes()
    );
    let r = root
        .get(&format!("/users/alice/accounts/{aws}?reveal=true"))
        .await;
    r.assert_uforge_error(403);
    let r = root.get(&format!("/users/alice/accounts/{aws}")).await;
    assert_eq!(r.status, 200, "an administrator sees it masked");
    assert!(!r.text().contains(AWS_SECRET));

    // Another user's account answers like a missing one.
    for path in [
        format!("/users/alice/accounts/{aws}"),
        format!("/users/bob/accounts/{aws}"),
        format!("/users/bob/accounts/{aws}/certs/1"),
    ] {
        bob.get(&path).await.assert_uforge_error(404);
    }
    bob.req("DELETE", &format!("/users/bob/accounts/{aws}"), None, &[])
        .await
        .assert_uforge_error(404);
    assert!(bob
        .get("/users/bob/accounts")
        .await
        .text()
        .contains("<total>0</total>"));

    // No entitlement, no account; an unknown or abstract type is a 400.
    create(&carol, "carol", openstack_doc("c", "pw"))
        .await
        .assert_uforge_error(403);
    let doc = String::from_utf8(openstack_doc("x", "pw")).unwrap();
    for bad in [
        "ns1:CredAccountMars",
        "ns1:CredAccountCert",
        "ns1:CredAccount",
    ] {
        let r = create(
            &alice,
            "alice",
            doc.replace("ns1:CredAccountOpenStack", bad).into_bytes(),
        )
        .await;
        r.assert_uforge_error(400);
        assert!(
            r.error_message().contains("unknown cloud account type"),
            "{}",
            r.text()
        );
    }
    let untyped = doc.replace(r#" xsi:type="ns1:CredAccountOpenStack""#, "");
    create(&alice, "alice", untyped.into_bytes())
        .await
        .assert_uforge_error(400);

    // JSON in and out.
    let r = alice
        .req(
            "POST",
            "/users/alice/accounts",
            Some(br#"{"type":"CredAccountDocker","name":"hub","endpointUrl":"https://hub.example","login":"me","password":"json-pw"}"#.to_vec()),
            &[("Content-Type", "application/json"), ("Accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["type"], "CredAccountDocker");
    assert_eq!(v["password"], "********");
    assert_eq!(v["targetPlatform"]["type"], "docker");

    // An update that sends the mask back keeps the secret; a new value replaces it.
    let masked = String::from_utf8(openstack_doc("os renamed", "********")).unwrap();
    let r = alice
        .req(
            "PUT",
            &format!("/users/alice/accounts/{os}"),
            Some(masked.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = alice
        .get(&format!("/users/alice/accounts/{os}?reveal=true"))
        .await;
    assert_eq!(r.field("password").as_deref(), Some(OS_PASSWORD));
    assert_eq!(r.field("name").as_deref(), Some("os renamed"));
    let r = alice
        .req(
            "PUT",
            &format!("/users/alice/accounts/{os}"),
            Some(openstack_doc("os renamed", NEW_PASSWORD)),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = alice
        .get(&format!("/users/alice/accounts/{os}?reveal=true"))
        .await;
    assert_eq!(r.field("password").as_deref(), Some(NEW_PASSWORD));

    // Certificate files: add, upload, download, delete; none on an OpenStack account.
    let cert_doc = br#"<ns1:certificate xmlns:ns1="http://www.usharesoft.com/uforge"><name>x.pem</name><type>x509</type></ns1:certificate>"#;
    let r = alice
        .req(
            "POST",
            &format!("/users/alice/accounts/{aws}/certs"),
            Some(cert_doc.to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let cert = r.id();
    let r = alice
        .req(
            "POST",
            &format!("/users/alice/accounts/{aws}/certs/{cert}/upload.pem"),
            Some(b"uploaded pem".to_vec()),
            &[("Content-Type", "application/octet-stream")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("name").as_deref(), Some("upload.pem"));
    assert_eq!(r.field("size").as_deref(), Some("12"));
    let r = alice
        .get(&format!("/users/alice/accounts/{aws}/certs/{cert}"))
        .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"uploaded pem".as_slice())
    );
    root.get(&format!("/users/alice/accounts/{aws}/certs/{cert}"))
        .await
        .assert_uforge_error(403);
    alice
        .req(
            "POST",
            &format!("/users/alice/accounts/{os}/certs"),
            Some(cert_doc.to_vec()),
            &[],
        )
        .await
        .assert_uforge_error(400);
    let r = alice
        .req(
            "DELETE",
            &format!("/users/alice/accounts/{aws}/certs/{cert}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    alice
        .get(&format!("/users/alice/accounts/{aws}/certs/{cert}"))
        .await
        .assert_uforge_error(404);

    // Deleted: gone, certificates with it.
    let r = alice
        .req("DELETE", &format!("/users/alice/accounts/{aws}"), None, &[])
        .await;
    assert_eq!(r.status, 204);
    alice
        .get(&format!("/users/alice/accounts/{aws}"))
        .await
        .assert_uforge_error(404);
}

/// The key file the server seals with: given to it (scale-out), or generated in its data dir.
fn key_file(s: &Server) -> PathBuf {
    match s.storage.iter().position(|a| a == "--secrets-key-file") {
        Some(i) => PathBuf::from(&s.storage[i + 1]),
        None => s.dir.path().join("secrets.key"),
    }
}

#[tokio::test]
async fn secrets_rest_nowhere_in_plaintext_and_survive_a_key_rotation() {
    let mut s = Server::start(&[]).await;
    let trace = restart_with_trace_logs(&mut s).await;
    let alice = s.client("alice");
    let aws = create(&alice, "alice", aws_doc("aws")).await;
    assert_eq!(aws.status, 201, "{}", aws.text());
    let os = create(&alice, "alice", openstack_doc("os", OS_PASSWORD)).await;
    assert_eq!(os.status, 201, "{}", os.text());
    let (aws, os) = (aws.id(), os.id());
    // Revealed and downloaded (both logged, without the values).
    let r = alice
        .get(&format!("/users/alice/accounts/{aws}?reveal=true"))
        .await;
    assert_eq!(r.field("secretAccessKeyId").as_deref(), Some(AWS_SECRET));
    let cert_id: i64 = {
        let t = r.text();
        let i = t.find("<certificate>").unwrap();
        t[i..]
            .split("<dbId>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let r = alice
        .get(&format!("/users/alice/accounts/{aws}/certs/{cert_id}"))
        .await;
    assert_eq!(r.body, CERT_SECRET.as_bytes());
    // A refused document's secret is not echoed in the error.
    let bad = String::from_utf8(openstack_doc("bad", BAD_DOC_SECRET))
        .unwrap()
        .replace("<keystoneVersion>", "<port>x</port><keystoneVersion>")
        .replace("ns1:CredAccountOpenStack", "ns1:CredAccountVCloudDirector");
    let r = create(&alice, "alice", bad.into_bytes()).await;
    r.assert_uforge_error(400);
    assert!(!r.text().contains(BAD_DOC_SECRET), "{}", r.text());

    let log = std::fs::read_to_string(&trace).unwrap();
    // At RUST_LOG=trace every statement is logged (sqlx's DEBUG events, with their SQL).
    assert!(log.contains("db.statement"), "the log is verbose");
    assert!(
        log.contains("cloud account secrets revealed"),
        "reveals are logged"
    );
    assert!(log.contains("account certificate downloaded"));
    let secrets = [AWS_SECRET, OS_PASSWORD, CERT_SECRET, BAD_DOC_SECRET];
    assert_nowhere(&everything_stored(&s).await, &secrets);

    // Rotation: every value re-sealed under the new key, then a rerun finds nothing left.
    let new_key = s.dir.path().join("rotated.key");
    let new_flag = new_key.display().to_string();
    // The current key as the server has it: the scale-out storage flags carry its file, the
    // embedded default is the data directory's.
    let rotate = ["secrets", "rotate", "--new-key-file", new_flag.as_str()];
    let out = s.admin(&rotate, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("re-sealed 3 secrets"), "{stdout}");
    let out = s.admin(&rotate, None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 0 secrets"));
    // Until the servers get the new key, what it sealed does not open with the old one.
    let r = alice
        .get(&format!("/users/alice/accounts/{os}?reveal=true"))
        .await;
    r.assert_uforge_error(500);
    assert!(!r.text().contains(OS_PASSWORD));
    // The operator swaps the key file and restarts.
    std::fs::copy(&new_key, key_file(&s)).unwrap();
    restart_with_trace_logs(&mut s).await;
    let r = alice
        .get(&format!("/users/alice/accounts/{os}?reveal=true"))
        .await;
    assert_eq!(
        r.field("password").as_deref(),
        Some(OS_PASSWORD),
        "{}",
        r.text()
    );
    let r = alice
        .get(&format!("/users/alice/accounts/{aws}/certs/{cert_id}"))
        .await;
    assert_eq!(r.body, CERT_SECRET.as_bytes());
    assert_nowhere(&everything_stored(&s).await, &secrets);
}

/// Scale-out instances never make a secrets key up: without one, `serve` refuses to start.
#[tokio::test]
async fn scale_out_without_a_secrets_key_does_not_start() {
    let s = Server::start(&[]).await;
    if s.database_url().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:1")
        .arg("--data-dir")
        .arg(dir.path())
        .args(without_secrets_key(&s.storage))
        .env_remove("SATCHEL_SECRETS_KEY")
        .env_remove("SATCHEL_SECRETS_KEY_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--secrets-key-file"), "{err}");
    assert!(!dir.path().join("secrets.key").exists(), "no key made up");
}

/// Storage flags without the secrets key file.
fn without_secrets_key(flags: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == "--secrets-key-file" {
            it.next();
        } else {
            out.push(f.clone());
        }
    }
    out
}
