//! Whatever tree goes in comes back out: archives written by the crate's own `TarGzWriter` and by the
//! `tar` crate are read back with the same paths, sizes and sha256, in order.

use flate2::write::GzEncoder;
use proptest::prelude::*;
use satchel_archive::reader::{read_archive, Limits, MemberKind, ReadError, ROOT_DOCS};
use satchel_archive::{GzOptions, TarGzWriter};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// A file tree: relative paths (unicode, spaces, nested) to contents (possibly empty).
fn tree() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    let segment = "[a-zA-Z0-9 _.éüß中文ø-]{1,12}"
        .prop_filter("a real name", |s| s != "." && s != ".." && s.trim() == s);
    let path = proptest::collection::vec(segment, 1..5).prop_map(|v| v.join("/"));
    let content = prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..3000),
        (any::<u8>(), 0usize..70_000).prop_map(|(b, n)| vec![b; n]),
    ];
    proptest::collection::btree_map(path, content, 0..12).prop_map(|m| {
        // A path cannot be a file and the parent of another file.
        let all: Vec<String> = m.keys().cloned().collect();
        m.into_iter()
            .filter(|(p, _)| !all.iter().any(|q| q.starts_with(&format!("{p}/"))))
            // Root documents are kept in memory, not streamed: not what this test is about.
            .filter(|(p, _)| !ROOT_DOCS.contains(&p.as_str()))
            .collect()
    })
}

fn dirs_of(files: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for p in files.keys() {
        let mut d = p.as_str();
        while let Some(i) = d.rfind('/') {
            d = &d[..i];
            dirs.insert(d.to_string());
        }
    }
    dirs
}

fn with_satchel_writer(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = GzOptions {
            chunk_size: 8192,
            max_inflight: 2,
            ..Default::default()
        };
        let mut w = TarGzWriter::new(Vec::new(), opts);
        for d in dirs_of(files) {
            w.add_dir(&format!("{d}/"), 0).await.unwrap();
        }
        for (p, c) in files {
            w.add_bytes(p, c, 0).await.unwrap();
        }
        w.finish().await.unwrap().sink
    })
}

fn with_tar_crate(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for d in dirs_of(files) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("{d}/"), &[][..]).unwrap();
    }
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(c.len() as u64);
        b.append_data(&mut h, p, &c[..]).unwrap();
    }
    let mut gz = b.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

fn check(archive: &[u8], files: &BTreeMap<String, Vec<u8>>) -> Result<(), TestCaseError> {
    let mut streamed = Vec::new();
    let s = read_archive(archive, &Limits::default(), |m, r| {
        let mut h = Sha256::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        streamed.push((m.path.clone(), m.size, <[u8; 32]>::from(h.finalize())));
        Ok(())
    })
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let expected: Vec<(String, u64, [u8; 32])> = files
        .iter()
        .map(|(p, c)| (p.clone(), c.len() as u64, Sha256::digest(c).into()))
        .collect();
    let read: Vec<_> = s
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::File)
        .map(|m| (m.path.clone(), m.size, m.sha256))
        .collect();
    prop_assert_eq!(&read, &expected);
    prop_assert_eq!(&streamed, &expected);
    let dirs: BTreeSet<String> = s
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::Dir)
        .map(|m| m.path.clone())
        .collect();
    prop_assert_eq!(dirs, dirs_of(files));
    prop_assert_eq!(s.compressed_bytes, archive.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn satchel_archives_read_back(files in tree()) {
        check(&with_satchel_writer(&files), &files)?;
    }

    #[test]
    fn tar_crate_archives_read_back(files in tree()) {
        check(&with_tar_crate(&files), &files)?;
    }
}
