//! read_archive on arbitrary uploads: never panics, stays within its limits, and what it accepts is
//! consistent (confined, normalised paths; sizes and sha256 of exactly the bytes handed out). The
//! first byte picks whether the rest is fed as is or gzip-compressed first, so the fuzzer also
//! reaches the tar layer without having to forge gzip CRCs.
#![no_main]
use flate2::{write::GzEncoder, Compression};
use libfuzzer_sys::fuzz_target;
use satchel_archive::reader::{read_archive, Limits, MemberKind, ReadError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode & 1 == 1 {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(rest).expect("in memory");
        e.finish().expect("in memory")
    } else {
        rest.to_vec()
    };
    let limits = Limits {
        max_total_bytes: 1 << 20,
        max_members: 64,
        max_ratio: 200,
        ratio_grace_bytes: 64 << 10,
        max_member_bytes: 256 << 10,
        max_doc_bytes: 4096,
        max_path_bytes: 256,
        max_depth: 8,
        max_names_bytes: 8192,
    };
    let mut handed = HashMap::new();
    let result = read_archive(&input[..], &limits, |m, r| {
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = [0u8; 4096];
        loop {
            let k = r
                .read(&mut buf)
                .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
            if k == 0 {
                break;
            }
            n += k as u64;
            h.update(&buf[..k]);
        }
        assert_eq!(n, m.size, "the reader yields exactly the member");
        assert!(
            handed
                .insert(m.path.clone(), <[u8; 32]>::from(h.finalize()))
                .is_none(),
            "each file once"
        );
        Ok(())
    });
    if let Ok(s) = result {
        assert!(s.expanded_bytes <= limits.max_total_bytes);
        assert!(s.members.len() as u64 <= limits.max_members);
        for m in &s.members {
            assert!(!m.path.is_empty() && !m.path.starts_with('/') && !m.path.ends_with('/'));
            assert!(m
                .path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
            assert!(m.path.split('/').count() <= limits.max_depth);
            if m.kind == MemberKind::File {
                if let Some(d) = s.docs.get(&m.path) {
                    assert_eq!(<[u8; 32]>::from(Sha256::digest(d)), m.sha256);
                } else {
                    assert_eq!(handed.get(&m.path), Some(&m.sha256));
                }
            }
        }
        assert_eq!(
            handed.len() + s.docs.len(),
            s.members
                .iter()
                .filter(|m| m.kind == MemberKind::File)
                .count()
        );
    }
});
