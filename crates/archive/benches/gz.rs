//! `cargo bench -p satchel-archive`: throughput of the parallel gzip encoder on text-like and random
//! data, against single-threaded flate2 level 6 (zlib-rs/miniz) on the same bytes in the same run.

use satchel_archive::{GzOptions, Mode, ParallelGz};
use std::io::Write;
use std::time::Instant;

fn main() {
    let size = 64 << 20;
    let text: Vec<u8> = (0..size)
        .map(|i| {
            b"lorem ipsum dolor sit amet, consectetur 0123456789\n"[i % 51] ^ ((i / 4096) as u8 & 1)
        })
        .collect();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let noise: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (name, data, mode) in [
        ("text", &text, Mode::Deflate),
        ("random/stored", &noise, Mode::Store),
    ] {
        let t = Instant::now();
        let out = rt.block_on(async {
            let mut gz = ParallelGz::new(Vec::new(), GzOptions::default());
            for c in data.chunks(256 << 10) {
                gz.write(c, mode).await.expect("write");
            }
            gz.finish().await.expect("finish").size
        });
        let ours = t.elapsed();
        let t = Instant::now();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).expect("write");
        let reference = enc.finish().expect("finish").len();
        let theirs = t.elapsed();
        println!(
            "{name:>14}: satchel {:>7.1} MiB/s ({out} B)  flate2-6 {:>7.1} MiB/s ({reference} B)  speed ratio {:.2}",
            size as f64 / 1048576.0 / ours.as_secs_f64(),
            size as f64 / 1048576.0 / theirs.as_secs_f64(),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
