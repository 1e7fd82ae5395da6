//! The parallel encoder on every shape of data: many members of random sizes (0, 1, around the chunk
//! size and the 64 KiB stored-block size), compressible and incompressible, small incompressible
//! files among text (runs folded into deflate), written through the `ModeProbe` in arbitrary write
//! sizes. Every archive must hold exactly the files given, byte for byte, read back by flate2 + the
//! `tar` crate and by Satchel's own import reader, and must not depend on how the writes were cut.

use proptest::prelude::*;
use satchel_archive::reader::{read_archive, Limits, MemberKind, ReadError};
use satchel_archive::{file_mode, GzOptions, MemberWrite, ModeProbe, Probed, TarGzWriter};
use sha2::{Digest, Sha256};
use std::io::Read;

const CHUNK: usize = 16 * 1024;

/// A file's content: empty, text-like (compressible), or noise (incompressible), of a size near one
/// of the interesting boundaries or anywhere below 200 KB.
fn content() -> impl Strategy<Value = Vec<u8>> {
    let size = prop_oneof![
        Just(0usize),
        Just(1usize),
        (0usize..3).prop_map(|d| CHUNK - 1 + d),
        (0usize..3).prop_map(|d| 65535 + d),
        (0usize..3).prop_map(|d| 4095 + d),
        0usize..200_000,
    ];
    (size, 0u8..3, any::<u64>()).prop_map(|(n, kind, seed)| {
        let mut x = seed | 1;
        (0..n)
            .map(|i| match kind {
                0 => b"INFO request served in 12 ms path=/api/users\n"[i % 45],
                1 => {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                }
                _ => {
                    // half text, half noise within one file: the probe decides once
                    if i < n / 2 {
                        b"abcdefgh"[i % 8]
                    } else {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    }
                }
            })
            .collect()
    })
}

/// Writes `files` the way the export job does (probe per member, data in `cut`-sized writes).
fn build(files: &[Vec<u8>], cut: usize, inflight: usize) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = GzOptions {
            chunk_size: CHUNK,
            max_inflight: inflight,
            ..Default::default()
        };
        let mut w = TarGzWriter::new(Vec::new(), opts);
        w.add_dir("d/", 0).await.unwrap();
        for (i, data) in files.iter().enumerate() {
            let path = format!("d/f{i:04}");
            w.begin_member(&path, data.len() as u64, 0, file_mode(data))
                .await
                .unwrap();
            let mut probe = ModeProbe::default();
            let mut at = 0;
            while at < data.len() {
                let n = cut.min(data.len() - at);
                match probe.push(&data[at..at + n], at + n == data.len()) {
                    Probed::Sampling => {}
                    Probed::Decided(d, m) => w.member_data(&d, m).await.unwrap(),
                    Probed::Chunk(d, m) => w.member_data(d, m).await.unwrap(),
                }
                at += n;
            }
            if let Some((d, m)) = probe.finish() {
                w.member_data(&d, m).await.unwrap();
            }
            w.end_member().await.unwrap();
        }
        let fin = w.finish().await.unwrap();
        assert_eq!(fin.size as usize, fin.sink.len());
        assert_eq!(fin.sha256, hex::encode(Sha256::digest(&fin.sink)));
        fin.sink
    })
}

fn check(archive: &[u8], files: &[Vec<u8>]) -> Result<(), TestCaseError> {
    // flate2 (multi-member) + the tar crate
    let mut tarball = Vec::new();
    flate2::read::MultiGzDecoder::new(archive)
        .read_to_end(&mut tarball)
        .unwrap();
    let mut ar = tar::Archive::new(&tarball[..]);
    let mut got = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        got.push(body);
    }
    prop_assert_eq!(got.len(), files.len());
    for (i, (g, f)) in got.iter().zip(files).enumerate() {
        prop_assert!(g == f, "member {} differs (tar crate)", i);
    }
    // Satchel's import reader: sizes and sha256 of every member, streamed
    let s = read_archive(archive, &Limits::default(), |m, r| {
        let mut sink = Vec::new();
        r.read_to_end(&mut sink)
            .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
        Ok(())
    })
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let read: Vec<(u64, [u8; 32])> = s
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::File)
        .map(|m| (m.size, m.sha256))
        .collect();
    let want: Vec<(u64, [u8; 32])> = files
        .iter()
        .map(|f| (f.len() as u64, Sha256::digest(f).into()))
        .collect();
    prop_assert_eq!(read, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn every_shape_reads_back_byte_for_byte(
        files in proptest::collection::vec(content(), 0..24),
        cut in prop_oneof![Just(1usize << 20), 1usize..70_000],
        other_cut in 1usize..70_000,
        inflight in 1usize..5,
    ) {
        let a = build(&files, cut, inflight);
        check(&a, &files)?;
        // The same bytes and modes give the same archive whatever the read sizes and parallelism.
        prop_assert!(build(&files, other_cut, 3) == a, "output depends on write sizes");
    }
}

/// Many small files among text: they share compression chunks (a chunk is not cut at each mode change),
/// and the archive is no larger than one gzip member per file would make it.
#[test]
fn small_files_share_chunks() {
    let mut files = Vec::new();
    let mut x: u64 = 7;
    for i in 0..400 {
        let n = 1024 + (i * 37) % 15_000;
        let noisy = i % 4 == 0;
        files.push(
            (0..n)
                .map(|j| {
                    if noisy {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    } else {
                        b"fn main() { println!(\"hello\"); }\n"[j % 33]
                    }
                })
                .collect::<Vec<u8>>(),
        );
    }
    let a = build(&files, 1 << 20, 3);
    let members = count_gzip_members(&a);
    // One member per run: at most one per noisy file (stored) and one per text stretch, plus chunk cuts;
    // never one per write or per tar header.
    let tar_len: usize = files.iter().map(|f| 1024 + f.len()).sum();
    assert!(
        members <= 2 * 100 + 1 + tar_len / CHUNK + 2,
        "{members} members"
    );
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&a[..])
        .read_to_end(&mut out)
        .unwrap();
    check(&a, &files).unwrap();
}

/// gzip members in `a`: Satchel writes fixed 10-byte headers (no optional fields), so each member is
/// the header, one raw deflate stream (its end found by inflating it) and the 8-byte trailer.
fn count_gzip_members(a: &[u8]) -> usize {
    let mut rest = a;
    let mut n = 0;
    let mut out = vec![0u8; 1 << 16];
    while !rest.is_empty() {
        assert_eq!(&rest[..3], &[0x1f, 0x8b, 8], "member header");
        rest = &rest[10..];
        let mut d = flate2::Decompress::new(false);
        loop {
            let before = d.total_in() as usize;
            let st = d
                .decompress(&rest[before..], &mut out, flate2::FlushDecompress::None)
                .unwrap();
            if st == flate2::Status::StreamEnd {
                break;
            }
        }
        rest = &rest[d.total_in() as usize + 8..];
        n += 1;
    }
    n
}

/// The system's own readers, when installed: `gzip -t`, Python's `tarfile`, GNU `tar`.
#[test]
fn system_readers_read_a_mixed_archive() {
    let mut files = Vec::new();
    let mut x: u64 = 99;
    for i in 0..60usize {
        let n = [0, 1, 4095, 4096, 65536, 70_000, 300_000][i % 7];
        files.push(
            (0..n)
                .map(|j| {
                    if i % 3 == 0 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    } else {
                        b"key: value\n"[j % 11]
                    }
                })
                .collect::<Vec<u8>>(),
        );
    }
    let a = build(&files, 50_000, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar.gz");
    std::fs::write(&path, &a).unwrap();
    let run = |cmd: &str, args: &[&str]| -> Option<std::process::Output> {
        std::process::Command::new(cmd).args(args).output().ok()
    };
    let p = path.to_string_lossy().to_string();
    if let Some(o) = run("gzip", &["-t", &p]) {
        assert!(
            o.status.success(),
            "gzip -t: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let py = "import hashlib,sys,tarfile\n\
              t=tarfile.open(sys.argv[1],'r:gz')\n\
              print('\\n'.join(hashlib.sha256(t.extractfile(m).read()).hexdigest() for m in t if m.isfile()))";
    if let Some(o) = run("python3", &["-c", py, &p]) {
        assert!(
            o.status.success(),
            "tarfile: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let want: Vec<String> = files
            .iter()
            .map(|f| hex::encode(Sha256::digest(f)))
            .collect();
        let got: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(got, want);
    }
    if let Some(o) = run("tar", &["-tzf", &p]) {
        assert!(
            o.status.success(),
            "tar -t: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).lines().count(),
            files.len() + 1
        );
    }
}
