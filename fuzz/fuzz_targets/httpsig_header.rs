//! Authorization headers and keyIds from the network: never panic; what parses rebuilds a signing
//! string without panicking either.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(a) = satchel_httpsig::parse_authorization(text) {
        let _ = satchel_httpsig::parse_key_id(&a.key_id);
        let _ = satchel_httpsig::signing_string(&a.headers, "GET", "/my/keys", |h| Some(h.to_string()));
    }
    let _ = satchel_httpsig::parse_key_id(text);
});
