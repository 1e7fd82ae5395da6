//! The hostile corpus: each archive an attacker might upload, built here byte by byte, and the exact
//! rule the reader refuses it with. A few are also kept as files under `tests/corpus/` (regenerate
//! them with `REGEN_CORPUS=1 cargo test -p satchel-archive --test hostile`).

use flate2::write::GzEncoder;
use flate2::Compression;
use satchel_archive::reader::{read_archive, Limits, MemberKind, ReadError, ReadSummary, Rule};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

/// One raw tar entry: `name` is written as is (no checks), `declared` is the header's size.
fn entry(name: &[u8], kind: u8, declared: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(declared);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::new(kind));
    if kind == b'S' {
        // A well-formed GNU sparse header with no blocks.
        h.as_gnu_mut().unwrap().realsize = *b"00000000000\0";
    }
    if kind == b'1' || kind == b'2' {
        h.as_old_mut().linkname[..6].copy_from_slice(b"target");
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    entry(name.as_bytes(), b'0', data.len() as u64, data)
}

/// A pax header (`x`) carrying `records` (`key=value`), for the entry that follows.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let base = k.len() + v.len() + 3;
        let mut len = base + base.to_string().len();
        if len.to_string().len() + base != len {
            len = base + len.to_string().len();
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    entry(b"././@PaxHeader", b'x', body.len() as u64, &body)
}

/// A GNU long name (`L`) for the entry that follows.
fn long_name(name: &[u8]) -> Vec<u8> {
    let mut data = name.to_vec();
    data.push(0);
    entry(b"././@LongLink", b'L', data.len() as u64, &data)
}

fn end() -> Vec<u8> {
    vec![0u8; 1024]
}

fn tar_of(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut t: Vec<u8> = parts.concat();
    t.extend(end());
    t
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::new(9));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The summary and what `on_file` was given (path, bytes).
type Read = (ReadSummary, Vec<(String, Vec<u8>)>);

fn read(data: &[u8], limits: &Limits) -> Result<Read, ReadError> {
    let mut seen = Vec::new();
    let s = read_archive(data, limits, |m, r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v)
            .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
        assert_eq!(v.len() as u64, m.size);
        seen.push((m.path.clone(), v));
        Ok(())
    })?;
    Ok((s, seen))
}

#[track_caller]
fn refused(data: &[u8], limits: &Limits, rule: Rule, member: Option<&str>) -> ReadError {
    let e = match read(data, limits) {
        Ok(_) => panic!("accepted, expected {rule}"),
        Err(e) => e,
    };
    assert_eq!(e.rule, rule, "{e}");
    if let Some(m) = member {
        assert_eq!(e.member.as_deref(), Some(m), "{e}");
        assert!(
            e.to_string().contains(m),
            "the message names the member: {e}"
        );
    }
    assert!(e.to_string().contains(rule.as_str()), "{e}");
    e
}

fn small() -> Limits {
    Limits {
        max_total_bytes: 4 << 20,
        max_members: 50,
        max_ratio: 50,
        ratio_grace_bytes: 256 << 10,
        max_member_bytes: 2 << 20,
        max_doc_bytes: 4096,
        max_path_bytes: 512,
        max_depth: 8,
        max_names_bytes: 1 << 20,
        plain_tar: false,
    }
}

#[test]
fn a_plain_archive_is_read_with_sizes_and_hashes() {
    let t = tar_of(&[
        entry(b"./bundles/", b'5', 0, b""),
        file("./bundles/b/1.0/a.sh", b"#!/bin/sh\necho hi\n"),
        file("bundles/b/1.0/empty", b""),
        file("bundle.yml", b"name: b\n"),
        file("manifest.json", b"{}"),
    ]);
    let (s, seen) = read(&gz(&t), &Limits::default()).unwrap();
    let paths: Vec<_> = s
        .members
        .iter()
        .map(|m| (m.path.as_str(), m.kind))
        .collect();
    assert_eq!(
        paths,
        [
            ("bundles", MemberKind::Dir),
            ("bundles/b/1.0/a.sh", MemberKind::File),
            ("bundles/b/1.0/empty", MemberKind::File),
            ("bundle.yml", MemberKind::File),
            ("manifest.json", MemberKind::File),
        ]
    );
    // Root documents are kept, not passed to the caller.
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].1, b"#!/bin/sh\necho hi\n");
    assert_eq!(s.docs["bundle.yml"], b"name: b\n");
    assert_eq!(s.docs["manifest.json"], b"{}");
    assert_eq!(
        s.members[1].sha256,
        <[u8; 32]>::from(Sha256::digest(b"#!/bin/sh\necho hi\n"))
    );
    assert_eq!(s.expanded_bytes, t.len() as u64);
    assert_eq!(s.compressed_bytes, gz(&t).len() as u64);
}

#[test]
fn paths_escaping_the_archive_are_refused() {
    let l = Limits::default();
    refused(
        &gz(&tar_of(&[file("/etc/passwd", b"x")])),
        &l,
        Rule::AbsolutePath,
        Some("/etc/passwd"),
    );
    refused(
        &gz(&tar_of(&[file("C:\\x", b"x")])),
        &l,
        Rule::AbsolutePath,
        None,
    );
    refused(
        &gz(&tar_of(&[file("a/../../x", b"x")])),
        &l,
        Rule::ParentDir,
        Some("a/../../x"),
    );
    refused(&gz(&tar_of(&[file("..", b"x")])), &l, Rule::ParentDir, None);
    refused(
        &gz(&tar_of(&[file("a\\..\\x", b"x")])),
        &l,
        Rule::ParentDir,
        None,
    );
    // A pax path is a path like any other.
    let t = tar_of(&[
        pax(&[("path", b"ok/../../etc/cron.d/x")]),
        file("innocent", b"x"),
    ]);
    refused(&gz(&t), &l, Rule::ParentDir, Some("ok/../../etc/cron.d/x"));
    let t = tar_of(&[long_name(b"/abs/long"), file("short", b"x")]);
    refused(&gz(&t), &l, Rule::AbsolutePath, Some("/abs/long"));
}

#[test]
fn links_devices_and_fifos_are_refused() {
    let l = Limits::default();
    refused(
        &gz(&tar_of(&[entry(b"s", b'2', 0, b"")])),
        &l,
        Rule::Link,
        Some("s"),
    );
    refused(
        &gz(&tar_of(&[entry(b"h", b'1', 0, b"")])),
        &l,
        Rule::Link,
        Some("h"),
    );
    refused(
        &gz(&tar_of(&[entry(b"c", b'3', 0, b"")])),
        &l,
        Rule::SpecialFile,
        Some("c"),
    );
    refused(
        &gz(&tar_of(&[entry(b"b", b'4', 0, b"")])),
        &l,
        Rule::SpecialFile,
        Some("b"),
    );
    refused(
        &gz(&tar_of(&[entry(b"f", b'6', 0, b"")])),
        &l,
        Rule::SpecialFile,
        Some("f"),
    );
    refused(
        &gz(&tar_of(&[entry(b"v", b'V', 0, b"")])),
        &l,
        Rule::SpecialFile,
        Some("v"),
    );
    refused(
        &gz(&tar_of(&[entry(b"sp", b'S', 0, b"")])),
        &l,
        Rule::SpecialFile,
        Some("sp"),
    );
}

#[test]
fn duplicates_are_refused_unless_identical() {
    let l = Limits::default();
    let t = tar_of(&[file("a/b", b"one"), file("./a/b", b"two")]);
    refused(&gz(&t), &l, Rule::Duplicate, Some("a/b"));
    let t = tar_of(&[file("a", b"one"), entry(b"a/", b'5', 0, b"")]);
    refused(&gz(&t), &l, Rule::Duplicate, Some("a"));
    let t = tar_of(&[file("a", b"one"), file("a/b", b"x")]);
    refused(&gz(&t), &l, Rule::Duplicate, Some("a/b"));
    let t = tar_of(&[file("d/x", b"one"), file("d", b"x")]);
    refused(&gz(&t), &l, Rule::Duplicate, Some("d"));
    let t = tar_of(&[file("bundle.yml", b"a: 1"), file("bundle.yml", b"a: 2")]);
    refused(&gz(&t), &l, Rule::Duplicate, Some("bundle.yml"));
    // hammr's `tar.add(folder)` then each child again: the same bytes twice, read as one member.
    let t = tar_of(&[
        entry(b"d/", b'5', 0, b""),
        file("d/x", b"same"),
        entry(b"d/", b'5', 0, b""),
        file("d/x", b"same"),
    ]);
    let (s, seen) = read(&gz(&t), &l).unwrap();
    assert_eq!(s.members.len(), 2);
    assert_eq!(seen, [("d/x".to_string(), b"same".to_vec())]);
}

#[test]
fn short_and_truncated_data_is_refused() {
    let l = Limits::default();
    // The header says 1000 bytes; the gzip stream ends cleanly after 100.
    let mut t = entry(b"f", b'0', 1000, &[7u8; 100]);
    t.truncate(512 + 100);
    refused(&gz(&t), &l, Rule::Truncated, Some("f"));
    // Same, with a caller that reads: its error is not what is reported.
    let e = read_archive(&gz(&t)[..], &l, |_, r| {
        std::io::copy(r, &mut std::io::sink())
            .map(drop)
            .map_err(|e| ReadError::caller("f", e.to_string()))
    })
    .unwrap_err();
    assert_eq!(e.rule, Rule::Truncated, "{e}");
    // A header cut in the middle.
    let mut t = file("f", b"x");
    t.extend_from_slice(&file("g", b"y")[..300]);
    refused(&gz(&t), &l, Rule::Truncated, None);
    // No end-of-archive block.
    refused(&gz(&file("f", b"x")), &l, Rule::Truncated, None);
    // The gzip stream itself cut short.
    let whole = gz(&tar_of(&[file("f", &[1u8; 5000])]));
    for cut in [whole.len() - 1, whole.len() - 8, whole.len() / 2, 12] {
        refused(&whole[..cut], &l, Rule::Truncated, None);
    }
}

#[test]
fn not_gzip_and_corrupt_input_is_refused() {
    let l = Limits::default();
    let t = tar_of(&[file("f", b"x")]);
    refused(&t, &l, Rule::NotGzip, None);
    refused(b"", &l, Rule::NotGzip, None);
    refused(b"\x1f", &l, Rule::NotGzip, None);
    let mut g = gz(&t);
    let n = g.len();
    g[n - 6] ^= 0xff; // the CRC
    refused(&g, &l, Rule::Corrupt, None);
    let mut bad = file("f", b"x");
    bad[148] = b'9'; // checksum field
    refused(&gz(&tar_of(&[bad])), &l, Rule::Corrupt, None);
    // Bytes after the gzip stream.
    let mut g = gz(&t);
    g.extend_from_slice(b"some garbage after the stream");
    refused(&g, &l, Rule::Corrupt, None);
    // Too short to be a gzip header: reads as a cut-off next member.
    let mut g = gz(&t);
    g.extend_from_slice(b"\x1f\x8b\x08");
    refused(&g, &l, Rule::Truncated, None);
}

/// `plain_tar` (OCI image layout archives) takes an uncompressed tar under the same rules.
#[test]
fn a_plain_tar_is_read_only_when_allowed_and_under_the_same_rules() {
    let plain = Limits {
        plain_tar: true,
        ..Limits::default()
    };
    let t = tar_of(&[file("blobs/a", b"data")]);
    refused(&t, &Limits::default(), Rule::NotGzip, None);
    let (s, seen) = read(&t, &plain).unwrap();
    assert_eq!(seen, vec![("blobs/a".to_string(), b"data".to_vec())]);
    assert_eq!(s.members.len(), 1);
    // Gzip still reads the same way with the option on.
    assert_eq!(read(&gz(&t), &plain).unwrap().1, seen);
    refused(b"", &plain, Rule::NotGzip, None);
    refused(
        &tar_of(&[entry(b"s", b'2', 0, b"")]),
        &plain,
        Rule::Link,
        Some("s"),
    );
    refused(
        &tar_of(&[entry(b"../x", b'0', 0, b"")]),
        &plain,
        Rule::ParentDir,
        Some("../x"),
    );
    let mut cut = tar_of(&[file("f", &[7u8; 2000])]);
    cut.truncate(1024);
    refused(&cut, &plain, Rule::Truncated, None);
}

#[test]
fn trailing_data_must_be_zeros() {
    let l = Limits::default();
    let mut t = tar_of(&[file("f", b"x")]);
    t.extend(vec![0u8; 9216]); // tar's record padding
    assert!(read(&gz(&t), &l).is_ok());
    t.extend_from_slice(&file("hidden", b"x"));
    refused(&gz(&t), &l, Rule::TrailingData, None);
}

#[test]
fn bombs_are_refused() {
    let l = small();
    // 1.5 MiB of zeros: a ratio far beyond 50:1.
    let t = tar_of(&[file("zeros", &vec![0u8; 1536 << 10])]);
    refused(&gz(&t), &l, Rule::RatioExceeded, Some("zeros"));
    // Incompressible data over the total.
    let mut x: u32 = 1;
    let noise: Vec<u8> = (0..1_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let t = tar_of(&[file("n1", &noise), file("n2", &noise), file("n3", &noise)]);
    refused(&gz(&t), &l, Rule::TooLarge, Some("n3"));
    // A header announcing more than a member may be, refused before any data is read.
    let t = tar_of(&[entry(b"big", b'0', 1 << 40, b"")]);
    refused(&gz(&t), &l, Rule::TooLarge, Some("big"));
    // A descriptor over its bound.
    let t = tar_of(&[file("bundle.yml", &[b'a'; 5000])]);
    refused(&gz(&t), &l, Rule::TooLarge, Some("bundle.yml"));
    // Many members.
    let parts: Vec<_> = (0..60).map(|i| file(&format!("f{i}"), b"")).collect();
    refused(&gz(&tar_of(&parts)), &l, Rule::TooManyMembers, None);
    // A 2 MiB GNU long name is never buffered whole.
    let t = tar_of(&[long_name(&vec![b'a'; 2 << 20]), file("x", b"")]);
    let big = Limits {
        max_ratio: 1_000_000,
        ..small()
    };
    refused(&gz(&t), &big, Rule::TooLarge, None);
}

#[test]
fn long_deep_and_non_utf8_paths_are_refused() {
    let l = small();
    let long = "a".repeat(600);
    let t = tar_of(&[long_name(long.as_bytes()), file("x", b"")]);
    let e = refused(&gz(&t), &l, Rule::PathTooLong, None);
    assert!(e.member.unwrap().starts_with("aaaa"));
    // A long name within the limit is fine (pax or GNU).
    let ok = format!("dir/{}", "b".repeat(300));
    let t = tar_of(&[long_name(ok.as_bytes()), file("x", b"1")]);
    assert_eq!(read(&gz(&t), &l).unwrap().1[0].0, ok);
    let t = tar_of(&[pax(&[("path", ok.as_bytes())]), file("x", b"1")]);
    assert_eq!(read(&gz(&t), &l).unwrap().1[0].0, ok);
    let deep = ["d"; 9].join("/");
    refused(
        &gz(&tar_of(&[file(&deep, b"")])),
        &l,
        Rule::TooDeep,
        Some(deep.as_str()),
    );
    refused(
        &gz(&tar_of(&[entry(b"bad\xff", b'0', 0, b"")])),
        &l,
        Rule::BadUtf8,
        None,
    );
}

#[test]
fn a_caller_refusal_names_the_member() {
    let t = gz(&tar_of(&[file("ok", b"1"), file("no", b"2")]));
    let e = read_archive(&t[..], &Limits::default(), |m, _| {
        if m.path == "no" {
            Err(ReadError::caller(&m.path, "quota reached"))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(e.rule, Rule::Caller);
    assert_eq!(
        e.to_string(),
        "archive member \"no\" refused (caller): quota reached"
    );
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The kept corpus files and the rule each one breaks (`None`: accepted).
fn kept() -> Vec<(&'static str, Vec<u8>, Option<Rule>)> {
    let whole = gz(&tar_of(&[
        file("bundle.yml", b"name: x\n"),
        file("f", &[5u8; 4000]),
    ]));
    vec![
        (
            "absolute.tar.gz",
            gz(&tar_of(&[file("/etc/cron.d/x", b"* * * * * root sh\n")])),
            Some(Rule::AbsolutePath),
        ),
        (
            "dotdot.tar.gz",
            gz(&tar_of(&[file(
                "bundles/../../../root/.ssh/authorized_keys",
                b"ssh-ed25519 AAAA\n",
            )])),
            Some(Rule::ParentDir),
        ),
        (
            "symlink.tar.gz",
            gz(&tar_of(&[entry(b"bundles/b/1/link", b'2', 0, b"")])),
            Some(Rule::Link),
        ),
        (
            "truncated.tar.gz",
            whole[..whole.len() - 20].to_vec(),
            Some(Rule::Truncated),
        ),
        (
            "bomb.tar.gz",
            gz(&tar_of(&[file("zeros", &vec![0u8; 24 << 20])])),
            Some(Rule::RatioExceeded),
        ),
        (
            "duplicate.tar.gz",
            gz(&tar_of(&[file("a", b"one"), file("a", b"two")])),
            Some(Rule::Duplicate),
        ),
    ]
}

#[test]
fn the_kept_corpus_is_refused_with_its_rule() {
    let regen = std::env::var_os("REGEN_CORPUS").is_some();
    for (name, generated, rule) in kept() {
        let path = corpus().join(name);
        if regen {
            std::fs::create_dir_all(corpus()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(data.len() < 50 * 1024, "{name} is small");
        let got = read(&data, &Limits::default())
            .map(drop)
            .map_err(|e| e.rule);
        match rule {
            Some(r) => assert_eq!(got, Err(r), "{name}"),
            None => assert_eq!(got, Ok(()), "{name}"),
        }
    }
}

/// What hammr 3.8.13 uploads (built by Python's `tarfile` as `do_create` does: GNU format, one gzip
/// member, a folder added recursively and then each child again, the descriptor last).
#[test]
fn a_hammr_archive_is_accepted() {
    let data = std::fs::read(corpus().join("hammr-bundle.tar.gz")).unwrap();
    let (s, seen) = read(&data, &Limits::default()).unwrap();
    let files: Vec<_> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        files,
        [
            "bundles/my app/1.0/run.sh",
            "bundles/my app/1.0/conf/a.cfg",
            "bundles/my app/1.0/conf/sub/b.cfg",
            "bundles/my app/LICENSE",
        ]
    );
    assert!(s.docs.contains_key("bundle.yml"));
    assert!(s
        .members
        .iter()
        .any(|m| m.path == "bundles/my app/1.0/conf" && m.kind == MemberKind::Dir));
}
