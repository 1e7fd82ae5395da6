//! Runs the Python suite in tests/sdk: the real uforge-python-sdk 3.8.13 (its own pyxb bindings, its
//! transport ported to Python 3 at load time) and hammr's export flow, against this build's binary.

#[test]
fn uforge_python_sdk_suite() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = std::process::Command::new("bash")
        .arg(root.join("tests/sdk/run.sh"))
        .arg("-q")
        .env("SATCHEL_BIN", env!("CARGO_BIN_EXE_satchel"))
        .current_dir(&root)
        .status()
        .expect("running tests/sdk/run.sh");
    assert!(
        status.success(),
        "the SDK suite failed (see its output above)"
    );
}
