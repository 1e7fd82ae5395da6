//! Object paths in the Manta style: `/<login>/stor/...` and `/<login>/public/...`. Parsing normalises
//! (`.`, `..`, repeated slashes, the `~~` alias for the caller's home) the way node's `path.normalize`
//! does, then confines the result to the caller's own namespace. ExportImage's naming rule lives here.

use super::model::Compression;
use crate::{DomainError, Result, RuleCode};

const MAX_PATH: usize = 1024;
const MAX_SEGMENT: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Stor,
    Public,
}

impl Area {
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Stor => "stor",
            Area::Public => "public",
        }
    }
}

/// A normalised path inside one account's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MantaPath {
    pub login: String,
    pub area: Area,
    /// Segments below the area root; empty for the root itself.
    pub rest: Vec<String>,
}

impl MantaPath {
    /// Parses `raw` as `caller` wrote it. Errors: `InvalidArgument` for a malformed path or one outside
    /// `stor`/`public`, `NotMantaPathOwner` for a path in another account.
    pub fn parse(raw: &str, caller: &str) -> Result<MantaPath> {
        if raw.len() > MAX_PATH {
            return Err(invalid(format!("path longer than {MAX_PATH} bytes")));
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(invalid("path contains control characters"));
        }
        let expanded;
        let raw = if let Some(rest) = raw.strip_prefix("~~") {
            expanded = format!("/{caller}{rest}");
            expanded.as_str()
        } else {
            raw
        };
        if !raw.starts_with('/') {
            return Err(invalid(format!(
                "{raw:?} is not an absolute path (expected /{caller}/stor/...)"
            )));
        }
        let mut segs: Vec<&str> = Vec::new();
        for s in raw.split('/') {
            match s {
                "" | "." => {}
                // As path.normalize: `..` above the root stays at the root.
                ".." => {
                    segs.pop();
                }
                s => segs.push(s),
            }
        }
        let Some((login, tail)) = segs.split_first() else {
            return Err(invalid("path names no account"));
        };
        if *login != caller {
            return Err(DomainError::rule(
                RuleCode::NotMantaPathOwner,
                format!("account {caller} is not the owner of Manta path {raw}"),
            ));
        }
        let area = match tail.first() {
            Some(&"stor") => Area::Stor,
            Some(&"public") => Area::Public,
            _ => {
                return Err(invalid(format!(
                    "{raw:?} is not under /{caller}/stor or /{caller}/public"
                )))
            }
        };
        let rest: Vec<String> = tail[1..].iter().map(|s| s.to_string()).collect();
        if let Some(long) = rest.iter().find(|s| s.len() > MAX_SEGMENT) {
            return Err(invalid(format!(
                "path segment of {} bytes is longer than {MAX_SEGMENT}",
                long.len()
            )));
        }
        Ok(MantaPath {
            login: caller.to_string(),
            area,
            rest,
        })
    }

    pub fn is_root(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn full(&self) -> String {
        let mut p = format!("/{}/{}", self.login, self.area.as_str());
        for s in &self.rest {
            p.push('/');
            p.push_str(s);
        }
        p
    }

    pub fn name(&self) -> Option<&str> {
        self.rest.last().map(String::as_str)
    }

    pub fn parent(&self) -> Option<MantaPath> {
        if self.rest.is_empty() {
            return None;
        }
        let mut p = self.clone();
        p.rest.pop();
        Some(p)
    }

    pub fn child(&self, name: &str) -> MantaPath {
        let mut p = self.clone();
        p.rest.push(name.to_string());
        p
    }

    /// The same path with `suffix` appended to its last segment (`/a/img` + `.imgmanifest`).
    fn with_suffix(&self, suffix: &str) -> Option<MantaPath> {
        let mut p = self.clone();
        let last = p.rest.last_mut()?;
        last.push_str(suffix);
        Some(p)
    }
}

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::rule(RuleCode::InvalidArgument, msg)
}

/// ExportImage's naming rule (IMGAPI): into a directory as `NAME-VER.imgmanifest` and
/// `NAME-VER.zfs[.EXT]`; otherwise `PATH.imgmanifest` and `PATH.zfs[.EXT]`.
pub fn export_targets(
    dest: &MantaPath,
    dest_is_dir: bool,
    name: &str,
    version: &str,
    compression: Compression,
) -> Result<(MantaPath, MantaPath)> {
    let ext = compression.extension();
    if dest_is_dir || dest.is_root() {
        let base = format!("{name}-{version}");
        Ok((
            dest.child(&format!("{base}.imgmanifest")),
            dest.child(&format!("{base}.zfs{ext}")),
        ))
    } else {
        match (
            dest.with_suffix(".imgmanifest"),
            dest.with_suffix(&format!(".zfs{ext}")),
        ) {
            (Some(m), Some(f)) => Ok((m, f)),
            _ => Err(invalid("manta_path names no object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(e: DomainError) -> &'static str {
        match e {
            DomainError::Rule { code, .. } => code.as_str(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_and_confines() {
        let p = MantaPath::parse("/alice/stor/a//b/./c/../d", "alice").unwrap();
        assert_eq!(p.full(), "/alice/stor/a/b/d");
        assert_eq!(p.parent().unwrap().full(), "/alice/stor/a/b");
        assert_eq!(
            MantaPath::parse("~~/public/x", "alice").unwrap().full(),
            "/alice/public/x"
        );
        assert!(MantaPath::parse("/alice/stor", "alice").unwrap().is_root());
        assert_eq!(
            code(MantaPath::parse("/bob/stor/x", "alice").unwrap_err()),
            "NotMantaPathOwner"
        );
        // Climbing out of one's own tree into another account's is still another account's.
        assert_eq!(
            code(MantaPath::parse("/alice/stor/../../bob/stor", "alice").unwrap_err()),
            "NotMantaPathOwner"
        );
        for bad in [
            "alice/stor",
            "/alice",
            "/alice/jobs/x",
            "/",
            "",
            "/alice/stor/\n",
        ] {
            assert_eq!(
                code(MantaPath::parse(bad, "alice").unwrap_err()),
                "InvalidArgument",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn export_naming_follows_imgapi() {
        let dir = MantaPath::parse("/alice/stor/images", "alice").unwrap();
        let (m, f) = export_targets(&dir, true, "foo", "1.0.0", Compression::Gzip).unwrap();
        assert_eq!(m.full(), "/alice/stor/images/foo-1.0.0.imgmanifest");
        assert_eq!(f.full(), "/alice/stor/images/foo-1.0.0.zfs.gz");
        let (m, f) = export_targets(&dir, false, "foo", "1.0.0", Compression::Bzip2).unwrap();
        assert_eq!(m.full(), "/alice/stor/images.imgmanifest");
        assert_eq!(f.full(), "/alice/stor/images.zfs.bz2");
        let (_, f) = export_targets(&dir, false, "foo", "1", Compression::None).unwrap();
        assert_eq!(f.full(), "/alice/stor/images.zfs");
        let (_, f) = export_targets(&dir, true, "foo", "1", Compression::Xz).unwrap();
        assert_eq!(f.full(), "/alice/stor/images/foo-1.zfs.xz");
        let root = MantaPath::parse("/alice/stor", "alice").unwrap();
        let (m, _) = export_targets(&root, false, "foo", "1", Compression::Xz).unwrap();
        assert_eq!(m.full(), "/alice/stor/foo-1.imgmanifest");
    }

    proptest! {
        #[test]
        fn parse_never_escapes(raw in "(/|~~)?([a-z.]{0,3}/){0,6}[a-z.]{0,4}", caller in "alice|bob") {
            if let Ok(p) = MantaPath::parse(&raw, &caller) {
                prop_assert_eq!(&p.login, &caller);
                let full = p.full();
                let prefix_stor = format!("/{caller}/stor");
                let prefix_public = format!("/{caller}/public");
                prop_assert!(full.starts_with(&prefix_stor) || full.starts_with(&prefix_public));
                prop_assert!(!p.rest.iter().any(|s| s.is_empty() || s == "." || s == ".."));
                // Normalising is idempotent.
                prop_assert_eq!(MantaPath::parse(&full, &caller).unwrap(), p);
            }
        }
    }
}
