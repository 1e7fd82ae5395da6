//! The keys that seal secrets in the database (`satchel_domain::apikeys::SealKey`): API key secrets
//! (`--apikey-seal-file`) and cloud account secrets (`--secrets-key-file` / `SATCHEL_SECRETS_KEY`).
//! A key file holds 64 hex digits and is generated with mode 0600 on first start. Instances sharing
//! a database must share the keys, or what one sealed the others cannot open.

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
            tracing::info!(file = %path.display(), "generated a seal key");
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
            tracing::warn!(file = %path.display(), "a seal key file is readable by other users (chmod 600 it)");
        }
    }
    SealKey::from_hex(&text)
        .map(Some)
        .with_context(|| format!("{}: not a seal key (64 hex digits)", path.display()))
}

/// Reads the key at `path`, which must exist.
pub fn read_existing(path: &Path) -> anyhow::Result<SealKey> {
    read(path)?.with_context(|| format!("{}: no such key file", path.display()))
}

/// The cloud account secrets key: given as text, read from its file, or (embedded mode only)
/// created in the data directory. In scale-out mode a missing key is an error: a key made up here
/// would differ from the other instances' and leave what they sealed unreadable.
pub fn secrets_key(
    args: &crate::config::SecretsKeyArgs,
    data_dir: &Path,
    shared: bool,
) -> anyhow::Result<SealKey> {
    match (&args.secrets_key, &args.secrets_key_file) {
        (Some(_), Some(_)) => anyhow::bail!(
            "give the secrets key once: SATCHEL_SECRETS_KEY or --secrets-key-file, not both"
        ),
        // The error names the setting, never the text given.
        (Some(text), None) => SealKey::from_hex(&text.0)
            .map_err(|_| anyhow::anyhow!("SATCHEL_SECRETS_KEY must be 64 hexadecimal digits")),
        (None, Some(file)) if shared => read_existing(file),
        (None, Some(file)) => load_or_create(file),
        (None, None) if shared => anyhow::bail!(
            "scale-out mode (--database-url) needs the cloud account secrets key: give every \
             instance the same --secrets-key-file or SATCHEL_SECRETS_KEY (generate one with \
             `head -c 32 /dev/urandom | xxd -p -c 64`)"
        ),
        (None, None) => load_or_create(&data_dir.join("secrets.key")),
    }
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

    #[test]
    fn secrets_key_sources() {
        use crate::config::{KeyText, SecretsKeyArgs};
        let dir = tempfile::tempdir().unwrap();
        let none = SecretsKeyArgs::default();
        // Embedded: generated once in the data directory, private.
        let a = secrets_key(&none, dir.path(), false).unwrap();
        let b = secrets_key(&none, dir.path(), false).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        let mode = std::fs::metadata(dir.path().join("secrets.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Scale-out: never made up.
        let e = secrets_key(&none, dir.path(), true).unwrap_err();
        assert!(e.to_string().contains("--secrets-key-file"), "{e}");
        let missing = SecretsKeyArgs {
            secrets_key_file: Some(dir.path().join("nope.key")),
            ..Default::default()
        };
        assert!(secrets_key(&missing, dir.path(), true).is_err());
        assert!(!dir.path().join("nope.key").exists());
        // Given as text; a bad text is refused without being echoed.
        let hex = a.to_hex().to_string();
        let text = SecretsKeyArgs {
            secrets_key: Some(KeyText(hex.clone())),
            ..Default::default()
        };
        assert_eq!(
            secrets_key(&text, dir.path(), true).unwrap().key_id(),
            a.key_id()
        );
        assert!(!format!("{text:?}").contains(&hex));
        let bad = SecretsKeyArgs {
            secrets_key: Some(KeyText("zz-not-a-key".into())),
            ..Default::default()
        };
        let e = secrets_key(&bad, dir.path(), false).unwrap_err();
        assert!(!e.to_string().contains("zz-not-a-key"), "{e}");
    }
}
