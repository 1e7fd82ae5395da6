//! manta_path and /stor paths from requests: never panic, never leave the caller's namespace, and
//! normalising is idempotent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use satchel_domain::cloud::manta::MantaPath;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = MantaPath::parse(text, "alice") {
        let full = p.full();
        assert!(full.starts_with("/alice/stor") || full.starts_with("/alice/public"), "{full}");
        assert!(!p.rest.iter().any(|s| s.is_empty() || s == "." || s == ".."));
        assert_eq!(MantaPath::parse(&full, "alice").expect("normalised path parses"), p);
    }
});
