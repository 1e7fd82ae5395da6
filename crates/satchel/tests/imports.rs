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
    assert!(
        took <= Duration::from_secs(1),
        "the job took {took:?} to stop"
    );
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
    a.add_file(msid, None, "big.bin", &vec![0u8; 256 << 20])
        .await;
    let eid = a.export(msid, "yaml").await;
    let p = export_path(msid, eid);
    wait_running(&a, &format!("{p}/status")).await;
    let r = api
        .client("alice")
        .req("DELETE", &format!("{p}/status"), None, &[])
        .await;
    let at = Instant::now();
    assert_eq!(
        r.field("cancelled").as_deref(),
        Some("true"),
        "{}",
        r.text()
    );
    let took = archive_gone(&s, eid, at).await;
    assert!(
        took <= Duration::from_secs(1),
        "the job took {took:?} to stop"
    );
    // (`api` has no workers: the job that stopped was the first instance's.)
}

// ------------------------------------------------------------------ imports

/// Creates an import under `base` (`bundleimports` or `imports`), uploads `archive` and waits until
/// it ends; the final status and the import's document.
async fn import(c: &Client, base: &str, query: &str, archive: Vec<u8>) -> (Resp, Resp) {
    let login = c.login.clone();
    let r = c
        .req("POST", &format!("/users/{login}/{base}?{query}"), None, &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.id();
    assert_eq!(r.field("uploaded").as_deref(), Some("false"));
    let one = format!("/users/{login}/{base}/{id}");
    let up = c
        .req(
            "POST",
            &format!("{one}/uploads"),
            Some(archive),
            &[("Content-Type", "application/octet-stream")],
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text());
    let deadline = Instant::now() + T;
    let st = loop {
        let st = c.get(&format!("{one}/status")).await;
        assert_eq!(st.status, 200, "{}", st.text());
        if st.field("complete").as_deref() == Some("true")
            || st.field("error").as_deref() == Some("true")
            || st.field("cancelled").as_deref() == Some("true")
        {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "import did not end: {}",
            st.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let doc = c.get(&one).await;
    (st, doc)
}

/// The id at the end of a reference URI.
fn ref_id(doc: &Resp) -> i64 {
    let uri = doc.field("referenceUri").expect("referenceUri");
    uri.rsplit('/').next().unwrap().parse().unwrap()
}

async fn export_bundle(c: &Client, msid: i64) -> Vec<u8> {
    let eid = c.export(msid, "yaml").await;
    let st = c.wait_export(msid, eid, T).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let login = c.login.clone();
    let r = c
        .get(&format!(
            "/users/{login}/mysoftware/{msid}/exports/{eid}/downloads"
        ))
        .await;
    assert_eq!(r.status, 200);
    r.body
}

async fn export_appliance(c: &Client, aid: i64, format: &str) -> Vec<u8> {
    let login = c.login.clone();
    let base = format!("/users/{login}/appliances/{aid}/exports");
    let r = c
        .req("POST", &format!("{base}?outputFormat={format}"), None, &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let eid = r.id();
    let deadline = Instant::now() + T;
    loop {
        let st = c.get(&format!("{base}/{eid}/status")).await;
        if st.field("complete").as_deref() == Some("true") {
            break;
        }
        assert_ne!(st.field("error").as_deref(), Some("true"), "{}", st.text());
        assert!(Instant::now() < deadline, "{}", st.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.get(&format!("{base}/{eid}/downloads")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.body;
    let del = c.req("DELETE", &format!("{base}/{eid}"), None, &[]).await;
    assert_eq!(del.status, 204);
    body
}

/// Members of an export without `manifest.json`'s and the descriptors' timestamps-free parts:
/// every path with its bytes.
fn members(archive: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    untar(archive)
}

fn gz_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// export -> import (another user) -> export: the same metadata and byte-identical files, for a
/// bundle with unicode and spaces in names, an empty file, nested folders, a license and a logo.
#[tokio::test]
async fn a_bundle_export_imports_back_byte_for_byte() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.client("alice"), s.client("bob"));
    let msid = a.create_bundle("mon appli é", "1.0 β").await;
    a.add_file(msid, None, "run me.sh", b"#!/bin/sh\necho hi\n")
        .await;
    a.add_file(msid, None, "empty", b"").await;
    let conf = a.create_artifact(msid, None, "conf dir", "folder").await;
    a.add_file(msid, Some(conf), "ü.cfg", b"x=1\n").await;
    let deep = a.create_artifact(msid, Some(conf), "deep", "folder").await;
    a.add_file(msid, Some(deep), "blob.bin", &noise(300_000, 3))
        .await;
    for (kind, name, data) in [
        ("licenses", "LICENSE.txt", &b"MIT\n"[..]),
        ("logo", "logo.png", &b"\x89PNG fake"[..]),
    ] {
        let r = a
            .req(
                "POST",
                &format!("/users/alice/mysoftware/{msid}/{kind}/0/{name}"),
                Some(data.to_vec()),
                &[],
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    let first = export_bundle(&a, msid).await;
    let (st, doc) = import(&b, "bundleimports", "imported=True", first.clone()).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    assert_eq!(doc.field("imported").as_deref(), Some("true"));
    let bob_msid = ref_id(&doc);
    let bundle = b.get(&format!("/users/bob/mysoftware/{bob_msid}")).await;
    assert_eq!(bundle.field("name").as_deref(), Some("mon appli é"));
    // Nobody else sees it.
    a.get(&format!("/users/bob/mysoftware/{bob_msid}"))
        .await
        .assert_uforge_error(404);
    let second = export_bundle(&b, bob_msid).await;
    assert_eq!(members(&first), members(&second));
    // The upload is gone once the import ended; only the bundles' files remain.
    let deadline = Instant::now() + T;
    while s
        .blobs()
        .await
        .iter()
        .any(|(k, _)| k.contains("upload.tar.gz"))
    {
        assert!(Instant::now() < deadline, "{:?}", s.blobs().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `hammr bundle create` uploads (Python tarfile, repeated folder members, no manifest).
#[tokio::test]
async fn a_hammr_made_bundle_archive_is_created() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let archive = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../archive/tests/corpus/hammr-bundle.tar.gz"
    ))
    .unwrap();
    let (st, doc) = import(&a, "bundleimports", "imported=False", archive).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    assert_eq!(doc.field("imported").as_deref(), Some("false"));
    let msid = ref_id(&doc);
    let arts = a
        .get(&format!("/users/alice/mysoftware/{msid}/artifacts"))
        .await;
    assert!(
        arts.text().contains("run.sh") && arts.text().contains("b.cfg"),
        "{}",
        arts.text()
    );
    let out = members(&export_bundle(&a, msid).await);
    assert_eq!(
        out.get("bundles/my app/1.0/conf/sub/b.cfg")
            .map(Vec::as_slice),
        Some(&b"b=2\n"[..])
    );
}

/// Hostile archives: each refused with a status naming the member and the rule, and nothing left
/// behind (no bundle, no blob of the import).
#[tokio::test]
async fn hostile_archives_are_refused_and_leave_nothing() {
    let s = Server::start(&["--import-max-members", "50"]).await;
    let a = s.client("alice");
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../archive/tests/corpus");
    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    for (file, says) in [
        ("absolute.tar.gz", "absolute"),
        ("dotdot.tar.gz", ".."),
        ("symlink.tar.gz", "link"),
        ("duplicate.tar.gz", "duplicate"),
        ("truncated.tar.gz", "truncated"),
        ("bomb.tar.gz", ""),
    ] {
        cases.push((
            file.into(),
            std::fs::read(format!("{corpus}/{file}")).unwrap(),
            says,
        ));
    }
    cases.push(("not gzip".into(), b"PK\x03\x04 a zip".to_vec(), "gzip"));
    let yml = b"name: x\nversion: '1'\nfiles:\n- name: a\n  source: bundles/x/1/a\n";
    cases.push((
        "names a missing file".into(),
        gz_tar(&[("bundle.yml", yml)]),
        "bundles/x/1/a",
    ));
    let lying = br#"{"files":[{"path":"bundles/x/1/a","size":1,"sha256":"00"}]}"#;
    cases.push((
        "lying manifest".into(),
        gz_tar(&[
            ("bundle.yml", yml),
            ("bundles/x/1/a", b"abc"),
            ("manifest.json", lying),
        ]),
        "manifest",
    ));
    let laughs = b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nname: [*g,*g,*g,*g,*g,*g]\n";
    cases.push((
        "yaml alias bomb".into(),
        gz_tar(&[("bundle.yml", laughs)]),
        "bundle.yml",
    ));
    let many: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("bundles/x/1/f{i}"), vec![b'x']))
        .collect();
    let many_refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    cases.push(("too many members".into(), gz_tar(&many_refs), "members"));
    for (what, archive, says) in cases {
        let (st, doc) = import(&a, "bundleimports", "imported=True", archive).await;
        assert_eq!(
            st.field("error").as_deref(),
            Some("true"),
            "{what}: {}",
            st.text()
        );
        let msg = st.field("errorMessage").unwrap_or_default();
        assert!(
            msg.to_lowercase().contains(&says.to_lowercase()),
            "{what}: {msg}"
        );
        assert!(doc.field("referenceUri").is_none(), "{what}");
    }
    let bundles = a.get("/users/alice/mysoftware").await;
    assert!(!bundles.text().contains("<dbId>"), "{}", bundles.text());
    let left: Vec<_> = s
        .blobs()
        .await
        .into_iter()
        .filter(|(k, _)| k.contains("/imports/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A template as `hammr template create` packs it: template.yml with the bundles inline, their
/// files under bundles/, boot scripts under config/, no manifest.
fn hammr_template() -> Vec<u8> {
    let yml = r#"---
stack:
  name: web é
  version: '2.0'
  description: a web tier
  os:
    name: CentOS
    version: '7'
    arch: x86_64
    profile: Minimal
    pkgs:
    - iotop
    - name: curl
      version: '7.29'
  bundles:
  - name: b one
    version: '1'
    license:
      source: bundles/b one/LICENSE
    files:
    - name: a.sh
      source: bundles/b one/a.sh
    - name: conf
      source: bundles/b one/conf
      files:
      - name: x.cfg
        source: bundles/b one/conf/x.cfg
  - name: other
    version: '3'
    files:
    - name: empty
      source: bundles/other/empty
  config:
  - name: boot.sh
    source: config/boot.sh
    order: 5
    type: everyboot
"#;
    gz_tar(&[
        ("template.yml", yml.as_bytes()),
        ("bundles/b one/LICENSE", b"GPL\n"),
        ("bundles/b one/a.sh", b"#!/bin/sh\necho a\n"),
        ("bundles/b one/conf/x.cfg", b"x=1\n"),
        ("bundles/other/empty", b""),
        ("config/boot.sh", b"#!/bin/sh\necho boot\n"),
    ])
}

fn count(r: &Resp, tag: &str) -> usize {
    r.text().matches(&format!("<{tag}>")).count()
}

/// template create (an import) -> export -> import as another user -> export gives the same
/// template.yml and byte-identical files; force replaces, reusebundles reuses, and without force a
/// second import of the same name and version is refused.
#[tokio::test]
async fn a_template_round_trips_through_export_and_import() {
    let s = Server::start(&[]).await;
    let (a, b) = (s.client("alice"), s.client("bob"));
    let (st, doc) = import(
        &a,
        "imports",
        "imported=False&force=False",
        hammr_template(),
    )
    .await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let aid = ref_id(&doc);
    let app = a.get(&format!("/users/alice/appliances/{aid}")).await;
    assert_eq!(app.status, 200, "{}", app.text());
    assert_eq!(app.field("name").as_deref(), Some("web é"));
    let pkgs = a
        .get(&format!("/users/alice/appliances/{aid}/mysoftware"))
        .await;
    assert_eq!(count(&pkgs, "mySoftware"), 2, "{}", pkgs.text());

    let first = export_appliance(&a, aid, "yaml").await;
    let m1 = members(&first);
    let tpl: serde_yaml::Value = serde_yaml::from_slice(&m1["template.yml"]).unwrap();
    assert_eq!(tpl["stack"]["os"]["profile"], "Minimal");
    assert_eq!(tpl["stack"]["os"]["pkgs"][1]["version"], "7.29");
    assert_eq!(tpl["stack"]["config"][0]["type"], "everyboot");
    assert_eq!(
        tpl["stack"]["bundles"][0]["license"]["source"],
        "bundles/b one/LICENSE"
    );
    assert_eq!(m1["config/boot.sh"], b"#!/bin/sh\necho boot\n");
    assert_eq!(m1["bundles/b one/1/conf/x.cfg"], b"x=1\n");
    assert!(m1.contains_key("manifest.json"));

    let (st, doc) = import(&b, "imports", "imported=True", first.clone()).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let bob_aid = ref_id(&doc);
    let second = export_appliance(&b, bob_aid, "yaml").await;
    assert_eq!(
        m1,
        members(&second),
        "export -> import -> export changed the archive"
    );

    // Same name and version again: refused without force, replaced with it.
    let (st, _) = import(&b, "imports", "imported=True", first.clone()).await;
    assert_eq!(st.field("error").as_deref(), Some("true"), "{}", st.text());
    assert!(st
        .field("errorMessage")
        .unwrap_or_default()
        .contains("force"));
    let bundles_before = count(&b.get("/users/bob/mysoftware").await, "mySoftware");
    let (st, doc) = import(
        &b,
        "imports",
        "imported=True&force=True&reusebundles=True",
        first.clone(),
    )
    .await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    assert_ne!(ref_id(&doc), bob_aid);
    b.get(&format!("/users/bob/appliances/{bob_aid}"))
        .await
        .assert_uforge_error(404);
    let apps = b.get("/users/bob/appliances").await;
    assert_eq!(count(&apps, "appliance"), 1, "{}", apps.text());
    // reusebundles: bob's two bundles were reused, not imported again.
    assert_eq!(
        count(&b.get("/users/bob/mysoftware").await, "mySoftware"),
        bundles_before
    );
    // The JSON variant of the export.
    let json = members(&export_appliance(&b, ref_id(&doc), "json").await);
    let tpl: serde_json::Value = serde_json::from_slice(&json["template.json"]).unwrap();
    assert_eq!(tpl["stack"]["name"], "web é");
    // A template archive is not a bundle.
    let (st, _) = import(&b, "bundleimports", "imported=True", first).await;
    assert!(
        st.field("errorMessage")
            .unwrap_or_default()
            .contains("/imports"),
        "{}",
        st.text()
    );
    // Lists.
    let l = b.get("/users/bob/imports").await;
    assert_eq!(count(&l, "applianceImport"), 3, "{}", l.text());
}
