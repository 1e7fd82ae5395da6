#!/usr/bin/env python3
"""Driver of bench/takeout.sh (run that, not this).

Uploads a corpus as three bundles (untimed; file i goes to bundle i % 3, nested paths flattened), then, in
the same run and on the same files (page cache warm):
  * times the references `zip -r -6 -q ref.zip CORPUS` and `tar -cf - CORPUS | pigz -6 -p 2 > ref.tar.gz`;
  * times Satchel's takeout (include=bundles) in zip and in tar.gz: POST .../takeouts -> poll .../status every
    50 ms until complete, then GET .../downloads, sampling the server's VmRSS every 20 ms throughout;
  * verifies each takeout: index.json's sizes and sha256 against the members, each inner bundle archive
    holding every file of its bundle byte for byte;
  * prints a table and writes takeout-results-<shape>.json.
With --runs N each timed part is repeated N times and medians are reported.
"""

import argparse
import hashlib
import io
import json
import os
import statistics
import sys
import tarfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_client import NS, XML, MIB, RssSampler, child, cpu_s, db_id, die, proc_kib, sh, timed  # noqa: E402

import requests  # noqa: E402


def corpus_files(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.startswith("."):
                continue
            p = os.path.join(d, f)
            out.append((os.path.relpath(p, root), p))
    return sorted(out)


def upload(s, base, files):
    ids = []
    for b in range(3):
        r = s.post(base + "/mysoftware", headers=XML,
                   data='<ns0:mySoftware xmlns:ns0="%s"><name>part%d</name><version>1.0</version></ns0:mySoftware>' % (NS, b))
        ids.append(db_id(r, "create mySoftware"))
    t = time.perf_counter()
    names = [[], [], []]
    for i, (rel, path) in enumerate(files):
        b = i % 3
        name = rel.replace("/", "_")
        names[b].append((name, path))
        r = s.post("%s/mysoftware/%d/artifacts" % (base, ids[b]), headers=XML,
                   data='<ns0:softwareArtifact xmlns:ns0="%s"><name>%s</name><type>file</type></ns0:softwareArtifact>' % (NS, name))
        said = db_id(r, "create artifact %s" % name)
        with open(path, "rb") as f:
            r = s.post("%s/mysoftware/%d/artifacts/%d/bin/%s" % (base, ids[b], said, name), data=f,
                       headers={"Content-Type": "application/octet-stream", "Accept": "application/xml"})
        if r.status_code not in (200, 201):
            die("upload %s -> HTTP %d: %s" % (name, r.status_code, r.text[:300]))
        if (i + 1) % 1000 == 0:
            print("  uploaded %d/%d files (%.1fs)" % (i + 1, len(files), time.perf_counter() - t), flush=True)
    return ids, names, time.perf_counter() - t


def takeout(s, base, fmt, pid, out_path, poll=0.05, timeout=3600):
    with RssSampler(pid) as rss:
        cpu0 = cpu_s(pid)
        t0 = time.perf_counter()
        r = s.post("%s/takeouts?format=%s&include=bundles" % (base, fmt), headers={"Accept": "application/xml"})
        if r.status_code != 201:
            die("POST takeouts -> HTTP %d: %s" % (r.status_code, r.text[:500]))
        tid = db_id(r, "create takeout")
        while True:
            st = s.get("%s/takeouts/%d/status" % (base, tid), headers={"Accept": "application/xml"})
            if child(st.text, "error") == "true" or child(st.text, "cancelled") == "true":
                die("takeout %d ended badly: %s" % (tid, st.text[:1000]))
            if child(st.text, "complete") == "true":
                break
            if time.perf_counter() - t0 > timeout:
                die("takeout %d not complete after %ds" % (tid, timeout))
            time.sleep(poll)
        took = time.perf_counter() - t0
        cpu = cpu_s(pid) - cpu0
        t1 = time.perf_counter()
        size = 0
        with s.get("%s/takeouts/%d/downloads" % (base, tid), stream=True) as r:
            if r.status_code != 200:
                die("download -> HTTP %d" % r.status_code)
            with open(out_path, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
                    size += len(chunk)
        dl = time.perf_counter() - t1
    return {"tid": tid, "s": took, "cpu_s": cpu, "download_s": dl, "size": size, "peak_rss_kib": rss.peak_kib}


def members_of(path, fmt):
    """Yields (name, file object) of the outer archive's members."""
    if fmt == "zip":
        z = zipfile.ZipFile(path)
        for n in z.namelist():
            yield n, z.open(n)
    else:
        t = tarfile.open(path, "r:gz")
        for m in t:
            if m.isfile():
                yield m.name, t.extractfile(m)


def verify(path, fmt, names):
    """index.json agrees with the members; each bundle archive holds its files byte for byte."""
    digests, index, checked = {}, None, 0
    for n, f in members_of(path, fmt):
        data = f.read()
        if n == "index.json":
            index = json.loads(data)
            continue
        digests[n] = (len(data), hashlib.sha256(data).hexdigest())
        b = int(n.split("/")[1].split("-")[0].replace("part", ""))
        want = {name: p for name, p in names[b]}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as inner:
            for m in inner:
                base = os.path.basename(m.name)
                if m.isfile() and base in want:
                    with open(want[base], "rb") as orig:
                        if inner.extractfile(m).read() != orig.read():
                            die("%s differs in %s" % (base, n))
                    del want[base]
                    checked += 1
        if want:
            die("%d files of bundle part%d missing in %s, e.g. %s" % (len(want), b, n, list(want)[:3]))
    if index is None:
        die("no index.json")
    for e in index["entries"]:
        if digests.get(e["path"]) != (e["size"], e["sha256"]):
            die("index.json disagrees with %s" % e["path"])
    return checked


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--shape", default="default")
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench-pw")
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()

    base = "http://127.0.0.1:%d/api/users/%s" % (a.port, a.user)
    s = requests.Session()
    s.auth = (a.user, a.password)
    files = corpus_files(a.corpus)
    corpus_bytes = sum(os.path.getsize(p) for _, p in files)
    print("uploading %d files (%.1f MiB) as 3 bundles ..." % (len(files), corpus_bytes / MIB), flush=True)
    _, names, up_s = upload(s, base, files)
    print("  upload done in %.1fs" % up_s, flush=True)

    sh("find %s -type f -exec cat {} + > /dev/null" % a.corpus)
    ref_zip = os.path.join(a.out, "ref.zip")
    ref_tgz = os.path.join(a.out, "ref.tar.gz")
    rows = {k: [] for k in ("zip_ref", "pigz_ref", "sat_zip", "sat_tgz")}
    cpu = {k: [] for k in rows}
    runs = {"sat_zip": [], "sat_tgz": []}
    for i in range(a.runs):
        print("run %d/%d: zip -r -6 ..." % (i + 1, a.runs), flush=True)
        if os.path.exists(ref_zip):
            os.remove(ref_zip)
        rows["zip_ref"].append(timed("cd %s && zip -r -6 -q %s . -x '.corpus-stamp'" % (a.corpus, os.path.abspath(ref_zip))))
        cpu["zip_ref"].append(timed.cpu)
        print("run %d/%d: tar | pigz -6 -p 2 ..." % (i + 1, a.runs), flush=True)
        rows["pigz_ref"].append(timed("tar -cf - --exclude=./.corpus-stamp -C %s . | pigz -6 -p 2 > %s" % (a.corpus, ref_tgz)))
        cpu["pigz_ref"].append(timed.cpu)
        for key, fmt in (("sat_zip", "zip"), ("sat_tgz", "tar.gz")):
            print("run %d/%d: satchel takeout %s ..." % (i + 1, a.runs, fmt), flush=True)
            out = os.path.join(a.out, "takeout.%s" % fmt)
            m = takeout(s, base, fmt, a.pid, out)
            rows[key].append(m["s"])
            cpu[key].append(m["cpu_s"])
            runs[key].append(m)
            print("  %.2fs (cpu %.1fs), download %.2fs, %d bytes, peak RSS %.1f MiB"
                  % (m["s"], m["cpu_s"], m["download_s"], m["size"], m["peak_rss_kib"] / 1024), flush=True)
            if i == a.runs - 1:
                n = verify(out, fmt, names)
                print("  verified: index.json and %d files byte for byte" % n, flush=True)
            s.delete("%s/takeouts/%d" % (base, m["tid"]))
            os.remove(out)
    sizes = {"zip_ref": os.path.getsize(ref_zip), "pigz_ref": os.path.getsize(ref_tgz),
             "sat_zip": runs["sat_zip"][-1]["size"], "sat_tgz": runs["sat_tgz"][-1]["size"]}
    os.remove(ref_zip)
    os.remove(ref_tgz)
    t = {k: med(v) for k, v in rows.items()}
    peak = max(r["peak_rss_kib"] for v in runs.values() for r in v) / 1024
    res = {
        "shape": a.shape, "files": len(files), "corpus_mib": round(corpus_bytes / MIB, 1), "runs": a.runs,
        "seconds": {k: round(v, 3) for k, v in t.items()}, "all_seconds": rows,
        "cpu_s": {k: round(med(v), 2) for k, v in cpu.items()}, "bytes": sizes,
        "ratio_zip": round(t["zip_ref"] / t["sat_zip"], 3), "ratio_tgz": round(t["pigz_ref"] / t["sat_tgz"], 3),
        "size_ratio_zip": round(sizes["sat_zip"] / sizes["zip_ref"], 4),
        "size_ratio_tgz": round(sizes["sat_tgz"] / sizes["pigz_ref"], 4),
        "peak_rss_mib": round(peak, 1), "cpus": os.cpu_count(),
    }
    res["goals"] = {
        "zip_ratio_ge_2": res["ratio_zip"] >= 2.0, "tgz_ratio_ge_2": res["ratio_tgz"] >= 2.0,
        "zip_size_le_ref": sizes["sat_zip"] <= sizes["zip_ref"], "tgz_size_le_ref": sizes["sat_tgz"] <= sizes["pigz_ref"],
        "peak_rss_le_100mib": peak <= 100.0,
    }
    res["goals"]["all"] = all(res["goals"].values())
    with open(os.path.join(a.out, "takeout-results-%s.json" % a.shape), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    ok = lambda b: "ok" if b else "MISSED"
    g = res["goals"]
    print()
    print("shape %s: %d files, %.1f MiB, %d CPUs, %s" % (a.shape, len(files), corpus_bytes / MIB, os.cpu_count(),
                                                     "median of %d runs" % a.runs if a.runs > 1 else "1 run"))
    print("%-30s %9s %9s %14s" % ("", "seconds", "cpu s", "bytes"))
    for k, label in (("zip_ref", "zip -r -6"), ("sat_zip", "satchel takeout zip"),
                     ("pigz_ref", "tar | pigz -6 -p 2"), ("sat_tgz", "satchel takeout tar.gz")):
        print("%-30s %9.2f %9.2f %14d" % (label, t[k], res["cpu_s"][k], sizes[k]))
    print("zip:    %.2fx zip -r -6 (goal >= 2.0 %s), size %.4f (goal <= 1 %s)"
          % (res["ratio_zip"], ok(g["zip_ratio_ge_2"]), res["size_ratio_zip"], ok(g["zip_size_le_ref"])))
    print("tar.gz: %.2fx tar | pigz (goal >= 2.0 %s), size %.4f (goal <= 1 %s)"
          % (res["ratio_tgz"], ok(g["tgz_ratio_ge_2"]), res["size_ratio_tgz"], ok(g["tgz_size_le_ref"])))
    print("peak server RSS %.1f MiB (goal <= 100 %s)" % (peak, ok(g["peak_rss_le_100mib"])))


if __name__ == "__main__":
    main()
