//! The real Triton client against Satchel: `sdc-exportimage` from npm `smartdc` 9.0.1, unchanged,
//! signing with SSH keys made by `ssh-keygen` (from a key file, and through ssh-agent, which makes it
//! use rsa-sha1). Every exported object is read back and checked (sha1, size, Range).

mod common;

use common::cloud::{keygen, register, sdc, sdc_exportimage, sha1_hex, Signed};
use common::{noise, Server};
use std::process::Command;

#[tokio::test]
async fn sdc_exportimage_exports_and_fails_like_cloudapi() {
    let s = Server::start(&[]).await;
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    // smartdc finds the private key next to its .pub in ~/.ssh by fingerprint.
    let rsa = keygen(&ssh, "id_rsa", "rsa", Some(2048), false);
    let ec = keygen(&ssh, "id_ecdsa", "ecdsa", Some(256), false);
    register(&s, "alice", "laptop", &rsa);
    register(&s, "alice", "ec", &ec);
    let bob_dir = tempfile::tempdir().unwrap();
    let bob_key = keygen(bob_dir.path(), "id_bob", "ed25519", None, false);
    register(&s, "bob", "bob", &bob_key);
    let alice = Signed::new(&s, "alice", &rsa);

    let mut images = Vec::new();
    for (i, (comp, ext)) in [
        ("gzip", ".gz"),
        ("bzip2", ".bz2"),
        ("xz", ".xz"),
        ("none", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let data = noise(512 * 1024 + i * 1000, i as u64 + 1);
        let id = alice
            .make_image(&format!("img{i}"), "1.0", comp, &data)
            .await;
        images.push((id, comp, ext, data));
    }
    assert_eq!(alice.mkdir("/alice/stor/exports").await.status, 204);

    for (n, (id, comp, ext, data)) in images.iter().enumerate() {
        // Into a directory, and to a name prefix; with the key file, and with the ECDSA key.
        let key = if n % 2 == 0 { &rsa } else { &ec };
        let r = sdc_exportimage(
            &s,
            home.path(),
            "alice",
            &key.md5,
            None,
            &["--mantaPath=/alice/stor/exports", id],
        );
        assert!(r.ok, "{comp}: {}\n{}", r.stderr, s.log());
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let image_path = format!("/alice/stor/exports/img{n}-1.0.zfs{ext}");
        assert_eq!(j["image_path"], image_path.as_str());
        assert_eq!(
            j["manifest_path"],
            format!("/alice/stor/exports/img{n}-1.0.imgmanifest")
        );
        assert_eq!(j["manta_url"], format!("http://127.0.0.1:{}", s.port));
        check_export(
            &alice,
            &image_path,
            j["manifest_path"].as_str().unwrap(),
            id,
            data,
        )
        .await;

        let prefix = format!("/alice/stor/named-{comp}");
        let r = sdc_exportimage(
            &s,
            home.path(),
            "alice",
            &key.md5,
            None,
            &["-m", &prefix, id],
        );
        assert!(r.ok, "{comp}: {}", r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(j["image_path"], format!("{prefix}.zfs{ext}"));
        assert_eq!(j["manifest_path"], format!("{prefix}.imgmanifest"));
        check_export(
            &alice,
            &format!("{prefix}.zfs{ext}"),
            &format!("{prefix}.imgmanifest"),
            id,
            data,
        )
        .await;
    }

    // Through ssh-agent: smartdc signs with rsa-sha1.
    let sock = home.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let _kill = KillOnDrop(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&rsa.private)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let (id, _, ext, data) = &images[0];
    let r = sdc_exportimage(
        &s,
        home.path(),
        "alice",
        &rsa.md5,
        Some(&sock),
        &["--mantaPath=/alice/public/via-agent", id],
    );
    assert!(r.ok, "agent: {}\n{}", r.stderr, s.log());
    check_export(
        &alice,
        &format!("/alice/public/via-agent.zfs{ext}"),
        "/alice/public/via-agent.imgmanifest",
        id,
        data,
    )
    .await;

    // Failures, as the client reports them: exit status non-zero and CloudAPI's code.
    let r = sdc_exportimage(
        &s,
        home.path(),
        "alice",
        &rsa.md5,
        None,
        &[
            "--mantaPath=/alice/stor/x",
            "6c0e1e44-1111-4222-8333-444455556666",
        ],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("ResourceNotFound") || r.stderr.contains("not found"),
        "{}",
        r.stderr
    );
    let r = sdc_exportimage(
        &s,
        home.path(),
        "alice",
        &rsa.md5,
        None,
        &["--mantaPath=/bob/stor/x", &images[0].0],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("NotMantaPathOwner") || r.stderr.contains("not the owner"),
        "{}",
        r.stderr
    );
    // Bob's key under alice's name: refused at authentication.
    let r = sdc_exportimage(
        &s,
        home.path(),
        "alice",
        &bob_key.md5,
        None,
        &["--mantaPath=/alice/stor/x", &images[0].0],
    );
    assert!(!r.ok);
    // Nothing was written by the failed calls.
    alice
        .get("/alice/stor/x.imgmanifest")
        .await
        .assert_error(404, "ResourceNotFound");
    alice
        .get("/bob/stor/x.imgmanifest")
        .await
        .assert_error(404, "ResourceNotFound");
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn check_export(c: &Signed, image_path: &str, manifest_path: &str, id: &str, data: &[u8]) {
    let file = c.get(image_path).await;
    assert_eq!(file.status, 200, "{image_path}");
    assert_eq!(file.body.len(), data.len());
    assert_eq!(sha1_hex(&file.body), sha1_hex(data));
    let m = c.get(manifest_path).await.json();
    assert_eq!(m["uuid"], id);
    assert_eq!(m["files"][0]["sha1"], sha1_hex(data));
    assert_eq!(m["files"][0]["size"], data.len());
    let r = c
        .call("GET", image_path, None, &[("range", "bytes=100-4195")])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[100..4196]);
}

/// `sdc-updateimage` (smartdc 9.0.1, unchanged) renames, re-versions and re-describes an image, and
/// is refused clearly for fields this server does not keep; CloneImage (`action=clone`, which
/// smartdc 9.0.1 has no command for) copies an operator's public image into alice's own, sharing
/// its file, which outlives the source's deletion.
#[tokio::test]
async fn sdc_updateimage_and_clone_image() {
    let s = Server::start(&[]).await;
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let rsa = keygen(&ssh, "id_rsa", "rsa", Some(2048), false);
    register(&s, "alice", "laptop", &rsa);
    let other = tempfile::tempdir().unwrap();
    let bob_key = keygen(other.path(), "id_bob", "ed25519", None, false);
    register(&s, "bob", "bob", &bob_key);
    let root_key = keygen(other.path(), "id_root", "ed25519", None, false);
    register(&s, "root", "ops", &root_key);
    let alice = Signed::new(&s, "alice", &rsa);
    let bob = Signed::new(&s, "bob", &bob_key);
    let root = Signed::new(&s, "root", &root_key);

    let data = noise(300_000, 5);
    let id = alice.make_image("orig", "1.0", "gzip", &data).await;
    let run = |args: &[&str]| {
        sdc(
            "sdc-updateimage",
            &s,
            home.path(),
            "alice",
            &rsa.md5,
            None,
            args,
        )
    };
    let r = run(&[
        "--name",
        "renamed",
        "--imageVersion",
        "2.0",
        "--description",
        "now described",
        &id,
    ]);
    assert!(r.ok, "{}\n{}", r.stderr, s.log());
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["name"], "renamed");
    assert_eq!(j["version"], "2.0");
    assert_eq!(j["description"], "now described");
    assert_eq!(j["state"], "active");
    let got = alice.get(&format!("/my/images/{id}")).await.json();
    assert_eq!(
        (got["name"].clone(), got["version"].clone()),
        (serde_json::json!("renamed"), serde_json::json!("2.0"))
    );
    // The export names follow the new name and version.
    assert_eq!(alice.mkdir("/alice/stor/up").await.status, 204);
    let r = alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=export&manta_path=/alice/stor/up"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["image_path"], "/alice/stor/up/renamed-2.0.zfs.gz");
    // A field this server does not keep is refused by name; a bad name too; nothing changed.
    let r = run(&["--homepage", "http://example.com", &id]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("homepage cannot be updated"),
        "{}",
        r.stderr
    );
    let r = run(&["--name", "", &id]);
    assert!(!r.ok, "{}", r.stdout);
    alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=update"),
            Some(b"{}".to_vec()),
            &[("content-type", "application/json")],
        )
        .await
        .assert_error(409, "MissingParameter");
    assert_eq!(
        alice.get(&format!("/my/images/{id}")).await.json()["name"],
        "renamed"
    );
    // Bob cannot update alice's image (nor learn it exists).
    bob.call(
        "POST",
        &format!("/my/images/{id}?action=update"),
        Some(br#"{"name":"mine"}"#.to_vec()),
        &[("content-type", "application/json")],
    )
    .await
    .assert_error(404, "ResourceNotFound");

    // CloneImage: an operator's public image becomes alice's private copy.
    let r = root
        .post_json(
            "/my/images",
            serde_json::json!({"name": "base", "version": "7", "os": "linux", "type": "zvol", "public": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let public_id = r.json()["id"].as_str().unwrap().to_string();
    // Not active yet: not cloneable.
    clone_of(&alice, &public_id)
        .await
        .assert_error(409, "InvalidArgument");
    let base = noise(200_000, 6);
    root.upload_and_activate(&public_id, "none", &base).await;
    let r = clone_of(&alice, &public_id).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let c = r.json();
    let clone_id = c["id"].as_str().unwrap().to_string();
    assert_ne!(clone_id, public_id);
    assert_eq!(c["name"], "base");
    assert_eq!(c["version"], "7");
    assert_eq!(c["state"], "active");
    assert_eq!(c["public"], false);
    let mine: Vec<String> = alice
        .get("/my/images")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert!(mine.contains(&clone_id), "{mine:?}");
    // Bob does not see alice's copy; alice cannot clone her own image.
    bob.get(&format!("/my/images/{clone_id}"))
        .await
        .assert_error(404, "ResourceNotFound");
    clone_of(&alice, &id)
        .await
        .assert_error(409, "InvalidArgument");
    // The operator deletes the source: the copy keeps the shared file and exports it whole.
    let r = root
        .call("DELETE", &format!("/my/images/{public_id}"), None, &[])
        .await;
    assert_eq!(r.status, 204);
    clone_of(&alice, &public_id)
        .await
        .assert_error(404, "ResourceNotFound");
    let r = alice
        .call(
            "POST",
            &format!("/my/images/{clone_id}?action=export&manta_path=/alice/stor/up"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let path = r.json()["image_path"].as_str().unwrap().to_string();
    assert_eq!(path, "/alice/stor/up/base-7.zfs");
    let obj = alice.get(&path).await;
    assert_eq!(obj.status, 200);
    assert_eq!(sha1_hex(&obj.body), sha1_hex(&base));
}

async fn clone_of(who: &Signed, id: &str) -> common::cloud::CResp {
    who.call("POST", &format!("/my/images/{id}?action=clone"), None, &[])
        .await
}
