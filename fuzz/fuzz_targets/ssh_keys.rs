//! Public keys come from users (POST /keys, admin key add); private key files from the CLI's disk.
//! Neither parser may panic, and a parsed public key's canonical form parses back to the same key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(k) = satchel_httpsig::PublicKey::parse_openssh(text) {
        let again = satchel_httpsig::PublicKey::parse_openssh(&k.to_openssh()).expect("canonical form parses");
        assert_eq!(again.md5_fingerprint(), k.md5_fingerprint());
        let _ = k.verify("rsa-sha256", b"x", data);
        let _ = k.verify("ed25519", b"x", data);
        let _ = k.verify("ecdsa-sha256", b"x", data);
    }
    let _ = satchel_httpsig::PrivateKey::from_openssh(text);
});
