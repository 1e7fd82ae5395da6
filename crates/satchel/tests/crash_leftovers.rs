//! What a crash leaves in the blob store is swept: kill -9 during an export and during an upload,
//! restart, and afterwards every stored key is one the database references (no `KEY#N` staging files
//! on the embedded default, no unfinished multipart uploads on S3, no unrecorded objects).

mod common;

use common::*;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Every blob key a row references, read straight from the database (not through the code under
/// test): files, attachments, complete archives, image files, objects.
const REFERENCED_SQL: &str = "SELECT blob_key FROM artifacts WHERE blob_key IS NOT NULL
    UNION SELECT blob_key FROM attachments
    UNION SELECT archive_key FROM tickets WHERE state = 'complete' AND archive_key IS NOT NULL
    UNION SELECT file_blob FROM images WHERE file_blob IS NOT NULL
    UNION SELECT blob_key FROM stor_entries WHERE blob_key IS NOT NULL";

async fn query_strings(s: &Server, sql: &str) -> Vec<Vec<String>> {
    use sqlx::Row;
    match s.database_url() {
        Some(url) => {
            let db = sqlx::PgPool::connect(&url).await.unwrap();
            let rows = sqlx::query(sql).fetch_all(&db).await.unwrap();
            db.close().await;
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.get::<String, _>(i)).collect())
                .collect()
        }
        None => {
            let url = format!(
                "sqlite://{}?mode=ro",
                s.dir.path().join("satchel.db").display()
            );
            let db = sqlx::SqlitePool::connect(&url).await.unwrap();
            let rows = sqlx::query(sql).fetch_all(&db).await.unwrap();
            db.close().await;
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.get::<String, _>(i)).collect())
                .collect()
        }
    }
}

async fn referenced(s: &Server) -> BTreeSet<String> {
    query_strings(s, REFERENCED_SQL)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every file under the embedded store's blob directory, as a key relative to it.
fn local_files(s: &Server) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().to_string());
            }
        }
    }
    let root = s.dir.path().join("blobs");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// The published objects: the blob directory's files but staging files, or the Garage prefix's
/// objects.
async fn stored(s: &Server) -> BTreeSet<String> {
    match &s.blob_prefix {
        None => local_files(s)
            .into_iter()
            .filter(|k| !k.contains('#'))
            .collect(),
        Some(prefix) => {
            let g = satchel_testkit::garage::shared_garage().unwrap();
            let store = g.store(prefix).unwrap();
            let list: Vec<_> = store.list(None).try_collect().await.unwrap();
            list.into_iter().map(|m| m.location.to_string()).collect()
        }
    }
}

/// Unfinished writes as (key, staging file or upload id): the embedded store's `KEY#N` files, or
/// the multipart uploads recorded in the database on S3 (object_store cannot list those).
async fn unfinished(s: &Server) -> Vec<(String, String)> {
    match &s.blob_prefix {
        None => local_files(s)
            .into_iter()
            .filter_map(|f| {
                let (key, _) = f.rsplit_once('#')?;
                Some((key.to_string(), f.clone()))
            })
            .collect(),
        Some(_) => query_strings(s, "SELECT blob_key, upload_id FROM blob_uploads")
            .await
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect(),
    }
}

/// Publishes an object under alice's files that no row references, as a crash between publishing
/// and recording would leave it.
async fn unrecorded_object(s: &Server) -> String {
    let key = "u/1/files/0123456789abcdef0123456789abcdef".to_string();
    match &s.blob_prefix {
        None => {
            let p = s.dir.path().join("blobs").join(&key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"orphan").unwrap();
        }
        Some(prefix) => {
            let g = satchel_testkit::garage::shared_garage().unwrap();
            g.store(prefix)
                .unwrap()
                .put(&key.as_str().into(), b"orphan".to_vec().into())
                .await
                .unwrap();
        }
    }
    key
}

async fn wait_for<F, Fut>(what: &str, s: &Server, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let Some(not_yet) = done().await else { return };
        assert!(Instant::now() < deadline, "{what}: {not_yet}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leftovers_are_swept_after_restart() {
    // Slow exports, so the kill lands mid-archive; a sweep every second (with the default grace,
    // which keeps everything of this test's age), so the restarted server may claim one at once.
    let mut s = Server::start(&[
        "--export-throttle",
        "150ms",
        "--orphan-sweep-interval",
        "1s",
    ])
    .await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1").await;
    let data = noise(24 << 20, 18);
    a.add_file(msid, None, "big.bin", &data).await;
    // In a bundle of its own: the export must not wait for a file that never arrives.
    let other = a.create_bundle("other", "1").await;
    let late = a.create_artifact(other, None, "late.bin", "file").await;
    let eid = a.export(msid, "yaml").await;

    // An upload that sends 8 MiB and then stalls, so its first 5 MiB part is
    // written (a staging file, or a multipart upload on S3) when the server dies.
    let url = a.url(&format!(
        "/users/alice/mysoftware/{other}/artifacts/{late}/bin/late.bin"
    ));
    let head: Vec<Result<Vec<u8>, std::io::Error>> = noise(8 << 20, 3)
        .chunks(1 << 20)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = futures::stream::iter(head).chain(futures::stream::pending());
    let upload = tokio::spawn(
        reqwest::Client::new()
            .post(url)
            .basic_auth("alice", Some("alice-pw"))
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );

    let both_running = |v: &[(String, String)]| {
        v.iter().any(|(k, _)| k.ends_with("/archive.tar.gz"))
            && v.iter().any(|(k, _)| k.contains("/files/"))
    };
    wait_for("an export and an upload writing", &s, || async {
        if upload.is_finished() {
            return Some("the upload ended before the kill".into());
        }
        let v = unfinished(&s).await;
        (!both_running(&v)).then(|| format!("{v:?}"))
    })
    .await;
    s.kill9();
    let _ = tokio::time::timeout(Duration::from_secs(10), upload).await;
    let left = unfinished(&s).await;
    assert!(both_running(&left), "{left:?}");
    let orphan = unrecorded_object(&s).await;

    // Restart with no grace: everything idle is fair game, but what the resumed export may write
    // is kept while its ticket is live.
    s.extra = vec![
        "--orphan-grace".into(),
        "0s".into(),
        "--orphan-sweep-interval".into(),
        "1s".into(),
    ];
    s.spawn().await;
    let a = s.client("alice");
    let st = a.wait_export(msid, eid, Duration::from_secs(180)).await;
    assert_eq!(
        st.field("complete").as_deref(),
        Some("true"),
        "{}",
        st.text()
    );

    // The periodic sweep takes the dead upload, the dead export attempt and the unrecorded object.
    wait_for("the sweep to remove every leftover", &s, || async {
        let (stored, refs, open) = (stored(&s).await, referenced(&s).await, unfinished(&s).await);
        let orphans: Vec<_> = stored.difference(&refs).collect();
        (!orphans.is_empty() || !open.is_empty())
            .then(|| format!("orphans {orphans:?}, unfinished {open:?}"))
    })
    .await;
    assert!(
        s.log().contains("orphan sweep removed crash leftovers"),
        "{}",
        s.log()
    );

    // One more sweep from the admin command finds nothing, and nothing referenced went.
    let out = s.admin(&["sweep", "--grace", "0s"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("removed 0 unreferenced objects, 0 "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (stored, refs) = (stored(&s).await, referenced(&s).await);
    assert_eq!(
        stored, refs,
        "every stored key is referenced, and the other way round"
    );
    assert!(!stored.contains(&orphan));
    assert!(unfinished(&s).await.is_empty());
    let dl = a
        .get(&format!(
            "/users/alice/mysoftware/{msid}/exports/{eid}/downloads"
        ))
        .await;
    assert_eq!(dl.status, 200);
    assert!(untar(&dl.body)["bundles/big/1/big.bin"] == data);

    // On S3 the dead uploads were really aborted: they take no more parts.
    if let Some(prefix) = &s.blob_prefix {
        use object_store::multipart::MultipartStore;
        let t = &satchel_testkit::garage::shared_garage().unwrap().target;
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&t.endpoint)
            .with_allow_http(true)
            .with_region(&t.region)
            .with_bucket_name(&t.bucket)
            .with_access_key_id(&t.access_key_id)
            .with_secret_access_key(&t.secret_access_key)
            .build()
            .unwrap();
        for (key, id) in &left {
            let full = object_store::path::Path::from(format!("{prefix}/{key}"));
            let r = s3.put_part(&full, id, 9, b"late".to_vec().into()).await;
            assert!(
                matches!(r, Err(object_store::Error::NotFound { .. })),
                "{key} {id}: {r:?}"
            );
        }
    }
}
