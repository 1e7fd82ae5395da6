//! Reading the unencrypted OpenSSH private key container (`-----BEGIN OPENSSH PRIVATE KEY-----`,
//! format described in OpenSSH's PROTOCOL.key).
//!
//! We read it ourselves instead of through `ssh-key` 0.6.7 because that version rejects valid
//! ECDSA keys whose private scalar encodes shorter than the field size ("length invalid";
//! about half of all P-521 keys ssh-keygen makes, RustCrypto/SSH#350, fixed only in 0.7
//! pre-releases) and builds RSA keys with `p` in place of `q`. The container is small and only
//! the unencrypted form is accepted, so this is a short, bounds-checked reader; the public half
//! is still parsed by `ssh-key`.

use crate::Error;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
const MAGIC: &[u8] = b"openssh-key-v1\0";

/// The secret fields of one key, still as SSH-encoded byte strings.
pub(crate) enum SecretFields<'a> {
    /// `n, e, d, iqmp, p, q` as mpint magnitudes (possibly with a leading zero byte).
    Rsa {
        n: &'a [u8],
        e: &'a [u8],
        d: &'a [u8],
        p: &'a [u8],
        q: &'a [u8],
    },
    /// Curve name (`nistp256`, ...) and the private scalar as an mpint magnitude.
    Ecdsa { curve: &'a [u8], d: &'a [u8] },
    /// The 32-byte seed (first half of OpenSSH's 64-byte `seed || public`).
    Ed25519 { seed: &'a [u8] },
}

/// The decoded container: the public key blob and the secret fields.
pub(crate) struct Decoded {
    pub(crate) public_blob: Vec<u8>,
    /// The whole decoded file, secret included; wiped on drop.
    body: Zeroizing<Vec<u8>>,
    private_start: usize,
    private_end: usize,
}

impl Decoded {
    /// Parses the private section into the secret fields and the key's comment. Borrowed from
    /// `self` so no secret bytes are copied around.
    pub(crate) fn secret(&self) -> Result<(SecretFields<'_>, String), Error> {
        let mut r = Reader {
            buf: &self.body[self.private_start..self.private_end],
        };
        let check1 = r.u32()?;
        let check2 = r.u32()?;
        if check1 != check2 {
            return Err(bad("check integers differ (corrupt or encrypted key)"));
        }
        let key_type = r.string()?;
        let fields = match key_type {
            b"ssh-rsa" => {
                let n = r.string()?;
                let e = r.string()?;
                let d = r.string()?;
                let _iqmp = r.string()?;
                let p = r.string()?;
                let q = r.string()?;
                SecretFields::Rsa { n, e, d, p, q }
            }
            b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" | b"ecdsa-sha2-nistp521" => {
                let curve = r.string()?;
                let _public_point = r.string()?;
                let d = r.string()?;
                SecretFields::Ecdsa { curve, d }
            }
            b"ssh-ed25519" => {
                let _public = r.string()?;
                let secret = r.string()?;
                if secret.len() != 64 {
                    return Err(bad("Ed25519 secret is not 64 bytes"));
                }
                SecretFields::Ed25519 {
                    seed: &secret[..32],
                }
            }
            other => {
                return Err(Error::BadKey(format!(
                    "unsupported private key type {:?}",
                    crate::algorithm::truncate(&String::from_utf8_lossy(other), 64)
                )))
            }
        };
        // What follows is padding (1, 2, 3, ...), which carries nothing.
        let comment = String::from_utf8_lossy(r.string()?).trim().to_string();
        Ok((fields, comment))
    }
}

/// Decodes the armour and the outer container, refusing encrypted and multi-key files.
pub(crate) fn decode(pem: &str) -> Result<Decoded, Error> {
    let body = pem
        .trim()
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.trim_end().strip_suffix(END))
        .ok_or_else(|| {
            Error::BadKey(
                "not an OpenSSH-format private key (only `-----BEGIN OPENSSH PRIVATE KEY-----` \
                 files are supported; convert with `ssh-keygen -p -f <file>`)"
                    .into(),
            )
        })?;
    let b64: Zeroizing<String> =
        Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    let body = Zeroizing::new(
        STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| bad(&format!("invalid base64: {e}")))?,
    );

    let mut r = Reader { buf: &body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("missing openssh-key-v1 magic"));
    }
    let cipher = r.string()?;
    let kdf = r.string()?;
    let _kdf_options = r.string()?;
    if cipher != b"none" || kdf != b"none" {
        return Err(Error::BadKey(
            "private key is encrypted (passphrase-protected); use an unencrypted key".into(),
        ));
    }
    if r.u32()? != 1 {
        return Err(bad("file must contain exactly one key"));
    }
    let public_blob = r.string()?.to_vec();
    let private = r.string()?;
    // Offsets rather than a borrow, so `Decoded` can own the buffer.
    let private_end = body.len() - r.buf.len();
    let private_start = private_end - private.len();
    Ok(Decoded {
        public_blob,
        body,
        private_start,
        private_end,
    })
}

fn bad(what: &str) -> Error {
    Error::BadKey(format!("cannot parse OpenSSH private key: {what}"))
}

/// A bounds-checked cursor over SSH wire encoding.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.buf.len() {
            return Err(bad("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], Error> {
        let len = usize::try_from(self.u32()?).map_err(|_| bad("length overflow"))?;
        self.take(len)
    }
}

/// An mpint's magnitude without leading zero bytes, left-padded to exactly `len` bytes (wiped on
/// drop: it is a private scalar); `None` when it does not fit.
pub(crate) fn fixed_width(mpint: &[u8], len: usize) -> Option<Zeroizing<Vec<u8>>> {
    let first = mpint.iter().position(|&b| b != 0).unwrap_or(mpint.len());
    let magnitude = &mpint[first..];
    if magnitude.len() > len {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; len - magnitude.len()]);
    out.extend_from_slice(magnitude);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_pads_and_strips() {
        assert_eq!(
            fixed_width(&[0, 0x80, 1], 3).as_deref(),
            Some(&vec![0, 0x80, 1])
        );
        assert_eq!(fixed_width(&[1], 3).as_deref(), Some(&vec![0, 0, 1]));
        assert!(fixed_width(&[1, 2, 3, 4], 3).is_none());
        assert_eq!(fixed_width(&[], 2).as_deref(), Some(&vec![0, 0]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            "",
            BEGIN,
            &format!("{BEGIN}\n{END}"),
            &format!("{BEGIN}\n!!!!\n{END}"),
            &format!("{BEGIN}\nb3BlbnNzaC1rZXktdjEA\n{END}"),
            &format!("{BEGIN}\nb3BlbnNzaC1rZXktdjEA/////w==\n{END}"),
        ] {
            assert!(matches!(decode(input), Err(Error::BadKey(_))), "{input:?}");
        }
    }
}
