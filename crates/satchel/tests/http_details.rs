//! HTTP details over loopback against the real binary: one-time download ids survive answers that
//! send no bytes (416, 304); declared oversized bodies and Content-Length + Transfer-Encoding are
//! refused before the body is read, in each face's error format; Range and If-None-Match as RFC
//! 9110 has them, on both faces; credentials never reach the logs, even at TRACE; names in NFC.
//! Raw TCP is used where a client library would hide the wire (100 Continue, both length fields).

mod common;

use common::cloud::{keygen, register, Signed};
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(120);

/// A compressed (downloadable) container image of a one-file bundle; returns its path under /api
/// (without the base) once generated.
async fn small_image(c: &Client) -> String {
    let msid = c.create_bundle("tiny", "1.0").await;
    c.add_file(msid, None, "hello.txt", b"hello\n").await;
    let tpl = format!("/users/{}/mysoftware/{msid}/templates", c.login);
    let r = c.req("POST", &tpl, Some(Vec::new()), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tid = r.id();
    let doc = format!(
        "<ns1:image xmlns:ns1=\"{NS}\"><compress>true</compress><format><name>docker</name></format><name>tiny</name></ns1:image>"
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
    let img = format!("{tpl}/{tid}/images/{}", r.id());
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = c.get(&format!("{img}/status")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.field("complete").as_deref() == Some("true") {
            return img;
        }
        assert!(r.field("error").as_deref() != Some("true"), "{}", r.text());
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A GET without credentials.
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

/// A fresh one-time id for the image.
async fn download_id(c: &Client, img: &str) -> String {
    let r = c.get(img).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.field("downloadKey").expect("a downloadable image")
}

#[tokio::test]
async fn answers_that_send_no_bytes_keep_the_download_id() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let img = small_image(&a).await;
    let size: u64 = a
        .get(&img)
        .await
        .field("fileSize")
        .unwrap()
        .parse()
        .unwrap();
    assert!(size < 999_999, "{size}");
    let key = download_id(&a, &img).await;
    let url = format!("{}{img}/downloads?downloadId={key}", s.base());

    // 416: nothing is sent, so the id is not spent.
    let r = anonymous(&url, &[("Range", "bytes=999999-")]).await;
    r.assert_uforge_error(416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{size}")));
    // 304: nothing is sent either.
    let whole = a.get(&format!("{img}/downloads")).await;
    assert_eq!(whole.status, 200);
    let etag = whole.header("etag").unwrap();
    let r = anonymous(&url, &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.clone()));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));

    // The id still works, once, and a satisfiable range is a use.
    let r = anonymous(&url, &[("Range", "bytes=0-9")]).await;
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, &whole.body[..10]);
    anonymous(&url, &[]).await.assert_uforge_error(410);
    // A spent id stays refused even where the range cannot be satisfied.
    anonymous(&url, &[("Range", "bytes=999999-")])
        .await
        .assert_uforge_error(410);
    // An unknown id learns nothing about the image, not even its size.
    let r = anonymous(
        &format!("{}{img}/downloads?downloadId={}", s.base(), "0".repeat(64)),
        &[("Range", "bytes=999999-")],
    )
    .await;
    r.assert_uforge_error(403);
    assert!(r.header("content-range").is_none());

    // The owner's downloads honour If-None-Match too (a mismatch serves the file).
    let r = a
        .req(
            "GET",
            &format!("{img}/downloads"),
            None,
            &[("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    let r = a
        .req(
            "GET",
            &format!("{img}/downloads"),
            None,
            &[("If-None-Match", "\"other\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, whole.body);
    // If-Modified-Since, as the same routine decides it for both faces: only without If-None-Match.
    let lm = whole.header("last-modified").expect("Last-Modified");
    let r = a
        .req(
            "GET",
            &format!("{img}/downloads"),
            None,
            &[("If-Modified-Since", &lm)],
        )
        .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.clone()));
    let r = a
        .req(
            "GET",
            &format!("{img}/downloads"),
            None,
            &[("If-Modified-Since", "Thu, 01 Jan 1998 00:00:00 GMT")],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = a
        .req(
            "GET",
            &format!("{img}/downloads"),
            None,
            &[("If-Modified-Since", &lm), ("If-None-Match", "\"other\"")],
        )
        .await;
    assert_eq!(r.status, 200, "If-None-Match decides when both are sent");
}

#[tokio::test]
async fn ranges_as_rfc_9110_has_them_on_both_faces() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let data = noise(1 << 20, 3);
    let msid = a.create_bundle("ranges", "1.0").await;
    let said = a.add_file(msid, None, "big.bin", &data).await;
    let bin = format!("/users/alice/mysoftware/{msid}/artifacts/{said}/bin");
    let get = |range: &'static str| {
        let (a, bin) = (a.clone(), bin.clone());
        async move { a.req("GET", &bin, None, &[("Range", range)]).await }
    };

    // A suffix longer than the file selects all of it (§14.1.2).
    let r = get("bytes=-2000000").await;
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 0-1048575/1048576")
    );
    assert_eq!(r.body, data);
    // Another unit, or syntax that is not a range set: ignored (§14.2).
    for ignored in ["items=0-9", "bytes=garbage", "bytes=9-0", "bytes", "=0-1"] {
        let r = get(ignored).await;
        assert_eq!(r.status, 200, "{ignored}: {}", r.text());
        assert_eq!(r.body.len(), data.len(), "{ignored}");
        assert!(r.header("content-range").is_none(), "{ignored}");
    }
    // Well-formed but past the end: still 416, as a uforgeError.
    let r = get("bytes=2000000-").await;
    r.assert_uforge_error(416);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes */1048576")
    );
    // Overlapping ranges are merged, never sent twice.
    let r = get("bytes=0-99,50-149").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[..150]);
    // If-None-Match on a UForge download.
    let etag = get("bytes=0-0").await.header("etag").unwrap();
    let r = a
        .req(
            "GET",
            &bin,
            None,
            &[("If-None-Match", &format!("\"x\", {etag}"))],
        )
        .await;
    assert_eq!(r.status, 304);

    // The CloudAPI face decides with the same rules.
    let keys = tempfile::tempdir().unwrap();
    let kp = keygen(keys.path(), "id_ed", "ed25519", None, false);
    register(&s, "alice", "k", &kp);
    let alice = Signed::new(&s, "alice", &kp);
    let r = alice
        .call("PUT", "/alice/stor/big.bin", Some(data.clone()), &[])
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = alice
        .call(
            "GET",
            "/alice/stor/big.bin",
            None,
            &[("range", "bytes=-2000000")],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, data);
    let r = alice
        .call(
            "GET",
            "/alice/stor/big.bin",
            None,
            &[("range", "items=0-9")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    alice
        .call(
            "GET",
            "/alice/stor/big.bin",
            None,
            &[("range", "bytes=2000000-")],
        )
        .await
        .assert_error(416, "RequestedRangeNotSatisfiable");
    let etag = r.header("etag").unwrap();
    let r = alice
        .call(
            "GET",
            "/alice/stor/big.bin",
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);
}

/// Sends `head` (and `body`) on a fresh connection and reads what comes back within `wait`.
async fn raw(port: u16, head: &str, body: &[u8], wait: Duration) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    if !body.is_empty() {
        // The server may already have answered and closed: a failed write is fine.
        let _ = c.write_all(body).await;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn basic(login: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{login}:{login}-pw"))
}

#[tokio::test]
async fn declared_oversized_bodies_are_refused_before_any_byte_is_read() {
    let s = Server::start(&["--max-upload", "100000"]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1.0").await;
    let said = a.create_artifact(msid, None, "big.bin", "file").await;
    let path = format!("/api/users/alice/mysoftware/{msid}/artifacts/{said}/bin/big.bin");
    let head = |path: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nAccept: application/xml\r\n\
             Content-Length: 21000000\r\n{extra}\r\n",
            basic("alice")
        )
    };
    // With Expect: 100-continue: straight to 413, never a 100.
    let out = raw(
        s.port,
        &head(&path, "Expect: 100-continue\r\n"),
        b"",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(!out.contains("100 Continue"), "{out}");
    assert!(out.contains("<ns0:uforgeError"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    // Without it: answered at once, though only a little of the body was sent.
    let out = raw(
        s.port,
        &head(&path, ""),
        &[0u8; 1000],
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("<ns0:uforgeError"), "{out}");
    // CloudAPI paths answer in CloudAPI's format (before authentication: nothing is read).
    let out = raw(
        s.port,
        "PUT /alice/stor/big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 21000000\r\nExpect: 100-continue\r\n\r\n",
        b"",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("\"code\":\"RequestEntityTooLarge\""), "{out}");
    // Within the limit, uploads still work.
    a.upload(msid, said, "big.bin", &noise(100_000, 1)).await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let s = Server::start(&[]).await;
    let both = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAccept: application/xml\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
    };
    let out = raw(
        s.port,
        &both("/api/users/alice/mysoftware"),
        b"",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("<ns0:uforgeError"), "{out}");
    assert!(out.contains("Transfer-Encoding"), "{out}");
    // Either order of the two fields.
    let out = raw(
        s.port,
        "PUT /alice/stor/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\"code\":\"BadRequest\""), "{out}");
    // A chunked body alone is fine, and text in it that looks like a head is just body: both
    // requests on this connection are served.
    let chunk = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nxx";
    let out = raw(
        s.port,
        &format!(
            "GET /api/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{chunk}\r\n0\r\n\r\n\
             GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            chunk.len()
        ),
        b"",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(!out.contains("HTTP/1.1 400"), "{out}");
}

#[tokio::test]
async fn credentials_never_reach_the_logs() {
    let mut s = Server::start(&[]).await;
    let a = s.client("alice");
    let img = small_image(&a).await;
    let keys = tempfile::tempdir().unwrap();
    let kp = keygen(keys.path(), "id_ed", "ed25519", None, false);
    register(&s, "alice", "k", &kp);
    let log = restart_with_trace_logs(&mut s).await;

    let key = download_id(&a, &img).await;
    let url = format!("{}{img}/downloads?downloadId={key}", s.base());
    assert_eq!(
        anonymous(&url, &[("Range", "bytes=999999-")]).await.status,
        416
    );
    assert_eq!(anonymous(&url, &[]).await.status, 200);
    assert_eq!(anonymous(&url, &[]).await.status, 410);
    // An API-key style signature in the query, and a wrong password.
    let signature = "c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ";
    anonymous(
        &format!("{}/users/alice?apiKey=pub&signature={signature}", s.base()),
        &[],
    )
    .await;
    let wrong = Client {
        password: "w r o n g-pw".into(),
        ..a.clone()
    };
    assert_eq!(wrong.get("/users/alice").await.status, 401);
    // A signed CloudAPI request: its Authorization carries the signature.
    let alice = Signed::new(&s, "alice", &kp);
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let auth = alice.authorization("GET", "/alice", &date);
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/alice", s.port))
        .header("date", &date)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cloud_sig = auth
        .split("signature=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_string();

    // Logs are written as they happen; give the last lines a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("downloadId=REDACTED"),
        "request URIs are logged at this level: {}",
        &text[..text.len().min(4000)]
    );
    for secret in [
        key.as_str(),
        signature,
        "alice-pw",
        "w r o n g-pw",
        basic("alice").as_str(),
        cloud_sig.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret:?} is in the log");
    }
}

#[tokio::test]
async fn names_are_one_in_nfc_and_nfd() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let (nfc, nfd) = ("caf\u{e9}", "cafe\u{301}");
    let msid = a.create_bundle(nfd, "1.0").await;
    let r = a.get(&format!("/users/alice/mysoftware/{msid}")).await;
    assert_eq!(r.field("name").as_deref(), Some(nfc), "{}", r.text());
    let said = a
        .add_file(msid, None, &format!("{nfd}.txt"), b"menu\n")
        .await;
    let r = a
        .get(&format!("/users/alice/mysoftware/{msid}/artifacts/{said}"))
        .await;
    assert_eq!(r.field("name"), Some(format!("{nfc}.txt")), "{}", r.text());
    // A download by name finds it in either form.
    for name in [nfc, nfd] {
        let r = a
            .get(&format!(
                "/users/alice/mysoftware/{msid}/artifacts/{said}/bin/{name}.txt"
            ))
            .await;
        assert_eq!(r.status, 200, "{name:?}: {}", r.text());
        assert_eq!(r.body, b"menu\n");
    }
}
