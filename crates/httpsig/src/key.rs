//! SSH keys: parsing (OpenSSH public key lines, unencrypted OpenSSH private key files),
//! fingerprints, and the signature primitives behind the HTTP-Signature algorithms.
//!
//! Public keys are parsed by `ssh-key`, private key files by [`crate::private_file`]; every key
//! is then converted once, at parse time, into the RustCrypto type that does the math (`rsa`, `p256`/`p384`/`p521`, `ed25519-dalek`), so a key
//! that cannot be used (point not on the curve, absurd RSA modulus) is rejected up front rather
//! than on the first request.
//!
//! Wire encodings follow sshpk 1.7.1, which is what `smartdc` signs with:
//! RSA is RSASSA-PKCS1-v1_5, ECDSA is ASN.1 DER `SEQUENCE { r, s }` (we also accept the fixed-size
//! `r || s` form), Ed25519 is the raw 64-byte signature.

use crate::algorithm::{truncate, Algorithm, Hash};
use crate::private_file::{self, SecretFields};
use crate::Error;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign};
use sha2::Sha256;
use ssh_key::public::{EcdsaPublicKey, KeyData};

/// Verifies an ECDSA signature on curve `$curve` over an already-computed digest, accepting DER
/// (what sshpk sends) or fixed-size `r||s`. A macro rather than a generic function because
/// p521's key types are newtypes, not the generic `ecdsa` ones.
macro_rules! verify_ecdsa {
    ($curve:ident, $field_len:expr, $key:expr, $digest:expr, $sig:expr) => {{
        let prehash = pad_prehash($digest, $field_len);
        let sig: &[u8] = $sig;
        let der = $curve::ecdsa::Signature::from_der(sig).ok();
        // Trying both encodings weakens nothing: whichever is tried still has to verify.
        let fixed = if sig.len() == 2 * $field_len {
            $curve::ecdsa::Signature::from_slice(sig).ok()
        } else {
            None
        };
        if [der, fixed]
            .iter()
            .flatten()
            .any(|s| $key.verify_prehash(&prehash, s).is_ok())
        {
            Ok(())
        } else {
            Err(Error::BadSignature)
        }
    }};
}

/// Signs an already-computed digest on curve `$curve` (RFC 6979 deterministic nonce) and
/// returns the DER encoding sshpk produces.
macro_rules! sign_ecdsa {
    ($curve:ident, $field_len:expr, $key:expr, $digest:expr) => {{
        let prehash = pad_prehash($digest, $field_len);
        let sig: $curve::ecdsa::Signature = $key
            .sign_prehash(&prehash)
            .map_err(|e| Error::BadKey(format!("ECDSA signing failed: {e}")))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }};
}

/// Smallest RSA modulus we accept. Triton has long-lived accounts with 1024-bit keys, so the
/// floor is 1024 (ssh-key's own conversion insists on 2048, which is why we convert ourselves).
const MIN_RSA_BITS: usize = 1024;
/// Largest RSA modulus we accept; bounds the cost of one verification.
const MAX_RSA_BITS: usize = 16384;

/// The RustCrypto verifying key behind a [`PublicKey`].
#[derive(Clone)]
enum Verifying {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// An SSH public key usable for HTTP-Signature verification: RSA, ECDSA (P-256, P-384, P-521)
/// or Ed25519. DSA and security-key (`sk-*`) types are rejected as [`Error::BadKey`].
#[derive(Clone)]
pub struct PublicKey {
    verifying: Verifying,
    /// The SSH wire-format key blob (what the base64 in a `.pub` line decodes to); both
    /// fingerprints are hashes of it.
    blob: Vec<u8>,
    comment: Option<String>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.ssh_algorithm())
            .field("bits", &self.bits())
            .field("md5", &self.md5_fingerprint())
            .field("comment", &self.comment)
            .finish()
    }
}

/// Two keys are equal when their key material is; the comment does not count.
impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.blob == other.blob
    }
}
impl Eq for PublicKey {}

impl PublicKey {
    /// One OpenSSH public key line (`"ssh-ed25519 AAAA... comment"`) or an `.pub` file's contents
    /// (the first non-empty line that is not a `#` comment is used).
    pub fn parse_openssh(text: &str) -> Result<PublicKey, Error> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| Error::BadKey("no public key line found".into()))?;
        let key = ssh_key::PublicKey::from_openssh(line)
            .map_err(|e| Error::BadKey(format!("not an OpenSSH public key line: {e}")))?;
        Self::from_ssh_key(&key)
    }

    /// A key from its SSH wire-format blob (the base64-decoded middle field of a `.pub` line,
    /// or what an ssh-agent lists).
    pub fn from_ssh_blob(blob: &[u8]) -> Result<PublicKey, Error> {
        let key = ssh_key::PublicKey::from_bytes(blob)
            .map_err(|e| Error::BadKey(format!("not an SSH public key blob: {e}")))?;
        Self::from_ssh_key(&key)
    }

    fn from_ssh_key(key: &ssh_key::PublicKey) -> Result<PublicKey, Error> {
        let verifying = match key.key_data() {
            KeyData::Rsa(rsa_key) => {
                let n = mpint_to_biguint(&rsa_key.n, "RSA modulus")?;
                let e = mpint_to_biguint(&rsa_key.e, "RSA exponent")?;
                let bits = n.bits();
                if bits < MIN_RSA_BITS {
                    return Err(Error::BadKey(format!(
                        "RSA key of {bits} bits is too small (minimum {MIN_RSA_BITS})"
                    )));
                }
                let pk = rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
                    .map_err(|e| Error::BadKey(format!("invalid RSA public key: {e}")))?;
                Verifying::Rsa(pk)
            }
            KeyData::Ecdsa(ec) => {
                let bad = |_| Error::BadKey("ECDSA public point is not on its curve".into());
                match ec {
                    EcdsaPublicKey::NistP256(_) => {
                        Verifying::P256(p256::ecdsa::VerifyingKey::try_from(ec).map_err(bad)?)
                    }
                    EcdsaPublicKey::NistP384(_) => {
                        Verifying::P384(p384::ecdsa::VerifyingKey::try_from(ec).map_err(bad)?)
                    }
                    EcdsaPublicKey::NistP521(_) => {
                        Verifying::P521(p521::ecdsa::VerifyingKey::try_from(ec).map_err(bad)?)
                    }
                }
            }
            KeyData::Ed25519(ed) => Verifying::Ed25519(
                ed25519_dalek::VerifyingKey::try_from(ed)
                    .map_err(|_| Error::BadKey("invalid Ed25519 public key".into()))?,
            ),
            _ => {
                return Err(Error::BadKey(format!(
                    "unsupported key type {}",
                    truncate(key.algorithm().as_str(), 64)
                )))
            }
        };
        // Re-encode rather than keep the caller's bytes: the fingerprint must be of the
        // canonical blob, which is what ssh-keygen and sshpk hash.
        let blob = key
            .to_bytes()
            .map_err(|e| Error::BadKey(format!("cannot encode key: {e}")))?;
        let comment = Some(key.comment().trim())
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        Ok(PublicKey {
            verifying,
            blob,
            comment,
        })
    }

    /// The MD5 fingerprint as `ssh-keygen -E md5 -l` prints it after `MD5:` — lower-case hex
    /// pairs joined by `:`. This is the `<fp>` in a Triton keyId `/<login>/keys/<fp>`.
    pub fn md5_fingerprint(&self) -> String {
        colon_hex(&Md5::digest(&self.blob))
    }

    /// The SHA256 fingerprint as `ssh-keygen -l` prints it: `SHA256:` + unpadded base64.
    pub fn sha256_fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(&self.blob))
        )
    }

    /// The MD5 fingerprint sshpk 1.7.1 (the version smartdc@9.0.1 uses) computes for this key
    /// when it reads it from an OpenSSH *private* key file, if that differs from the real one.
    ///
    /// sshpk 1.7.1 keeps the Ed25519 public key from such files as if it were an mpint: when its
    /// first byte is >= 0x80 it gets a leading zero byte, so the blob — and the MD5 fingerprint
    /// it puts in `keyId` via `privateKeySigner` — changes. (Its `cliSigner` instead fails with
    /// "could not be located" for such keys.) A server that wants to accept those clients can
    /// look keys up by this value too. `None` for every other key.
    pub fn sshpk_legacy_md5_fingerprint(&self) -> Option<String> {
        let Verifying::Ed25519(vk) = &self.verifying else {
            return None;
        };
        let raw = vk.as_bytes();
        if raw[0] < 0x80 {
            return None;
        }
        let mut padded = Vec::with_capacity(33);
        padded.push(0);
        padded.extend_from_slice(raw);
        let mut blob = Vec::with_capacity(51);
        put_ssh_string(&mut blob, b"ssh-ed25519");
        put_ssh_string(&mut blob, &padded);
        Some(colon_hex(&Md5::digest(&blob)))
    }

    /// The key type in sshpk's naming: `"rsa"`, `"ecdsa"` or `"ed25519"`.
    pub fn key_type(&self) -> &'static str {
        match self.verifying {
            Verifying::Rsa(_) => "rsa",
            Verifying::P256(_) | Verifying::P384(_) | Verifying::P521(_) => "ecdsa",
            Verifying::Ed25519(_) => "ed25519",
        }
    }

    /// The SSH algorithm name: `ssh-rsa`, `ecdsa-sha2-nistp256`/`384`/`521`, `ssh-ed25519`.
    pub fn ssh_algorithm(&self) -> String {
        match self.verifying {
            Verifying::Rsa(_) => "ssh-rsa",
            Verifying::P256(_) => "ecdsa-sha2-nistp256",
            Verifying::P384(_) => "ecdsa-sha2-nistp384",
            Verifying::P521(_) => "ecdsa-sha2-nistp521",
            Verifying::Ed25519(_) => "ssh-ed25519",
        }
        .to_string()
    }

    /// Key size in bits as sshpk and ssh-keygen report it (RSA modulus length, curve size,
    /// 256 for Ed25519).
    pub fn bits(&self) -> u32 {
        match &self.verifying {
            Verifying::Rsa(k) => u32::try_from(k.n().bits()).unwrap_or(u32::MAX),
            Verifying::P256(_) => 256,
            Verifying::P384(_) => 384,
            Verifying::P521(_) => 521,
            Verifying::Ed25519(_) => 256,
        }
    }

    /// The canonical one-line OpenSSH form: `"<type> <base64>"`, plus `" <comment>"` if any.
    pub fn to_openssh(&self) -> String {
        let mut line = format!("{} {}", self.ssh_algorithm(), STANDARD.encode(&self.blob));
        if let Some(c) = &self.comment {
            line.push(' ');
            line.push_str(c);
        }
        line
    }

    /// The SSH wire-format key blob.
    pub fn ssh_blob(&self) -> &[u8] {
        &self.blob
    }

    /// The comment from the key line, if it had a non-empty one.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The algorithm sshpk picks for this key when none is forced (see
    /// [`PrivateKey::default_algorithm`]).
    pub fn default_algorithm(&self) -> &'static str {
        match self.verifying {
            Verifying::Rsa(_) => "rsa-sha256",
            Verifying::P256(_) => "ecdsa-sha256",
            Verifying::P384(_) => "ecdsa-sha384",
            Verifying::P521(_) => "ecdsa-sha512",
            Verifying::Ed25519(_) => "ed25519-sha512",
        }
    }

    /// Verifies `signature` (raw bytes, already base64-decoded) over `data` with the
    /// HTTP-Signature algorithm name `rsa-sha1 | rsa-sha256 | rsa-sha512 | ecdsa-sha256 |
    /// ecdsa-sha384 | ecdsa-sha512 | ed25519 | ed25519-sha512` (case-insensitive).
    ///
    /// The algorithm's key type must match the key, else [`Error::AlgorithmMismatch`]. Any ECDSA
    /// hash is accepted with any curve, as OpenSSL (and so sshpk) allows it: a P-384 key can only
    /// be used from smartdc with a forced `ecdsa-sha256`/`ecdsa-sha512`, because http-signature
    /// 1.4.0 rejects `sha384`. ECDSA signatures may be DER (what sshpk sends) or fixed-size `r||s`.
    pub fn verify(&self, algorithm: &str, data: &[u8], signature: &[u8]) -> Result<(), Error> {
        let alg = self.check_algorithm(algorithm)?;
        let prehash = alg.hash().map(|h| h.digest(data));
        match (&self.verifying, alg.hash(), prehash) {
            (Verifying::Rsa(k), Some(hash), Some(digest)) => k
                .verify(pkcs1v15(hash), &digest, signature)
                .map_err(|_| Error::BadSignature),
            (Verifying::P256(k), _, Some(digest)) => {
                verify_ecdsa!(p256, 32, k, &digest, signature)
            }
            (Verifying::P384(k), _, Some(digest)) => {
                verify_ecdsa!(p384, 48, k, &digest, signature)
            }
            (Verifying::P521(k), _, Some(digest)) => {
                verify_ecdsa!(p521, 66, k, &digest, signature)
            }
            (Verifying::Ed25519(k), _, None) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| Error::BadSignature)?;
                // Strict verification rejects malleable and small-order forms; honest signers
                // (sshpk's tweetnacl, OpenSSH's agent) never produce those.
                k.verify_strict(data, &sig).map_err(|_| Error::BadSignature)
            }
            // check_algorithm guarantees the key type matches, and every RSA/ECDSA algorithm
            // has a hash while Ed25519 has none; report rather than panic all the same.
            _ => Err(self.mismatch(alg.name())),
        }
    }

    /// Parses `algorithm` and checks it fits this key's type.
    fn check_algorithm(&self, algorithm: &str) -> Result<Algorithm, Error> {
        let alg = Algorithm::parse(algorithm)?;
        if alg.key_type() != self.key_type() {
            return Err(self.mismatch(&algorithm.to_ascii_lowercase()));
        }
        Ok(alg)
    }

    fn mismatch(&self, algorithm: &str) -> Error {
        Error::AlgorithmMismatch {
            algorithm: truncate(algorithm, 64),
            key_type: self.key_type(),
        }
    }
}

fn pkcs1v15(hash: Hash) -> Pkcs1v15Sign {
    match hash {
        Hash::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
        Hash::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        Hash::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        Hash::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
    }
}

/// ECDSA truncates or left-pads the digest to the curve's field size ("bits2int"). RustCrypto
/// refuses digests shorter than half the field (SHA-256 with P-521), while OpenSSL — and so
/// sshpk — accepts them; left-padding with zeros is the same integer, so do it ourselves.
fn pad_prehash(digest: &[u8], field_len: usize) -> Vec<u8> {
    if digest.len() >= field_len {
        return digest.to_vec();
    }
    let mut padded = vec![0u8; field_len - digest.len()];
    padded.extend_from_slice(digest);
    padded
}

fn mpint_to_biguint(m: &ssh_key::Mpint, what: &str) -> Result<BigUint, Error> {
    let bytes = m
        .as_positive_bytes()
        .ok_or_else(|| Error::BadKey(format!("{what} is not a positive integer")))?;
    Ok(BigUint::from_bytes_be(bytes))
}

fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn put_ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Only ever called with short, fixed-size inputs; a u32 length cannot overflow.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The RustCrypto signing key behind a [`PrivateKey`].
enum Signing {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// An unencrypted OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`), for the client
/// side: Satchel's own tests and CLI. Debug output never shows secret material.
pub struct PrivateKey {
    signing: Signing,
    public: PublicKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Parses an unencrypted OpenSSH-format private key file (what `ssh-keygen` writes by
    /// default). Legacy PEM files (`BEGIN RSA/EC PRIVATE KEY`, PKCS#8) and encrypted keys are
    /// [`Error::BadKey`] with a message saying how to convert them.
    pub fn from_openssh(pem: &str) -> Result<PrivateKey, Error> {
        let decoded = private_file::decode(pem)?;
        let mut public = PublicKey::from_ssh_blob(&decoded.public_blob)?;
        let (fields, comment) = decoded.secret()?;
        public.comment = Some(comment).filter(|c| !c.is_empty());
        let signing = match fields {
            SecretFields::Rsa { n, e, d, p, q } => {
                let sk = rsa::RsaPrivateKey::from_components(
                    BigUint::from_bytes_be(n),
                    BigUint::from_bytes_be(e),
                    BigUint::from_bytes_be(d),
                    vec![BigUint::from_bytes_be(p), BigUint::from_bytes_be(q)],
                )
                .map_err(|e| Error::BadKey(format!("invalid RSA private key: {e}")))?;
                sk.validate()
                    .map_err(|e| Error::BadKey(format!("inconsistent RSA private key: {e}")))?;
                Signing::Rsa(Box::new(sk))
            }
            SecretFields::Ecdsa { curve, d } => {
                let bad = || Error::BadKey("invalid ECDSA private scalar".into());
                match curve {
                    b"nistp256" => Signing::P256(
                        p256::ecdsa::SigningKey::from_slice(
                            &private_file::fixed_width(d, 32).ok_or_else(bad)?,
                        )
                        .map_err(|_| bad())?,
                    ),
                    b"nistp384" => Signing::P384(
                        p384::ecdsa::SigningKey::from_slice(
                            &private_file::fixed_width(d, 48).ok_or_else(bad)?,
                        )
                        .map_err(|_| bad())?,
                    ),
                    b"nistp521" => Signing::P521(
                        p521::ecdsa::SigningKey::from_slice(
                            &private_file::fixed_width(d, 66).ok_or_else(bad)?,
                        )
                        .map_err(|_| bad())?,
                    ),
                    _ => return Err(Error::BadKey("unknown ECDSA curve".into())),
                }
            }
            SecretFields::Ed25519 { seed } => {
                let seed: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
                    seed.try_into()
                        .map_err(|_| Error::BadKey("Ed25519 seed is not 32 bytes".into()))?,
                );
                Signing::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
        };
        let private = PrivateKey { signing, public };
        private.check_consistent()?;
        Ok(private)
    }

    /// A file's public half is stored separately from the secret; a file where they disagree
    /// would sign with one key while advertising another's fingerprint.
    fn check_consistent(&self) -> Result<(), Error> {
        let ok = match (&self.signing, &self.public.verifying) {
            (Signing::Rsa(sk), Verifying::Rsa(pk)) => sk.to_public_key() == *pk,
            (Signing::P256(sk), Verifying::P256(pk)) => sk.verifying_key() == pk,
            (Signing::P384(sk), Verifying::P384(pk)) => sk.verifying_key() == pk,
            (Signing::P521(sk), Verifying::P521(pk)) => {
                // p521 0.13 gates `SigningKey::verifying_key` behind a feature it lacks.
                p521::ecdsa::VerifyingKey::from(sk).to_encoded_point(false)
                    == pk.to_encoded_point(false)
            }
            (Signing::Ed25519(sk), Verifying::Ed25519(pk)) => sk.verifying_key() == *pk,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::BadKey(
                "private key does not match the public key stored with it".into(),
            ))
        }
    }

    /// The public half, with the file's comment.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// The algorithm sshpk uses when none is forced: `rsa-sha256`; `ecdsa-sha256`/`384`/`512`
    /// for P-256/P-384/P-521; `ed25519-sha512`.
    pub fn default_algorithm(&self) -> &'static str {
        self.public.default_algorithm()
    }

    /// Signs `data` with the HTTP-Signature algorithm `algorithm`, producing the encoding
    /// [`PublicKey::verify`] accepts and sshpk sends: PKCS#1 v1.5 for RSA, DER for ECDSA, the raw
    /// 64 bytes for Ed25519.
    pub fn sign(&self, algorithm: &str, data: &[u8]) -> Result<Vec<u8>, Error> {
        let alg = self.public.check_algorithm(algorithm)?;
        let prehash = alg.hash().map(|h| h.digest(data));
        match (&self.signing, alg.hash(), prehash) {
            (Signing::Rsa(sk), Some(hash), Some(digest)) => sk
                // Blinded signing (with an RNG) so the private exponent does not leak through
                // timing.
                .sign_with_rng(&mut rand::rngs::OsRng, pkcs1v15(hash), &digest)
                .map_err(|e| Error::BadKey(format!("RSA signing failed: {e}"))),
            (Signing::P256(sk), _, Some(digest)) => sign_ecdsa!(p256, 32, sk, &digest),
            (Signing::P384(sk), _, Some(digest)) => sign_ecdsa!(p384, 48, sk, &digest),
            (Signing::P521(sk), _, Some(digest)) => sign_ecdsa!(p521, 66, sk, &digest),
            (Signing::Ed25519(sk), _, None) => {
                use ed25519_dalek::Signer as _;
                Ok(sk.sign(data).to_bytes().to_vec())
            }
            _ => Err(self.public.mismatch(alg.name())),
        }
    }
}
