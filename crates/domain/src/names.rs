//! Naming rules: what a file name, login or bundle name may be, and how names become archive paths.

use crate::model::{ArtifactInput, BundleInput};
use crate::{DomainError, Result};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// A user-supplied name in Unicode NFC, so that one name typed as precomposed characters ("é") or
/// decomposed ones ("e" + U+0301, as macOS file systems hand them out) is one name: one artifact,
/// one archive path, one match for a download by name. Applied wherever names come in.
pub fn nfc(s: &str) -> String {
    match is_nfc_quick(s.chars()) {
        IsNormalized::Yes => s.to_string(),
        _ => s.nfc().collect(),
    }
}

/// Whether two names are the same once normalised (names stored before normalisation included).
pub fn same_name(a: &str, b: &str) -> bool {
    a == b || nfc(a) == nfc(b)
}

impl BundleInput {
    /// The input with its name and version in NFC.
    pub fn into_nfc(self) -> Self {
        BundleInput {
            name: self.name.as_deref().map(nfc),
            version: self.version.as_deref().map(nfc),
            ..self
        }
    }
}

impl ArtifactInput {
    /// The input with its name in NFC.
    pub fn into_nfc(self) -> Self {
        ArtifactInput {
            name: self.name.as_deref().map(nfc),
            ..self
        }
    }
}

/// A file name as given in a URL (`.../bin/{fileName}`): one path segment, never a path.
pub fn validate_file_name(name: &str) -> Result<&str> {
    let bad = |why: &str| {
        Err(DomainError::Invalid(format!(
            "invalid file name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("not a file name");
    }
    if name.contains('/') || name.contains('\\') {
        return bad("contains a path separator");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains control characters");
    }
    Ok(name)
}

/// Paths the server answers itself at its root (the UForge face, CloudAPI's `my`, the page, the
/// operators' endpoints): a user of one of these names could not reach their CloudAPI paths.
pub const RESERVED_LOGINS: &[&str] = &["api", "my", "ui", "healthz", "readyz", "metrics", "v2"];

pub fn validate_login(login: &str) -> Result<&str> {
    let ok = !login.is_empty()
        && login.len() <= 64
        && login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        && !login.starts_with('.');
    // `api` is the UForge face's root, `my` CloudAPI's alias for the caller and `ui` the page's
    // assets: none can be a login.
    if RESERVED_LOGINS.contains(&login) {
        return Err(DomainError::Invalid(format!(
            "{login:?} is reserved and cannot be a login"
        )));
    }
    if ok {
        Ok(login)
    } else {
        Err(DomainError::Invalid(format!(
            "invalid login {login:?}: 1-64 characters of letters, digits, '.', '_', '-', '@'"
        )))
    }
}

/// Bundle names and versions: free text, but bounded and printable.
pub fn validate_label(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(DomainError::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > 255 {
        return Err(DomainError::Invalid(format!(
            "{what} is longer than 255 bytes"
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(DomainError::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// One archive path segment from a user-supplied name. Mirrors hammr's `remove_URI_forbidden_char`
/// (drops characters that are unsafe in paths and URIs) and never yields `.`/`..`/empty.
pub fn path_segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| {
            !matches!(
                c,
                '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' | '\0'
            ) && !c.is_control()
        })
        .collect();
    let cleaned = cleaned.trim().to_string();
    match cleaned.as_str() {
        "" | "." | ".." => "_".to_string(),
        _ => cleaned,
    }
}

/// The download name of a bundle archive: `<name>.tar.gz`, safe for a Content-Disposition header.
pub fn archive_file_name(bundle_name: &str) -> String {
    let base: String = path_segment(bundle_name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{base}.tar.gz")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn file_names() {
        assert!(validate_file_name("a.tar.gz").is_ok());
        assert!(validate_file_name("..").is_err());
        assert!(validate_file_name("../etc/passwd").is_err());
        assert!(validate_file_name("a\\b").is_err());
        assert!(validate_file_name("").is_err());
        assert!(validate_file_name("a\nb").is_err());
    }

    #[test]
    fn paths_of_the_faces_and_the_page_are_not_logins() {
        for login in ["api", "my", "ui", "healthz", "readyz", "metrics", "v2"] {
            assert!(validate_login(login).is_err(), "{login}");
        }
        assert!(validate_login("uix").is_ok());
    }

    #[test]
    fn segments() {
        assert_eq!(path_segment("my app"), "my app");
        assert_eq!(path_segment("../x"), "..x");
        assert_eq!(path_segment(".."), "_");
        assert_eq!(archive_file_name("My Bundle/1"), "My_Bundle1.tar.gz");
    }

    #[test]
    fn names_are_nfc() {
        let (composed, decomposed) = ("caf\u{e9}", "cafe\u{301}");
        assert_eq!(nfc(decomposed), composed);
        assert_eq!(nfc(composed), composed);
        assert!(same_name(composed, decomposed));
        assert!(!same_name("cafe", composed));
        let b = BundleInput {
            name: Some(decomposed.into()),
            version: Some(format!("1-{decomposed}")),
            description: Some(decomposed.into()),
            ..Default::default()
        }
        .into_nfc();
        assert_eq!(b.name.as_deref(), Some(composed));
        assert_eq!(b.version, Some(format!("1-{composed}")));
        // Free text is left as given.
        assert_eq!(b.description.as_deref(), Some(decomposed));
    }

    proptest! {
        #[test]
        fn segment_is_always_one_safe_component(s in ".*") {
            let seg = path_segment(&s);
            prop_assert!(!seg.is_empty());
            prop_assert!(seg != "." && seg != "..");
            prop_assert!(!seg.contains('/') && !seg.contains('\\') && !seg.contains('\0'));
        }

        #[test]
        fn validated_names_are_single_components(s in ".*") {
            if validate_file_name(&s).is_ok() {
                let p = std::path::Path::new(&s);
                prop_assert_eq!(p.components().count(), 1);
                prop_assert!(matches!(p.components().next(), Some(std::path::Component::Normal(_))));
            }
        }
    }
}
