//! Naming rules: what a file name, login or bundle name may be, and how names become archive paths.

use crate::{DomainError, Result};

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

/// A login: what `satchel admin user add` accepts.
pub const RESERVED_LOGINS: &[&str] = &["api", "my"];

pub fn validate_login(login: &str) -> Result<&str> {
    let ok = !login.is_empty()
        && login.len() <= 64
        && login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        && !login.starts_with('.');
    // `api` is the UForge face's root and `my` CloudAPI's alias for the caller: neither can be a login.
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
    fn segments() {
        assert_eq!(path_segment("my app"), "my app");
        assert_eq!(path_segment("../x"), "..x");
        assert_eq!(path_segment(".."), "_");
        assert_eq!(archive_file_name("My Bundle/1"), "My_Bundle1.tar.gz");
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
