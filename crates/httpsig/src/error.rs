//! The crate's single error type. Variants are coarse on purpose, one per way a caller reacts
//! (a CloudAPI face can map each to its HTTP error), and messages are safe to show to the
//! client: they never contain key material, and echoed input is truncated.

/// Everything that can go wrong parsing, signing or verifying.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The `Authorization` header, its `keyId`, or an argument is not well-formed.
    #[error("malformed HTTP signature: {0}")]
    Malformed(String),
    /// The algorithm name is not one this crate (or Triton) supports, e.g. `dsa-sha1`, `hmac-sha256`.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The algorithm is supported but is for another key type (`rsa-sha256` with an ECDSA key).
    #[error("algorithm {algorithm:?} cannot be used with a key of type {key_type}")]
    AlgorithmMismatch {
        /// The algorithm that was asked for (lower-cased).
        algorithm: String,
        /// The key's type in sshpk's naming: `rsa`, `ecdsa`, `ed25519`.
        key_type: &'static str,
    },
    /// The signature does not verify (wrong key, tampered data, or a garbled signature).
    #[error("signature verification failed")]
    BadSignature,
    /// A header listed in the signature's `headers` is not in the request.
    #[error("header {0:?} is listed as signed but is missing from the request")]
    MissingHeader(String),
    /// A key could not be parsed or used (bad encoding, unsupported type, encrypted, too small).
    #[error("unusable SSH key: {0}")]
    BadKey(String),
}
