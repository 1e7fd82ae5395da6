//! Publication (pimages) and the pull endpoint (/v2), over HTTP against the real binary, with the
//! real clients: `skopeo inspect` and `podman pull` (into a throwaway store) read what was
//! published; other users and anonymous callers cannot; unpublishing and cancelling leave no blob.
//! Embedded engines here; PostgreSQL + Garage in the scale-out binary, which includes this file.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn img_path(login: &str, msid: i64, tid: i64, itid: i64) -> String {
    format!("/users/{login}/mysoftware/{msid}/templates/{tid}/images/{itid}")
}

/// Polls a ticket status document until it is final.
async fn wait_final(c: &Client, status: &str) -> Resp {
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = c.get(status).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if ["complete", "error", "cancelled"]
            .iter()
            .any(|f| r.field(f).as_deref() == Some("true"))
        {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bundle with a nested file, a larger one and a license, its template (no distribution) and
/// an uncompressed image generated from it: (msid, tid, itid, files by image path).
async fn generated_image(
    c: &Client,
    name: &str,
    data_len: usize,
) -> (i64, i64, i64, BTreeMap<String, Vec<u8>>) {
    let msid = c.create_bundle(name, "1.0").await;
    let mut files = BTreeMap::new();
    let run = b"#!/bin/sh\necho hello from the registry\n".to_vec();
    let data = noise(data_len, 11);
    let bin = c.create_artifact(msid, None, "bin", "folder").await;
    c.add_file(msid, Some(bin), "run.sh", &run).await;
    c.add_file(msid, None, "data.bin", &data).await;
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

    let tpl = format!("/users/{}/mysoftware/{msid}/templates", c.login);
    let r = c.req("POST", &tpl, Some(Vec::new()), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tid = r.id();
    let doc = format!(
        "<ns1:image xmlns:ns1=\"{NS}\"><compress>false</compress><format><name>docker</name></format><name>{name}</name></ns1:image>"
    );
    let r = c
        .req(
            "POST",
            &format!("{tpl}/{tid}/images"),
            Some(doc.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let itid = r.id();
    let st = wait_final(
        c,
        &format!("{}/status", img_path(&c.login, msid, tid, itid)),
    )
    .await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    (msid, tid, itid, files)
}

async fn publish(c: &Client, image: &str) -> Resp {
    c.req("POST", &format!("{image}/pimages"), Some(Vec::new()), &[])
        .await
}

/// A registry request (`/v2/...`), with Basic credentials when given.
async fn v2(
    s: &Server,
    method: &str,
    path: &str,
    creds: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut rb = reqwest::Client::new().request(
        method.parse().unwrap(),
        format!("http://127.0.0.1:{}{path}", s.port),
    );
    if let Some((u, p)) = creds {
        rb = rb.basic_auth(u, Some(p));
    }
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

fn error_code(r: &Resp) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("not a registry error: {}", r.text()));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// skopeo's answer: (success, stdout, stderr).
fn skopeo(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by .ci/run");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `podman pull`s `reference` into a throwaway store and returns the image's files from its
/// mounted root filesystem (path -> content).
fn podman_pull(reference: &str, creds: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| common::podman::podman(dir.path(), args);
    podman(&[
        "pull",
        "--quiet",
        "--tls-verify=false",
        "--creds",
        creds,
        reference,
    ]);
    let mnt = std::path::PathBuf::from(podman(&["image", "mount", reference]));
    let mut files = BTreeMap::new();
    for p in walk_files(&mnt) {
        let rel = p.strip_prefix(&mnt).unwrap().to_string_lossy().to_string();
        files.insert(rel, std::fs::read(&p).unwrap());
    }
    podman(&["image", "unmount", reference]);
    files
}

fn registry_keys(blobs: &[(String, u64)]) -> Vec<String> {
    blobs
        .iter()
        .filter(|(k, _)| k.contains("/registry/"))
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test]
async fn publish_pull_and_unpublish() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let (msid, tid, itid, files) = generated_image(&a, "demo", 300_000).await;
    let image = img_path("alice", msid, tid, itid);
    let host = format!("127.0.0.1:{}", s.port);
    let reference = format!("{host}/alice/demo:1.0");

    // Nothing is pullable before publication.
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/manifests/1.0",
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");

    // Publish: a ticket whose status completes.
    let r = publish(&a, &image).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.text().contains("PublishImageDocker"), "{}", r.text());
    let ptiid = r.id();
    let pimage = format!("{image}/pimages/{ptiid}");
    let st = wait_final(&a, &format!("{pimage}/status")).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );
    let r = a.get(&pimage).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("cloudId"), Some(reference.clone()), "{}", r.text());
    assert_eq!(r.field("repositoryName").as_deref(), Some("demo"));
    assert_eq!(r.field("tagName").as_deref(), Some("1.0"));
    // The user's list, and the image's registeringName.
    let r = a.get("/users/alice/pimages").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("total").as_deref(), Some("1"), "{}", r.text());
    assert_eq!(
        r.field("imageUri"),
        Some(image.trim_start_matches('/').to_string())
    );
    let r = a.get("/users/alice/images").await;
    assert_eq!(
        r.field("registeringName"),
        Some(reference.clone()),
        "{}",
        r.text()
    );
    // The same tag twice is refused while it is published.
    let r = publish(&a, &image).await;
    r.assert_uforge_error(409);
    // Another user sees no such publication.
    let b = s.client("bob");
    let r = b.get(&pimage.replace("/users/alice/", "/users/bob/")).await;
    assert_eq!(r.status, 404, "{}", r.text());

    // The base endpoint: 401 with a Basic challenge, then 200 with the API version.
    let r = v2(&s, "GET", "/v2/", None, &[]).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    assert_eq!(error_code(&r), "UNAUTHORIZED");
    let r = v2(&s, "GET", "/v2/", Some(("alice", "wrong")), &[]).await;
    assert_eq!(r.status, 401);
    let r = v2(&s, "GET", "/v2/", Some(("alice", "alice-pw")), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );

    // skopeo reads it with alice's credentials, not with bob's or none.
    let src = format!("docker://{reference}");
    let (ok, out, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:alice-pw",
        &src,
    ]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(info["Labels"]["org.opencontainers.image.title"], "demo");
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1), "{info}");
    let (ok, _, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "bob:bob-pw",
        &src,
    ]);
    assert!(!ok, "bob pulled alice's image");
    assert!(!err.is_empty());
    let (ok, _, _) = skopeo(&["inspect", "--tls-verify=false", "--no-creds", &src]);
    assert!(!ok, "an anonymous caller pulled alice's image");
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/manifests/1.0",
        Some(("bob", "bob-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");
    // An admin may pull anyone's.
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/tags/list",
        Some(("root", "root-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tags: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));

    // The manifest: its type, its digest (which is the sha256 of the bytes), HEAD and by digest.
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/manifests/1.0",
        Some(("alice", "alice-pw")),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let digest = r.header("docker-content-digest").unwrap();
    assert_eq!(
        digest,
        format!("sha256:{}", hex::encode(Sha256::digest(&r.body)))
    );
    let manifest: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let head = v2(
        &s,
        "HEAD",
        &format!("/v2/alice/demo/manifests/{digest}"),
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("docker-content-digest"), Some(digest.clone()));
    assert_eq!(
        head.header("content-length"),
        Some(r.body.len().to_string())
    );
    assert!(head.body.is_empty());

    // A layer, whole and by Range.
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = format!("/v2/alice/demo/blobs/{layer}");
    let whole = v2(&s, "GET", &blob, Some(("alice", "alice-pw")), &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&whole.body))),
        layer
    );
    let part = v2(
        &s,
        "GET",
        &blob,
        Some(("alice", "alice-pw")),
        &[("Range", "bytes=100-4195")],
    )
    .await;
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.body, whole.body[100..4196]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-4195/{}", whole.body.len()))
    );
    let r = v2(
        &s,
        "GET",
        &blob,
        Some(("alice", "alice-pw")),
        &[("Range", "bytes=99999999-")],
    )
    .await;
    assert_eq!(r.status, 416);
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/blobs/sha256:nothex",
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(error_code(&r), "DIGEST_INVALID");
    let r = v2(
        &s,
        "GET",
        &blob.replace("/demo/", "/other/"),
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "BLOB_UNKNOWN");
    // Read-only.
    let r = v2(
        &s,
        "PUT",
        "/v2/alice/demo/manifests/2.0",
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 405);

    // podman pulls it: the image's files are the bundle's.
    let pulled = podman_pull(&reference, "alice:alice-pw");
    for (path, content) in &files {
        assert_eq!(
            pulled.get(path),
            Some(content),
            "{path} in the pulled image"
        );
    }
    assert_eq!(
        pulled.keys().filter(|k| !k.ends_with('/')).count(),
        files.len(),
        "{:?}",
        pulled.keys().collect::<Vec<_>>()
    );
    assert!(!registry_keys(&s.blobs().await).is_empty());

    // Unpublish: the pull fails, and the blobs are gone.
    let r = a.req("DELETE", &pimage, None, &[]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let (ok, _, _) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:alice-pw",
        &src,
    ]);
    assert!(!ok, "pulled after unpublishing");
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/manifests/1.0",
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "MANIFEST_UNKNOWN");
    let r = v2(&s, "GET", &blob, Some(("alice", "alice-pw")), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(registry_keys(&s.blobs().await), Vec::<String>::new());
    let r = a.get(&pimage).await;
    assert_eq!(r.status, 404);

    // Published again, then the image deleted: its publication goes with it.
    let r = publish(&a, &image).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ptiid = r.id();
    wait_final(&a, &format!("{image}/pimages/{ptiid}/status")).await;
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/manifests/1.0",
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a.req("DELETE", &image, None, &[]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = v2(
        &s,
        "GET",
        "/v2/alice/demo/manifests/1.0",
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(registry_keys(&s.blobs().await), Vec::<String>::new());

    // A deleted bundle takes its images' publications with it.
    let (msid, tid, itid, _) = generated_image(&a, "other", 1000).await;
    let image = img_path("alice", msid, tid, itid);
    let r = publish(&a, &image).await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait_final(&a, &format!("{image}/pimages/{}/status", r.id())).await;
    let creds = Some(("alice", "alice-pw"));
    let r = v2(&s, "GET", "/v2/alice/other/manifests/1.0", creds, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a
        .req(
            "DELETE",
            &format!("/users/alice/mysoftware/{msid}"),
            None,
            &[],
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    let r = v2(&s, "GET", "/v2/alice/other/manifests/1.0", creds, &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(registry_keys(&s.blobs().await), Vec::<String>::new());
    let r = a.get("/users/alice/pimages").await;
    assert_eq!(r.field("total").as_deref(), Some("0"), "{}", r.text());
}

#[tokio::test]
async fn a_cancelled_publication_leaves_no_blob() {
    // Slow chunks, so the publication is caught running.
    let s = Server::start(&["--export-throttle", "150ms"]).await;
    let a = s.client("alice");
    let (msid, tid, itid, _) = generated_image(&a, "slow", 6 << 20).await;
    let image = img_path("alice", msid, tid, itid);
    let r = publish(&a, &image).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let pimage = format!("{image}/pimages/{}", r.id());
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = a.get(&format!("{pimage}/status")).await;
        if r.field("message").as_deref() == Some("publication in progress") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = a
        .req("DELETE", &format!("{pimage}/cancel"), None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.field("cancelled").as_deref(),
        Some("true"),
        "{}",
        r.text()
    );
    // The job notices at its next progress write and removes what it wrote.
    let deadline = std::time::Instant::now() + T;
    loop {
        let left = registry_keys(&s.blobs().await);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = v2(
        &s,
        "GET",
        "/v2/alice/slow/manifests/1.0",
        Some(("alice", "alice-pw")),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    let r = a.get(&format!("{pimage}/status")).await;
    assert_eq!(r.field("cancelled").as_deref(), Some("true"));
}
