#!/usr/bin/env python3
"""Deterministic mixed corpus for the export benchmark: ~3000 small text/code files, a few large logs,
and incompressible blobs (some with gzip/jpeg/rpm magic), about 55% compressible by bytes."""
import argparse, os, random, json

WORDS = ("satchel export bundle archive stream deflate chunk worker ticket status lease upload "
         "download range object store manifest sha256 python rust tokio axum sqlite postgres").split()

def text_blob(rng, size):
    out, n = [], 0
    kind = rng.randrange(4)
    while n < size:
        if kind == 0:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 14))) + ".\n"
        elif kind == 1:
            line = "fn %s_%d(x: u64) -> u64 { x.wrapping_mul(%d) ^ %d }\n" % (rng.choice(WORDS), rng.randrange(1000), rng.randrange(1 << 30), rng.randrange(1 << 20))
        elif kind == 2:
            line = "2026-11-%02d 12:%02d:%02d INFO %s id=%d took=%dms\n" % (rng.randrange(1, 29), rng.randrange(60), rng.randrange(60), rng.choice(WORDS), rng.randrange(10**6), rng.randrange(5000))
        else:
            line = json.dumps({"k": rng.choice(WORDS), "v": rng.randrange(10**9), "ok": rng.random() < 0.5}) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--size-mib", type=int, default=512)
    a = ap.parse_args()
    stamp = os.path.join(a.dir, ".stamp-%d" % a.size_mib)
    if os.path.exists(stamp):
        return
    os.makedirs(a.dir, exist_ok=True)
    rng = random.Random(42)
    total = a.size_mib << 20
    small_budget = 3000 * 8 * 1024
    for i in range(3000):
        with open(os.path.join(a.dir, "src_%04d.txt" % i), "wb") as f:
            f.write(text_blob(rng, rng.randrange(1024, 16 * 1024)))
    compressible = int(total * 0.55) - small_budget
    for i in range(4):
        with open(os.path.join(a.dir, "log_%d.log" % i), "wb") as f:
            left = compressible // 4
            while left > 0:
                chunk = text_blob(rng, min(left, 1 << 20))
                f.write(chunk)
                left -= len(chunk)
    incompressible = total - int(total * 0.55)
    magics = [(b"\x1f\x8b\x08\x00", "gz"), (b"\xff\xd8\xff\xe0", "jpg"), (b"\xed\xab\xee\xdb", "rpm"), (b"", "bin")]
    n = 8
    for i in range(n):
        magic, ext = magics[i % len(magics)]
        with open(os.path.join(a.dir, "blob_%d.%s" % (i, ext)), "wb") as f:
            f.write(magic)
            left = incompressible // n - len(magic)
            while left > 0:
                k = min(left, 4 << 20)
                f.write(rng.randbytes(k))
                left -= k
    open(stamp, "w").close()

if __name__ == "__main__":
    main()
