//! End-to-end tests of the UForge face against the real binary over loopback.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn bundle_export_roundtrip_yaml_and_json() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("My App", "1.0").await;
    let text = b"#!/bin/sh\necho hello\n".repeat(5000);
    let blob = noise(3 << 20, 7);
    let gz = {
        let mut v = vec![0x1f, 0x8b, 8, 0];
        v.extend(noise(200_000, 9));
        v
    };
    a.add_file(msid, None, "install.sh", &text).await;
    a.add_file(msid, None, "data.bin", &blob).await;
    let folder = a.create_artifact(msid, None, "conf", "folder").await;
    a.add_file(msid, Some(folder), "app.cfg", b"key=value\n")
        .await;
    a.add_file(msid, Some(folder), "pkg.tar.gz", &gz).await;
    a.add_file(msid, None, "empty.txt", b"").await;
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/licenses/1/LICENSE.txt"),
            Some(b"Apache-2.0".to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/logo/1/logo.png"),
            Some(b"\x89PNG fake".to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A new license replaces the old one.
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/licenses/1/LICENSE"),
            Some(b"MIT".to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let got = a.get(&format!("/users/alice/mysoftware/{msid}")).await;
    assert!(
        got.text().contains("<name>LICENSE</name>"),
        "{}",
        got.text()
    );

    for format in ["yaml", "json"] {
        let eid = a.export(msid, format).await;
        let st = a.wait_export(msid, eid, T).await;
        assert_eq!(
            st.field("complete").as_deref(),
            Some("true"),
            "{}",
            st.text()
        );
        assert_eq!(st.field("percentage").as_deref(), Some("100"));
        let total: usize = text.len() + blob.len() + 10 + gz.len() + 3 + 9;
        assert_eq!(st.field("bytesTotal"), Some(total.to_string()));
        let dl = a
            .get(&format!(
                "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
            ))
            .await;
        assert_eq!(dl.status, 200);
        assert_eq!(
            dl.header("content-type").as_deref(),
            Some("application/x-gzip")
        );
        assert!(dl.header("content-encoding").is_none());
        assert_eq!(
            dl.header("content-disposition").as_deref(),
            Some("attachment; filename=\"My_App.tar.gz\"")
        );
        assert_eq!(dl.header("accept-ranges").as_deref(), Some("bytes"));
        assert_eq!(dl.header("content-length"), Some(dl.body.len().to_string()));
        let sha = hex::encode(Sha256::digest(&dl.body));
        assert_eq!(dl.header("x-checksum-sha256"), Some(sha.clone()));
        assert_eq!(dl.header("etag"), Some(format!("\"{sha}\"")));
        let ticket = a
            .get(&format!("/users/alice/mysoftware/{msid}/exports/{eid}"))
            .await;
        assert_eq!(ticket.field("digest"), Some(format!("sha256:{sha}")));

        let files = untar(&dl.body);
        let root = "bundles/My App/1.0";
        assert_eq!(files[&format!("{root}/install.sh")], text);
        assert_eq!(files[&format!("{root}/data.bin")], blob);
        assert_eq!(files[&format!("{root}/conf/app.cfg")], b"key=value\n");
        assert_eq!(files[&format!("{root}/conf/pkg.tar.gz")], gz);
        assert_eq!(files[&format!("{root}/empty.txt")], b"");
        assert!(files.contains_key(&format!("{root}/conf/")));
        assert_eq!(files["bundles/My App/LICENSE"], b"MIT");
        assert_eq!(files["bundles/My App/logo.png"], b"\x89PNG fake");
        let doc: serde_json::Value = if format == "yaml" {
            assert!(!files.contains_key("bundle.json"));
            serde_yaml::from_slice(&files["bundle.yml"]).unwrap()
        } else {
            assert!(!files.contains_key("bundle.yml"));
            serde_json::from_slice(&files["bundle.json"]).unwrap()
        };
        assert_eq!(doc["name"], "My App");
        assert_eq!(doc["version"], "1.0");
        assert_eq!(doc["license"]["source"], "bundles/My App/LICENSE");
        assert_eq!(doc["sourceLogo"], "bundles/My App/logo.png");
        // hammr's check_bundle: every file has name and source; sources exist in the archive.
        fn check(
            files: &std::collections::BTreeMap<String, Vec<u8>>,
            list: &serde_json::Value,
            n: &mut usize,
        ) {
            for f in list.as_array().unwrap() {
                assert!(f["name"].is_string());
                let src = f["source"].as_str().unwrap();
                assert!(
                    files.contains_key(src) || files.contains_key(&format!("{src}/")),
                    "{src}"
                );
                *n += 1;
                if let Some(sub) = f.get("files") {
                    check(files, sub, n);
                }
            }
        }
        let mut n = 0;
        check(&files, &doc["files"], &mut n);
        assert_eq!(n, 6);
        // The manifest lists every file with its size and sha256.
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let entries = manifest["files"].as_array().unwrap();
        assert_eq!(entries.len(), 8);
        for e in entries {
            let body = &files[e["path"].as_str().unwrap()];
            assert_eq!(e["size"].as_u64().unwrap() as usize, body.len());
            assert_eq!(
                e["sha256"].as_str().unwrap(),
                hex::encode(Sha256::digest(body))
            );
        }
        // Delete: 204 with no body, then 404 everywhere.
        let d = a
            .req(
                "DELETE",
                &format!("/users/alice/mysoftware/{msid}/exports/{eid}"),
                None,
                &[],
            )
            .await;
        assert_eq!(d.status, 204);
        assert!(d.body.is_empty());
        a.get(&format!(
            "/users/alice/mysoftware/{msid}/exports/{eid}/status"
        ))
        .await
        .assert_uforge_error(404);
        a.get(&format!(
            "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
        ))
        .await
        .assert_uforge_error(404);
    }
}

#[tokio::test]
async fn status_etag_and_downloads_with_ranges() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("ranges", "2").await;
    a.add_file(msid, None, "n.bin", &noise(1 << 20, 3)).await;
    let eid = a.export(msid, "yaml").await;
    let st = a.wait_export(msid, eid, T).await;
    let path = format!("/users/alice/mysoftware/{msid}/exports/{eid}");
    let etag = st.header("etag").unwrap();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"));
    let lm = st.header("last-modified").unwrap();
    // Conditional requests: 304 with no body; never without a condition.
    let r = a
        .req(
            "GET",
            &format!("{path}/status"),
            None,
            &[("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = a
        .req(
            "GET",
            &format!("{path}/status"),
            None,
            &[("If-Modified-Since", &lm)],
        )
        .await;
    assert_eq!(r.status, 304);
    let r = a
        .req(
            "GET",
            &format!("{path}/status"),
            None,
            &[("If-None-Match", "\"other\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(a.get(&format!("{path}/status")).await.status, 200);
    // Seed 001: the status read needs software_upload. Carol has none: the administrator makes her
    // a bundle and an export, which she may then see but not poll.
    let root = s.client("root");
    let doc = format!(
        "<ns1:mySoftware xmlns:ns1=\"{NS}\"><name>hers</name><version>1</version></ns1:mySoftware>"
    );
    let r = root
        .req(
            "POST",
            "/users/carol/mysoftware",
            Some(doc.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let cm = r.id();
    let r = root
        .req(
            "POST",
            &format!("/users/carol/mysoftware/{cm}/exports"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ce = r.id();
    let carol = s.client("carol");
    let r = carol
        .get(&format!("/users/carol/mysoftware/{cm}/exports/{ce}/status"))
        .await;
    r.assert_uforge_error(403);
    assert!(
        r.error_message().contains("software_upload"),
        "{}",
        r.text()
    );
    assert_eq!(
        carol
            .get(&format!("/users/carol/mysoftware/{cm}/exports/{ce}"))
            .await
            .status,
        200
    );

    let full = a.get(&format!("{path}/downloads")).await.body;
    let n = full.len();
    let r = a
        .req(
            "GET",
            &format!("{path}/downloads"),
            None,
            &[("Range", "bytes=100-199")],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[100..200]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{n}"))
    );
    let r = a
        .req(
            "GET",
            &format!("{path}/downloads"),
            None,
            &[("Range", "bytes=-10")],
        )
        .await;
    assert_eq!(r.body, &full[n - 10..]);
    let r = a
        .req(
            "GET",
            &format!("{path}/downloads"),
            None,
            &[("Range", &format!("bytes={}-", n - 5))],
        )
        .await;
    assert_eq!(r.body, &full[n - 5..]);
    // Several ranges: multipart/byteranges with each part's exact bytes.
    let r = a
        .req(
            "GET",
            &format!("{path}/downloads"),
            None,
            &[("Range", "bytes=0-9,1000-1099")],
        )
        .await;
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct.split("boundary=").nth(1).unwrap().to_string();
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    let body = r.body.clone();
    let parts: Vec<&[u8]> = split(&body, format!("--{boundary}").as_bytes());
    let mut datas = Vec::new();
    for p in parts {
        if let Some(i) = find(p, b"\r\n\r\n") {
            let d = &p[i + 4..];
            datas.push(d.strip_suffix(b"\r\n").unwrap_or(d).to_vec());
        }
    }
    assert_eq!(datas, vec![full[0..10].to_vec(), full[1000..1100].to_vec()]);
    // Past the end: 416 uforgeError with the size.
    let r = a
        .req(
            "GET",
            &format!("{path}/downloads"),
            None,
            &[("Range", &format!("bytes={}-", n + 10))],
        )
        .await;
    r.assert_uforge_error(416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{n}")));
    // If-Range with a stale validator: the whole file.
    let r = a
        .req(
            "GET",
            &format!("{path}/downloads"),
            None,
            &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn split<'a>(mut h: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(h, sep) {
        out.push(&h[..i]);
        h = &h[i + sep.len()..];
    }
    out.push(h);
    out
}

/// Every route and method, as another user, answers exactly as for a missing object.
#[tokio::test]
async fn cross_user_matrix() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let b = s.client("bob");
    let msid = a.create_bundle("secret", "1").await;
    let said = a.add_file(msid, None, "f.txt", b"alice's data").await;
    a.req(
        "POST",
        &format!("/users/alice/mysoftware/{msid}/licenses/1/L"),
        Some(b"lic".to_vec()),
        &[],
    )
    .await;
    a.req(
        "POST",
        &format!("/users/alice/mysoftware/{msid}/logo/1/l.png"),
        Some(b"logo".to_vec()),
        &[],
    )
    .await;
    let lic = a.get(&format!("/users/alice/mysoftware/{msid}")).await;
    let lid: i64 = lic
        .text()
        .split("<license>")
        .nth(1)
        .unwrap()
        .split("<dbId>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let eid = a.export(msid, "yaml").await;
    a.wait_export(msid, eid, T).await;
    let bob_msid = b.create_bundle("bobs", "1").await;

    let routes: Vec<(&str, String)> = vec![
        ("GET", "/users/{u}/mysoftware/{m}".into()),
        ("PUT", "/users/{u}/mysoftware/{m}".into()),
        ("DELETE", "/users/{u}/mysoftware/{m}".into()),
        ("POST", "/users/{u}/mysoftware/{m}/clone".into()),
        ("GET", "/users/{u}/mysoftware/{m}/artifacts".into()),
        ("POST", "/users/{u}/mysoftware/{m}/artifacts".into()),
        ("GET", "/users/{u}/mysoftware/{m}/artifacts/{a}".into()),
        ("PUT", "/users/{u}/mysoftware/{m}/artifacts/{a}".into()),
        ("DELETE", "/users/{u}/mysoftware/{m}/artifacts/{a}".into()),
        (
            "POST",
            "/users/{u}/mysoftware/{m}/artifacts/{a}/subsoftwareartifacts".into(),
        ),
        ("GET", "/users/{u}/mysoftware/{m}/artifacts/{a}/bin".into()),
        (
            "GET",
            "/users/{u}/mysoftware/{m}/artifacts/{a}/bin/f.txt".into(),
        ),
        (
            "POST",
            "/users/{u}/mysoftware/{m}/artifacts/{a}/bin/f.txt".into(),
        ),
        ("GET", "/users/{u}/mysoftware/{m}/licenses/{l}".into()),
        ("DELETE", "/users/{u}/mysoftware/{m}/licenses/{l}".into()),
        ("POST", "/users/{u}/mysoftware/{m}/licenses/{l}/L".into()),
        ("GET", "/users/{u}/mysoftware/{m}/logo/{l}".into()),
        ("GET", "/users/{u}/mysoftware/{m}/logo/{l}/l.png".into()),
        ("POST", "/users/{u}/mysoftware/{m}/logo/{l}/l.png".into()),
        ("DELETE", "/users/{u}/mysoftware/{m}/logo/{l}".into()),
        ("POST", "/users/{u}/mysoftware/{m}/exports".into()),
        ("GET", "/users/{u}/mysoftware/{m}/exports/{e}".into()),
        ("GET", "/users/{u}/mysoftware/{m}/exports/{e}/status".into()),
        (
            "GET",
            "/users/{u}/mysoftware/{m}/exports/{e}/downloads".into(),
        ),
        ("DELETE", "/users/{u}/mysoftware/{m}/exports/{e}".into()),
    ];
    let fill = |t: &str, u: &str, m: i64, a: i64, l: i64, e: i64| {
        t.replace("{u}", u)
            .replace("{m}", &m.to_string())
            .replace("{a}", &a.to_string())
            .replace("{l}", &l.to_string())
            .replace("{e}", &e.to_string())
    };
    let body = Some(format!("<ns1:mySoftware xmlns:ns1=\"{NS}\"><name>x</name><version>2</version></ns1:mySoftware>").into_bytes());
    let norm = |s: String, ids: &[(i64, &str)]| {
        let mut s = s;
        for (id, tag) in ids {
            s = s.replace(&format!("{tag} {id}"), &format!("{tag} N"));
        }
        s
    };
    for (method, t) in &routes {
        // Bob under alice's uid vs a user that does not exist.
        let foreign = b
            .req(
                method,
                &fill(t, "alice", msid, said, lid, eid),
                body.clone(),
                &[],
            )
            .await;
        let missing = b
            .req(
                method,
                &fill(t, "nobody", msid, said, lid, eid),
                body.clone(),
                &[],
            )
            .await;
        foreign.assert_uforge_error(404);
        assert_eq!(
            foreign.error_message().replace("alice", "U"),
            missing.error_message().replace("nobody", "U"),
            "{method} {t}"
        );
        // Bob under his own uid with alice's ids vs ids that do not exist anywhere.
        let foreign = b
            .req(
                method,
                &fill(t, "bob", msid, said, lid, eid),
                body.clone(),
                &[],
            )
            .await;
        let missing = b
            .req(
                method,
                &fill(t, "bob", 999_999, 999_998, 999_997, 999_996),
                body.clone(),
                &[],
            )
            .await;
        foreign.assert_uforge_error(404);
        missing.assert_uforge_error(404);
        let ids_f = [
            (msid, "mySoftware"),
            (said, "softwareArtifact"),
            (eid, "export"),
            (lid, "license"),
            (lid, "logo"),
        ];
        let ids_m = [
            (999_999, "mySoftware"),
            (999_998, "softwareArtifact"),
            (999_996, "export"),
            (999_997, "license"),
            (999_997, "logo"),
        ];
        assert_eq!(
            norm(foreign.error_message(), &ids_f),
            norm(missing.error_message(), &ids_m),
            "{method} {t}"
        );
        // Bob's own bundle with alice's artifact/export ids.
        if t.contains("{a}") || t.contains("{e}") {
            let r = b
                .req(
                    method,
                    &fill(t, "bob", bob_msid, said, lid, eid),
                    body.clone(),
                    &[],
                )
                .await;
            r.assert_uforge_error(404);
        }
    }
    for t in [
        "/users/{u}",
        "/users/{u}/mysoftware",
        "/users/{u}/exports",
        "/users/{u}/exports/statuses",
        "/users/{u}/mysoftware/exports",
    ] {
        b.get(&t.replace("{u}", "alice"))
            .await
            .assert_uforge_error(404);
    }
    // Nothing of alice's changed, and the admin sees it.
    let root = s.client("root");
    let r = root
        .get(&format!(
            "/users/alice/mysoftware/{msid}/artifacts/{said}/bin/f.txt"
        ))
        .await;
    assert_eq!(r.body, b"alice's data");
    let r = root.get("/users/alice/mysoftware/exports").await;
    assert_eq!(r.field("total").as_deref(), Some("1"), "{}", r.text());
    assert_eq!(
        a.get(&format!("/users/alice/mysoftware/{msid}"))
            .await
            .field("name")
            .as_deref(),
        Some("secret")
    );
}

#[tokio::test]
async fn bad_input_is_refused_cleanly() {
    let s = Server::start(&["--max-upload", "100000"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("b", "1").await;
    let said = a.add_file(msid, None, "f", b"data").await;
    let snapshot = |r: Resp| r.text().replace(char::is_numeric, "");
    let before = snapshot(a.get("/users/alice/mysoftware").await);
    let post = |path: String, body: &'static str| {
        let a = a.clone();
        async move {
            a.req("POST", &path, Some(body.as_bytes().to_vec()), &[])
                .await
        }
    };
    let ms = "/users/alice/mysoftware".to_string();
    post(ms.clone(), "<ns1:mySoftware xmlns:ns1=\"x\"><name>a</name>")
        .await
        .assert_uforge_error(400);
    post(ms.clone(), "<not xml").await.assert_uforge_error(400);
    let r = post(
        ms.clone(),
        "<?xml version=\"1.0\"?><!DOCTYPE m [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><m><name>&x;</name><version>1</version></m>",
    )
    .await;
    r.assert_uforge_error(400);
    assert!(!r.text().contains("root:"));
    post(
        ms.clone(),
        "<m><name>a</name><version>1</version><restricted>maybe</restricted></m>",
    )
    .await
    .assert_uforge_error(400);
    post(ms.clone(), "<m><version>1</version></m>")
        .await
        .assert_uforge_error(400);
    let r = a
        .req(
            "POST",
            &ms,
            Some(b"{\"name\": 5".to_vec()),
            &[("Content-Type", "application/json")],
        )
        .await;
    r.assert_uforge_error(400);
    let r = a
        .req(
            "POST",
            &ms,
            Some(b"{\"name\": 5, \"version\": \"1\"}".to_vec()),
            &[("Content-Type", "application/json")],
        )
        .await;
    r.assert_uforge_error(400);
    // Huge documents: 413, and uploads over the configured limit too (nothing is kept).
    let huge = format!(
        "<m><name>{}</name><version>1</version></m>",
        "a".repeat(2 << 20)
    );
    // The refusal comes before the body is read, so the server may close the connection while the
    // client is still sending it: a reset is that same refusal, and the answer is read on a retry.
    let mut answer = None;
    for _ in 0..5 {
        answer = a.try_req("POST", &ms, huge.clone().into_bytes()).await;
        if answer.is_some() {
            break;
        }
    }
    answer
        .expect("an answer to one of five attempts")
        .assert_uforge_error(413);
    if let Some(r) = a
        .try_req(
            "POST",
            &format!("{ms}/{msid}/artifacts/{said}/bin/f"),
            vec![0u8; 200_000],
        )
        .await
    {
        r.assert_uforge_error(413);
    }
    assert_eq!(
        a.get(&format!("{ms}/{msid}/artifacts/{said}/bin/f"))
            .await
            .body,
        b"data"
    );
    // An update without a document is refused, not silently ignored.
    a.req("PUT", &format!("{ms}/{msid}"), Some(Vec::new()), &[])
        .await
        .assert_uforge_error(400);
    a.req("PUT", &format!("{ms}/{msid}/artifacts/{said}"), None, &[])
        .await
        .assert_uforge_error(400);
    // Ids.
    a.get(&format!("{ms}/abc")).await.assert_uforge_error(400);
    a.get(&format!("{ms}/-1")).await.assert_uforge_error(400);
    a.get(&format!("{ms}/99999999999999999999"))
        .await
        .assert_uforge_error(400);
    a.get(&format!("{ms}/424242"))
        .await
        .assert_uforge_error(404);
    a.get(&format!("{ms}/{msid}/artifacts/x1"))
        .await
        .assert_uforge_error(400);
    // Path traversal in file names.
    // (A bare `..` segment is resolved away by any URL parser before it is sent.)
    for name in ["..%2F..%2Fetc%2Fpasswd", "a%5Cb", "x%00y", "a%2F..%2Fb"] {
        let r = a
            .req(
                "POST",
                &format!("{ms}/{msid}/artifacts/{said}/bin/{name}"),
                Some(b"x".to_vec()),
                &[],
            )
            .await;
        r.assert_uforge_error(400);
        let r = a
            .req(
                "POST",
                &format!("{ms}/{msid}/licenses/1/{name}"),
                Some(b"x".to_vec()),
                &[],
            )
            .await;
        r.assert_uforge_error(400);
    }
    let r = a
        .req(
            "POST",
            &format!("{ms}/{msid}/artifacts"),
            Some(b"<a><name>../../x</name></a>".to_vec()),
            &[],
        )
        .await;
    r.assert_uforge_error(400);
    // Export formats.
    a.req(
        "POST",
        &format!("{ms}/{msid}/exports?outputFormat=xml"),
        None,
        &[],
    )
    .await
    .assert_uforge_error(400);
    // Unknown routes and methods.
    a.req("PATCH", &format!("{ms}/{msid}"), None, &[])
        .await
        .assert_uforge_error(405);
    a.get("/users/alice/nothing").await.assert_uforge_error(404);
    // No credentials / wrong credentials.
    let anon = reqwest::get(format!("{}/users/alice", s.base()))
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    assert!(anon.headers().get("www-authenticate").is_some());
    let mut wrong = a.clone();
    wrong.password = "nope".into();
    wrong.get("/users/alice").await.assert_uforge_error(401);
    // JSON errors for JSON clients.
    let r = a
        .req(
            "GET",
            &format!("{ms}/424242"),
            None,
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 404);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["statusCode"], 404);
    assert!(v["localizedErrorMsg"]["message"]
        .as_str()
        .unwrap()
        .contains("424242"));
    // Nothing changed.
    assert_eq!(before, snapshot(a.get("/users/alice/mysoftware").await));
}

#[tokio::test]
async fn wire_details_for_the_sdk() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let r = a.get("/status").await;
    assert_eq!(r.field("version").as_deref(), Some("3.8.13"));
    assert_eq!(r.header("content-type").as_deref(), Some("application/xml"));
    assert!(r.header("x-request-id").is_some());
    // A base URL with a trailing slash: //users/...
    let r = a.get("//users/alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("loginName").as_deref(), Some("alice"));
    // Empty XML body with an XML content type on POST exports.
    let msid = a.create_bundle("e", "1").await;
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/exports"),
            Some(Vec::new()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r
        .header("location")
        .unwrap()
        .ends_with(&format!("/exports/{}", r.id())));
    // JSON documents carry the same field names.
    let r = a
        .req(
            "GET",
            &format!("/users/alice/mysoftware/{msid}"),
            None,
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["dbId"], msid);
    assert_eq!(v["name"], "e");
    // Entitlements: carol may not create bundles; admin may act for alice.
    let c = s.client("carol");
    let r = c
        .req(
            "POST",
            "/users/carol/mysoftware",
            Some(b"<m><name>x</name><version>1</version></m>".to_vec()),
            &[],
        )
        .await;
    r.assert_uforge_error(403);
    let root = s.client("root");
    let r = root
        .req(
            "POST",
            "/users/alice/mysoftware",
            Some(b"<m><name>by-root</name><version>1</version></m>".to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        a.get("/users/alice/mysoftware")
            .await
            .field("total")
            .as_deref(),
        Some("2")
    );
    // Clone copies files.
    let said = a.add_file(msid, None, "x.txt", b"xx").await;
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/clone"),
            Some(b"<m><name>copy</name></m>".to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let copy = r.id();
    let arts = a
        .get(&format!("/users/alice/mysoftware/{copy}/artifacts"))
        .await;
    let new_said: i64 = arts.id();
    assert_ne!(new_said, said);
    assert_eq!(
        a.get(&format!(
            "/users/alice/mysoftware/{copy}/artifacts/{new_said}/bin/x.txt"
        ))
        .await
        .body,
        b"xx"
    );
    // DELETE answers 204 with no body.
    let r = a
        .req(
            "DELETE",
            &format!("/users/alice/mysoftware/{copy}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
}

/// Stored content that no longer matches its recorded checksum (bit rot, a tampered disk) fails the
/// export and names the file, whether it is small (read whole and checked by the reader) or large
/// (streamed and checked on the digest thread), and whether the row has the CRC-32 recorded at
/// upload or only the sha256 (rows written before the CRC was); no archive is published.
#[tokio::test]
async fn a_corrupted_blob_fails_the_export_and_names_the_file() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let small = b"config line\n".repeat(2_000); // 24 000 bytes: read whole
    let big = noise(600_000, 3); // streamed
    let msid = a.create_bundle("rot", "1.0").await;
    a.add_file(msid, None, "small.txt", &small).await;
    a.add_file(msid, None, "big.bin", &big).await;
    let eid = a.export(msid, "yaml").await;
    let r = a.wait_export(msid, eid, T).await;
    assert_eq!(r.field("complete").as_deref(), Some("true"), "{}", r.text());
    let blob_of = |size: u64, blobs: &[(String, u64)]| {
        let found: Vec<_> = blobs.iter().filter(|(_, n)| *n == size).collect();
        assert_eq!(found.len(), 1, "one blob of {size} bytes: {blobs:?}");
        found[0].0.clone()
    };
    let blobs = s.blobs().await;
    let cases = [
        ("small.txt", small.len(), 12_345),
        ("big.bin", big.len(), 599_000),
    ];
    // First with the CRC recorded at upload, then as rows from before it (sha256 only).
    for with_crc in [true, false] {
        if !with_crc {
            assert_eq!(
                s.execute_sql("UPDATE artifacts SET blob_crc32 = NULL WHERE blob_key IS NOT NULL")
                    .await,
                2
            );
            let eid = a.export(msid, "yaml").await;
            let r = a.wait_export(msid, eid, T).await;
            assert_eq!(r.field("complete").as_deref(), Some("true"), "{}", r.text());
        }
        for (name, size, flip_at) in cases {
            let path = blob_of(size as u64, &blobs);
            let good = s.read_blob(&path).await;
            let mut bad = good.clone();
            bad[flip_at] ^= 0x01;
            s.overwrite_blob(&path, bad).await;
            let archives_before = s.blobs().await.len();
            let eid = a.export(msid, "yaml").await;
            let r = a.wait_export(msid, eid, T).await;
            assert_eq!(r.field("error").as_deref(), Some("true"), "{}", r.text());
            let msg = r.field("errorMessage").unwrap_or_default();
            assert!(
                msg.contains(name) && msg.contains("does not match"),
                "{name}: {msg}"
            );
            let dl = a
                .get(&format!(
                    "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
                ))
                .await;
            assert_ne!(dl.status, 200, "a failed export serves nothing");
            assert_eq!(
                s.blobs().await.len(),
                archives_before,
                "nothing was published"
            );
            s.overwrite_blob(&path, good).await;
        }
    }
    // Repaired, it exports again.
    let eid = a.export(msid, "yaml").await;
    let r = a.wait_export(msid, eid, T).await;
    assert_eq!(r.field("complete").as_deref(), Some("true"), "{}", r.text());
}

/// `GET /users/{uid}/exports` lists appliance exports, as UForge does (bundle exports are under
/// `/users/{uid}/mysoftware/exports`), with `query`, `orderBy`, `descending`, `count` and `offset`;
/// `.../exports/statuses?ae=` gives some of their statuses. Bad parameters are uforgeErrors.
#[tokio::test]
async fn user_exports_are_appliance_exports_filtered_ordered_and_paged() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("lib", "1").await;
    a.add_file(msid, None, "f.txt", b"f").await;
    let bundle_eid = a.export(msid, "yaml").await;
    let mut exports = Vec::new();
    for name in ["web", "Database", "webcache"] {
        let aid = a.create_appliance(name, "1", &[msid]).await;
        exports.push((name, a.export_appliance(aid, None).await));
        tokio::time::sleep(Duration::from_millis(5)).await; // distinct creation times
    }
    let ids = |r: &Resp| -> Vec<i64> {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["applianceExports"]["applianceExport"]
            .as_array()
            .map(|a| a.iter().map(|e| e["dbId"].as_i64().unwrap()).collect())
            .unwrap_or_default()
    };
    let list = |q: &str| {
        let a = &a;
        let path = format!("/users/alice/exports{q}");
        async move {
            a.req("GET", &path, None, &[("Accept", "application/json")])
                .await
        }
    };
    let (web, db, cache) = (exports[0].1, exports[1].1, exports[2].1);
    let all = list("").await;
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(
        ids(&all),
        vec![web, db, cache],
        "oldest first, no bundle export"
    );
    assert!(!ids(&all).contains(&bundle_eid));
    let r = list("?query=WEB&descending=true").await;
    assert_eq!(ids(&r), vec![cache, web]);
    let r = list("?orderBy=name").await;
    assert_eq!(ids(&r), vec![db, web, cache]);
    let r = list("?orderBy=name&descending=true&count=1&offset=1").await;
    assert_eq!(ids(&r), vec![web]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["total"], 3, "total counts every match, not the page");
    assert_eq!(ids(&list("?offset=9").await), Vec::<i64>::new());
    for bad in [
        "?count=-1",
        "?offset=x",
        "?orderBy=size",
        "?descending=maybe",
    ] {
        let r = a.get(&format!("/users/alice/exports{bad}")).await;
        r.assert_uforge_error(400);
    }
    // Statuses: all of them, or those named by `ae`.
    let r = a
        .req(
            "GET",
            &format!("/users/alice/exports/statuses?ae={web},{cache}"),
            None,
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let got: Vec<i64> = v["statuses"]["status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dbId"].as_i64().unwrap())
        .collect();
    assert_eq!(got, vec![web, cache], "{}", r.text());
    let r = a.get("/users/alice/exports/statuses").await;
    assert_eq!(r.field("total").as_deref(), Some("3"), "{}", r.text());
    a.get("/users/alice/exports/statuses?ae=1,x")
        .await
        .assert_uforge_error(400);
    // The bundle export is listed with the other bundle exports.
    let r = a.get("/users/alice/mysoftware/exports").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("total").as_deref(), Some("1"), "{}", r.text());
    assert!(r.text().contains("softwareBundleExport"), "{}", r.text());
}
