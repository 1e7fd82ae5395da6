//! PrivateKey::sign / PublicKey::verify for every algorithm, and everything that must fail.

mod common;

use common::{ssh_keygen, KeyFile, KEY_SPECS};
use satchel_httpsig::{
    parse_authorization, parse_key_id, sign_request, signing_string, verify_request, Algorithm,
    Error, KeyRef,
};

/// Two keys of every type (the second one is the "wrong key").
fn keys(dir: &std::path::Path) -> Vec<(KeyFile, KeyFile)> {
    KEY_SPECS
        .iter()
        .map(|(label, args, _)| {
            (
                ssh_keygen(dir, label, args),
                ssh_keygen(dir, &format!("{label}-other"), args),
            )
        })
        .collect()
}

fn flip_bit(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v[at] ^= 0x01;
    v
}

#[test]
fn every_algorithm_round_trips_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"date: Thu, 01 Jan 2026 00:00:00 GMT";
    let mut checked = 0;
    for (kf, other) in keys(dir.path()) {
        let private = kf.private();
        let public = kf.public();
        let wrong = other.public();
        for alg in Algorithm::all() {
            if alg.key_type() != public.key_type() {
                let mismatch = Error::AlgorithmMismatch {
                    algorithm: alg.name().to_string(),
                    key_type: public.key_type(),
                };
                assert_eq!(private.sign(alg.name(), data), Err(mismatch.clone()));
                assert_eq!(public.verify(alg.name(), data, &[0u8; 64]), Err(mismatch));
                continue;
            }
            let sig = private.sign(alg.name(), data).unwrap();
            public
                .verify(alg.name(), data, &sig)
                .unwrap_or_else(|e| panic!("{} {alg}: {e}", kf.label));
            // Case-insensitive names, like http-signature.
            public
                .verify(&alg.name().to_ascii_uppercase(), data, &sig)
                .unwrap();
            // Tampered data, signature (first, middle and last byte), wrong key.
            assert_eq!(
                public.verify(alg.name(), b"date: Thu, 01 Jan 2026 00:00:01 GMT", &sig),
                Err(Error::BadSignature)
            );
            for at in [0, sig.len() / 2, sig.len() - 1] {
                assert_eq!(
                    public.verify(alg.name(), data, &flip_bit(&sig, at)),
                    Err(Error::BadSignature),
                    "{} {alg} bit flipped at {at}",
                    kf.label
                );
            }
            assert_eq!(
                wrong.verify(alg.name(), data, &sig),
                Err(Error::BadSignature)
            );
            // Truncated and empty signatures are just bad, never a panic.
            assert_eq!(
                public.verify(alg.name(), data, &sig[..sig.len() - 1]),
                Err(Error::BadSignature)
            );
            assert_eq!(
                public.verify(alg.name(), data, &[]),
                Err(Error::BadSignature)
            );
            checked += 1;
        }
        // Unsupported names are reported as such whatever the key.
        for name in [
            "dsa-sha1",
            "hmac-sha256",
            "rsa-sha384",
            "ecdsa-sha1",
            "none",
        ] {
            assert_eq!(
                public.verify(name, data, &[1, 2, 3]),
                Err(Error::UnsupportedAlgorithm(name.to_string()))
            );
            assert_eq!(
                private.sign(name, data),
                Err(Error::UnsupportedAlgorithm(name.to_string()))
            );
        }
    }
    // rsa: 3 algorithms; each ecdsa curve: 3; ed25519: 1.
    assert_eq!(checked, 3 + 3 * 3 + 1);
}

#[test]
fn signature_encodings_are_what_sshpk_sends() {
    let dir = tempfile::tempdir().unwrap();
    for (label, args, default_alg) in KEY_SPECS {
        let kf = ssh_keygen(dir.path(), label, args);
        let private = kf.private();
        let public = kf.public();
        let sig = private.sign(default_alg, b"abc").unwrap();
        match label {
            "rsa" => assert_eq!(sig.len(), 256),
            "ed25519" => {
                assert_eq!(sig.len(), 64);
                // "ed25519" is accepted as a synonym of "ed25519-sha512".
                public.verify("ed25519", b"abc", &sig).unwrap();
            }
            _ => {
                // DER SEQUENCE { INTEGER r, INTEGER s }, and the fixed-size r||s form of the
                // same signature is accepted too.
                assert_eq!(sig[0], 0x30, "{label}: DER sequence");
                let field = match label {
                    "ecdsa256" => 32,
                    "ecdsa384" => 48,
                    _ => 66,
                };
                let fixed = der_to_fixed(&sig, field);
                assert_eq!(fixed.len(), 2 * field);
                public.verify(default_alg, b"abc", &fixed).unwrap();
                assert_eq!(
                    public.verify(default_alg, b"abd", &fixed),
                    Err(Error::BadSignature)
                );
            }
        }
    }
}

/// Minimal DER (r,s) → r||s for the test (lengths < 128 or the 0x81 long form).
fn der_to_fixed(der: &[u8], field: usize) -> Vec<u8> {
    let mut i = 2;
    if der[1] == 0x81 {
        i = 3;
    }
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = if int[0] == 0 { &int[1..] } else { int };
        out.extend(std::iter::repeat_n(0u8, field - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

#[test]
fn any_ecdsa_hash_works_with_any_curve() {
    // OpenSSL (so sshpk) lets a client force e.g. ecdsa-sha256 on a P-521 key, where the digest
    // is shorter than half the field; http-signature 1.4.0 even forces this for P-384 keys.
    let dir = tempfile::tempdir().unwrap();
    for (label, args, _) in &KEY_SPECS[1..4] {
        let kf = ssh_keygen(dir.path(), label, args);
        for alg in ["ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512"] {
            let sig = kf.private().sign(alg, b"payload").unwrap();
            kf.public().verify(alg, b"payload", &sig).unwrap();
            // The hash is bound into the signature: verifying under another hash fails.
            let other = if alg == "ecdsa-sha256" {
                "ecdsa-sha512"
            } else {
                "ecdsa-sha256"
            };
            assert_eq!(
                kf.public().verify(other, b"payload", &sig),
                Err(Error::BadSignature)
            );
        }
    }
}

#[test]
fn sign_request_then_verify_request() {
    let dir = tempfile::tempdir().unwrap();
    let kf = ssh_keygen(dir.path(), "ed", &["-t", "ed25519"]);
    let rsa = ssh_keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);
    let date = "Thu, 01 Jan 2026 00:00:00 GMT".to_string();
    let get = |h: &str| match h {
        "date" => Some(date.clone()),
        "content-md5" => Some("1B2M2Y8AsgTpgAmY7PhCfg==".to_string()),
        _ => None,
    };

    // Defaults: date only, the key's default algorithm; byte-for-byte http-signature's format.
    let key = kf.private();
    let key_id = format!("/bob/keys/{}", key.public().md5_fingerprint());
    let value = sign_request(&key, &key_id, "", &[], "GET", "/bob/images", get).unwrap();
    let prefix = format!(
        "Signature keyId=\"{key_id}\",algorithm=\"ed25519-sha512\",headers=\"date\",signature=\""
    );
    assert!(value.starts_with(&prefix), "{value}");
    let auth = parse_authorization(&value).unwrap();
    assert_eq!(auth.headers, vec!["date"]);
    verify_request(&auth, &key.public(), "GET", "/bob/images", get).unwrap();
    assert_eq!(
        parse_key_id(&auth.key_id).unwrap(),
        KeyRef::Account {
            login: "bob".into(),
            key: key.public().md5_fingerprint()
        }
    );
    // The signature covers exactly "date: <value>".
    key.public()
        .verify(
            &auth.algorithm,
            format!("date: {date}").as_bytes(),
            &auth.signature,
        )
        .unwrap();
    // Another date, or a request without the date, does not verify.
    let later = |h: &str| (h == "date").then(|| "Thu, 01 Jan 2026 00:00:01 GMT".to_string());
    assert_eq!(
        verify_request(&auth, &key.public(), "GET", "/bob/images", later),
        Err(Error::BadSignature)
    );
    assert_eq!(
        verify_request(&auth, &key.public(), "GET", "/bob/images", |_| None),
        Err(Error::MissingHeader("date".into()))
    );
    // The wrong key type for the header's algorithm.
    assert!(matches!(
        verify_request(&auth, &rsa.public(), "GET", "/bob/images", get),
        Err(Error::AlgorithmMismatch {
            key_type: "rsa",
            ..
        })
    ));

    // More headers, a sub-user keyId, a forced algorithm.
    let rsa_key = rsa.private();
    let sub_id = format!(
        "/bob/users/alice/keys/{}",
        rsa_key.public().md5_fingerprint()
    );
    let headers: Vec<String> = ["(request-target)", "Date", "content-md5", "request-line"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let value = sign_request(
        &rsa_key,
        &sub_id,
        "rsa-sha512",
        &headers,
        "POST",
        "/bob/images/x?action=export",
        get,
    )
    .unwrap();
    let auth = parse_authorization(&value).unwrap();
    assert_eq!(auth.algorithm, "rsa-sha512");
    assert_eq!(
        auth.headers,
        vec!["(request-target)", "date", "content-md5", "request-line"]
    );
    assert!(matches!(
        parse_key_id(&auth.key_id).unwrap(),
        KeyRef::SubUser { ref user, .. } if user == "alice"
    ));
    verify_request(
        &auth,
        &rsa.public(),
        "POST",
        "/bob/images/x?action=export",
        get,
    )
    .unwrap();
    // The method and path are signed.
    assert_eq!(
        verify_request(
            &auth,
            &rsa.public(),
            "PUT",
            "/bob/images/x?action=export",
            get
        ),
        Err(Error::BadSignature)
    );
    assert_eq!(
        verify_request(
            &auth,
            &rsa.public(),
            "POST",
            "/bob/images/y?action=export",
            get
        ),
        Err(Error::BadSignature)
    );
    // A listed header the verifier's request lacks.
    let no_md5 = |h: &str| (h == "date").then(|| date.clone());
    assert_eq!(
        verify_request(
            &auth,
            &rsa.public(),
            "POST",
            "/bob/images/x?action=export",
            no_md5
        ),
        Err(Error::MissingHeader("content-md5".into()))
    );

    // Client-side errors.
    assert_eq!(
        sign_request(
            &rsa_key,
            "/bob/keys/x",
            "",
            &["x-missing".into()],
            "GET",
            "/",
            get
        ),
        Err(Error::MissingHeader("x-missing".into()))
    );
    assert!(matches!(
        sign_request(&rsa_key, "/bob/\"keys", "", &[], "GET", "/", get),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(
        sign_request(
            &rsa_key,
            "/bob/keys/x",
            "",
            &["a b".into()],
            "GET",
            "/",
            get
        ),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(
        sign_request(
            &rsa_key,
            "/bob/keys/x",
            "ed25519-sha512",
            &[],
            "GET",
            "/",
            get
        ),
        Err(Error::AlgorithmMismatch { .. })
    ));
    assert_eq!(
        sign_request(&rsa_key, "/bob/keys/x", "hmac-sha256", &[], "GET", "/", get),
        Err(Error::UnsupportedAlgorithm("hmac-sha256".into()))
    );
    assert_eq!(
        signing_string(&headers, "POST", "/p", |_| None),
        Err(Error::MissingHeader("date".into()))
    );
}
