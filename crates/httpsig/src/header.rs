//! The `Authorization: Signature ...` header: parsing it, parsing its Triton `keyId`, rebuilding
//! the signing string, and (client side) producing it.
//!
//! What smartdc@9.0.1 sends (smartdc-auth `requestSigner` → http-signature 1.4.0 `createSigner`
//! → `writeDateHeader`) is exactly
//!
//! ```text
//! Signature keyId="/<login>/keys/<md5 aa:bb:..>",algorithm="rsa-sha256",headers="date",signature="<base64>"
//! ```
//!
//! signed over the single line `date: <Date header value>`. Sub-users use
//! `/<login>/users/<user>/keys/<fp>`.
//!
//! The parser is a little more lenient than http-signature's (which allows no spaces and
//! case-sensitive names): the scheme and parameter names are case-insensitive and optional
//! whitespace around `,` and `=` is allowed, since other clients send that. It is stricter in
//! one way: a repeated parameter is an error instead of last-one-wins.

use crate::algorithm::{truncate, Algorithm};
use crate::{Error, PrivateKey, PublicKey};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Standard-alphabet base64 that does not insist on `=` padding: some signers strip it.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A parsed `Authorization: Signature ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The `keyId` parameter, verbatim (see [`parse_key_id`]).
    pub key_id: String,
    /// The `algorithm` parameter, lower-cased (not yet checked against the supported set).
    pub algorithm: String,
    /// The `headers` parameter split on whitespace and lower-cased; `["date"]` when absent.
    pub headers: Vec<String>,
    /// The `signature` parameter, base64-decoded.
    pub signature: Vec<u8>,
}

/// Parses `Signature keyId="..",algorithm="..",headers="..",signature=".."`.
///
/// Scheme and parameter names are case-insensitive; parameters may come in any order; values
/// are quoted (unquoted tokens are also accepted, e.g. `created=123`); `headers` is optional and
/// defaults to `["date"]`; unknown parameters are ignored. Repeated parameters, a missing
/// `keyId`/`algorithm`/`signature`, or a signature that is not base64 are
/// [`Error::Malformed`]. Never panics.
pub fn parse_authorization(value: &str) -> Result<Authorization, Error> {
    let value = value.trim_matches(is_ows);
    let (scheme, rest) = match value.find(is_ows) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("Signature") {
        return Err(Error::Malformed(format!(
            "authorization scheme is {:?}, expected \"Signature\"",
            truncate(scheme, 32)
        )));
    }
    let params = parse_params(rest)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &str, display: &str| match get(name) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(Error::Malformed(format!("{display} was not specified"))),
    };
    let key_id = required("keyid", "keyId")?;
    let algorithm = required("algorithm", "algorithm")?.to_ascii_lowercase();
    let signature_b64 = required("signature", "signature")?;
    let signature = LENIENT_BASE64
        .decode(signature_b64.as_bytes())
        .map_err(|e| Error::Malformed(format!("signature is not valid base64: {e}")))?;
    let mut headers: Vec<String> = get("headers")
        .unwrap_or("")
        .split_ascii_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    if headers.is_empty() {
        headers.push("date".to_string());
    }
    Ok(Authorization {
        key_id,
        algorithm,
        headers,
        signature,
    })
}

/// SP / HTAB, the "optional whitespace" of HTTP.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses `name=value, name="value", ...` into lower-cased names and values.
fn parse_params(input: &str) -> Result<Vec<(String, String)>, Error> {
    let mut params: Vec<(String, String)> = Vec::new();
    let mut rest = input.trim_start_matches(is_ows);
    while !rest.is_empty() {
        // Name: token characters up to '=' (http-signature allows only letters; be a little
        // wider so odd-but-harmless parameters of other clients do not fail the whole header).
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 {
            return Err(Error::Malformed(format!(
                "expected a parameter name at {:?}",
                truncate(rest, 16)
            )));
        }
        let name = rest[..name_len].to_ascii_lowercase();
        rest = rest[name_len..].trim_start_matches(is_ows);
        rest = rest.strip_prefix('=').ok_or_else(|| {
            Error::Malformed(format!(
                "expected '=' after parameter {:?}",
                truncate(&name, 32)
            ))
        })?;
        rest = rest.trim_start_matches(is_ows);
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            // No escapes: http-signature has none either, and no legitimate value contains '"'.
            let end = quoted.find('"').ok_or_else(|| {
                Error::Malformed(format!(
                    "unterminated quoted value for parameter {:?}",
                    truncate(&name, 32)
                ))
            })?;
            value = quoted[..end].to_string();
            rest = &quoted[end + 1..];
        } else {
            let end = rest
                .find(|c: char| c == ',' || is_ows(c))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(Error::Malformed(format!(
                    "empty value for parameter {:?}",
                    truncate(&name, 32)
                )));
            }
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(Error::Malformed(format!(
                "duplicate parameter {:?}",
                truncate(&name, 32)
            )));
        }
        params.push((name, value));
        rest = rest.trim_start_matches(is_ows);
        if rest.is_empty() {
            break;
        }
        rest = rest.strip_prefix(',').ok_or_else(|| {
            Error::Malformed(format!("expected ',' before {:?}", truncate(rest, 16)))
        })?;
        rest = rest.trim_start_matches(is_ows);
        if rest.is_empty() {
            return Err(Error::Malformed(
                "trailing ',' after the last parameter".into(),
            ));
        }
    }
    Ok(params)
}

/// Whose key a Triton `keyId` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// `/<login>/keys/<key>`: a key of the account itself.
    Account {
        /// Account login.
        login: String,
        /// Key identifier: the MD5 fingerprint for smartdc, possibly a key name for old clients.
        key: String,
    },
    /// `/<login>/users/<user>/keys/<key>`: a key of a sub-user (RBAC) of the account.
    SubUser {
        /// Account login.
        login: String,
        /// Sub-user login.
        user: String,
        /// Key identifier.
        key: String,
    },
}

impl KeyRef {
    /// The account login.
    pub fn login(&self) -> &str {
        match self {
            KeyRef::Account { login, .. } | KeyRef::SubUser { login, .. } => login,
        }
    }

    /// The key identifier (fingerprint or name).
    pub fn key(&self) -> &str {
        match self {
            KeyRef::Account { key, .. } | KeyRef::SubUser { key, .. } => key,
        }
    }

    /// The keyId string, as smartdc-auth builds it.
    pub fn to_key_id(&self) -> String {
        match self {
            KeyRef::Account { login, key } => format!("/{login}/keys/{key}"),
            KeyRef::SubUser { login, user, key } => format!("/{login}/users/{user}/keys/{key}"),
        }
    }
}

/// Parses a Triton keyId: `/<login>/keys/<id>` → [`KeyRef::Account`],
/// `/<login>/users/<sub>/keys/<id>` → [`KeyRef::SubUser`]; anything else (extra or empty
/// segments, other words) is [`Error::Malformed`].
pub fn parse_key_id(key_id: &str) -> Result<KeyRef, Error> {
    let bad = || {
        Error::Malformed(format!(
            "keyId {:?} is not /<login>/keys/<fingerprint> or /<login>/users/<user>/keys/<fingerprint>",
            truncate(key_id, 128)
        ))
    };
    let segments: Vec<&str> = key_id
        .strip_prefix('/')
        .ok_or_else(bad)?
        .split('/')
        .collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(bad());
    }
    match segments.as_slice() {
        [login, "keys", key] => Ok(KeyRef::Account {
            login: login.to_string(),
            key: key.to_string(),
        }),
        [login, "users", user, "keys", key] => Ok(KeyRef::SubUser {
            login: login.to_string(),
            user: user.to_string(),
            key: key.to_string(),
        }),
        _ => Err(bad()),
    }
}

/// Builds the signing string: for each listed header, `name: value` (name lower-cased), joined
/// with `\n`. Two pseudo-headers are computed rather than looked up:
/// `(request-target)` gives `(request-target): <lowercase method> <path?query>`, and
/// `request-line` (old Joyent draft) gives `<METHOD> <path?query> HTTP/1.1`.
///
/// `get` is called with the lower-cased header name and returns the request's value (several
/// values already joined by the caller). A listed header it does not know is
/// [`Error::MissingHeader`]; an empty list is [`Error::Malformed`].
pub fn signing_string(
    headers: &[String],
    method: &str,
    path_and_query: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    if headers.is_empty() {
        return Err(Error::Malformed("no headers to sign".into()));
    }
    let mut lines = Vec::with_capacity(headers.len());
    for header in headers {
        let name = header.to_ascii_lowercase();
        let line = match name.as_str() {
            "(request-target)" => format!(
                "(request-target): {} {}",
                method.to_ascii_lowercase(),
                path_and_query
            ),
            "request-line" => format!("{method} {path_and_query} HTTP/1.1"),
            _ => match get(&name) {
                Some(value) => format!("{name}: {value}"),
                None => return Err(Error::MissingHeader(truncate(&name, 64))),
            },
        };
        lines.push(line);
    }
    Ok(lines.join("\n"))
}

/// Verifies a parsed header against the key it names: rebuilds the signing string from the
/// request and checks the signature. The caller has already found `key` from
/// `auth.key_id` and applies its own policy (clock skew on `date`, required headers).
pub fn verify_request(
    auth: &Authorization,
    key: &PublicKey,
    method: &str,
    path_and_query: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    let data = signing_string(&auth.headers, method, path_and_query, get)?;
    key.verify(&auth.algorithm, data.as_bytes(), &auth.signature)
}

/// Client side: signs a request and returns the whole `Authorization` header value, formatted
/// byte-for-byte as http-signature does
/// (`Signature keyId="..",algorithm="..",headers="..",signature=".."`).
///
/// `algorithm` may be empty for the key's default ([`PrivateKey::default_algorithm`]);
/// `headers` may be empty for `["date"]`. The caller sets the `Date` header itself (e.g.
/// `httpdate::fmt_http_date`) and serves it through `get`.
pub fn sign_request(
    key: &PrivateKey,
    key_id: &str,
    algorithm: &str,
    headers: &[String],
    method: &str,
    path_and_query: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    // Quotes or line breaks would produce a header that parses differently than intended.
    if key_id.is_empty() || key_id.contains(|c: char| c == '"' || c.is_control()) {
        return Err(Error::Malformed(
            "keyId must be non-empty and contain no quotes or control characters".into(),
        ));
    }
    let algorithm = if algorithm.is_empty() {
        key.default_algorithm()
    } else {
        algorithm
    };
    let alg = Algorithm::parse(algorithm)?;
    let default_headers = ["date".to_string()];
    let headers: Vec<String> = if headers.is_empty() {
        default_headers.to_vec()
    } else {
        headers.iter().map(|h| h.to_ascii_lowercase()).collect()
    };
    if headers
        .iter()
        .any(|h| h.is_empty() || h.contains(|c: char| c == '"' || c.is_whitespace()))
    {
        return Err(Error::Malformed(
            "header names must be non-empty and contain no quotes or whitespace".into(),
        ));
    }
    let data = signing_string(&headers, method, path_and_query, get)?;
    let signature = key.sign(alg.name(), data.as_bytes())?;
    Ok(format!(
        "Signature keyId=\"{}\",algorithm=\"{}\",headers=\"{}\",signature=\"{}\"",
        key_id,
        alg.name(),
        headers.join(" "),
        STANDARD.encode(signature)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_smartdc_sends() {
        let a = parse_authorization(
            "Signature keyId=\"/bob/keys/4a:f5:d4:fa:e6:9a:0c:8e:d2:80:f7:98:51:b7:03:0f\",\
             algorithm=\"rsa-sha256\",headers=\"date\",signature=\"AAEC\"",
        )
        .unwrap();
        assert_eq!(
            a,
            Authorization {
                key_id: "/bob/keys/4a:f5:d4:fa:e6:9a:0c:8e:d2:80:f7:98:51:b7:03:0f".into(),
                algorithm: "rsa-sha256".into(),
                headers: vec!["date".into()],
                signature: vec![0, 1, 2],
            }
        );
    }

    #[test]
    fn lenient_forms() {
        let a = parse_authorization(
            "  signature  signature=\"AAEC\" , HEADERS = \"(request-target) Date X-Foo\",\
             created=1700000000, Algorithm=\"ECDSA-SHA256\", keyid=\"/a/users/b/keys/c\"\t",
        )
        .unwrap();
        assert_eq!(a.key_id, "/a/users/b/keys/c");
        assert_eq!(a.algorithm, "ecdsa-sha256");
        assert_eq!(a.headers, vec!["(request-target)", "date", "x-foo"]);
        assert_eq!(a.signature, vec![0, 1, 2]);
        // Unpadded base64 and an empty headers list.
        let a = parse_authorization(
            "Signature keyId=\"k\",algorithm=\"a\",headers=\"\",signature=\"AAECAw\"",
        )
        .unwrap();
        assert_eq!(a.signature, vec![0, 1, 2, 3]);
        assert_eq!(a.headers, vec!["date"]);
    }

    fn malformed(value: &str) -> String {
        match parse_authorization(value) {
            Err(Error::Malformed(m)) => m,
            other => panic!("{value:?}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn malformed_headers() {
        let ok_rest = "algorithm=\"rsa-sha256\",signature=\"AAEC\"";
        assert!(malformed(&format!("Basic keyId=\"k\",{ok_rest}")).contains("scheme"));
        assert!(malformed("Signature").contains("keyId was not specified"));
        assert!(malformed("").contains("scheme"));
        assert!(malformed(&format!("Signature {ok_rest}")).contains("keyId"));
        assert!(malformed(&format!("Signature keyId=\"\",{ok_rest}")).contains("keyId"));
        assert!(malformed("Signature keyId=\"k\",signature=\"AAEC\"").contains("algorithm was not"));
        assert!(
            malformed("Signature keyId=\"k\",algorithm=\"rsa-sha256\"").contains("signature was")
        );
        assert!(
            malformed(&format!("Signature keyId=\"k\",keyId=\"j\",{ok_rest}"))
                .contains("duplicate parameter \"keyid\"")
        );
        assert!(
            malformed(&format!("Signature keyId=\"k\",KEYID=\"k\",{ok_rest}"))
                .contains("duplicate")
        );
        assert!(malformed(
            "Signature keyId=\"k\",algorithm=\"rsa-sha256\",signature=\"not base64!\""
        )
        .contains("base64"));
        assert!(malformed("Signature keyId=\"k").contains("unterminated"));
        assert!(malformed(&format!("Signature keyId=\"k\" {ok_rest}")).contains("','"));
        assert!(malformed(&format!("Signature keyId \"k\",{ok_rest}")).contains("'='"));
        assert!(malformed(&format!("Signature keyId=\"k\",{ok_rest},")).contains("trailing"));
        assert!(malformed(&format!("Signature ,keyId=\"k\",{ok_rest}")).contains("name"));
        assert!(malformed(&format!("Signature keyId=,{ok_rest}")).contains("empty value"));
    }

    #[test]
    fn key_ids() {
        assert_eq!(
            parse_key_id("/bob/keys/aa:bb").unwrap(),
            KeyRef::Account {
                login: "bob".into(),
                key: "aa:bb".into()
            }
        );
        let sub = parse_key_id("/bob/users/alice/keys/aa:bb").unwrap();
        assert_eq!(
            sub,
            KeyRef::SubUser {
                login: "bob".into(),
                user: "alice".into(),
                key: "aa:bb".into()
            }
        );
        assert_eq!(sub.login(), "bob");
        assert_eq!(sub.key(), "aa:bb");
        assert_eq!(sub.to_key_id(), "/bob/users/alice/keys/aa:bb");
        for bad in [
            "",
            "/",
            "bob/keys/x",
            "/bob/keys/",
            "/bob/keys",
            "//keys/x",
            "/bob/key/x",
            "/bob/keys/x/y",
            "/bob/users//keys/x",
            "/bob/users/al/keys/",
            "/bob/user/al/keys/x",
            "/bob/users/al/x/keys/y",
        ] {
            assert!(
                matches!(parse_key_id(bad), Err(Error::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn signing_strings() {
        let get = |h: &str| match h {
            "date" => Some("Thu, 01 Jan 2026 00:00:00 GMT".to_string()),
            "x-foo" => Some("bar".to_string()),
            _ => None,
        };
        let headers: Vec<String> = ["(request-target)", "Date", "request-line", "x-foo"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            signing_string(&headers, "POST", "/bob/images?action=export", get).unwrap(),
            "(request-target): post /bob/images?action=export\n\
             date: Thu, 01 Jan 2026 00:00:00 GMT\n\
             POST /bob/images?action=export HTTP/1.1\n\
             x-foo: bar"
        );
        assert_eq!(
            signing_string(&["date".into(), "content-md5".into()], "GET", "/", get),
            Err(Error::MissingHeader("content-md5".into()))
        );
        assert!(matches!(
            signing_string(&[], "GET", "/", get),
            Err(Error::Malformed(_))
        ));
    }
}
