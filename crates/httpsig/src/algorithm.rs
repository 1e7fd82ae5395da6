//! HTTP-Signature algorithm names (`<key type>-<hash>`) and the hashes behind them.
//!
//! The accepted set is what Triton clients actually send: sshpk's defaults per key type
//! (`rsa-sha256`, `ecdsa-sha256/384/512` by curve size, `ed25519-sha512`), `rsa-sha1` (what
//! smartdc-auth reports for RSA keys signed through ssh-agent), `rsa-sha512` (a client may force
//! it), and bare `ed25519` (newer http-signature spelling). Anything else — `dsa-*`, `hmac-*`,
//! `rsa-sha384`, ... — is [`Error::UnsupportedAlgorithm`].

use crate::Error;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// A supported HTTP-Signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `rsa-sha1`: RSASSA-PKCS1-v1_5 with SHA-1 (ssh-agent signatures).
    RsaSha1,
    /// `rsa-sha256`: RSASSA-PKCS1-v1_5 with SHA-256 (sshpk's default for RSA).
    RsaSha256,
    /// `rsa-sha512`: RSASSA-PKCS1-v1_5 with SHA-512.
    RsaSha512,
    /// `ecdsa-sha256`: ECDSA over SHA-256 (sshpk's default for P-256).
    EcdsaSha256,
    /// `ecdsa-sha384`: ECDSA over SHA-384 (sshpk's default for P-384).
    EcdsaSha384,
    /// `ecdsa-sha512`: ECDSA over SHA-512 (sshpk's default for P-521).
    EcdsaSha512,
    /// `ed25519-sha512` or `ed25519`: pure Ed25519 (SHA-512 is internal to the scheme).
    Ed25519,
}

/// Hash functions used by the algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl Algorithm {
    /// Parses an algorithm name, case-insensitively (http-signature lower-cases it too).
    pub fn parse(name: &str) -> Result<Algorithm, Error> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "rsa-sha1" => Algorithm::RsaSha1,
            "rsa-sha256" => Algorithm::RsaSha256,
            "rsa-sha512" => Algorithm::RsaSha512,
            "ecdsa-sha256" => Algorithm::EcdsaSha256,
            "ecdsa-sha384" => Algorithm::EcdsaSha384,
            "ecdsa-sha512" => Algorithm::EcdsaSha512,
            "ed25519" | "ed25519-sha512" => Algorithm::Ed25519,
            _ => return Err(Error::UnsupportedAlgorithm(truncate(name, 64))),
        })
    }

    /// The canonical name, as sshpk/http-signature would write it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha1 => "rsa-sha1",
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::RsaSha512 => "rsa-sha512",
            Algorithm::EcdsaSha256 => "ecdsa-sha256",
            Algorithm::EcdsaSha384 => "ecdsa-sha384",
            Algorithm::EcdsaSha512 => "ecdsa-sha512",
            Algorithm::Ed25519 => "ed25519-sha512",
        }
    }

    /// The key type the algorithm needs, in sshpk's naming.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha1 | Algorithm::RsaSha256 | Algorithm::RsaSha512 => "rsa",
            Algorithm::EcdsaSha256 | Algorithm::EcdsaSha384 | Algorithm::EcdsaSha512 => "ecdsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// All supported algorithms, for tests and documentation.
    pub fn all() -> [Algorithm; 7] {
        [
            Algorithm::RsaSha1,
            Algorithm::RsaSha256,
            Algorithm::RsaSha512,
            Algorithm::EcdsaSha256,
            Algorithm::EcdsaSha384,
            Algorithm::EcdsaSha512,
            Algorithm::Ed25519,
        ]
    }

    /// The hash applied to the data before the public-key operation (`None` for Ed25519,
    /// which hashes internally).
    pub(crate) fn hash(self) -> Option<Hash> {
        match self {
            Algorithm::RsaSha1 => Some(Hash::Sha1),
            Algorithm::RsaSha256 | Algorithm::EcdsaSha256 => Some(Hash::Sha256),
            Algorithm::EcdsaSha384 => Some(Hash::Sha384),
            Algorithm::RsaSha512 | Algorithm::EcdsaSha512 => Some(Hash::Sha512),
            Algorithm::Ed25519 => None,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shortens client-supplied text before it goes into an error message, so a huge header
/// cannot make a huge log line. Cuts on a char boundary.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((idx, _)) => format!("{}...", &s[..idx]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_name_case_insensitively() {
        for alg in Algorithm::all() {
            assert_eq!(Algorithm::parse(alg.name()).unwrap(), alg);
            assert_eq!(
                Algorithm::parse(&alg.name().to_ascii_uppercase()).unwrap(),
                alg
            );
        }
        assert_eq!(Algorithm::parse("ed25519").unwrap(), Algorithm::Ed25519);
    }

    #[test]
    fn rejects_unsupported_names() {
        for name in [
            "dsa-sha1",
            "hmac-sha256",
            "rsa-sha384",
            "rsa",
            "",
            "ecdsa-sha1",
        ] {
            assert_eq!(
                Algorithm::parse(name),
                Err(Error::UnsupportedAlgorithm(name.to_string()))
            );
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé...");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
