//! HTTP Signature authentication with SSH keys, the way Joyent Triton CloudAPI and its
//! clients (`smartdc` → `smartdc-auth` → `http-signature` → `sshpk`) do it.
//!
//! This crate owns three things and nothing else:
//!
//! * **Keys** ([`PublicKey`], [`PrivateKey`]): parsing OpenSSH public key lines and unencrypted
//!   OpenSSH private key files, the fingerprints Triton uses to name keys (MD5 colon-hex in the
//!   `keyId`, SHA256 as `ssh-keygen` prints it), and signing/verifying with the HTTP-Signature
//!   algorithm names (`rsa-sha256`, `ecdsa-sha256`, `ed25519-sha512`, ...), using the exact
//!   signature encodings `sshpk` puts on the wire.
//! * **The header** ([`parse_authorization`], [`parse_key_id`], [`signing_string`]): turning an
//!   `Authorization: Signature keyId="/<login>/keys/<fp>",...` value into its parts and rebuilding
//!   the string the client signed.
//! * **Client-side signing** ([`sign_request`]) for Satchel's own tests and CLI.
//!
//! Quirks of the real client (smartdc@9.0.1, pinned by `tests/interop_node.rs`): P-384 keys only
//! work with a forced `ecdsa-sha256`/`ecdsa-sha512` (http-signature 1.4.0 has no sha384); RSA keys
//! used through ssh-agent sign `rsa-sha1`; and Ed25519 keys whose first public byte is >= 0x80 get
//! a wrong MD5 in `keyId` from `privateKeySigner` ([`PublicKey::sshpk_legacy_md5_fingerprint`]).
//!
//! It does no I/O, keeps no key store and applies no policy (clock skew, which headers must be
//! signed, key lookup): the CloudAPI face decides those. See [`verify_request`] for the one-call
//! check once the key has been found.

mod algorithm;
mod error;
mod header;
mod key;
mod private_file;

pub use algorithm::Algorithm;
pub use error::Error;
pub use header::{
    parse_authorization, parse_key_id, sign_request, signing_string, verify_request, Authorization,
    KeyRef,
};
pub use key::{PrivateKey, PublicKey};
