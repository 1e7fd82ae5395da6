//! The key that seals API key secrets in the database (`satchel_domain::apikeys::SealKey`): a file of
//! 64 hex digits, generated with mode 0600 on first start. Instances sharing a database must share
//! the file (`--apikey-seal-file`), or keys made on one are refused by the others.

use anyhow::Context;
use satchel_domain::apikeys::SealKey;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads the key at `path`, or creates it if there is none.
pub fn load_or_create(path: &Path) -> anyhow::Result<SealKey> {
    match read(path) {
        Ok(Some(k)) => return Ok(k),
        Ok(None) => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = SealKey::random();
    // Written whole under a temporary name, then linked into place: an instance starting at the
    // same moment either sees no file or a complete one, and a key already there is never replaced.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{}\n", key.to_hex().as_str()).as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(file = %path.display(), "generated the API key seal key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.with_context(|| format!("{} vanished while being read", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Option<SealKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the API key seal key is readable by other users (chmod 600 it)");
        }
    }
    SealKey::from_hex(&text)
        .map(Some)
        .with_context(|| format!("{}: not an API key seal key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/apikey-seal.key");
        let a = load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(&p).unwrap();
        assert_eq!(a.to_hex().as_str(), b.to_hex().as_str());
        let leftovers = std::fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left");
        std::fs::write(&p, "not a key").unwrap();
        assert!(
            load_or_create(&p).is_err(),
            "a bad key is an error, never replaced"
        );
    }
}
