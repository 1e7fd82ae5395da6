//! The self-service page (`GET /`) in a real headless Chromium: `tests/web/page.mjs` drives it with
//! playwright-core (installed by npm into `target/tmp`, pinned, reused) against the real server, and
//! this file checks what it downloaded. Also the one-time download ids of exports over plain HTTP.
//! Screenshots go to `target/test-artifacts/web/`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PLAYWRIGHT_CORE: &str = "1.65.1";
const T: Duration = Duration::from_secs(60);

/// `node_modules` holding playwright-core, installed once with npm into
/// `target/tmp/playwright-core-VERSION` (a file lock keeps parallel test binaries from installing
/// twice). Fails loudly when npm is missing: this test never skips silently. playwright-core brings
/// no browser: the test uses the system's `/usr/bin/chromium` (`.ci/run` installs it).
fn playwright_modules() -> PathBuf {
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("playwright-core-{PLAYWRIGHT_CORE}"));
    let modules = root.join("node_modules");
    let marker = modules.join("playwright-core").join("package.json");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    fs2::FileExt::lock_exclusive(&lock).unwrap();
    if !marker.exists() {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&root)
            .arg(format!("playwright-core@{PLAYWRIGHT_CORE}"))
            .output()
            .unwrap_or_else(|e| {
                panic!("npm is needed to install playwright-core (run .ci/run): {e}")
            });
        assert!(
            out.status.success() && marker.exists(),
            "npm install playwright-core@{PLAYWRIGHT_CORE} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs2::FileExt::unlock(&lock).unwrap();
    modules
}

/// `target/test-artifacts/web/` (a subfolder per engine, so both runs keep their screenshots).
fn artifacts() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .to_path_buf();
    let dir = target.join("test-artifacts").join("web").join(if SCALEOUT {
        "scaleout"
    } else {
        "embedded"
    });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

/// Alice's things: two bundles with files, an appliance template holding one, a compressed
/// container image of the other; Bob's bundle, which her page must not show.
async fn belongings(s: &Server) -> (i64, i64) {
    let a = s.client("alice");
    let m1 = a.create_bundle("alpha", "1.0").await;
    a.add_file(m1, None, "run.sh", b"#!/bin/sh\necho alpha\n")
        .await;
    let m2 = a.create_bundle("beta", "2.0").await;
    a.add_file(m2, None, "data.bin", &noise(64 << 10, 3)).await;
    a.create_appliance("web", "1", &[m1]).await;
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{m2}/templates"),
            Some(Vec::new()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let images = format!("/users/alice/mysoftware/{m2}/templates/{}/images", r.id());
    let doc = format!(
        "<ns1:image xmlns:ns1=\"{NS}\"><compress>true</compress><format><name>docker</name></format><name>img</name></ns1:image>"
    );
    let r = a.req("POST", &images, Some(doc.into_bytes()), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait(&a, &format!("{images}/{}/status", r.id())).await;
    s.client("bob").create_bundle("bobs-own", "9.9").await;
    (m1, m2)
}

fn unzip(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let mut ar = zip::ZipArchive::new(std::io::Cursor::new(data)).expect("the download is a zip");
    let mut out = BTreeMap::new();
    for i in 0..ar.len() {
        let mut f = ar.by_index(i).unwrap();
        let mut body = Vec::new();
        f.read_to_end(&mut body).unwrap();
        out.insert(f.name().unwrap().to_string(), body);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_logs_in_lists_and_takes_everything_out_in_chromium() {
    let modules = playwright_modules();
    let s = Server::start(&[]).await;
    belongings(&s).await;
    let out = artifacts();
    let _ = std::fs::remove_file(out.join("takeout.zip"));
    let profile = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/page.mjs");
    let run = tokio::task::spawn_blocking({
        let (out, profile) = (out.clone(), profile.path().to_path_buf());
        let base = format!("http://127.0.0.1:{}", s.port);
        move || {
            Command::new("node")
                .arg(&script)
                .env("PW_MODULES", &modules)
                .env("BASE", base)
                .env("LOGIN", "alice")
                .env("PASSWORD", "alice-pw")
                .env("BUNDLES", "alpha 1.0,beta 2.0")
                .env("OUT", &out)
                .env("PROFILE", &profile)
                .output()
                .expect("node runs (run .ci/run)")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "page.mjs failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        s.log()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no report from page.mjs ({e}):\n{stdout}"));
    let download = PathBuf::from(report["download"].as_str().unwrap());
    for shot in ["wrong-password.png", "logged-in.png", "phone-375.png"] {
        assert!(out.join(shot).exists(), "{shot}");
    }

    // What the browser saved is the takeout: a zip whose index.json lists alice's bundles.
    let members = unzip(&download);
    let index: serde_json::Value = serde_json::from_slice(&members["index.json"]).unwrap();
    assert_eq!(index["user"], "alice", "{index}");
    let names: Vec<&str> = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "bundle")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.contains(&"alpha") && names.contains(&"beta"),
        "{index}"
    );
    assert!(!names.contains(&"bobs-own"), "{index}");
    // The page sent its passphrase (in the request body): the accounts came encrypted.
    let sealed = members
        .get("accounts/accounts.json.age")
        .unwrap_or_else(|| panic!("no encrypted accounts: {index}"));
    assert!(sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    for e in index["entries"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        assert_eq!(
            members.get(path).map(|m| m.len() as u64),
            e["size"].as_u64(),
            "{path}"
        );
    }

    // The bundle export the page started and downloaded is alpha's archive.
    let export = std::fs::read(report["export"].as_str().unwrap()).unwrap();
    let files = untar(&export);
    assert!(
        files.keys().any(|k| k.ends_with("alpha/1.0/run.sh")),
        "{:?}",
        files.keys().collect::<Vec<_>>()
    );

    // The page deleted the takeout.
    let r = s.client("alice").get("/users/alice/takeouts").await;
    assert_eq!(r.field("total").as_deref(), Some("0"), "{}", r.text());
}

async fn anonymous(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// `POST .../downloadids` mints an id that downloads the export's archive once, without
/// credentials; another user cannot mint one, and an id works on no other ticket.
#[tokio::test]
async fn export_download_ids_work_once_without_login() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let m = a.create_bundle("alpha", "1.0").await;
    a.add_file(m, None, "run.sh", b"#!/bin/sh\necho alpha\n")
        .await;
    let e1 = a.export(m, "yaml").await;
    let e2 = a.export(m, "yaml").await;
    let export = |e: i64| format!("/users/alice/mysoftware/{m}/exports/{e}");
    for e in [e1, e2] {
        wait(&a, &format!("{}/status", export(e))).await;
    }
    let owner_copy = a.get(&format!("{}/downloads", export(e1))).await;
    assert_eq!(owner_copy.status, 200);

    let json = [("Accept", "application/json")];
    let r = a
        .req("POST", &format!("{}/downloadids", export(e1)), None, &json)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = doc["downloadId"].as_str().unwrap().to_string();
    let uri = doc["uri"].as_str().unwrap().to_string();
    assert_eq!(
        uri,
        format!("users/alice/mysoftware/{m}/exports/{e1}/downloads?downloadId={id}")
    );

    // On another ticket's route the id is unknown, and that does not spend it.
    let other = format!("{}{}/downloads?downloadId={id}", s.base(), export(e2));
    assert_eq!(anonymous(&other).await.0, 403);
    let (status, body) = anonymous(&format!("{}/{uri}", s.base())).await;
    assert_eq!(status, 200);
    assert_eq!(body, owner_copy.body);
    // Spent.
    assert_eq!(anonymous(&format!("{}/{uri}", s.base())).await.0, 410);

    // Bob cannot mint one for Alice's export, nor use Alice's id on a URL naming himself.
    let bob = s.client("bob");
    let r = bob
        .req("POST", &format!("{}/downloadids", export(e1)), None, &[])
        .await;
    r.assert_uforge_error(404);
    let r = a
        .req("POST", &format!("{}/downloadids", export(e2)), None, &json)
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id2 = doc["downloadId"].as_str().unwrap();
    let as_bob = format!(
        "{}/users/bob/mysoftware/{m}/exports/{e2}/downloads?downloadId={id2}",
        s.base()
    );
    assert_eq!(anonymous(&as_bob).await.0, 403);

    // A deleted export has no ids to mint, and its unspent id downloads nothing.
    let r = a.req("DELETE", &export(e2), None, &[]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = a
        .req("POST", &format!("{}/downloadids", export(e2)), None, &[])
        .await;
    r.assert_uforge_error(404);
    let gone = format!("{}{}/downloads?downloadId={id2}", s.base(), export(e2));
    assert_eq!(anonymous(&gone).await.0, 403);
}
