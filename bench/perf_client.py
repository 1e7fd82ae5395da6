#!/usr/bin/env python3
"""Driver of bench/perf.sh (run that, not this): issue 16's archive figures in one run.

Shapes (each uploaded as one bundle, untimed; nested paths flattened into artifact names with `__`):
  text   make_corpus.py          55 % text, 3054 files, 512 MiB (export.sh's corpus)
  mixed  make_corpus_mixed.py    40 % random, 40 % text, 20 % in ~4800 files of 1-100 KiB, 512 MiB
  small  make_corpus_small.py    a source tree: ~16 000 files of 200 B - 64 KiB, 9 % compressed assets
  large  one random file (3.5 GiB) + the text corpus: the export against `cp` of the random file; then
         the archive downloaded 4 times at once (peak RSS over the export and the downloads)
  image  the text bundle generated as an OCI image (compress=true), against tar | pigz

Per round (RUNS, medians), with the page cache warm: `cp -r` of the shape's files to a fresh dir (the
large shape: `cp` of the random file), `tar -cf - | pigz -6 -p 2` (not for the large shape: zlib on
3.5 GiB of random data is a minute per round and not a goal), then Satchel (POST -> complete, polled every
20 ms). The server's VmHWM is reset before Satchel's step (/proc/PID/clear_refs) and read after it.
The last archive of each shape is verified: `gzip -t`, Python's tarfile, `tar -x` and a byte comparison of
every file (the large shape: a spot check and the download's sha256 against X-Checksum-Sha256).
Writes perf-results.json and perf.txt under --out.
"""

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_client import MIB, NS, XML, child, cpu_s, db_id, die, med, proc_kib, sh, timed  # noqa: E402
import image_client  # noqa: E402

GOALS = {  # issue 16's pass lines
    "text": {"ratio": 2.5, "rss_mib": 64},
    "mixed": {"ratio": 2.5, "rss_mib": 64},
    "small": {"ratio": 2.5, "rss_mib": 64},
    "large": {"random_vs_cp": 0.8, "rss_mib": 64},
    "image": {"ratio": 2.0, "rss_mib": 64},
}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def reset_hwm(pid):
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def corpus_files(corpus):
    out = []
    for d, _, fs in os.walk(corpus):
        for f in fs:
            if f.startswith(".corpus-stamp"):
                continue
            p = os.path.join(d, f)
            out.append(os.path.relpath(p, corpus))
    return sorted(out)


def flat(rel):
    return rel.replace("/", "__")


def upload(s, base, bundle, files):
    """files: [(artifact name, local path)]. Returns the bundle id."""
    r = s.post(base + "/mysoftware", headers=XML,
               data='<ns0:mySoftware xmlns:ns0="%s"><name>%s</name><version>1.0</version></ns0:mySoftware>' % (NS, bundle))
    msid = db_id(r, "create mySoftware")
    t = time.perf_counter()
    for i, (name, path) in enumerate(files):
        r = s.post("%s/mysoftware/%d/artifacts" % (base, msid), headers=XML,
                   data='<ns0:softwareArtifact xmlns:ns0="%s"><name>%s</name><type>file</type></ns0:softwareArtifact>' % (NS, name))
        said = db_id(r, "create artifact %s" % name)
        with open(path, "rb") as f:
            r = s.post("%s/mysoftware/%d/artifacts/%d/bin/%s" % (base, msid, said, name), data=f,
                       headers={"Content-Type": "application/octet-stream", "Accept": "application/xml"})
        if r.status_code not in (200, 201):
            die("upload %s -> HTTP %d: %s" % (name, r.status_code, r.text[:500]))
        if (i + 1) % 2000 == 0:
            print("  uploaded %d/%d files (%.0fs)" % (i + 1, len(files), time.perf_counter() - t), flush=True)
    return msid


def export(s, base, msid, pid, poll=0.02, timeout=3600):
    rss_before = proc_kib(pid, "VmRSS") / 1024
    reset_hwm(pid)
    cpu0 = cpu_s(pid)
    t0 = time.perf_counter()
    r = s.post("%s/mysoftware/%d/exports" % (base, msid), headers={"Accept": "application/xml"})
    if r.status_code != 201:
        die("POST exports -> HTTP %d: %s" % (r.status_code, r.text[:500]))
    eid = db_id(r, "create export")
    while True:
        st = s.get("%s/mysoftware/%d/exports/%d/status" % (base, msid, eid), headers={"Accept": "application/xml"})
        if st.status_code != 200 or child(st.text, "error") == "true" or child(st.text, "cancelled") == "true":
            die("export %d: HTTP %d %s" % (eid, st.status_code, st.text[:1000]))
        if child(st.text, "complete") == "true":
            break
        if time.perf_counter() - t0 > timeout:
            die("export %d not complete after %ds" % (eid, timeout))
        time.sleep(poll)
    return {"eid": eid, "s": time.perf_counter() - t0, "cpu_s": cpu_s(pid) - cpu0,
            "hwm_mib": proc_kib(pid, "VmHWM") / 1024, "rss_before_mib": rss_before}


def download_url(base, msid, eid):
    return "%s/mysoftware/%d/exports/%d/downloads" % (base, msid, eid)


def download(s, url, path):
    with s.get(url, stream=True) as r:
        if r.status_code != 200:
            die("GET %s -> HTTP %d" % (url, r.status_code))
        with open(path, "wb") as f:
            for chunk in r.iter_content(1 << 20):
                f.write(chunk)
        return {k.lower(): v for k, v in r.headers.items()}


def verify(archive, corpus, rels, names, out):
    """gzip -t, Python's tarfile (every member read), tar -x and a byte comparison of every file."""
    sh("gzip -t %s" % archive)
    prefix = "bundles/%s/1.0/"
    want = {}
    with tarfile.open(archive, "r:gz") as tf:
        n = 0
        for m in tf:
            n += 1
            if m.isfile():
                f = tf.extractfile(m)
                while f.read(1 << 20):
                    pass
                want[m.name] = m.size
    work = os.path.join(out, "verify")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    sh("tar -xzf %s -C %s" % (archive, work))
    bundle_dir = [d for d in os.listdir(os.path.join(work, "bundles"))][0]
    root = os.path.join(work, "bundles", bundle_dir, "1.0")
    bad = [r for r, nm in zip(rels, names) if not filecmp.cmp(os.path.join(corpus, r), os.path.join(root, nm), shallow=False)]
    shutil.rmtree(work, ignore_errors=True)
    if bad:
        die("%d files differ after extraction, e.g. %s" % (len(bad), bad[:3]))
    return {"members": n, "files_compared": len(rels), "gzip_t": True, "python_tarfile": True}


def run_shape(a, s, base, shape, corpus, extra=None):
    """One export shape. extra: [(artifact name, path)] uploaded before the corpus (the large file)."""
    rels = corpus_files(corpus)
    names = [flat(r) for r in rels]
    files = list(extra or []) + [(n, os.path.join(corpus, r)) for r, n in zip(rels, names)]
    total = sum(os.path.getsize(p) for _, p in files)
    print("== %s: uploading %d files (%.1f MiB) ..." % (shape, len(files), total / MIB), flush=True)
    msid = upload(s, base, "corpus", files)
    sh("find %s -type f -exec cat {} + > /dev/null" % corpus)
    for _, p in extra or []:
        sh("cat '%s' > /dev/null" % p)
    ref = os.path.join(a.out, "ref.tar.gz")
    sat = os.path.join(a.out, "satchel-%s.tar.gz" % shape)
    cpdir = os.path.join(a.out, "cp-target")
    rounds = []
    for i in range(a.runs):
        rd = {"loadavg_before": loadavg()}
        shutil.rmtree(cpdir, ignore_errors=True)
        if extra:
            os.makedirs(cpdir)
            os.sync(); rd["cp_s"] = timed("cp '%s' %s/" % (extra[0][1], cpdir))
        else:
            os.sync(); rd["cp_s"] = timed("cp -r %s %s" % (corpus, cpdir))
        shutil.rmtree(cpdir, ignore_errors=True)
        if not extra:
            os.sync(); rd["pigz_s"] = timed("tar -cf - --exclude=./.corpus-stamp -C %s . | pigz -6 -p 2 > %s" % (corpus, ref))
            rd["pigz_cpu_s"] = timed.cpu
            rd["pigz_bytes"] = os.path.getsize(ref)
        os.sync()  # each timed step starts with nothing dirty: none pays for the last one's writeback
        e = export(s, base, msid, a.pid)
        rd.update({"satchel_s": e["s"], "satchel_cpu_s": e["cpu_s"], "hwm_export_mib": e["hwm_mib"], "eid": e["eid"],
                   "rss_before_mib": e["rss_before_mib"]})
        url = download_url(base, msid, e["eid"])
        if extra:
            # four downloads at once (three to /dev/null, one hashed), then the peak over export + downloads
            t = time.perf_counter()
            auth = "%s:%s" % (a.user, a.password)
            procs = [subprocess.Popen(["curl", "-fsS", "-u", auth, "-o", "/dev/null", url]) for _ in range(3)]
            h = subprocess.run("curl -fsS -u %s -D %s/dl-headers.txt %s | sha256sum" % (auth, a.out, url),
                               shell=True, check=True, capture_output=True, text=True).stdout.split()[0]
            for p in procs:
                if p.wait() != 0:
                    die("a concurrent download failed")
            rd["downloads_s"] = time.perf_counter() - t
            hdrs = open(os.path.join(a.out, "dl-headers.txt")).read().lower()
            if ("x-checksum-sha256: %s" % h) not in hdrs:
                die("the download's sha256 %s is not the X-Checksum-Sha256 header" % h)
            rd["download_sha256_ok"] = True
            rd["size"] = int([l for l in hdrs.splitlines() if l.startswith("content-length:")][0].split()[1])
        elif i == a.runs - 1:
            hdrs = download(s, url, sat)
            rd["size"] = os.path.getsize(sat)
        else:
            rd["size"] = None
        rd["hwm_mib"] = proc_kib(a.pid, "VmHWM") / 1024
        rd["loadavg_after"] = loadavg()
        rounds.append(rd)
        print("  round %d: cp %.2fs%s | satchel %.2fs (cpu %.1fs)%s | VmHWM %.1f MiB (export %.1f, RSS before %.1f) | load %s -> %s"
              % (i + 1, rd["cp_s"], " | pigz %.2fs" % rd["pigz_s"] if "pigz_s" in rd else "", rd["satchel_s"],
                 rd["satchel_cpu_s"], " | 4 downloads %.2fs" % rd["downloads_s"] if "downloads_s" in rd else "",
                 rd["hwm_mib"], rd["hwm_export_mib"], rd["rss_before_mib"], rd["loadavg_before"], rd["loadavg_after"]), flush=True)
        if i < a.runs - 1 or extra:
            s.delete("%s/mysoftware/%d/exports/%d" % (base, msid, e["eid"]))
    res = {
        "files": len(files), "mib": round(total / MIB, 1), "runs": a.runs,
        "satchel_s": round(med([r["satchel_s"] for r in rounds]), 3),
        "satchel_cpu_s": round(med([r["satchel_cpu_s"] for r in rounds]), 2),
        "cp_s": round(med([r["cp_s"] for r in rounds]), 3),
        "peak_rss_mib": round(max(r["hwm_mib"] for r in rounds), 1),
        "rounds": rounds,
    }
    if not extra:
        res["pigz_s"] = round(med([r["pigz_s"] for r in rounds]), 3)
        res["pigz_cpu_s"] = round(med([r["pigz_cpu_s"] for r in rounds]), 2)
        res["ratio"] = round(res["pigz_s"] / res["satchel_s"], 3)
        res["size"] = rounds[-1]["size"]
        res["pigz_size"] = rounds[-1]["pigz_bytes"]
        res["size_vs_pigz"] = round(res["size"] / res["pigz_size"], 4)
        print("  verifying the last archive ...", flush=True)
        res["verified"] = verify(sat, corpus, rels, names, a.out)
        os.remove(sat)
        if os.path.exists(ref):
            os.remove(ref)
    else:
        res["size"] = rounds[-1]["size"]
    return msid, res


def run_image(a, s, base, msid, corpus):
    rels = corpus_files(corpus)
    tid = db_id(s.post("%s/mysoftware/%d/templates" % (base, msid), headers=XML), "create template")
    sh("find %s -type f -exec cat {} + > /dev/null" % corpus)
    ref = os.path.join(a.out, "ref.tar.gz")
    img = os.path.join(a.out, "satchel-image.oci.tar.gz")
    cpdir = os.path.join(a.out, "cp-target")
    rounds = []
    print("== image: generation from the text bundle ...", flush=True)
    for i in range(a.runs):
        rd = {"loadavg_before": loadavg()}
        shutil.rmtree(cpdir, ignore_errors=True)
        os.sync(); rd["cp_s"] = timed("cp -r %s %s" % (corpus, cpdir))
        shutil.rmtree(cpdir, ignore_errors=True)
        os.sync(); rd["pigz_s"] = timed("tar -cf - --exclude=./.corpus-stamp -C %s . | pigz -6 -p 2 > %s" % (corpus, ref))
        rd["pigz_bytes"] = os.path.getsize(ref)
        reset_hwm(a.pid)
        os.sync()
        m = image_client.generate(s, base, msid, tid, a.pid, img, poll=0.02)
        rd.update({"satchel_s": m["gen_s"], "satchel_cpu_s": m["gen_cpu_s"], "size": m["size"],
                   "sha256": m["sha256"], "hwm_mib": proc_kib(a.pid, "VmHWM") / 1024, "loadavg_after": loadavg()})
        rounds.append(rd)
        print("  round %d: cp %.2fs | pigz %.2fs | satchel %.2fs (cpu %.1fs) | VmHWM %.1f MiB | load %s -> %s"
              % (i + 1, rd["cp_s"], rd["pigz_s"], rd["satchel_s"], rd["satchel_cpu_s"], rd["hwm_mib"],
                 rd["loadavg_before"], rd["loadavg_after"]), flush=True)
    print("  verifying the last image ...", flush=True)
    files, blobs = image_client.verify(img, corpus, rels, a.out)
    os.remove(img)
    res = {
        "files": len(rels), "runs": a.runs,
        "satchel_s": round(med([r["satchel_s"] for r in rounds]), 3),
        "satchel_cpu_s": round(med([r["satchel_cpu_s"] for r in rounds]), 2),
        "pigz_s": round(med([r["pigz_s"] for r in rounds]), 3),
        "cp_s": round(med([r["cp_s"] for r in rounds]), 3),
        "size": rounds[-1]["size"], "pigz_size": rounds[-1]["pigz_bytes"],
        "peak_rss_mib": round(max(r["hwm_mib"] for r in rounds), 1),
        "reproducible": len(set(r["sha256"] for r in rounds)) == 1,
        "verified": {"layer_files": files, "blobs": blobs},
        "rounds": rounds,
    }
    res["ratio"] = round(res["pigz_s"] / res["satchel_s"], 3)
    res["size_vs_pigz"] = round(res["size"] / res["pigz_size"], 4)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench-pw")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shapes", default="text mixed small large image")
    ap.add_argument("--text", required=True)
    ap.add_argument("--mixed")
    ap.add_argument("--small")
    ap.add_argument("--random-file")
    ap.add_argument("--strict", action="store_true", help="exit 2 when a goal is missed")
    a = ap.parse_args()
    shapes = a.shapes.split()

    import requests
    base = "http://127.0.0.1:%d/api/users/%s" % (a.port, a.user)
    s = requests.Session()
    s.auth = (a.user, a.password)
    results = {"loadavg_start": loadavg(), "cpus": os.cpu_count(), "runs": a.runs, "shapes": {}}
    text_msid = None
    for shape in shapes:
        if shape == "text":
            text_msid, results["shapes"]["text"] = run_shape(a, s, base, "text", a.text)
        elif shape == "mixed":
            msid, results["shapes"]["mixed"] = run_shape(a, s, base, "mixed", a.mixed)
            s.delete("%s/mysoftware/%d" % (base, msid))
        elif shape == "small":
            msid, results["shapes"]["small"] = run_shape(a, s, base, "small", a.small)
            s.delete("%s/mysoftware/%d" % (base, msid))
        elif shape == "large":
            msid, r = run_shape(a, s, base, "large", a.text, extra=[("random-3.5g.bin", a.random_file)])
            s.delete("%s/mysoftware/%d" % (base, msid))
            t = results["shapes"].get("text")
            if t:
                # The random file's share: the large export less the text corpus's export (same run).
                r["random_part_s"] = round(r["satchel_s"] - t["satchel_s"], 3)
                r["random_vs_cp"] = round(r["cp_s"] / max(1e-9, r["random_part_s"]), 3)
            results["shapes"]["large"] = r
        elif shape == "image":
            if text_msid is None:
                die("the image shape needs the text shape first")
            results["shapes"]["image"] = run_image(a, s, base, text_msid, a.text)
        else:
            die("unknown shape %s" % shape)
    results["loadavg_end"] = loadavg()

    ok = lambda b: "ok" if b else "MISSED"
    lines = ["", "issue 16 archive benchmark: %d CPUs, RUNS=%d (medians), load average %s at start, %s at end"
             % (os.cpu_count(), a.runs, results["loadavg_start"], results["loadavg_end"]), "",
             "| shape | files | MiB | cp s | pigz s | Satchel s (cpu s) | ratio pigz/Satchel | size vs pigz | peak RSS MiB | goals |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    allok = True
    for shape in shapes:
        r = results["shapes"][shape]
        g = GOALS[shape]
        checks = []
        if "ratio" in g:
            checks.append(("ratio >= %.1f" % g["ratio"], r["ratio"] >= g["ratio"]))
            checks.append(("size <= pigz", r["size"] <= r["pigz_size"]))
        if "random_vs_cp" in g and "random_vs_cp" in r:
            checks.append(("random part %.2f s = %.2fx cp, >= %.1f" % (r["random_part_s"], r["random_vs_cp"], g["random_vs_cp"]),
                           r["random_vs_cp"] >= g["random_vs_cp"]))
        checks.append(("RSS <= %d" % g["rss_mib"], r["peak_rss_mib"] <= g["rss_mib"]))
        r["goals"] = {name: passed for name, passed in checks}
        allok = allok and all(p for _, p in checks)
        lines.append("| %s | %d | %s | %.2f | %s | %.2f (%.1f) | %s | %s | %.1f | %s |" % (
            shape, r["files"], r.get("mib", "-"), r["cp_s"], "%.2f" % r["pigz_s"] if "pigz_s" in r else "-",
            r["satchel_s"], r["satchel_cpu_s"], "%.2f" % r["ratio"] if "ratio" in r else "-",
            "%.4f" % r["size_vs_pigz"] if "size_vs_pigz" in r else "-", r["peak_rss_mib"],
            "; ".join("%s %s" % (n, ok(p)) for n, p in checks)))
    results["all_goals"] = allok
    lines.append("")
    lines.append("all goals: %s" % ok(allok))
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "perf.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "perf-results.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print("results: %s" % os.path.join(a.out, "perf-results.json"))
    if a.strict and not allok:
        sys.exit(2)


if __name__ == "__main__":
    main()
