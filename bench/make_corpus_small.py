#!/usr/bin/env python3
"""The many-small-files corpus shape of bench/perf.sh: a source checkout, not a shape tuned to Satchel.

    python3 bench/make_corpus_small.py DIR [--files 20000] [--seed 20261202] [--force]

A tree of FILES files (about 6 KiB each on average, ~115 MiB at 20 000) in nested folders (src/, docs/,
tests/, assets/, vendor/<pkg>/... two to five levels deep):

  * sizes log-uniform from 200 B to 64 KiB (median ~3.6 KiB), the way source trees are;
  * 88 % text of make_corpus.py's small kinds (code, Markdown, logs, JSON, YAML, CSV);
  * 9 % already-compressed assets (png, jpg, gz: magic bytes then random data);
  * 3 % empty files (`__init__.py`, `.gitkeep`).

Deterministic for (seed, files, this script and make_corpus.py); a stamp DIR/.corpus-stamp skips the work
when it matches, like the other generators.
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


def plan(n_files, seed):
    """[(relative path, kind, ext, size)]; kind is text | blob | empty. Pure, so the stamp can hash it."""
    rng = random.Random("small-plan-%s-%d" % (seed, n_files))
    tops = ["src", "src", "src", "tests", "docs", "assets", "vendor", "vendor", "config", "scripts"]
    exts = [k[0] for k in mc.SMALL_KINDS]
    weights = [k[2] for k in mc.SMALL_KINDS]
    dirs = []
    for i in range(max(8, n_files // 12)):  # ~12 files a folder
        top = tops[i % len(tops)]
        depth = rng.randint(1, 4)
        parts = [top] + ["%s%d" % (rng.choice(["core", "util", "api", "ui", "db", "net", "pkg", "lib", "mod"]), rng.randint(0, 99))
                         for _ in range(depth)]
        dirs.append("/".join(parts))
    files, seen = [], set()
    for i in range(n_files):
        d = rng.choice(dirs)
        r = rng.random()
        if r < 0.03:
            kind, ext, size = "empty", "py", 0
            name = "__init__.py" if d + "/__init__.py" not in seen else ".gitkeep-%d" % i
        elif r < 0.12:
            ext = rng.choice(["png", "png", "jpg", "gz"])
            kind, size = "blob", int(200 * (64 * KIB / 200) ** rng.random())
            name = "f%05d.%s" % (i, ext)
        else:
            ext = rng.choices(exts, weights=weights)[0]
            kind, size = "text", int(200 * (64 * KIB / 200) ** rng.random())
            name = "f%05d.%s" % (i, ext)
        rel = "%s/%s" % (d, name)
        if rel in seen:
            continue
        seen.add(rel)
        files.append((rel, kind, ext, size))
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()

    files = plan(a.files, a.seed)
    here = os.path.dirname(os.path.abspath(__file__))
    stamp = {
        "generator": "small-%d" % VERSION,
        "script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
        "make_corpus_sha256": hashlib.sha256(open(os.path.join(here, "make_corpus.py"), "rb").read()).hexdigest(),
        "seed": a.seed,
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
    for rel, kind, ext, size in files:
        rng = random.Random("%s-%s" % (a.seed, rel))
        path = os.path.join(a.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "empty":
            open(path, "wb").close()
        elif kind == "blob":
            mc.write_blob(path, rng, ext, size)
        else:
            mc.write_text(path, mc.Local(vocab, rng), rng, gens[ext], size)
    with open(stamp_path, "w") as f:
        json.dump(stamp, f, indent=2)
        f.write("\n")
    by = lambda k: sum(f[3] for f in files if f[1] == k) / max(1, stamp["bytes"]) * 100
    print("corpus %s: %d files, %.1f MiB: %.0f%% text, %.0f%% compressed assets, %d empty; generated in %.1fs"
          % (a.dir, len(files), stamp["bytes"] / MIB, by("text"), by("blob"),
             sum(1 for f in files if f[1] == "empty"), time.time() - t0))


if __name__ == "__main__":
    main()
