//! The CloudAPI face over loopback: HTTP Signature auth with every key type, keys, images,
//! ExportImage's naming rules and errors, and the Manta-style object paths the exports land in.

mod common;

use common::cloud::{keygen, md5_b64, register, sha1_hex, KeyPair, Signed};
use common::{noise, Server};
use serde_json::json;

struct Keys {
    _dir: tempfile::TempDir,
    rsa: KeyPair,
    ec256: KeyPair,
    ec384: KeyPair,
    ec521: KeyPair,
    ed: KeyPair,
    bob: KeyPair,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    Keys {
        rsa: keygen(p, "id_rsa", "rsa", Some(2048), false),
        ec256: keygen(p, "id_ec256", "ecdsa", Some(256), false),
        ec384: keygen(p, "id_ec384", "ecdsa", Some(384), false),
        ec521: keygen(p, "id_ec521", "ecdsa", Some(521), false),
        ed: keygen(p, "id_ed25519", "ed25519", None, false),
        bob: keygen(p, "id_bob", "ed25519", None, false),
        _dir: dir,
    }
}

#[tokio::test]
async fn signatures_with_every_algorithm_and_every_refusal() {
    let s = Server::start(&[]).await;
    let k = keys();
    for (name, kp) in [
        ("rsa", &k.rsa),
        ("ec256", &k.ec256),
        ("ec384", &k.ec384),
        ("ec521", &k.ec521),
        ("ed", &k.ed),
    ] {
        register(&s, "alice", name, kp);
    }
    register(&s, "bob", "bob", &k.bob);

    for (kp, algs) in [
        (&k.rsa, vec!["rsa-sha1", "rsa-sha256", "rsa-sha512"]),
        (&k.ec256, vec!["ecdsa-sha256"]),
        (&k.ec384, vec!["ecdsa-sha384"]),
        (&k.ec521, vec!["ecdsa-sha512"]),
        (&k.ed, vec!["ed25519-sha512", "ed25519"]),
    ] {
        for alg in algs {
            let mut c = Signed::new(&s, "alice", kp);
            c.algorithm = alg.to_string();
            let r = c.get("/my/keys").await;
            assert_eq!(r.status, 200, "{alg}: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.header("api-version").as_deref(), Some("7.2.0"));
            assert!(r.header("x-request-id").is_some());
            // restify checks Content-MD5 when present: it must be right.
            assert_eq!(r.header("content-md5").unwrap(), md5_b64(&r.body));
            let listed = r.json();
            let fps: Vec<&str> = listed
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["fingerprint"].as_str().unwrap())
                .collect();
            assert_eq!(fps.len(), 5);
            assert!(fps.contains(&kp.md5.as_str()), "{fps:?}");
        }
    }
    // A key may also be named by its name in keyId.
    let mut c = Signed::new(&s, "alice", &k.ed);
    c.key_id = "/alice/keys/ed".into();
    assert_eq!(
        c.get("/alice/keys/ed").await.json()["fingerprint"],
        k.ed.md5
    );

    let good = Signed::new(&s, "alice", &k.ed);
    // A tampered signature.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let auth = good.authorization("GET", "/my/keys", &date);
    let tampered = auth.replacen("signature=\"", "signature=\"AAAA", 1);
    let r = good
        .http
        .get(format!("{}/my/keys", good.root))
        .header("date", &date)
        .header("authorization", tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(
        j["code"] == "InvalidSignature" || j["code"] == "InvalidCredentials",
        "{j}"
    );
    // A signature over a different date than the one sent.
    let other_date =
        httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(2));
    let auth = good.authorization("GET", "/my/keys", &other_date);
    let r = good
        .http
        .get(format!("{}/my/keys", good.root))
        .header("date", &date)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "InvalidSignature"
    );

    // Stale and future dates.
    for off in [-400i64, 400] {
        let mut c = Signed::new(&s, "alice", &k.ed);
        c.date_offset = off;
        c.get("/my/keys")
            .await
            .assert_error(401, "InvalidCredentials");
    }
    // Unknown key; bob's key claimed for alice; an algorithm that does not fit the key.
    let mut c = Signed::new(&s, "alice", &k.ed);
    c.key_id = "/alice/keys/00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff".into();
    c.get("/my/keys")
        .await
        .assert_error(401, "InvalidCredentials");
    let c = Signed::new(&s, "alice", &k.bob);
    c.get("/my/keys")
        .await
        .assert_error(401, "InvalidCredentials");
    let mut c = Signed::new(&s, "alice", &k.rsa);
    c.key_id = format!("/alice/keys/{}", k.ed.md5);
    let r = c.get("/my/keys").await;
    r.assert_error(401, "InvalidCredentials");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("cannot be used with a key of type ed25519"));
    // Sub-users are refused with a clear message.
    let mut c = Signed::new(&s, "alice", &k.ed);
    c.key_id = format!("/alice/users/ops/keys/{}", k.ed.md5);
    let r = c.get("/my/keys").await;
    r.assert_error(401, "InvalidCredentials");
    assert!(r.json()["message"].as_str().unwrap().contains("sub-user"));
    // No Authorization at all, garbage, and a signature that does not cover Date.
    let http = reqwest::Client::new();
    for auth in [
        None,
        Some("Basic YWxpY2U6YWxpY2UtcHc="),
        Some("Signature keyId=\"x\""),
        Some(
            "Signature keyId=\"/alice/keys/x\",algorithm=\"rsa-sha256\",signature=\"!!notbase64\"",
        ),
    ] {
        let mut rb = http.get(format!("{}/alice/keys", good.root)).header(
            "date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["code"],
            "InvalidCredentials"
        );
    }
    let host_only = satchel_httpsig::sign_request(
        &good.key,
        &good.key_id,
        "",
        &["host".to_string()],
        "GET",
        "/alice/keys",
        |_| Some(format!("127.0.0.1:{}", s.port)),
    )
    .unwrap();
    let r = http
        .get(format!("{}/alice/keys", good.root))
        .header("authorization", host_only)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Bob, properly signed, cannot see alice's account: it answers like a missing one.
    let bob = Signed::new(&s, "bob", &k.bob);
    let theirs = bob.get("/alice/keys").await;
    theirs.assert_error(404, "ResourceNotFound");
    let missing = bob.get("/nobody/keys").await;
    missing.assert_error(404, "ResourceNotFound");
    assert_eq!(
        bob.get("/my/keys").await.json().as_array().unwrap().len(),
        1
    );
    assert_eq!(bob.get("/bob").await.json()["login"], "bob");

    // Keys over the API: add, get by name and by fingerprint, refuse duplicates and junk, delete.
    let pubkey = std::fs::read_to_string(&k.ec256.public).unwrap();
    let r = bob
        .post_json("/my/keys", json!({"name": "laptop", "key": pubkey}))
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["fingerprint"], k.ec256.md5);
    bob.post_json("/my/keys", json!({"name": "again", "key": pubkey}))
        .await
        .assert_error(409, "InvalidArgument");
    bob.post_json("/my/keys", json!({"key": "ssh-rsa AAAAnotakey"}))
        .await
        .assert_error(409, "InvalidArgument");
    bob.post_json("/my/keys", json!({"name": "x"}))
        .await
        .assert_error(409, "MissingParameter");
    assert_eq!(
        bob.get(&format!("/my/keys/{}", k.ec256.md5)).await.json()["name"],
        "laptop"
    );
    assert_eq!(
        bob.call("DELETE", "/my/keys/laptop", None, &[])
            .await
            .status,
        204
    );
    bob.get("/my/keys/laptop")
        .await
        .assert_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn export_image_naming_objects_and_errors() {
    let s = Server::start(&[]).await;
    let k = keys();
    register(&s, "alice", "ed", &k.ed);
    register(&s, "bob", "bob", &k.bob);
    register(&s, "root", "rsa", &k.rsa);
    let alice = Signed::new(&s, "alice", &k.ed);
    let bob = Signed::new(&s, "bob", &k.bob);

    let data = noise(3 * 1024 * 1024 + 17, 7);
    let id = alice.make_image("foo", "1.0.0", "gzip", &data).await;
    let got = alice.get(&format!("/my/images/{id}")).await;
    // restify's headers on every answer: a request id (the one sent, when sent) and the time taken.
    let rid = got.header("request-id").expect("request-id");
    assert_eq!(got.header("x-request-id").as_deref(), Some(rid.as_str()));
    assert!(got
        .header("response-time")
        .is_some_and(|t| t.parse::<u64>().is_ok()));
    let img = got.json();
    assert_eq!(img["files"][0]["sha1"], sha1_hex(&data));
    assert_eq!(img["files"][0]["size"], data.len());
    assert_eq!(img["files"][0]["compression"], "gzip");
    assert_eq!(img["state"], "active");
    assert!(img["published_at"].as_str().is_some());

    // Into an existing directory: NAME-VER.imgmanifest and NAME-VER.zfs.gz.
    assert_eq!(alice.mkdir("/alice/stor/images").await.status, 204);
    let r = alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=export&manta_path=/alice/stor/images"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["manta_url"], format!("http://127.0.0.1:{}", s.port));
    assert_eq!(j["image_path"], "/alice/stor/images/foo-1.0.0.zfs.gz");
    assert_eq!(
        j["manifest_path"],
        "/alice/stor/images/foo-1.0.0.imgmanifest"
    );
    let file = alice.get("/alice/stor/images/foo-1.0.0.zfs.gz").await;
    assert_eq!(file.status, 200);
    assert_eq!(sha1_hex(&file.body), sha1_hex(&data));
    assert_eq!(file.header("content-md5").unwrap(), md5_b64(&data));
    let manifest = alice
        .get("/alice/stor/images/foo-1.0.0.imgmanifest")
        .await
        .json();
    assert_eq!(manifest["uuid"], id);
    assert_eq!(manifest["name"], "foo");
    assert_eq!(manifest["files"][0]["sha1"], sha1_hex(&data));
    assert_eq!(manifest["files"][0]["size"], data.len());
    // Ranges on the exported object.
    let r = alice
        .call(
            "GET",
            "/alice/stor/images/foo-1.0.0.zfs.gz",
            None,
            &[("range", "bytes=1000-1999")],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[1000..2000]);
    assert_eq!(
        r.header("content-range").unwrap(),
        format!("bytes 1000-1999/{}", data.len())
    );
    assert!(r.header("content-md5").is_none());
    let r = alice
        .call(
            "GET",
            "/alice/stor/images/foo-1.0.0.zfs.gz",
            None,
            &[("range", "bytes=-10")],
        )
        .await;
    assert_eq!(r.body, &data[data.len() - 10..]);
    alice
        .call(
            "GET",
            "/alice/stor/images/foo-1.0.0.zfs.gz",
            None,
            &[("range", &format!("bytes={}-", data.len() + 5))],
        )
        .await
        .assert_error(416, "RequestedRangeNotSatisfiable");
    // HEAD answers the size without a body.
    let r = alice
        .call("HEAD", "/alice/stor/images/foo-1.0.0.zfs.gz", None, &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").unwrap(), data.len().to_string());

    // Not a directory: a name prefix. Each compression gets its own extension.
    for (comp, ext) in [("bzip2", ".bz2"), ("xz", ".xz"), ("none", "")] {
        let small = noise(1000, comp.len() as u64);
        let id2 = alice
            .make_image(&format!("img-{comp}"), "2", comp, &small)
            .await;
        let r = alice
            .call(
                "POST",
                &format!("/my/images/{id2}?action=export&manta_path=~~/stor/my-{comp}"),
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json()["image_path"],
            format!("/alice/stor/my-{comp}.zfs{ext}")
        );
        assert_eq!(
            r.json()["manifest_path"],
            format!("/alice/stor/my-{comp}.imgmanifest")
        );
        assert_eq!(
            alice
                .get(&format!("/alice/stor/my-{comp}.zfs{ext}"))
                .await
                .body,
            small
        );
    }
    // Missing parents are created (mkdir -p), and the listing shows them.
    let r = alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=export&manta_path=/alice/public/a/b/"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.json()["image_path"], "/alice/public/a/b/foo-1.0.0.zfs.gz");
    let listing = alice.get("/alice/public/a/b").await;
    assert_eq!(
        listing.header("content-type").unwrap(),
        "application/x-json-stream; type=directory"
    );
    let names: Vec<String> = String::from_utf8(listing.body.clone())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["foo-1.0.0.imgmanifest", "foo-1.0.0.zfs.gz"]);

    // The errors CloudAPI gives.
    alice
        .call("POST", &format!("/my/images/{id}?action=export"), None, &[])
        .await
        .assert_error(409, "MissingParameter");
    alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=export&manta_path=/bob/stor/x"),
            None,
            &[],
        )
        .await
        .assert_error(422, "NotMantaPathOwner");
    alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=export&manta_path=/alice/stor/../../bob/stor"),
            None,
            &[],
        )
        .await
        .assert_error(422, "NotMantaPathOwner");
    for bad in ["relative/path", "/alice/jobs/x", "/alice"] {
        alice
            .call(
                "POST",
                &format!("/my/images/{id}?action=export&manta_path={bad}"),
                None,
                &[],
            )
            .await
            .assert_error(409, "InvalidArgument");
    }
    alice
        .call("POST", "/my/images/7b5c8a0e-0000-4000-8000-000000000000?action=export&manta_path=/alice/stor/x", None, &[])
        .await
        .assert_error(404, "ResourceNotFound");
    alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=explode"),
            None,
            &[],
        )
        .await
        .assert_error(409, "InvalidArgument");
    // Bob cannot see alice's image, nor export it, nor read her objects.
    bob.get(&format!("/my/images/{id}"))
        .await
        .assert_error(404, "ResourceNotFound");
    bob.call(
        "POST",
        &format!("/my/images/{id}?action=export&manta_path=/bob/stor/x"),
        None,
        &[],
    )
    .await
    .assert_error(404, "ResourceNotFound");
    bob.get("/alice/stor/images/foo-1.0.0.zfs.gz")
        .await
        .assert_error(404, "ResourceNotFound");
    assert!(bob
        .get("/my/images")
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    // A public image (an operator's) is visible to alice but not hers to export.
    let root = Signed::new(&s, "root", &k.rsa);
    let r = root
        .post_json(
            "/my/images",
            json!({"name": "base", "version": "1", "os": "linux", "type": "zvol", "public": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let public_id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        alice.get(&format!("/my/images/{public_id}")).await.json()["public"],
        true
    );
    alice
        .call(
            "POST",
            &format!("/my/images/{public_id}?action=export&manta_path=/alice/stor"),
            None,
            &[],
        )
        .await
        .assert_error(422, "NotImageOwner");
    alice
        .post_json(
            "/my/images",
            json!({"name": "x", "version": "1", "os": "linux", "type": "zvol", "public": true}),
        )
        .await
        .assert_error(403, "NotAuthorized");

    // The exported file outlives the image (it shares the image's immutable blob) ...
    assert_eq!(
        alice
            .call("DELETE", &format!("/my/images/{id}"), None, &[])
            .await
            .status,
        204
    );
    alice
        .get(&format!("/my/images/{id}"))
        .await
        .assert_error(404, "ResourceNotFound");
    let again = alice.get("/alice/stor/images/foo-1.0.0.zfs.gz").await;
    assert_eq!(sha1_hex(&again.body), sha1_hex(&data));
    // ... and its bytes go when the last reference goes.
    let blob_files = || async {
        s.blobs()
            .await
            .into_iter()
            .filter(|(_, size)| *size == data.len() as u64)
            .count()
    };
    assert_eq!(blob_files().await, 1);
    assert_eq!(
        alice
            .call("DELETE", "/alice/stor/images/foo-1.0.0.zfs.gz", None, &[])
            .await
            .status,
        204
    );
    assert_eq!(
        blob_files().await,
        1,
        "still exported under /alice/public/a/b"
    );
    assert_eq!(
        alice
            .call("DELETE", "/alice/public/a/b/foo-1.0.0.zfs.gz", None, &[])
            .await
            .status,
        204
    );
    assert_eq!(blob_files().await, 0);
}

#[tokio::test]
async fn objects_directories_and_async_export() {
    let s = Server::start(&[]).await;
    let k = keys();
    register(&s, "alice", "ed", &k.ed);
    let alice = Signed::new(&s, "alice", &k.ed);

    // Objects need an existing parent directory, as in Manta.
    let body = b"hello objects".to_vec();
    alice
        .call("PUT", "/alice/stor/nodir/x.txt", Some(body.clone()), &[])
        .await
        .assert_error(404, "DirectoryDoesNotExist");
    assert_eq!(alice.mkdir("/alice/stor/d").await.status, 204);
    assert_eq!(alice.mkdir("/alice/stor/d").await.status, 204, "idempotent");
    let r = alice
        .call(
            "PUT",
            "/alice/stor/d/x.txt",
            Some(body.clone()),
            &[
                ("content-type", "text/plain"),
                ("content-md5", &md5_b64(&body)),
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("computed-md5").unwrap(), md5_b64(&body));
    alice
        .call(
            "PUT",
            "/alice/stor/d/y.txt",
            Some(body.clone()),
            &[("content-md5", &md5_b64(b"other"))],
        )
        .await
        .assert_error(400, "BadRequest");
    alice
        .get("/alice/stor/d/y.txt")
        .await
        .assert_error(404, "ResourceNotFound");
    let got = alice.get("/alice/stor/d/x.txt").await;
    assert_eq!(got.body, body);
    assert_eq!(got.header("content-type").unwrap(), "text/plain");
    let etag = got.header("etag").unwrap();
    assert_eq!(
        alice
            .call(
                "GET",
                "/alice/stor/d/x.txt",
                None,
                &[("if-none-match", &etag)]
            )
            .await
            .status,
        304
    );
    let lm = got.header("last-modified").unwrap();
    let r = alice
        .call(
            "GET",
            "/alice/stor/d/x.txt",
            None,
            &[("if-modified-since", &lm)],
        )
        .await;
    assert_eq!(r.status, 304);
    let r = alice
        .call(
            "GET",
            "/alice/stor/d/x.txt",
            None,
            &[("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT")],
        )
        .await;
    assert_eq!(r.body, body);
    alice
        .mkdir("/alice/stor/d/x.txt")
        .await
        .assert_error(409, "InvalidArgument");
    alice
        .call("DELETE", "/alice/stor/d", None, &[])
        .await
        .assert_error(400, "DirectoryNotEmpty");
    alice
        .call("DELETE", "/alice/stor", None, &[])
        .await
        .assert_error(400, "OperationNotAllowedOnRootDirectory");
    // The roots always exist and list their children.
    let root = alice.get("/alice/stor").await;
    assert_eq!(root.status, 200);
    let line: serde_json::Value =
        serde_json::from_slice(root.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["name"], "d");
    assert_eq!(line["type"], "directory");
    assert_eq!(alice.get("/alice/public").await.status, 200);
    alice
        .get("/alice/jobs")
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(
        alice
            .call("DELETE", "/alice/stor/d/x.txt", None, &[])
            .await
            .status,
        204
    );
    assert_eq!(
        alice
            .call("DELETE", "/alice/stor/d", None, &[])
            .await
            .status,
        204
    );

    // async=true answers 202 with a job to poll.
    let data = noise(200_000, 3);
    let id = alice.make_image("bar", "3.1", "xz", &data).await;
    let r = alice
        .call(
            "POST",
            &format!("/my/images/{id}?action=export&manta_path=/alice/stor/bar&async=true"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap();
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = alice.get(&loc).await.json();
        if last["state"] == "complete" || last["state"] == "error" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last["state"], "complete", "{last}");
    assert_eq!(last["image_path"], "/alice/stor/bar.zfs.xz");
    assert_eq!(alice.get("/alice/stor/bar.zfs.xz").await.body, data);
    // An async export that fails records why.
    let r = alice
        .call(
            "POST",
            "/my/images/none?action=export&manta_path=/alice/stor/q&async=true",
            None,
            &[],
        )
        .await;
    r.assert_error(404, "ResourceNotFound");

    // Image rules: no file no activation, files immutable once active, bad fields refused.
    let r = alice
        .post_json(
            "/my/images",
            json!({"name": "e", "version": "1", "os": "linux", "type": "zvol"}),
        )
        .await;
    let eid = r.json()["id"].as_str().unwrap().to_string();
    alice
        .call(
            "POST",
            &format!("/my/images/{eid}?action=activate"),
            None,
            &[],
        )
        .await
        .assert_error(422, "NoActivationNoFile");
    alice
        .call(
            "PUT",
            &format!("/my/images/{id}/file?compression=gzip"),
            Some(b"x".to_vec()),
            &[],
        )
        .await
        .assert_error(422, "ImageFilesImmutable");
    alice
        .call(
            "PUT",
            &format!("/my/images/{eid}/file?compression=zip"),
            Some(b"x".to_vec()),
            &[],
        )
        .await
        .assert_error(409, "InvalidArgument");
    alice
        .call(
            "PUT",
            &format!("/my/images/{eid}/file?compression=none&sha1=0000"),
            Some(b"x".to_vec()),
            &[],
        )
        .await
        .assert_error(400, "Upload");
    for bad in [
        json!({"version": "1", "os": "linux", "type": "zvol"}),
        json!({"name": "../x", "version": "1", "os": "linux", "type": "zvol"}),
        json!({"name": "a", "version": "1", "os": "plan9", "type": "zvol"}),
        json!({"name": 5, "version": "1", "os": "linux", "type": "zvol"}),
    ] {
        let r = alice.post_json("/my/images", bad.clone()).await;
        assert!(r.status == 409, "{bad}: {}", r.status);
    }
    let r = alice
        .call(
            "POST",
            "/my/images",
            Some(b"{not json".to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    r.assert_error(400, "InvalidContent");
    // Unknown routes and methods answer in CloudAPI's format too.
    alice
        .get("/my/nothing/here")
        .await
        .assert_error(404, "ResourceNotFound");
    let r = alice.call("PATCH", "/my/images", None, &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), "BadMethod");
}

/// smartdc's sshpk misreads ed25519 private keys whose public key starts with a byte >= 0x80 and then
/// names them by another MD5 in `keyId`; such a keyId still finds the right key, and nothing else.
#[tokio::test]
async fn sshpk_legacy_ed25519_key_ids_are_accepted() {
    let s = Server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (kp, legacy) = (0..64)
        .find_map(|i| {
            let kp = keygen(dir.path(), &format!("ed{i}"), "ed25519", None, false);
            let legacy = kp.key.public().sshpk_legacy_md5_fingerprint()?;
            Some((kp, legacy))
        })
        .expect("half of all ed25519 keys have the high bit set");
    assert_ne!(legacy, kp.md5);
    register(&s, "alice", "ed", &kp);
    let mut c = Signed::new(&s, "alice", &kp);
    c.key_id = format!("/alice/keys/{legacy}");
    let r = c.get("/my/keys").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()[0]["fingerprint"], kp.md5);
    // Bob's key under its legacy name still only opens bob's account.
    c.key_id = format!("/bob/keys/{legacy}");
    c.get("/my/keys")
        .await
        .assert_error(401, "InvalidCredentials");
}
