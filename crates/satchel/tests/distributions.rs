//! Base distributions end to end, against the real binary (embedded engines here; PostgreSQL +
//! Garage in the scale-out binary, which includes this file): a busybox base built here from
//! Debian's `busybox-static` (installed by .ci/run) as an OCI image layout archive, registered with
//! `satchel admin distribution add`, listed over the UForge face, and an image generated on it that
//! podman loads and runs. Hostile base archives are refused with messages that say why.

mod common;

use common::podman::podman;
use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(180);
const BUSYBOX: &str = "/bin/busybox";
const GREETING: &str = "hello from the base";

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn header(kind: tar::EntryType, path: &str, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The base's one layer (an uncompressed tar): /bin/busybox, a symlink per applet (/bin/sh...),
/// /tmp and /etc/passwd.
fn busybox_layer() -> Vec<u8> {
    let bin = std::fs::read(BUSYBOX).expect("busybox-static is installed by .ci/run");
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap();
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    assert!(applets.iter().any(|a| a == "sh"), "{applets:?}");
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "tmp/"] {
        let mut h = header(tar::EntryType::Directory, d, 0, 0o755);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    let mut h = header(
        tar::EntryType::Regular,
        "bin/busybox",
        bin.len() as u64,
        0o755,
    );
    h.set_cksum();
    b.append(&h, &bin[..]).unwrap();
    for a in &applets {
        let mut h = header(tar::EntryType::Symlink, &format!("bin/{a}"), 0, 0o777);
        h.set_link_name("busybox").unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut h = header(
        tar::EntryType::Regular,
        "etc/passwd",
        passwd.len() as u64,
        0o644,
    );
    h.set_cksum();
    b.append(&h, &passwd[..]).unwrap();
    b.into_inner().unwrap()
}

fn descriptor(media: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media, "digest": format!("sha256:{}", sha(data)), "size": data.len()})
}

/// What a base archive holds, and how a hostile one differs.
#[derive(Default, Clone, Copy)]
enum Twist {
    #[default]
    None,
    /// The layer blob's member is a symlink to a file outside the archive.
    SymlinkBlob,
    /// The layer blob's content is not what its name says.
    DigestMismatch,
    /// The manifest names a layer the archive does not have.
    MissingBlob,
    /// A member path climbs out of the archive.
    DotDot,
}

/// An OCI image layout archive of one layer (uncompressed, as `podman save` writes them), gzipped
/// or not; returns it and the layer's digest.
fn base_archive(layer: &[u8], twist: Twist, gzip: bool) -> (Vec<u8>, String) {
    let media_layer = "application/vnd.oci.image.layer.v1.tar";
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", format!("GREETING={GREETING}")],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "Labels": {"org.example.base": "busybox"}
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(layer))]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "busybox-static from Debian"}]
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor(media_layer, layer)],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha(&manifest)),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": "busybox:1"}
        }]
    }))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, "x", data.len() as u64, 0o644);
        // `..` can only be written as raw header bytes: the tar crate refuses it in set_path.
        let raw = path.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.as_old_mut().name[raw.len()..].fill(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    file(&mut b, "index.json", &index);
    file(
        &mut b,
        &format!("blobs/sha256/{}", sha(&manifest)),
        &manifest,
    );
    file(&mut b, &format!("blobs/sha256/{}", sha(&config)), &config);
    let layer_path = format!("blobs/sha256/{}", sha(layer));
    match twist {
        Twist::None => file(&mut b, &layer_path, layer),
        Twist::SymlinkBlob => {
            let mut h = header(tar::EntryType::Symlink, &layer_path, 0, 0o777);
            h.set_link_name("/etc/passwd").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        Twist::DigestMismatch => {
            let mut other = layer.to_vec();
            let n = other.len();
            other[n / 2] ^= 0xff;
            file(&mut b, &layer_path, &other);
        }
        Twist::MissingBlob => {}
        Twist::DotDot => {
            file(&mut b, &layer_path, layer);
            file(&mut b, "blobs/../../escape", b"x");
        }
    }
    let tar = b.into_inner().unwrap();
    let out = if gzip {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    } else {
        tar
    };
    (out, format!("sha256:{}", sha(layer)))
}

fn tpl_path(login: &str, msid: i64) -> String {
    format!("/users/{login}/mysoftware/{msid}/templates")
}

fn img_path(login: &str, msid: i64, tid: i64, itid: i64) -> String {
    format!("{}/{tid}/images/{itid}", tpl_path(login, msid))
}

async fn template_on(c: &Client, msid: i64, name: &str, version: &str) -> i64 {
    let body = format!(
        "<ns1:containerTemplate xmlns:ns1=\"{NS}\"><distribution><arch>x86_64</arch><name>{name}</name><version>{version}</version></distribution></ns1:containerTemplate>"
    );
    let r = c
        .req(
            "POST",
            &tpl_path(&c.login, msid),
            Some(body.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.id()
}

/// Generates an image, waits for it, and downloads it; returns the image document and the archive.
async fn generate(c: &Client, msid: i64, tid: i64) -> (Resp, Vec<u8>) {
    let doc = format!(
        "<ns1:image xmlns:ns1=\"{NS}\"><compress>true</compress><format><name>docker</name></format></ns1:image>"
    );
    let r = c
        .req(
            "POST",
            &format!("{}/{tid}/images", tpl_path(&c.login, msid)),
            Some(doc.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let itid = r.id();
    let deadline = std::time::Instant::now() + T;
    loop {
        let st = c
            .get(&format!("{}/status", img_path(&c.login, msid, tid, itid)))
            .await;
        if st.field("complete").as_deref() == Some("true") {
            break;
        }
        assert_ne!(st.field("error").as_deref(), Some("true"), "{}", st.text());
        assert!(std::time::Instant::now() < deadline, "{}", st.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let img = c.get(&img_path(&c.login, msid, tid, itid)).await;
    assert_eq!(img.status, 200, "{}", img.text());
    let body = c
        .get(&format!(
            "{}/downloads",
            img_path(&c.login, msid, tid, itid)
        ))
        .await;
    assert_eq!(body.status, 200, "{}", body.text());
    (img, body.body)
}

/// The layout's documents: (manifest digest, manifest, config) of its one image.
fn layout(members: &BTreeMap<String, Vec<u8>>) -> (String, serde_json::Value, serde_json::Value) {
    let index: serde_json::Value = serde_json::from_slice(&members["index.json"]).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&members[&format!("blobs/sha256/{}", &md[7..])]).unwrap();
    let cd = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&members[&format!("blobs/sha256/{}", &cd[7..])]).unwrap();
    (md, manifest, config)
}

/// Low ulimits let it run in containers that may not raise rlimits.
fn podman_run(root: &Path, image: &str, script: &str) -> String {
    podman(
        root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            image,
            "/bin/sh",
            "-c",
            script,
        ],
    )
}

#[tokio::test]
async fn an_image_on_a_registered_base_runs_in_podman() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let dir = tempfile::tempdir().unwrap();
    let layer = busybox_layer();
    let (archive, layer_digest) = base_archive(&layer, Twist::None, false);
    let file = dir.path().join("busybox.oci.tar");
    std::fs::write(&file, &archive).unwrap();
    let path = file.to_string_lossy().to_string();

    let out = s.admin(
        &[
            "distribution",
            "add",
            "debian",
            "12",
            "amd64",
            "--oci-archive",
            &path,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("registered distribution debian 12 x86_64"),
        "{said}"
    );
    // Name (any case), version and arch (any spelling) are registered once.
    let out = s.admin(
        &[
            "distribution",
            "add",
            "Debian",
            "12",
            "x86_64",
            "--oci-archive",
            &path,
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already registered"), "{err}");
    let out = s.admin(&["distribution", "list"], None);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("debian\t12\tx86_64\t1 layers"), "{listed}");
    // The layer is stored once, under its digest.
    let stored = s.blobs().await;
    assert!(
        stored.iter().any(|(k, n)| k
            .ends_with(&format!("dist/blobs/sha256/{}", &layer_digest[7..]))
            && *n == layer.len() as u64),
        "{stored:?}"
    );

    // The UForge face lists it as the SDK reads it (the schema's spelling of the name).
    let r = a.get("/distributions").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("total").as_deref(), Some("1"), "{}", r.text());
    assert_eq!(r.field("name").as_deref(), Some("Debian"));
    assert_eq!(r.field("arch").as_deref(), Some("x86_64"));
    assert_eq!(r.field("version").as_deref(), Some("12"));
    let did = r.field("dbId").unwrap();
    let one = a.get(&format!("/distributions/{did}")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.field("uri"), Some(format!("distributions/{did}")));
    let json = a
        .req(
            "GET",
            "/distributions",
            None,
            &[("Accept", "application/json")],
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(
        v["distributions"]["distribution"][0]["name"], "Debian",
        "{v}"
    );
    a.get("/distributions/999999")
        .await
        .assert_uforge_error(404);

    // A bundle and a template on it (the template says "Debian 12 x86_64").
    let msid = a.create_bundle("hello", "1.0").await;
    let content = b"hello from the bundle\n";
    a.add_file(msid, None, "greeting.txt", content).await;
    let tid = template_on(&a, msid, "Debian", "12").await;
    let (img, first) = generate(&a, msid, tid).await;
    assert_eq!(
        img.field("distributionName").as_deref(),
        Some("debian 12 x86_64"),
        "{}",
        img.text()
    );

    // The layout: the base's layer, then the bundle's; the base's config, extended.
    let members = untar(&first);
    let (manifest_digest, manifest, config) = layout(&members);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    assert_eq!(layers[0]["digest"], layer_digest.as_str());
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        members[&format!("blobs/sha256/{}", &layer_digest[7..])],
        layer,
        "the base layer is copied byte for byte"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest.as_str());
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(config["config"]["Labels"]["org.example.base"], "busybox");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "hello"
    );
    assert!(config["config"]["Labels"].get("io.satchel.base").is_none());

    // Two generations of the same template on the same base: the same bytes, so the same digests.
    let (_, second) = generate(&a, msid, tid).await;
    assert_eq!(sha(&first), sha(&second), "the archives differ");
    let (again, manifest2, _) = layout(&untar(&second));
    assert_eq!(again, manifest_digest);
    assert_eq!(manifest2["layers"], manifest["layers"]);

    // podman loads it and runs the base's shell over the bundle's files, with the base's Env.
    let run = tempfile::tempdir().unwrap();
    let img_file = run.path().join("image.oci.tar.gz");
    std::fs::write(&img_file, &first).unwrap();
    let loaded = podman(run.path(), &["load", "-i", &img_file.to_string_lossy()]);
    let name = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("podman load said: {loaded}"))
        .to_string();
    assert_eq!(
        podman_run(run.path(), &name, "cat /opt/hello/greeting.txt"),
        String::from_utf8_lossy(content).trim()
    );
    assert_eq!(podman_run(run.path(), &name, "echo $GREETING"), GREETING);

    // A distribution that is not registered: the bundle-only image, which says so.
    let t11 = template_on(&a, msid, "Debian", "11").await;
    let (img11, bytes11) = generate(&a, msid, t11).await;
    assert!(
        img11.field("distributionName").is_none(),
        "{}",
        img11.text()
    );
    let (_, m11, c11) = layout(&untar(&bytes11));
    assert_eq!(m11["layers"].as_array().unwrap().len(), 1);
    let why = c11["config"]["Labels"]["io.satchel.base"].as_str().unwrap();
    assert!(
        why.starts_with("none: no base image is registered for Debian 11"),
        "{why}"
    );

    // The base cannot go while a template names it; once the template is gone, it can.
    let out = s.admin(&["distribution", "remove", "Debian", "12", "x86_64"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("used by 1 container template"), "{err}");
    let r = a
        .req(
            "DELETE",
            &format!("{}/{tid}", tpl_path("alice", msid)),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let out = s.admin(&["distribution", "remove", "DEBIAN", "12", "amd64"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !s.blobs()
            .await
            .iter()
            .any(|(k, _)| k.contains("dist/blobs/")),
        "the base's blobs go with it"
    );
    let r = a.get("/distributions").await;
    assert_eq!(r.field("total").as_deref(), Some("0"), "{}", r.text());
}

#[tokio::test]
async fn hostile_base_archives_are_refused() {
    let s = Server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    // A small layer is enough: what is refused is the archive around it.
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, "etc/hostname", 5, 0o644);
        h.set_cksum();
        b.append(&h, &b"base\n"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let cases = [
        (Twist::SymlinkBlob, false, "link"),
        (Twist::DigestMismatch, false, "does not match its digest"),
        (Twist::MissingBlob, true, "is missing from the archive"),
        (Twist::DotDot, false, "parent-dir"),
    ];
    for (i, (twist, gzip, says)) in cases.into_iter().enumerate() {
        let (archive, _) = base_archive(&layer, twist, gzip);
        let file = dir.path().join(format!("bad{i}.tar"));
        std::fs::write(&file, &archive).unwrap();
        let out = s.admin(
            &[
                "distribution",
                "add",
                "Debian",
                "12",
                "x86_64",
                "--oci-archive",
                &file.to_string_lossy(),
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} was accepted");
        assert!(
            err.contains("the OCI archive is refused"),
            "case {i}: {err}"
        );
        assert!(err.contains(says), "case {i}: {err}");
    }
    // Nothing was registered, and nothing stored under the bases' keys.
    let out = s.admin(&["distribution", "list"], None);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert!(!s
        .blobs()
        .await
        .iter()
        .any(|(k, _)| k.contains("dist/blobs/")));
    // A good one, gzipped, is accepted (and for an arch the archive does not have, refused).
    let (archive, _) = base_archive(&layer, Twist::None, true);
    let file = dir.path().join("good.tar.gz");
    std::fs::write(&file, &archive).unwrap();
    let f = file.to_string_lossy().to_string();
    let out = s.admin(
        &[
            "distribution",
            "add",
            "Debian",
            "12",
            "aarch64",
            "--oci-archive",
            &f,
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no image for arch aarch64"),
        "{err}"
    );
    let out = s.admin(
        &[
            "distribution",
            "add",
            "Debian",
            "12",
            "x86_64",
            "--oci-archive",
            &f,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
