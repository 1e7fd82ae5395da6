#!/usr/bin/env python3
"""A second corpus shape for the import benchmark, not the one Satchel was tuned on.

    python3 bench/make_corpus_mixed.py DIR [--size-mib 512] [--seed 20261201] [--force]

Writes a tree (not a flat directory) of about SIZE MiB:

  * 40% random bytes: files of 256 KiB - 32 MiB (log-uniform) under random/, some with the magic bytes of
    .gz/.jpg/.zip, some plain .bin/.dat;
  * 40% text: files of 128 KiB - 16 MiB (log-uniform) under text/<kind>/ (logs, JSON lines, CSV, SQL,
    Markdown, source code), from make_corpus.py's generators;
  * 20% many small files of 1 - 100 KiB (log-uniform, ~4800 files at 512 MiB) under small/gNN/[sub/],
    three in four text of the small kinds, one in four random.

Deterministic for (seed, size, this script and make_corpus.py); a stamp DIR/.corpus-stamp skips the work
when it matches, like make_corpus.py.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_corpus as mc  # noqa: E402

KIB, MIB = mc.KIB, mc.MIB
STAMP = mc.STAMP
VERSION = 1


def loguniform(rng, lo, hi):
    return int(lo * (hi / lo) ** rng.random())


def plan(size_mib, seed):
    """[(relative path, kind, ext, size)]; kind is blob | text | small-text | small-blob."""
    total = size_mib * MIB
    rng = random.Random("mixed-plan-%s-%d" % (seed, size_mib))
    files = []

    def fill(budget, lo, hi, make):
        used, i = 0, 0
        while used < budget:
            size = min(loguniform(rng, lo, hi), budget - used)
            if size <= 0:
                break
            files.append(make(i, size))
            used += size
            i += 1

    blob_exts = ["bin", "gz", "jpg", "dat", "zip", "bin", "gz", "img"]
    fill(int(total * 0.40), 256 * KIB, 32 * MIB,
         lambda i, s: ("random/blob-%04d.%s" % (i, blob_exts[i % len(blob_exts)]), "blob", blob_exts[i % len(blob_exts)], s))
    text_kinds = ["log", "jsonl", "csv", "sql", "md", "rs", "py", "json"]
    fill(int(total * 0.40), 128 * KIB, 16 * MIB,
         lambda i, s: ("text/%s/part-%04d.%s" % (text_kinds[i % len(text_kinds)], i, text_kinds[i % len(text_kinds)]),
                       "text", text_kinds[i % len(text_kinds)], s))
    small_exts = [k[0] for k in mc.SMALL_KINDS]
    small_w = [k[2] for k in mc.SMALL_KINDS]
    budget = total - sum(f[3] for f in files)

    def small(i, s):
        d = "small/g%02d%s" % (i % 24, "/sub" if i % 3 == 0 else "")
        if rng.random() < 0.25:
            return ("%s/s-%05d.bin" % (d, i), "small-blob", "bin", s)
        ext = rng.choices(small_exts, weights=small_w)[0]
        return ("%s/s-%05d.%s" % (d, i, ext), "small-text", ext, s)
    fill(budget, 1 * KIB, 100 * KIB, small)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()

    files = plan(a.size_mib, a.seed)
    here = os.path.dirname(os.path.abspath(__file__))
    stamp = {
        "generator": "mixed-%d" % VERSION,
        "script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
        "make_corpus_sha256": hashlib.sha256(open(os.path.join(here, "make_corpus.py"), "rb").read()).hexdigest(),
        "seed": a.seed,
        "size_mib": a.size_mib,
        "files": len(files),
        "bytes": sum(f[3] for f in files),
        "plan_sha256": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
    }
    stamp_path = os.path.join(a.dir, STAMP)
    if not a.force and os.path.exists(stamp_path):
        try:
            with open(stamp_path) as f:
                if json.load(f) == stamp:
                    print("corpus %s up to date (%d files, %.1f MiB)" % (a.dir, stamp["files"], stamp["bytes"] / MIB))
                    return
        except (OSError, ValueError):
            pass
    if os.path.isdir(a.dir) and os.listdir(a.dir):
        if STAMP not in os.listdir(a.dir) and not a.force:
            sys.exit("%s is not empty and has no %s: refusing to overwrite" % (a.dir, STAMP))
        shutil.rmtree(a.dir)
    os.makedirs(a.dir, exist_ok=True)

    t0 = time.time()
    vocab = mc.Vocab(a.seed)
    gens = {k[0]: k[1] for k in mc.SMALL_KINDS}
    gens.update({"jsonl": mc.gen_jsonl, "csv": mc.gen_csv, "sql": mc.gen_sql,
                 "md": lambda v, r, s: mc.gen_prose(v, r, s, md=True)})
    for rel, kind, ext, size in files:
        rng = random.Random("%s-%s" % (a.seed, rel))
        path = os.path.join(a.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind.endswith("blob"):
            mc.write_blob(path, rng, ext, size)
        elif ext == "log":
            clock = mc.Clock(rng)
            mc.write_text(path, mc.Local(vocab, rng), rng, lambda v, r, s: mc.gen_log(v, r, s, clock), size)
        else:
            mc.write_text(path, mc.Local(vocab, rng), rng, gens[ext], size)
    with open(stamp_path, "w") as f:
        json.dump(stamp, f, indent=2)
        f.write("\n")
    by = lambda k: sum(f[3] for f in files if f[1] == k) / stamp["bytes"] * 100
    print("corpus %s: %d files (%d small), %.1f MiB: %.0f%% random, %.0f%% text, %.0f%% small files; generated in %.1fs"
          % (a.dir, len(files), sum(1 for f in files if f[1].startswith("small")), stamp["bytes"] / MIB,
             by("blob"), by("text"), by("small-text") + by("small-blob"), time.time() - t0))


if __name__ == "__main__":
    main()
