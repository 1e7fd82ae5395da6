//! Takeouts over HTTP against the real server (embedded default; again on PostgreSQL + Garage through
//! `scaleout.rs`): everything a user owns in one zip or tar.gz whose `index.json` agrees with it,
//! read by `unzip -t`, 7-Zip and Python's `zipfile`, each inner export re-importing; cloud accounts
//! encrypted to the request's passphrase (opened by the `age` command), in the clear only when asked
//! for, left out without a passphrase, and their secrets (and the passphrase) nowhere in plaintext.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

async fn wait(c: &Client, status: &str) -> Resp {
    let deadline = Instant::now() + T;
    loop {
        let r = c.get(status).await;
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

/// Alice's belongings: three bundles, an appliance holding two of them, a generated image.
async fn belongings(a: &Client) {
    let m1 = a.create_bundle("first é", "1.0").await;
    a.add_file(m1, None, "run.sh", b"#!/bin/sh\necho 1\n").await;
    a.add_file(m1, None, "big.bin", &noise(2 << 20, 5)).await;
    let m2 = a.create_bundle("second", "2").await;
    let dir = a.create_artifact(m2, None, "conf", "folder").await;
    a.add_file(m2, Some(dir), "x.cfg", b"x=1\n").await;
    let m3 = a.create_bundle("third", "3").await;
    a.add_file(m3, None, "empty", b"").await;
    a.create_appliance("web", "1", &[m1, m2]).await;
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{m3}/templates"),
            Some(Vec::new()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tid = r.id();
    let images = format!("/users/alice/mysoftware/{m3}/templates/{tid}/images");
    let doc = format!(
        "<ns1:image xmlns:ns1=\"{NS}\"><compress>true</compress><format><name>docker</name></format><name>img</name></ns1:image>"
    );
    let r = a.req("POST", &images, Some(doc.into_bytes()), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let st = wait(a, &format!("{images}/{}/status", r.id())).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
}

async fn takeout(a: &Client, query: &str) -> (i64, Vec<u8>) {
    let r = a
        .req("POST", &format!("/users/alice/takeouts?{query}"), None, &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.id();
    let st = wait(a, &format!("/users/alice/takeouts/{id}/status")).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    assert_eq!(st.field("percentage").as_deref(), Some("100"));
    let r = a
        .get(&format!("/users/alice/takeouts/{id}/downloads"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&r.body));
    let doc = a.get(&format!("/users/alice/takeouts/{id}")).await;
    assert_eq!(doc.field("digest"), Some(format!("sha256:{sha}")));
    (id, r.body)
}

fn unzip(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut ar = zip::ZipArchive::new(std::io::Cursor::new(data)).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..ar.len() {
        let mut f = ar.by_index(i).unwrap();
        let mut body = Vec::new();
        f.read_to_end(&mut body).unwrap();
        out.insert(f.name().unwrap().to_string(), body);
    }
    out
}

/// `index.json` lists every other member with its true size and sha256, and what is left out.
fn check_index(members: &BTreeMap<String, Vec<u8>>) -> serde_json::Value {
    let index: serde_json::Value = serde_json::from_slice(&members["index.json"]).unwrap();
    assert_eq!(index["user"], "alice");
    assert_eq!(index["format"], "satchel-takeout/1");
    let entries = index["entries"].as_array().unwrap();
    assert_eq!(entries.len() + 1, members.len(), "{index}");
    for e in entries {
        let path = e["path"].as_str().unwrap();
        let data = &members[path];
        assert_eq!(e["size"].as_u64(), Some(data.len() as u64), "{path}");
        assert_eq!(
            e["sha256"].as_str().unwrap(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data)),
            "{path}"
        );
    }
    index
}

#[tokio::test]
async fn a_takeout_holds_everything_and_each_part_reimports() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.client("alice"), s.client("bob"));
    belongings(&a).await;

    let e = a.get("/users/alice/takeouts/estimate").await;
    assert_eq!(e.status, 200, "{}", e.text());
    assert_eq!(e.field("items").as_deref(), Some("5"), "{}", e.text());
    assert!(e.field("bytes").unwrap().parse::<i64>().unwrap() > 2 << 20);
    s.client("carol")
        .req("POST", "/users/carol/takeouts", None, &[])
        .await
        .assert_uforge_error(403);
    a.req("POST", "/users/alice/takeouts?format=rar", None, &[])
        .await
        .assert_uforge_error(400);
    a.req("POST", "/users/alice/takeouts?include=secrets", None, &[])
        .await
        .assert_uforge_error(400);

    // zip (the default): unzip -t, Python's zipfile, the index, every part re-imports.
    let (id, zip) = takeout(&a, "").await;
    let path = s.dir.path().join("takeout.zip");
    std::fs::write(&path, &zip).unwrap();
    let out = std::process::Command::new("unzip")
        .arg("-t")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let sz = std::process::Command::new("7z")
        .arg("t")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        sz.status.success(),
        "{}",
        String::from_utf8_lossy(&sz.stdout)
    );
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print(len(z.namelist()))")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "6");
    let members = unzip(&zip);
    let index = check_index(&members);
    // No passphrase: the accounts are left out, and the index says so.
    assert_eq!(index["excluded"][0]["kind"], "accounts", "{index}");
    let kinds: Vec<&str> = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["bundle", "bundle", "bundle", "template", "container-image"]
    );
    for (path, data) in &members {
        let base = if path.starts_with("bundles/") {
            "bundleimports"
        } else if path.starts_with("templates/") {
            "imports"
        } else {
            continue;
        };
        let r = b
            .req(
                "POST",
                &format!("/users/bob/{base}?imported=true"),
                None,
                &[],
            )
            .await;
        let one = format!("/users/bob/{base}/{}", r.id());
        let up = b
            .req("POST", &format!("{one}/uploads"), Some(data.clone()), &[])
            .await;
        assert_eq!(up.status, 200, "{}", up.text());
        let st = wait(&b, &format!("{one}/status")).await;
        assert_eq!(
            st.field("complete").as_deref(),
            Some("true"),
            "{path}: {}",
            st.text()
        );
    }
    let image = members
        .iter()
        .find(|(p, _)| p.starts_with("container-images/"))
        .unwrap();
    assert!(image.0.ends_with(".oci.tar.gz"), "{}", image.0);
    assert_eq!(&image.1[..2], b"\x1f\x8b");

    // Only bundles, as tar.gz.
    let (_, tgz) = takeout(&a, "format=tar.gz&include=bundles").await;
    let members = untar(&tgz);
    let index = check_index(&members);
    assert_eq!(index["includes"], serde_json::json!(["bundles"]));
    assert!(members
        .keys()
        .all(|p| p == "index.json" || p.starts_with("bundles/")));

    // Listed, then deleted with its archive.
    let l = a.get("/users/alice/takeouts").await;
    assert_eq!(l.text().matches("<takeout>").count(), 2, "{}", l.text());
    b.get(&format!("/users/alice/takeouts/{id}"))
        .await
        .assert_uforge_error(404);
    assert_eq!(
        a.req("DELETE", &format!("/users/alice/takeouts/{id}"), None, &[])
            .await
            .status,
        204
    );
    a.get(&format!("/users/alice/takeouts/{id}/downloads"))
        .await
        .assert_uforge_error(404);
    let left: Vec<_> = s
        .blobs()
        .await
        .into_iter()
        .filter(|(k, _)| k.contains(&format!("/exports/{id}/")))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

const AWS_SECRET: &str = "takeout-aws-SECRET-3c1d5e9a-do-not-leak";
const OS_PASSWORD: &str = "takeout-os-PASSWORD-8e2f4b60-do-not-leak";
const CERT_SECRET: &str =
    "-----BEGIN PRIVATE KEY-----takeout-cert-SECRET-77a1c0de-----END PRIVATE KEY-----";
const PASSPHRASE: &str = "correct horse battery staple 4711";

async fn accounts(a: &Client) {
    use base64::Engine;
    let cert = base64::engine::general_purpose::STANDARD.encode(CERT_SECRET);
    let aws = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><ns1:credAccount xmlns:ns1="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:CredAccountAws"><name>aws</name><targetPlatform><name>Amazon</name></targetPlatform><certificates><certificate><content>{cert}</content><name>ec2.pem</name><type>ec2PrivateKey</type></certificate></certificates><accessKeyId>AKIAEXAMPLE</accessKeyId><accountNumber>123456789012</accountNumber><secretAccessKeyId>{AWS_SECRET}</secretAccessKeyId></ns1:credAccount>"#
    );
    let os = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><ns1:credAccount xmlns:ns1="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:CredAccountOpenStack"><name>os</name><targetPlatform><name>OpenStack</name></targetPlatform><glanceUrl>http://glance.example:9292</glanceUrl><keystoneUrl>http://keystone.example:5000</keystoneUrl><login>demo</login><password>{OS_PASSWORD}</password><keystoneVersion>v3</keystoneVersion></ns1:credAccount>"#
    );
    for doc in [aws, os] {
        let r = a
            .req("POST", "/users/alice/accounts", Some(doc.into_bytes()), &[])
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
}

/// `age -d` on `file` with the passphrase typed on a terminal (age reads passphrases only from
/// one; `script` gives it a pseudo-terminal fed from our stdin).
fn age_decrypt(file: &std::path::Path, passphrase: &str) -> Vec<u8> {
    use std::io::Write;
    let out = file.with_extension("opened");
    let mut child = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "age -d -o '{}' '{}'",
            out.display(),
            file.display()
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) and age");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{passphrase}\n").as_bytes())
        .unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&done.stdout)
    );
    std::fs::read(&out).unwrap_or_else(|e| {
        panic!(
            "age -d wrote nothing ({e}): {}",
            String::from_utf8_lossy(&done.stdout)
        )
    })
}

/// The accounts document as a takeout carries it: both accounts, every secret exactly.
fn check_accounts(json: &[u8]) {
    use base64::Engine;
    let doc: serde_json::Value = serde_json::from_slice(json).unwrap();
    assert_eq!(doc["format"], "satchel-accounts/1");
    assert_eq!(doc["user"], "alice");
    let list = doc["accounts"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{doc}");
    let aws = list.iter().find(|a| a["type"] == "CredAccountAws").unwrap();
    assert_eq!(aws["fields"]["secretAccessKeyId"], AWS_SECRET);
    assert_eq!(aws["fields"]["accessKeyId"], "AKIAEXAMPLE");
    assert_eq!(aws["targetPlatform"], "Amazon");
    let cert = &aws["certificates"][0];
    assert_eq!(cert["name"], "ec2.pem");
    assert_eq!(cert["type"], "ec2PrivateKey");
    let content = base64::engine::general_purpose::STANDARD
        .decode(cert["content_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(content, CERT_SECRET.as_bytes());
    let os = list
        .iter()
        .find(|a| a["type"] == "CredAccountOpenStack")
        .unwrap();
    assert_eq!(os["fields"]["password"], OS_PASSWORD);
    assert_eq!(os["fields"]["login"], "demo");
}

#[tokio::test]
async fn cloud_accounts_travel_encrypted_to_the_passphrase_and_rest_nowhere_in_plaintext() {
    let mut s = Server::start(&[]).await;
    let trace = restart_with_trace_logs(&mut s).await;
    let a = s.client("alice");
    accounts(&a).await;
    let m = a.create_bundle("tool", "1").await;
    a.add_file(m, None, "run.sh", b"#!/bin/sh\n").await;

    let e = a
        .get("/users/alice/takeouts/estimate?include=accounts")
        .await;
    assert_eq!(e.field("items").as_deref(), Some("2"), "{}", e.text());
    // Refusals, none echoing the passphrase.
    let json = [("content-type", "application/json")];
    for (body, why) in [
        (r#"{"passphrase":"short"}"#.to_string(), "8 to 1024"),
        (
            format!(r#"{{"passphrase":"{PASSPHRASE}","credentials":"plaintext"}}"#),
            "not both",
        ),
        (
            r#"{"credentials":"rot13"}"#.to_string(),
            "unknown credentials",
        ),
    ] {
        let r = a
            .req(
                "POST",
                "/users/alice/takeouts",
                Some(body.into_bytes()),
                &json,
            )
            .await;
        r.assert_uforge_error(400);
        assert!(r.text().contains(why), "{}", r.text());
        assert!(!r.text().contains(PASSPHRASE));
    }

    // The passphrase in the body: accounts/accounts.json.age, which `age -d` opens.
    let body = format!(r#"{{"format":"zip","passphrase":"{PASSPHRASE}"}}"#);
    let r = a
        .req(
            "POST",
            "/users/alice/takeouts",
            Some(body.into_bytes()),
            &json,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.id();
    let st = wait(&a, &format!("/users/alice/takeouts/{id}/status")).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let zip = a
        .get(&format!("/users/alice/takeouts/{id}/downloads"))
        .await
        .body;
    let members = unzip(&zip);
    let index = check_index(&members);
    assert_eq!(index["excluded"], serde_json::json!([]), "{index}");
    let entry = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "accounts")
        .unwrap();
    assert_eq!(entry["path"], "accounts/accounts.json.age");
    let sealed = &members["accounts/accounts.json.age"];
    assert!(sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    // Opened outside the server's data dir, which is searched for plaintext below.
    let mine = tempfile::tempdir().unwrap();
    let file = mine.path().join("accounts.json.age");
    std::fs::write(&file, sealed).unwrap();
    check_accounts(&age_decrypt(&file, PASSPHRASE));
    // The passphrase also in the query (redacted from the logs), as tar.gz.
    let (_, tgz) = takeout(
        &a,
        &format!(
            "format=tar.gz&include=accounts&passphrase={}",
            PASSPHRASE.replace(' ', "+")
        ),
    )
    .await;
    let members = untar(&tgz);
    check_index(&members);
    let file = mine.path().join("second.json.age");
    std::fs::write(&file, &members["accounts/accounts.json.age"]).unwrap();
    check_accounts(&age_decrypt(&file, PASSPHRASE));

    // Nothing at rest holds a secret or the passphrase in the clear: the data dir (SQLite, WAL,
    // blobs, the TRACE log), Garage's objects, a pg_dump.
    let log = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        log.contains("passphrase=REDACTED"),
        "the query was logged, redacted"
    );
    assert_nowhere(
        &everything_stored(&s).await,
        &[AWS_SECRET, OS_PASSWORD, CERT_SECRET, PASSPHRASE],
    );

    // In the clear only when asked for.
    let (_, zip) = takeout(&a, "include=accounts&credentials=plaintext").await;
    let members = unzip(&zip);
    check_index(&members);
    assert!(!members.contains_key("accounts/accounts.json.age"));
    check_accounts(&members["accounts/accounts.json"]);
}

/// A takeout cancelled while its parts are being built and copied: it stops, says cancelled (and
/// error, for hammr-style loops), its download answers 409, and no part or partial archive is left.
#[tokio::test]
async fn a_cancelled_takeout_stops_and_leaves_nothing() {
    // The throttle (per chunk) keeps the parts' builds and copies running long enough to cancel.
    let s = Server::start(&["--export-throttle", "5ms"]).await;
    let a = s.client("alice");
    for i in 0..3 {
        let m = a.create_bundle(&format!("part{i}"), "1").await;
        a.add_file(m, None, "data.bin", &noise(24 << 20, i as u64))
            .await;
    }
    let r = a
        .req("POST", "/users/alice/takeouts?format=tar.gz", None, &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.id();
    let status = format!("/users/alice/takeouts/{id}/status");
    // Cancel once the first part is built (its copy and the second build under way).
    let deadline = Instant::now() + T;
    loop {
        let st = a.get(&status).await;
        let pct: i64 = st
            .field("percentage")
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        if pct >= 20 {
            break;
        }
        assert!(
            st.field("complete").as_deref() != Some("true"),
            "finished before it could be cancelled"
        );
        assert!(Instant::now() < deadline, "{}", st.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = a.req("DELETE", &status, None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.field("cancelled").as_deref(),
        Some("true"),
        "{}",
        r.text()
    );
    assert_eq!(r.field("error").as_deref(), Some("true"), "{}", r.text());
    a.get(&format!("/users/alice/takeouts/{id}/downloads"))
        .await
        .assert_uforge_error(409);
    let needle = format!("/exports/{id}/");
    let deadline = Instant::now() + T;
    loop {
        let left: Vec<_> = s
            .blobs()
            .await
            .into_iter()
            .filter(|(k, _)| k.contains(&needle))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
