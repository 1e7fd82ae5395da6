//! Property tests: the parsers never panic on any input, and what we format parses back.

use proptest::prelude::*;
use satchel_httpsig::{
    parse_authorization, parse_key_id, signing_string, Error, KeyRef, PrivateKey, PublicKey,
};

/// Fixed keys (made once with ssh-keygen) so the properties need no external tools.
const ED25519_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1Ahlg35jMqhrHGOg3U7xesX7yKSzFRtePTsm05bSTS t@x";
const P256_PUB: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBI+lGieQKgizF0SeMEykfMuKpvAslTErkzCTwyW3FBhuxYHPZ/3zG43a61BfsUs9Nzkvu/9jMDPu2BK97NfOyrM= t@x";

/// Throwaway keys made for this test only (never used anywhere else), to mutate.
const ED25519_PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBahYy3tjJBJSGBWjxi+hcHXaccXWOa59Q2dFQiojBgqgAAAIhrgIgla4CI\nJQAAAAtzc2gtZWQyNTUxOQAAACBahYy3tjJBJSGBWjxi+hcHXaccXWOa59Q2dFQiojBgqg\nAAAEDR5yLLoRnxAgdOFW5VqlDdz17Nli89/Upq0NdNpHdrcVqFjLe2MkElIYFaPGL6Fwdd\npxxdY5rn1DZ0VCKiMGCqAAAABGZ1enoB\n-----END OPENSSH PRIVATE KEY-----";
const P256_PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS\n1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQQBtMneQcA4l5naJPOdMlRJ1PIJGRms\nqWkPyToqK4XOdqVpGTYs9++OiAA15UODZl6CbdtWUYrOpLN+Jyk7GWurAAAAoFMxNZZTMT\nWWAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAG0yd5BwDiXmdok\n850yVEnU8gkZGaypaQ/JOiorhc52pWkZNiz3746IADXlQ4NmXoJt21ZRis6ks34nKTsZa6\nsAAAAhAOS4YH/TMt7i54UxyuLSvPRWL/3AfCRJq1bEQZE1AeUhAAAABGZ1enoBAgM=\n-----END OPENSSH PRIVATE KEY-----";

/// Text biased towards the header's own alphabet so the parser gets deep, not just rejected
/// at the first byte.
fn header_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Signature ".to_string()),
        Just("signature ".to_string()),
        Just("keyId=".to_string()),
        Just("algorithm=".to_string()),
        Just("headers=".to_string()),
        Just("signature=".to_string()),
        Just("\"".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("=".to_string()),
        Just("\"rsa-sha256\"".to_string()),
        Just("\"AAEC\"".to_string()),
        Just("\"/bob/keys/aa:bb\"".to_string()),
        "[a-zA-Z0-9+/=:()-]{0,8}",
        "\\PC{0,4}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_authorization_never_panics_on_any_string(s in "\\PC*") {
        let _ = parse_authorization(&s);
    }

    #[test]
    fn parse_authorization_never_panics_on_header_like_text(s in header_like()) {
        if let Ok(a) = parse_authorization(&s) {
            prop_assert!(!a.key_id.is_empty());
            prop_assert!(!a.algorithm.is_empty());
            prop_assert!(!a.headers.is_empty());
        }
    }

    #[test]
    fn parse_authorization_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_authorization(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn formatted_headers_parse_back(
        key_id in "/[a-z][a-z0-9._-]{0,15}/keys/[0-9a-f:]{1,47}",
        algorithm in "[a-zA-Z0-9-]{1,20}",
        headers in prop::collection::vec("[a-zA-Z0-9()-]{1,12}", 0..5),
        signature in prop::collection::vec(any::<u8>(), 1..300),
        swap in any::<bool>(),
    ) {
        use base64::Engine as _;
        let sig64 = base64::engine::general_purpose::STANDARD.encode(&signature);
        let mut params = vec![
            format!("keyId=\"{key_id}\""),
            format!("algorithm=\"{algorithm}\""),
            format!("signature=\"{sig64}\""),
        ];
        if !headers.is_empty() {
            params.push(format!("headers=\"{}\"", headers.join(" ")));
        }
        if swap {
            params.reverse();
        }
        let a = parse_authorization(&format!("Signature {}", params.join(","))).unwrap();
        prop_assert_eq!(&a.key_id, &key_id);
        prop_assert_eq!(a.algorithm, algorithm.to_ascii_lowercase());
        prop_assert_eq!(a.signature, signature);
        let want: Vec<String> = if headers.is_empty() {
            vec!["date".to_string()]
        } else {
            headers.iter().map(|h| h.to_ascii_lowercase()).collect()
        };
        prop_assert_eq!(a.headers, want);
        let is_account = matches!(parse_key_id(&key_id), Ok(KeyRef::Account { .. }));
        prop_assert!(is_account);
    }

    #[test]
    fn parse_key_id_never_panics(s in "\\PC*", t in "(/[a-z]{0,3}){0,7}") {
        let _ = parse_key_id(&s);
        if let Ok(k) = parse_key_id(&t) {
            prop_assert_eq!(k.to_key_id(), t);
        }
    }

    #[test]
    fn signing_string_never_panics(
        headers in prop::collection::vec("\\PC{0,10}", 0..6),
        method in "\\PC{0,8}",
        path in "\\PC{0,20}",
    ) {
        let r = signing_string(&headers, &method, &path, |h| (h.len() % 2 == 0).then(|| h.to_string()));
        if let Err(e) = r {
            let expected_kind = matches!(e, Error::MissingHeader(_) | Error::Malformed(_));
            prop_assert!(expected_kind);
        }
    }

    #[test]
    fn verify_never_panics_on_garbage(
        alg in prop_oneof![Just("ed25519-sha512".to_string()), Just("ecdsa-sha256".to_string()),
                           Just("ecdsa-sha512".to_string()), Just("rsa-sha256".to_string()), "\\PC{0,16}"],
        data in prop::collection::vec(any::<u8>(), 0..64),
        sig in prop::collection::vec(any::<u8>(), 0..140),
    ) {
        for line in [ED25519_PUB, P256_PUB] {
            let key = PublicKey::parse_openssh(line).unwrap();
            prop_assert!(key.verify(&alg, &data, &sig).is_err());
        }
    }

    #[test]
    fn key_parsers_never_panic(s in "\\PC*", blob in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = PublicKey::parse_openssh(&s);
        let _ = PublicKey::from_ssh_blob(&blob);
        let _ = PrivateKey::from_openssh(&s);
        use base64::Engine as _;
        let armoured = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        let _ = PrivateKey::from_openssh(&armoured);
        let mut with_magic = b"openssh-key-v1\0".to_vec();
        with_magic.extend_from_slice(&blob);
        let armoured = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&with_magic)
        );
        let _ = PrivateKey::from_openssh(&armoured);
    }

}

proptest! {
    // Each case derives keys in debug-mode arithmetic; fewer cases keep this test a few seconds.
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_private_key_files_never_panic(
        which in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let pem = if which { ED25519_PRIVATE } else { P256_PRIVATE };
        let original = PrivateKey::from_openssh(pem).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut raw = b64.decode(body).unwrap();
        for (at, x) in flips {
            let i = at.index(raw.len());
            raw[i] ^= x;
        }
        if truncate {
            raw.truncate(cut.index(raw.len()));
        }
        let armoured = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            b64.encode(&raw)
        );
        // Either rejected, or (a flip in the comment or padding) the very same key.
        if let Ok(k) = PrivateKey::from_openssh(&armoured) {
            prop_assert_eq!(k.public(), original.public());
        }
    }
}
