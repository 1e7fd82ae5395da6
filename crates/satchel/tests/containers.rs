//! Container templates, generated OCI images and one-time download ids, over HTTP against the real
//! binary (embedded engines here; PostgreSQL + Garage in the scale-out binary, which includes this
//! file). The archive is checked by an independent reader (skopeo) and byte for byte.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn tpl_path(login: &str, msid: i64) -> String {
    format!("/users/{login}/mysoftware/{msid}/templates")
}

async fn create_template(c: &Client, msid: i64, body: &str) -> i64 {
    let r = c
        .req(
            "POST",
            &tpl_path(&c.login, msid),
            Some(body.as_bytes().to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.header("location").is_some());
    r.id()
}

fn image_doc(name: &str, compress: bool) -> Vec<u8> {
    format!(
        "<ns1:image xmlns:ns1=\"{NS}\"><compress>{compress}</compress><format><name>docker</name></format><name>{name}</name></ns1:image>"
    )
    .into_bytes()
}

async fn generate(c: &Client, msid: i64, tid: i64, name: &str, compress: bool) -> i64 {
    let r = c
        .req(
            "POST",
            &format!("{}/{tid}/images", tpl_path(&c.login, msid)),
            Some(image_doc(name, compress)),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.field("compress").as_deref(), Some(&*compress.to_string()));
    r.id()
}

fn img_path(login: &str, msid: i64, tid: i64, itid: i64) -> String {
    format!("{}/{tid}/images/{itid}", tpl_path(login, msid))
}

async fn wait_image(c: &Client, msid: i64, tid: i64, itid: i64) -> Resp {
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = c
            .get(&format!("{}/status", img_path(&c.login, msid, tid, itid)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.field("complete").as_deref() == Some("true")
            || r.field("error").as_deref() == Some("true")
            || r.field("cancelled").as_deref() == Some("true")
        {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bundle with nested files, an empty folder and a license; returns (msid, files by layer path).
async fn demo_bundle(c: &Client, name: &str) -> (i64, BTreeMap<String, Vec<u8>>) {
    let msid = c.create_bundle(name, "1.0").await;
    let mut files = BTreeMap::new();
    let run = b"#!/bin/sh\necho hello from the image\n".to_vec();
    let data = noise(300_000, 7);
    let bin = c.create_artifact(msid, None, "bin", "folder").await;
    c.add_file(msid, Some(bin), "run.sh", &run).await;
    c.add_file(msid, None, "data.bin", &data).await;
    c.create_artifact(msid, None, "empty", "folder").await;
    files.insert(format!("opt/{name}/bin/run.sh"), run);
    files.insert(format!("opt/{name}/data.bin"), data);
    let lic = b"MIT License\n".to_vec();
    let r = c
        .req(
            "POST",
            &format!("/users/{}/mysoftware/{msid}/licenses/0/LICENSE", c.login),
            Some(lic.clone()),
            &[],
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    files.insert(format!("usr/share/licenses/{name}/LICENSE"), lic);
    (msid, files)
}

/// Downloads without any credentials.
async fn anonymous(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = reqwest::Client::new().get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by .ci/run");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Permission bits of a gzip tar's regular files.
fn modes(tgz: &[u8]) -> BTreeMap<String, u32> {
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(tgz));
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| {
            (
                e.path().unwrap().to_string_lossy().to_string(),
                e.header().mode().unwrap() & 0o7777,
            )
        })
        .collect()
}

/// Checks the archive with skopeo and by hand; returns the layer's files (path -> content) and
/// their permission bits.
fn verify_oci(archive: &[u8]) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, u32>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.oci.tar.gz");
    std::fs::write(&path, archive).unwrap();
    let src = format!("oci-archive:{}", path.display());
    let manifest: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", "--raw", &src])).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", "--config", &src])).unwrap();
    assert_eq!(config["os"], "linux");
    // `copy` reads every blob and checks it against its digest.
    let copied = dir.path().join("copied");
    skopeo(&[
        "copy",
        "--quiet",
        &src,
        &format!("dir:{}", copied.display()),
    ]);
    let members = untar(archive);
    assert_eq!(
        members["oci-layout"],
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
    );
    for (p, v) in &members {
        if let Some(h) = p.strip_prefix("blobs/sha256/") {
            if !h.is_empty() {
                assert_eq!(hex::encode(Sha256::digest(v)), h, "{p}");
            }
        }
    }
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = &members[&format!("blobs/sha256/{}", &layer_digest[7..])];
    assert_eq!(
        std::fs::read(copied.join(&layer_digest[7..])).unwrap(),
        *layer
    );
    (untar(layer), modes(layer))
}

/// `podman load`s the archive into a throwaway store and returns the image's files from its mounted
/// root filesystem (path -> content), plus what podman says the image is.
fn podman_files(archive: &[u8]) -> (BTreeMap<String, Vec<u8>>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.oci.tar.gz");
    std::fs::write(&file, archive).unwrap();
    let podman = |args: &[&str]| common::podman::podman(dir.path(), args);
    let loaded = podman(&["load", "-i", &file.to_string_lossy()]);
    let name = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("podman load said: {loaded}"))
        .to_string();
    let what = podman(&[
        "image",
        "inspect",
        &name,
        "--format",
        "{{.Os}}/{{.Architecture}} {{index .Labels \"org.opencontainers.image.title\"}}",
    ]);
    let mnt = std::path::PathBuf::from(podman(&["image", "mount", &name]));
    let mut files = BTreeMap::new();
    fn walk(base: &std::path::Path, p: &std::path::Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if path.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(base, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    walk(&mnt, &mnt, &mut files);
    podman(&["image", "unmount", &name]);
    (files, format!("{name} {what}"))
}

#[tokio::test]
async fn templates_images_and_one_time_downloads() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let (msid, files) = demo_bundle(&a, "demo").await;

    // Templates: an empty body, or one with a distribution.
    let t0 = create_template(&a, msid, "").await;
    let tid = create_template(
        &a,
        msid,
        &format!("<ns1:containerTemplate xmlns:ns1=\"{NS}\"><distribution><arch>x86_64</arch><name>Debian</name><version>12</version></distribution></ns1:containerTemplate>"),
    )
    .await;
    let r = a.get(&format!("{}/{tid}", tpl_path("alice", msid))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.field("name").as_deref(), Some("Debian"));
    assert_eq!(
        r.field("imagesUri"),
        Some(format!(
            "users/alice/mysoftware/{msid}/templates/{tid}/images"
        ))
    );
    let r = a.get(&tpl_path("alice", msid)).await;
    assert_eq!(r.field("total").as_deref(), Some("2"), "{}", r.text());
    let r = a
        .get(&format!("{}/{tid}/formats", tpl_path("alice", msid)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<name>docker</name>"), "{}", r.text());

    // Generation: the image answers at once, a job builds it.
    let itid = generate(&a, msid, tid, "demo", true).await;
    let st = wait_image(&a, msid, tid, itid).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    assert_eq!(st.field("percentage").as_deref(), Some("100"));
    let etag = st.header("etag").unwrap();
    let r = a
        .req(
            "GET",
            &format!("{}/status", img_path("alice", msid, tid, itid)),
            None,
            &[("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);

    let img = a.get(&img_path("alice", msid, tid, itid)).await;
    assert_eq!(img.status, 200, "{}", img.text());
    assert_eq!(img.header("cache-control").as_deref(), Some("no-store"));
    let key = img.field("downloadKey").expect("a download key");
    assert!(key.len() >= 32, "at least 128 bits: {key}");
    let file_name = img.field("fileName").unwrap();
    assert_eq!(file_name, "demo-1.0.oci.tar.gz");
    let size: usize = img.field("fileSize").unwrap().parse().unwrap();
    let sha = img.field("sha256sum").unwrap();
    assert_eq!(img.field("compress").as_deref(), Some("true"));
    let uri = img.field("downloadUri").unwrap().replace("&amp;", "&");
    assert!(
        uri.ends_with(&format!("downloads?downloadId={key}")),
        "{uri}"
    );

    // The owner's download: a plain file, whole or by range.
    let owner = a
        .get(&format!("{}/downloads", img_path("alice", msid, tid, itid)))
        .await;
    assert_eq!(owner.status, 200);
    assert_eq!(owner.body.len(), size);
    assert_eq!(hex::encode(Sha256::digest(&owner.body)), sha);
    assert_eq!(
        owner.header("content-type").as_deref(),
        Some("application/x-tar")
    );
    assert!(owner.header("content-encoding").is_none());
    assert_eq!(owner.header("content-length"), Some(size.to_string()));
    assert_eq!(owner.header("etag"), Some(format!("\"{sha}\"")));
    let r = a
        .req(
            "GET",
            &format!("{}/downloads", img_path("alice", msid, tid, itid)),
            None,
            &[("Range", "bytes=10-109")],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &owner.body[10..110]);
    let r = a
        .get(&format!(
            "{}/downloads/{file_name}",
            img_path("alice", msid, tid, itid)
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, owner.body);
    a.get(&format!(
        "{}/downloads/other.tar",
        img_path("alice", msid, tid, itid)
    ))
    .await
    .assert_uforge_error(404);

    // The archive is a real OCI layout holding the bundle's files byte for byte.
    let (layer, perms) = verify_oci(&owner.body);
    // Scripts are executable (from their `#!`), data is not.
    assert_eq!(perms["opt/demo/bin/run.sh"], 0o755);
    assert_eq!(perms["opt/demo/data.bin"], 0o644);
    for (p, v) in &files {
        assert_eq!(layer.get(p), Some(v), "{p}");
    }
    assert!(layer.contains_key("opt/demo/empty/"), "{:?}", layer.keys());
    assert!(layer.contains_key("opt/demo/bin/"));
    // ...which podman loads: the image's root filesystem holds them too.
    let (rootfs, what) = podman_files(&owner.body);
    assert_eq!(what, "localhost/demo:1.0 linux/amd64 demo", "{what}");
    for (p, v) in &files {
        assert_eq!(rootfs.get(p), Some(v), "{p} in {:?}", rootfs.keys());
    }
    assert!(rootfs.contains_key("opt/demo/empty/"));

    // One-time id: anyone may use it once, without credentials.
    let url = format!("{}{}", s.base(), img_path("alice", msid, tid, itid));
    let first = anonymous(&format!("{url}/downloads?downloadId={key}"), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.body, owner.body);
    assert_eq!(first.header("cache-control").as_deref(), Some("no-store"));
    let again = anonymous(&format!("{url}/downloads?downloadId={key}"), &[]).await;
    again.assert_uforge_error(410);
    assert!(
        again.error_message().contains("already used"),
        "{}",
        again.text()
    );
    // After a use, the image offers a new id; Basic credentials sent along are ignored.
    let key2 = a
        .get(&img_path("alice", msid, tid, itid))
        .await
        .field("downloadKey")
        .unwrap();
    assert_ne!(key, key2);
    let bob = s.client("bob");
    let r = bob
        .get(&format!(
            "{}/downloads/{file_name}?downloadId={key2}",
            img_path("alice", msid, tid, itid)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, owner.body);
    // Even wrong credentials do not matter next to an id.
    let key3 = a
        .get(&img_path("alice", msid, tid, itid))
        .await
        .field("downloadKey")
        .unwrap();
    let wrong = Client {
        password: "not-the-password".into(),
        ..a.clone()
    };
    let r = wrong
        .get(&format!(
            "{}/downloads?downloadId={key3}",
            img_path("alice", msid, tid, itid)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An unknown id, or one for another image, is refused.
    anonymous(
        &format!("{url}/downloads?downloadId={}", "0".repeat(64)),
        &[],
    )
    .await
    .assert_uforge_error(403);
    // Without id nor credentials: authentication is required.
    anonymous(&format!("{url}/downloads"), &[])
        .await
        .assert_uforge_error(401);

    // Same input, same image: the build is deterministic.
    let again_id = generate(&a, msid, tid, "demo", true).await;
    wait_image(&a, msid, tid, again_id).await;
    let img2 = a.get(&img_path("alice", msid, tid, again_id)).await;
    assert_eq!(img2.field("sha256sum"), Some(sha.clone()));

    // compress=false: generated, but nobody may download it.
    let raw = generate(&a, msid, t0, "demo", false).await;
    let st = wait_image(&a, msid, t0, raw).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let r = a.get(&img_path("alice", msid, t0, raw)).await;
    assert!(r.field("downloadKey").is_none(), "{}", r.text());
    assert!(r.field("downloadUri").is_none());
    let r = a
        .get(&format!("{}/downloads", img_path("alice", msid, t0, raw)))
        .await;
    r.assert_uforge_error(403);
    assert!(r.error_message().contains("compress"), "{}", r.text());

    // The user's images across templates (what `hammr image list` reads); exports are not in it.
    let eid = a.export(msid, "yaml").await;
    a.wait_export(msid, eid, T).await;
    let r = a.get("/users/alice/images").await;
    assert_eq!(r.field("total").as_deref(), Some("3"), "{}", r.text());
    assert!(
        r.text().contains("<targetFormat><name>Docker</name>"),
        "{}",
        r.text()
    );
    s.client("bob")
        .get("/users/alice/images")
        .await
        .assert_uforge_error(404);
    assert_eq!(
        s.client("bob")
            .get("/users/bob/images")
            .await
            .field("total")
            .as_deref(),
        Some("0")
    );
    let r = a
        .req(
            "DELETE",
            &format!("/users/alice/mysoftware/{msid}/exports/{eid}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);

    // Listing, deleting an image, deleting a template: their archives go with them.
    let r = a
        .get(&format!("{}/{tid}/images", tpl_path("alice", msid)))
        .await;
    assert_eq!(r.field("total").as_deref(), Some("2"), "{}", r.text());
    let before = s.blobs().await.len();
    let r = a
        .req("DELETE", &img_path("alice", msid, tid, again_id), None, &[])
        .await;
    assert_eq!(r.status, 204);
    a.get(&img_path("alice", msid, tid, again_id))
        .await
        .assert_uforge_error(404);
    assert_eq!(s.blobs().await.len(), before - 1);
    let r = a
        .req(
            "DELETE",
            &format!("{}/{tid}", tpl_path("alice", msid)),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    a.get(&img_path("alice", msid, tid, itid))
        .await
        .assert_uforge_error(404);
    assert_eq!(s.blobs().await.len(), before - 2);
    // Deleting the bundle takes the last template and its image.
    let r = a
        .req(
            "DELETE",
            &format!("/users/alice/mysoftware/{msid}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(s.blobs().await.is_empty(), "{:?}", s.blobs().await);
}

/// 100 requests racing with one id: exactly one download (on every engine; across two instances
/// in scale-out runs).
#[tokio::test]
async fn one_time_id_race_has_exactly_one_winner() {
    let s = Server::start(&[]).await;
    let other = if SCALEOUT {
        Some(s.second(&[]).await)
    } else {
        None
    };
    let a = s.client("alice");
    let msid = a.create_bundle("race", "1").await;
    a.add_file(msid, None, "f.bin", &noise(64 * 1024, 1)).await;
    let tid = create_template(&a, msid, "").await;
    let itid = generate(&a, msid, tid, "race", true).await;
    wait_image(&a, msid, tid, itid).await;
    let key = a
        .get(&img_path("alice", msid, tid, itid))
        .await
        .field("downloadKey")
        .unwrap();
    let path = format!(
        "{}/downloads?downloadId={key}",
        img_path("alice", msid, tid, itid)
    );
    let bases: Vec<String> = match &other {
        Some(o) => vec![s.base(), o.base()],
        None => vec![s.base()],
    };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for n in 0..100 {
        let url = format!("{}{path}", bases[n % bases.len()]);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            anonymous(&url, &[]).await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            410 => {
                r.assert_uforge_error(410);
                refused += 1
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!((ok, refused), (1, 99));
}

#[tokio::test]
async fn download_ids_expire_and_a_fresh_one_resumes_with_range() {
    let s = Server::start(&["--download-key-ttl", "1s"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("ttl", "1").await;
    a.add_file(msid, None, "f.bin", &noise(100_000, 2)).await;
    let tid = create_template(&a, msid, "").await;
    let itid = generate(&a, msid, tid, "ttl", true).await;
    wait_image(&a, msid, tid, itid).await;
    let ip = img_path("alice", msid, tid, itid);
    let full = a.get(&format!("{ip}/downloads")).await.body;
    let url = format!("{}{ip}/downloads", s.base());
    let key = a.get(&ip).await.field("downloadKey").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = anonymous(&format!("{url}?downloadId={key}"), &[]).await;
    r.assert_uforge_error(410);
    assert!(r.error_message().contains("expired"), "{}", r.text());
    // The remedy for an interrupted download: a fresh id with a Range request.
    let key = a.get(&ip).await.field("downloadKey").unwrap();
    let r = anonymous(
        &format!("{url}?downloadId={key}"),
        &[("Range", "bytes=1000-")],
    )
    .await;
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, &full[1000..]);
    // ...which spends that id too.
    anonymous(
        &format!("{url}?downloadId={key}"),
        &[("Range", "bytes=0-9")],
    )
    .await
    .assert_uforge_error(410);
}

#[tokio::test]
async fn other_users_and_bad_input() {
    let s = Server::start(&["--export-throttle", "20ms"]).await;
    let a = s.client("alice");
    let b = s.client("bob");
    let msid = a.create_bundle("mine", "1").await;
    a.add_file(msid, None, "f.bin", &noise(2 << 20, 4)).await;
    let tid = create_template(&a, msid, "").await;
    let bob_msid = b.create_bundle("bobs", "1").await;

    // Bob sees nothing of Alice's, whatever the path.
    let tp = tpl_path("alice", msid);
    b.get(&tp).await.assert_uforge_error(404);
    b.get(&format!("{tp}/{tid}")).await.assert_uforge_error(404);
    let r = b.req("POST", &tp, Some(Vec::new()), &[]).await;
    r.assert_uforge_error(404);
    // Alice's template under Bob's bundle does not exist either.
    b.get(&format!("{}/{tid}", tpl_path("bob", bob_msid)))
        .await
        .assert_uforge_error(404);
    let r = b
        .req(
            "POST",
            &format!("{tp}/{tid}/images"),
            Some(image_doc("x", true)),
            &[],
        )
        .await;
    r.assert_uforge_error(404);
    // Carol (no software_upload entitlement) may not create templates, even on paths she owns.
    let root = s.client("root");
    let r = root
        .req(
            "POST",
            "/users/carol/mysoftware",
            Some(format!("<ns1:mySoftware xmlns:ns1=\"{NS}\"><name>c</name><version>1</version></ns1:mySoftware>").into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let c = s.client("carol");
    let r = c
        .req("POST", &tpl_path("carol", r.id()), Some(Vec::new()), &[])
        .await;
    r.assert_uforge_error(403);

    // Cancel a running generation: it ends cancelled and leaves nothing behind.
    let itid = generate(&a, msid, tid, "slow", true).await;
    let ip = img_path("alice", msid, tid, itid);
    b.req("DELETE", &format!("{ip}/status"), None, &[])
        .await
        .assert_uforge_error(404);
    b.get(&format!("{ip}/downloads"))
        .await
        .assert_uforge_error(404);
    // Not ready yet: 409, for the owner.
    a.get(&format!("{ip}/downloads"))
        .await
        .assert_uforge_error(409);
    let r = a.req("DELETE", &format!("{ip}/status"), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("cancelled").as_deref(), Some("true"));
    let st = wait_image(&a, msid, tid, itid).await;
    assert_eq!(st.field("cancelled").as_deref(), Some("true"));
    assert!(a.get(&ip).await.field("downloadKey").is_none());
    a.get(&format!("{ip}/downloads"))
        .await
        .assert_uforge_error(409);
    // The worker notices at its next progress report and drops its partial files.
    let deadline = std::time::Instant::now() + T;
    while s.blobs().await.iter().any(|(k, _)| k.contains("/images/")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            s.blobs().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad input: clear uforgeErrors, never a crash.
    let bad_distro = format!("<ns1:containerTemplate xmlns:ns1=\"{NS}\"><distribution><name>Plan9</name></distribution></ns1:containerTemplate>");
    let r = a.req("POST", &tp, Some(bad_distro.into_bytes()), &[]).await;
    r.assert_uforge_error(400);
    assert!(r.error_message().contains("Plan9"), "{}", r.text());
    let r = a
        .req("POST", &tp, Some(b"<ns1:containerTemplate".to_vec()), &[])
        .await;
    r.assert_uforge_error(400);
    let r = a
        .req(
            "POST",
            &format!("{tp}/{tid}/images"),
            Some(
                format!("<ns1:image xmlns:ns1=\"{NS}\"><format><name>vmware</name></format></ns1:image>")
                    .into_bytes(),
            ),
            &[],
        )
        .await;
    r.assert_uforge_error(400);
    assert!(r.error_message().contains("vmware"), "{}", r.text());
    a.get(&format!("{tp}/x")).await.assert_uforge_error(400);
    a.get(&format!("{tp}/{tid}/images/-1"))
        .await
        .assert_uforge_error(400);
    let r = a
        .req("HEAD", &format!("{ip}/downloads?downloadId=abc"), None, &[])
        .await;
    assert_eq!(r.status, 405);

    // JSON works too.
    let r = a
        .req(
            "POST",
            &format!("{tp}/{tid}/images"),
            Some(br#"{"name":"json","compress":true,"format":{"name":"docker"}}"#.to_vec()),
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["name"], "json");
    assert_eq!(v["format"]["name"], "docker");
    // The admin may read Alice's template.
    assert_eq!(root.get(&format!("{tp}/{tid}")).await.status, 200);
}

/// Kill -9 mid-generation: after a restart the image is generated from scratch (its job survives), with
/// the same digest as an undisturbed build, and the dead attempt leaves no blob behind.
#[tokio::test]
async fn sigkill_mid_generation_then_restart() {
    let mut s = Server::start(&["--export-throttle", "60ms"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("durable", "3").await;
    a.add_file(msid, None, "big.bin", &noise(12 << 20, 9)).await;
    let tid = create_template(&a, msid, "").await;
    let itid = generate(&a, msid, tid, "durable", true).await;
    let status = format!("{}/status", img_path("alice", msid, tid, itid));
    let deadline = std::time::Instant::now() + T;
    loop {
        let st = a.get(&status).await;
        let pct: i32 = st.field("percentage").unwrap().parse().unwrap();
        if pct > 5 && st.field("complete").as_deref() == Some("false") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", st.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    s.spawn().await;
    let st = wait_image(&a, msid, tid, itid).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let sha = a
        .get(&img_path("alice", msid, tid, itid))
        .await
        .field("sha256sum")
        .unwrap();
    let body = a
        .get(&format!("{}/downloads", img_path("alice", msid, tid, itid)))
        .await
        .body;
    assert_eq!(hex::encode(Sha256::digest(&body)), sha);
    // An undisturbed build of the same content, on another template, is the same image.
    let t2 = create_template(&a, msid, "").await;
    let i2 = generate(&a, msid, t2, "durable", true).await;
    wait_image(&a, msid, t2, i2).await;
    assert_eq!(
        a.get(&img_path("alice", msid, t2, i2))
            .await
            .field("sha256sum"),
        Some(sha)
    );
    // Only the two archives and the bundle's file are stored: no partial layer survived.
    let blobs = s.blobs().await;
    let images: Vec<_> = blobs
        .iter()
        .filter(|(k, _)| k.contains("/images/"))
        .collect();
    assert_eq!(images.len(), 2, "{blobs:?}");
    assert!(
        images.iter().all(|(k, _)| k.ends_with("image.oci.tar.gz")),
        "{blobs:?}"
    );
}
