//! podman on a throwaway store (`DIR/root`, `DIR/run`, vfs storage), as the container, distribution
//! and registry tests run it.

use std::path::Path;

/// Runs `podman ARGS` on the store under `dir`; its trimmed stdout, failing the test on an error.
/// runc (when installed) runs containers: crun 1.8 refuses hosts with hybrid cgroups.
pub fn podman(dir: &Path, args: &[&str]) -> String {
    let mut c = std::process::Command::new("podman");
    c.arg("--storage-driver")
        .arg("vfs")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"));
    if Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists() {
        c.arg("--runtime").arg("runc");
    }
    let out = c
        .args(args)
        .output()
        .expect("podman is installed by .ci/run");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
