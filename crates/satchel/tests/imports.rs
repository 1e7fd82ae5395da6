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

/// A bundle export and an appliance export of 1 GiB cancelled mid-way: the ticket says cancelled at
/// once, the worker stops within a second (its partial archive removed), the download answers 409,
/// and cancelling again or cancelling a finished export changes nothing and says so.
#[tokio::test]
async fn cancelling_an_export_stops_it_within_a_second() {
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
    // hammr's export loop stops on `error` only: a cancel reads as one, with a message.
    assert_eq!(r.field("error").as_deref(), Some("true"));
    assert!(
        r.field("errorMessage")
            .unwrap_or_default()
            .contains("cancel"),
        "{}",
        r.text()
    );
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

    // The same for an appliance holding the 1 GiB bundle.
    let aid = a.create_appliance("big app", "1", &[msid]).await;
    let aeid = a.export_appliance(aid, None).await;
    let ap = format!("/users/alice/appliances/{aid}/exports/{aeid}");
    wait_running(&a, &format!("{ap}/status")).await;
    let r = a.req("DELETE", &format!("{ap}/status"), None, &[]).await;
    let cancelled_at = Instant::now();
    assert_eq!(
        r.field("cancelled").as_deref(),
        Some("true"),
        "{}",
        r.text()
    );
    let took = archive_gone(&s, aeid, cancelled_at).await;
    assert!(
        took <= Duration::from_secs(1),
        "the appliance export took {took:?} to stop"
    );
    a.get(&format!("{ap}/downloads"))
        .await
        .assert_uforge_error(409);

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
    let eid = c.export_appliance(aid, Some(format)).await;
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

// ------------------------------------------------------------------ generated round trips

/// A generated bundle: files at nested paths (folder names and file names with unicode and spaces),
/// some empty, and maybe a license and a logo.
#[derive(Debug, Clone)]
struct GenBundle {
    name: String,
    files: Vec<(Vec<String>, Vec<u8>)>,
    license: bool,
    logo: bool,
}

/// The descriptor entries of the files under `dir` (folders first appear where first used).
fn yaml_files(
    files: &[(Vec<String>, Vec<u8>)],
    base: &str,
    depth: usize,
    prefix: &[String],
) -> Vec<serde_yaml::Value> {
    use serde_yaml::{Mapping, Value};
    let mut out = Vec::new();
    let mut folders: Vec<String> = Vec::new();
    for (path, _) in files
        .iter()
        .filter(|(p, _)| p.len() > depth && p[..depth] == *prefix)
    {
        let name = &path[depth];
        let rel = path[..=depth].join("/");
        let mut m = Mapping::new();
        m.insert("name".into(), Value::String(name.clone()));
        m.insert("source".into(), Value::String(format!("{base}/{rel}")));
        if path.len() == depth + 1 {
            out.push(Value::Mapping(m));
        } else if !folders.contains(name) {
            folders.push(name.clone());
            let sub = yaml_files(files, base, depth + 1, &path[..=depth]);
            m.insert("files".into(), Value::Sequence(sub));
            out.push(Value::Mapping(m));
        }
    }
    out
}

impl GenBundle {
    /// The bundle descriptor and the archive members it names.
    fn parts(&self) -> (serde_yaml::Value, Vec<(String, Vec<u8>)>) {
        let base = format!("bundles/{}/1.0", self.name);
        let mut doc = serde_yaml::Mapping::new();
        doc.insert("name".into(), self.name.clone().into());
        doc.insert("version".into(), "1.0".into());
        doc.insert(
            "files".into(),
            serde_yaml::Value::Sequence(yaml_files(&self.files, &base, 0, &[])),
        );
        let mut members: Vec<(String, Vec<u8>)> = self
            .files
            .iter()
            .map(|(p, d)| (format!("{base}/{}", p.join("/")), d.clone()))
            .collect();
        if self.license {
            let mut l = serde_yaml::Mapping::new();
            l.insert(
                "source".into(),
                format!("bundles/{}/LICENSE", self.name).into(),
            );
            doc.insert("license".into(), l.into());
            members.push((format!("bundles/{}/LICENSE", self.name), b"BSD\n".to_vec()));
        }
        if self.logo {
            doc.insert(
                "sourceLogo".into(),
                format!("bundles/{}/logo.png", self.name).into(),
            );
            members.push((
                format!("bundles/{}/logo.png", self.name),
                b"\x89PNG".to_vec(),
            ));
        }
        (serde_yaml::Value::Mapping(doc), members)
    }
}

fn archive_of(doc_name: &str, doc: &serde_yaml::Value, members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let yml = serde_yaml::to_string(doc).unwrap();
    let mut all: Vec<(&str, &[u8])> = vec![(doc_name, yml.as_bytes())];
    all.extend(members.iter().map(|(p, d)| (p.as_str(), d.as_slice())));
    gz_tar(&all)
}

fn gen_bundle(n: usize) -> impl proptest::strategy::Strategy<Value = GenBundle> {
    use proptest::prelude::*;
    let seg = prop::sample::select(vec!["conf", "dir é", "深 层", "a b", "ünï"]);
    let file = (
        prop::collection::vec(seg, 0..3),
        prop::sample::select(vec!["f", "file é", "spa ce", "中文", "x.sh"]),
        prop_oneof![Just(0usize), 1usize..3000],
    );
    (
        prop::sample::select(vec!["bündle", "my app", "app 应用"]),
        prop::collection::vec(file, 0..n),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, files, license, logo)| GenBundle {
            name: name.to_string(),
            files: files
                .into_iter()
                .enumerate()
                .map(|(i, (dirs, f, len))| {
                    let mut p: Vec<String> = dirs.into_iter().map(String::from).collect();
                    // Unique file names; folders never share a name with a file.
                    p.push(format!("{f} {i}"));
                    (p, noise(len, i as u64 + 1))
                })
                .collect(),
            license,
            logo,
        })
}

/// Imports `archive` as alice (create), exports, imports that as bob, exports again: both exports
/// hold the same members, byte for byte, and every generated file is in them.
async fn round_trip(s: &Server, base: &str, archive: Vec<u8>, expect: &[(String, Vec<u8>)]) {
    let (a, b) = (s.client("alice"), s.client("bob"));
    let (st, doc) = import(&a, base, "imported=False&force=True", archive).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let id = ref_id(&doc);
    let first = if base == "imports" {
        export_appliance(&a, id, "yaml").await
    } else {
        export_bundle(&a, id).await
    };
    let (st, doc) = import(&b, base, "imported=True&force=True", first.clone()).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let id2 = ref_id(&doc);
    let second = if base == "imports" {
        export_appliance(&b, id2, "yaml").await
    } else {
        export_bundle(&b, id2).await
    };
    let (m1, m2) = (members(&first), members(&second));
    assert_eq!(m1, m2, "export -> import -> export changed the archive");
    let contents: std::collections::BTreeSet<&[u8]> = m1.values().map(Vec::as_slice).collect();
    for (path, data) in expect {
        assert!(contents.contains(data.as_slice()), "{path} lost");
    }
}

/// The round trip over generated bundles and templates (a few cases: each is four HTTP imports and
/// exports against the real server).
#[test]
fn generated_bundles_and_templates_round_trip() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(Server::start(&["--quota-tickets", "0", "--user-rate", "0"]));
    let mut runner = TestRunner::new(Config {
        cases: 6,
        ..Config::default()
    });
    let case = (gen_bundle(40), gen_bundle(10), proptest::bool::ANY);
    runner
        .run(&case, |(b1, b2, template)| {
            let (d1, m1) = b1.parts();
            if !template {
                rt.block_on(round_trip(&s, "bundleimports", archive_of("bundle.yml", &d1, &m1), &m1));
                return Ok(());
            }
            let (mut d2, m2) = b2.parts();
            // Two bundles of one template must not share a name.
            if let serde_yaml::Value::Mapping(m) = &mut d2 {
                m.insert("version".into(), "2.0".into());
            }
            // Its files in its own version folder; its license and logo too, since the first
            // bundle may have the same name (two versions of one bundle in one template).
            let relocate = |p: &str| {
                let p = p.replacen("/1.0/", "/2.0/", 1);
                match p.rsplit_once('/') {
                    Some((dir, f)) if !dir.ends_with("/2.0") && !dir.contains("/2.0/") => {
                        format!("{dir}/2.0/{f}")
                    }
                    _ => p,
                }
            };
            let m2: Vec<_> = m2.into_iter().map(|(p, d)| (relocate(&p), d)).collect();
            let mut d2 = d2;
            if let serde_yaml::Value::Mapping(m) = &mut d2 {
                if let Some(serde_yaml::Value::Mapping(l)) = m.get_mut("license") {
                    let src = l["source"].as_str().unwrap_or_default().to_string();
                    l.insert("source".into(), relocate(&src).into());
                }
                if let Some(serde_yaml::Value::String(logo)) = m.get_mut("sourceLogo") {
                    *logo = relocate(logo);
                }
            }
            let d2 = serde_yaml::from_str::<serde_yaml::Value>(
                &serde_yaml::to_string(&d2).unwrap().replace("/1.0/", "/2.0/"),
            )
            .unwrap();
            let stack = serde_yaml::from_str::<serde_yaml::Value>(
                "stack:\n  name: tpl ü\n  version: '1'\n  os: {name: Debian, version: '12', arch: x86_64, profile: Minimal, pkgs: [curl]}\n  config:\n  - {name: boot one.sh, source: config/boot one.sh, order: 1, type: firstboot}\n",
            )
            .unwrap();
            let mut stack = stack;
            stack["stack"]["bundles"] = serde_yaml::Value::Sequence(vec![d1, d2]);
            let mut members = m1.clone();
            members.extend(m2);
            members.push(("config/boot one.sh".into(), b"#!/bin/sh\n".to_vec()));
            rt.block_on(round_trip(&s, "imports", archive_of("template.yml", &stack, &members), &members));
            Ok(())
        })
        .unwrap();
}

/// Thousands of files in one bundle, nested: the round trip holds, and the import stays one pass.
#[tokio::test]
async fn thousands_of_files_round_trip() {
    let s = Server::start(&[]).await;
    let b = GenBundle {
        name: "many".into(),
        files: (0..2500)
            .map(|i| {
                (
                    vec![
                        format!("d{}", i % 7),
                        format!("sub {}", i % 3),
                        format!("f{i}.txt"),
                    ],
                    format!("file {i}\n").into_bytes(),
                )
            })
            .collect(),
        license: true,
        logo: false,
    };
    let (d, m) = b.parts();
    round_trip(&s, "bundleimports", archive_of("bundle.yml", &d, &m), &m).await;
}

/// `kill -9` while an import runs: after the restart it completes once (one bundle), or ends in
/// error; never two bundles, and nothing is left of the dead attempt.
#[tokio::test]
async fn an_import_killed_mid_way_completes_once_after_restart() {
    let mut s = Server::start(&["--export-throttle", "15ms"]).await;
    let a = s.client("alice");
    let b = GenBundle {
        name: "killed".into(),
        files: (0..40)
            .map(|i| (vec![format!("f{i}")], noise(400_000, i)))
            .collect(),
        license: false,
        logo: false,
    };
    let (d, m) = b.parts();
    let archive = archive_of("bundle.yml", &d, &m);
    let r = a
        .req(
            "POST",
            "/users/alice/bundleimports?imported=true",
            None,
            &[],
        )
        .await;
    let id = r.id();
    let one = format!("/users/alice/bundleimports/{id}");
    let up = a
        .req("POST", &format!("{one}/uploads"), Some(archive), &[])
        .await;
    assert_eq!(up.status, 200, "{}", up.text());
    wait_running(&a, &format!("{one}/status")).await;
    s.kill9();
    s.spawn().await;
    let deadline = Instant::now() + T;
    let st = loop {
        let st = a.get(&format!("{one}/status")).await;
        if st.field("complete").as_deref() == Some("true")
            || st.field("error").as_deref() == Some("true")
        {
            break st;
        }
        assert!(Instant::now() < deadline, "{}", st.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let list = a.get("/users/alice/mysoftware").await;
    let n = count(&list, "mySoftware");
    if st.field("complete").as_deref() == Some("true") {
        assert_eq!(n, 1, "{}", list.text());
        let msid = ref_id(&a.get(&one).await);
        let out = members(&export_bundle(&a, msid).await);
        for (p, data) in &m {
            assert_eq!(out.get(p), Some(data), "{p}");
        }
    } else {
        assert_eq!(n, 0, "{}", list.text());
    }
    // The files stored: exactly the bundle's (the dead attempt's were rewritten in place).
    let stored = s
        .blobs()
        .await
        .into_iter()
        .filter(|(k, _)| k.contains("/imports/") && !k.contains('#'))
        .count();
    assert!(stored <= m.len(), "{stored} blobs for {} files", m.len());
}

/// Imports are owned and entitled like bundles, take one archive, and a cancelled one takes none.
#[tokio::test]
async fn imports_are_scoped_entitled_and_take_one_archive() {
    let s = Server::start(&[]).await;
    let (a, b, c) = (s.client("alice"), s.client("bob"), s.client("carol"));
    c.req("POST", "/users/carol/bundleimports", None, &[])
        .await
        .assert_uforge_error(403);
    let r = a
        .req("POST", "/users/alice/imports?force=maybe", None, &[])
        .await;
    r.assert_uforge_error(400);
    assert!(r.error_message().contains("force"), "{}", r.text());
    let id = a
        .req("POST", "/users/alice/bundleimports", None, &[])
        .await
        .id();
    let one = format!("/users/alice/bundleimports/{id}");
    // Not bob's, and not a template import.
    b.get(&one).await.assert_uforge_error(404);
    b.req("POST", &format!("{one}/uploads"), Some(b"x".to_vec()), &[])
        .await
        .assert_uforge_error(404);
    a.get(&format!("/users/alice/imports/{id}"))
        .await
        .assert_uforge_error(404);
    let st = a.get(&format!("{one}/status")).await;
    assert_eq!(
        st.field("message").as_deref(),
        Some("waiting for the archive upload")
    );
    // Cancelled before its upload: an upload is refused and stores nothing.
    let r = a.req("DELETE", &format!("{one}/status"), None, &[]).await;
    assert_eq!(
        r.field("cancelled").as_deref(),
        Some("true"),
        "{}",
        r.text()
    );
    a.req(
        "POST",
        &format!("{one}/uploads"),
        Some(gz_tar(&[(
            "bundle.yml",
            b"name: x\nversion: '1'\nfiles: []\n",
        )])),
        &[],
    )
    .await
    .assert_uforge_error(409);
    // One archive per import.
    let id = a
        .req("POST", "/users/alice/bundleimports", None, &[])
        .await
        .id();
    let one = format!("/users/alice/bundleimports/{id}");
    let archive = gz_tar(&[("bundle.yml", b"name: x\nversion: '1'\nfiles: []\n")]);
    let r = a
        .req(
            "POST",
            &format!("{one}/uploads"),
            Some(archive.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    a.req("POST", &format!("{one}/uploads"), Some(archive), &[])
        .await
        .assert_uforge_error(409);
    // Deleting the record keeps what it made.
    let deadline = Instant::now() + T;
    while a
        .get(&format!("{one}/status"))
        .await
        .field("complete")
        .as_deref()
        != Some("true")
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let msid = ref_id(&a.get(&one).await);
    assert_eq!(a.req("DELETE", &one, None, &[]).await.status, 204);
    assert_eq!(
        a.get(&format!("/users/alice/mysoftware/{msid}"))
            .await
            .status,
        200
    );
    a.get(&one).await.assert_uforge_error(404);
    let left: Vec<_> = s
        .blobs()
        .await
        .into_iter()
        .filter(|(k, _)| k.contains("upload.tar.gz"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
