//! The OpenAPI document against the real server, and schemathesis fuzzing both faces from it for a
//! bounded time (tests/fuzz-api/run.sh): no 5xx, and every error in its face's format.

mod common;

use common::Server;

#[tokio::test]
async fn the_document_lists_what_is_routed() {
    let s = Server::start(&[]).await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", s.base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    // Every documented GET without parameters answers something other than "no such route".
    let r = reqwest::get(format!("{}/status", s.base())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(paths.contains_key("/api/status"));
    assert!(
        paths.contains_key("/{login}/{area}/{rest}"),
        "catch-alls are named"
    );
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            assert!(op["responses"]["default"].is_object(), "{method} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_foreign_error_format() {
    let s = Server::start(&["--user-rate", "0"]).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let base = format!("http://127.0.0.1:{}", s.port);
    let secs = std::env::var("SATCHEL_FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    let status = tokio::process::Command::new("bash")
        .arg(root.join("tests/fuzz-api/run.sh"))
        .arg(&base)
        .arg("alice:alice-pw")
        .arg(&secs)
        .current_dir(&root)
        .status()
        .await
        .expect("running tests/fuzz-api/run.sh");
    assert!(
        status.success(),
        "schemathesis found failures (its report is above); server log:\n{}",
        s.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
