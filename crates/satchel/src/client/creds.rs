//! The stored login: `$XDG_CONFIG_HOME/satchel/credentials.toml` (else `~/.config/...`), mode 0600;
//! `SATCHEL_URL`, `SATCHEL_USER` and `SATCHEL_PASSWORD` win over it.

use super::{Failure, Res, AUTH, USAGE};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

#[derive(Serialize, Deserialize, Default, Clone)]
pub struct Creds {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
}

pub fn path() -> Res<PathBuf> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => {
                return Err(Failure::new(
                    USAGE,
                    "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the login",
                ))
            }
        },
    };
    Ok(dir.join("satchel").join("credentials.toml"))
}

/// The server's base URL without a trailing `/` or `/api`.
pub fn normalize_url(url: &str) -> Res<String> {
    let u = url.trim().trim_end_matches('/');
    let u = u.strip_suffix("/api").unwrap_or(u);
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        return Err(Failure::new(
            USAGE,
            format!("not an http(s) URL: {url:?} (e.g. https://satchel.example.org)"),
        ));
    }
    Ok(u.to_string())
}

fn stored() -> Res<Option<Creds>> {
    let p = path()?;
    match std::fs::read_to_string(&p) {
        Ok(t) => toml::from_str(&t).map(Some).map_err(|e| {
            Failure::new(
                USAGE,
                format!("{} is not a credentials file: {e}", p.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::new(USAGE, format!("reading {}: {e}", p.display()))),
    }
}

/// The credentials to use: the environment over the stored file.
pub fn current() -> Res<Creds> {
    let mut c = stored()?.unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(v) = env("SATCHEL_URL") {
        c.url = v;
    }
    if let Some(v) = env("SATCHEL_USER") {
        c.user = v;
    }
    if let Some(v) = env("SATCHEL_PASSWORD") {
        c.password = v;
    }
    if c.url.is_empty() || c.user.is_empty() {
        return Err(Failure::new(
            AUTH,
            "not logged in: run `satchel login URL --user LOGIN` (or set SATCHEL_URL and SATCHEL_USER)",
        ));
    }
    c.url = normalize_url(&c.url)?;
    Ok(c)
}

/// Writes the file with mode 0600 (a fresh file renamed over the old one).
pub fn save(c: &Creds) -> Res<PathBuf> {
    let p = path()?;
    let io =
        |e: std::io::Error, what: &str| Failure::new(USAGE, format!("{what} {}: {e}", p.display()));
    let dir = p.parent().expect("a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(e, "creating the directory of"))?;
    let tmp = dir.join(format!(".credentials.toml.{}", std::process::id()));
    let text = toml::to_string(c).map_err(|e| Failure::new(USAGE, e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io(e, "writing"))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io(e, "writing"))?;
    std::fs::rename(&tmp, &p).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e, "writing")
    })?;
    Ok(p)
}

/// Removes the file; whether there was one.
pub fn remove() -> Res<bool> {
    let p = path()?;
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Failure::new(
            USAGE,
            format!("removing {}: {e}", p.display()),
        )),
    }
}
