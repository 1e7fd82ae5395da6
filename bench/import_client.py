#!/usr/bin/env python3
"""Driver of bench/import.sh (run that, not this). One corpus shape per call.

  * stages the corpus as a bundle (hard links under bundles/corpus/1.0/..., folders kept or made, and a
    bundle.yml at the root as crates/domain/src/export.rs writes it), then makes the archive ONCE with
    `tar -cf - ... | pigz -6 -p 2` (timed, for information);
  * per round (--runs N, medians reported):
      - reference: `tar -xzf archive -C fresh_dir && sync`, timed, then the dir removed (untimed);
      - Satchel: POST .../bundleimports?imported=true (201), then timed: POST .../bundleimports/{id}/uploads
        with the archive as the raw body, poll .../status every --poll s until complete. Total = upload start
        to complete; job = the upload's answer to complete. The created bundle (referenceUri) is checked
        (first round) and deleted with DELETE .../mysoftware/{id}, the import record too;
      - the server's VmHWM is reset before the round (/proc/PID/clear_refs, 5) and read after it, and its
        VmRSS sampled every 20 ms; per-thread CPU of the server is summed by thread name;
  * prints a table, writes import-<label>.txt and import-<label>.json under --out.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import requests

MIB = 1024 * 1024
NAME, VERSION = "corpus", "1.0"
PREFIX = "bundles/%s/%s" % (NAME, VERSION)


def die(msg):
    print("import bench: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def proc_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0, needs to own the process). False if it can't."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def thread_cpu(pid):
    """{tid: (name, cpu seconds)} of every thread of the process."""
    out = {}
    tck = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
            name = s[s.index("(") + 1:s.rindex(")")]
            fields = s.rsplit(")", 1)[1].split()
            out[tid] = (name, (int(fields[11]) + int(fields[12])) / tck)
        except (OSError, ValueError, IndexError):
            pass
    return out


def thread_delta(before, after):
    """CPU seconds by thread name (digits folded: tokio-runtime-w, blocking-1 ...) between two snapshots."""
    by = {}
    for tid, (name, c) in after.items():
        c0 = before.get(tid, (name, 0.0))[1]
        key = re.sub(r"[-_]?\d+$", "", name) or name
        by[key] = by.get(key, 0.0) + (c - c0)
    return {k: round(v, 2) for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v > 0.005}


class RssSampler:
    """Samples VmRSS every `every` s in a thread; `peak_kib` after exit."""

    def __init__(self, pid, every=0.02):
        self.pid, self.every = pid, every
        self.peak_kib, self.samples = 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, proc_kib(self.pid, "VmRSS"))
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_kib = max(self.peak_kib, proc_kib(self.pid, "VmRSS"))


def child(xml_text, name):
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == name:
            return el.text
    return None


def sh(cmd):
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)


def timed(cmd):
    """Wall seconds of a shell pipeline; CPU seconds of its processes in timed.cpu."""
    r0 = os.times()
    t = time.perf_counter()
    sh(cmd)
    wall = time.perf_counter() - t
    r1 = os.times()
    timed.cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    return wall


def med(xs):
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------------------------------------ archive

def corpus_files(corpus):
    """Relative paths of the corpus's files (stamps and dot files left out), sorted."""
    out = []
    for d, dirs, files in os.walk(corpus):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for n in files:
            if not n.startswith("."):
                out.append(os.path.relpath(os.path.join(d, n), corpus))
    return sorted(out)


def bundle_path(rel, size):
    """Where a corpus file goes in the bundle: a tree keeps its folders; a flat corpus (make_corpus.py) is
    given two levels, small files by extension (text/<ext>/) and files of 1 MiB or more under large/."""
    if "/" in rel:
        return rel
    if size >= MIB:
        return "large/" + rel
    ext = rel.rsplit(".", 1)[-1] if "." in rel else "other"
    return "text/%s/%s" % (ext, rel)


def descriptor(paths):
    """bundle.yml as export.rs writes it: name, version, files[name, source, files[...]] (folders carry
    `files`, plain files none)."""
    tree = {}
    for p in paths:
        node = tree
        parts = p.split("/")
        for d in parts[:-1]:
            node = node.setdefault(d, {})
        node[parts[-1]] = None

    q = json.dumps  # a JSON string is a YAML double-quoted scalar
    lines = ["---", "files:"]

    def emit(node, base, indent):
        pad = "  " * indent
        for name in sorted(node):
            src = "%s/%s" % (base, name)
            lines.append("%s- name: %s" % (pad, q(name)))
            lines.append("%s  source: %s" % (pad, q(src)))
            if node[name] is not None:
                lines.append("%s  files:" % pad)
                emit(node[name], src, indent + 1)

    emit(tree, PREFIX, 0)
    lines += ["name: %s" % q(NAME), "version: '%s'" % VERSION, ""]
    return "\n".join(lines)


def make_archive(corpus, rels, sizes, stage, archive):
    shutil.rmtree(stage, ignore_errors=True)
    root = os.path.join(stage, PREFIX)
    paths = []
    for rel in rels:
        bp = bundle_path(rel, sizes[rel])
        dst = os.path.join(root, bp)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.link(os.path.join(corpus, rel), dst)  # no copy; each inode is in the archive once
        except OSError:
            shutil.copyfile(os.path.join(corpus, rel), dst)
        paths.append(bp)
    with open(os.path.join(stage, "bundle.yml"), "w") as f:
        f.write(descriptor(paths))
    sh("find '%s' -type f -exec cat {} + > /dev/null" % corpus)  # warm the page cache
    s = timed("tar -cf - --sort=name --owner=0 --group=0 --numeric-owner -C '%s' bundle.yml bundles "
              "| pigz -6 -p 2 > '%s'" % (stage, archive))
    cpu = timed.cpu
    shutil.rmtree(stage, ignore_errors=True)
    return s, cpu, len(paths)


# ------------------------------------------------------------------------------------------------ satchel

def check_bundle(s, base, bid, rels, sizes):
    """The bundle the import made: its files, by count and total size (JSON listing of artifacts)."""
    r = s.get("%s/mysoftware/%d/artifacts" % (base, bid), headers={"Accept": "application/json"})
    if r.status_code != 200:
        return "GET artifacts -> HTTP %d" % r.status_code
    try:
        doc = r.json()
    except ValueError:
        return "artifacts: not JSON"
    files, total = [0], [0]

    def walk(x):
        if isinstance(x, dict):
            if x.get("type") == "file" and isinstance(x.get("size"), int):
                files[0] += 1
                total[0] += x["size"]
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(doc)
    want = sum(sizes.values())
    if files[0] != len(rels) or total[0] != want:
        return "bundle has %d files, %d bytes; the corpus %d files, %d bytes" % (files[0], total[0], len(rels), want)
    return "ok (%d files, %d bytes)" % (files[0], total[0])


def satchel_import(s, base, pid, archive, poll, timeout=1800):
    r = s.post("%s/bundleimports?imported=true" % base, headers={"Accept": "application/xml"})
    if r.status_code != 201:
        die("POST bundleimports -> HTTP %d (expected 201): %s" % (r.status_code, r.text[:500]))
    iid = child(r.text, "dbId")
    if not iid or not iid.strip().isdigit():
        die("no <dbId> in %s" % r.text[:500])
    iid = int(iid)
    can_reset = reset_hwm(pid)
    th0 = thread_cpu(pid)
    cpu0 = cpu_s(pid)
    with RssSampler(pid) as rss, open(archive, "rb") as f:
        t0 = time.perf_counter()
        r = s.post("%s/bundleimports/%d/uploads" % (base, iid), data=f,
                   headers={"Content-Type": "application/octet-stream", "Accept": "application/xml"})
        t_up = time.perf_counter()
        if r.status_code not in (200, 201, 202):
            die("POST uploads -> HTTP %d: %s" % (r.status_code, r.text[:500]))
        upload_status = r.status_code
        polls = 0
        while True:
            st = s.get("%s/bundleimports/%d/status" % (base, iid), headers={"Accept": "application/xml"})
            polls += 1
            if st.status_code != 200:
                die("GET status -> HTTP %d: %s" % (st.status_code, st.text[:500]))
            if child(st.text, "error") == "true" or child(st.text, "cancelled") == "true":
                die("import %d ended in error: %s" % (iid, st.text[:1000]))
            if child(st.text, "complete") == "true":
                break
            if time.perf_counter() - t0 > timeout:
                die("import %d not complete after %ds: %s" % (iid, timeout, st.text[:500]))
            time.sleep(poll)
        t_done = time.perf_counter()
    cpu = cpu_s(pid) - cpu0
    threads = thread_delta(th0, thread_cpu(pid))
    hwm = proc_kib(pid, "VmHWM")
    g = s.get("%s/bundleimports/%d" % (base, iid), headers={"Accept": "application/xml"})
    ref = child(g.text, "referenceUri") or ""
    m = re.search(r"mysoftware/(\d+)", ref)
    if g.status_code != 200 or not m:
        die("GET bundleimports/%d: no referenceUri to a bundle: %s" % (iid, g.text[:500]))
    return {
        "iid": iid, "bundle": int(m.group(1)), "upload_http": upload_status,
        "total_s": t_done - t0, "upload_s": t_up - t0, "job_s": t_done - t_up, "polls": polls,
        "server_cpu_s": cpu, "threads_cpu_s": threads,
        "vmhwm_kib": hwm if can_reset else None, "hwm_reset": can_reset,
        "peak_rss_sampled_kib": rss.peak_kib,
    }


def profile(s, base, pid, archive, poll, stem):
    """An extra import (not in the figures) with `perf record -g` on the server; the top of
    `perf report` (self time by shared object and symbol) goes to <stem>.txt."""
    import signal
    data = stem + ".data"
    p = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", data],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    m = satchel_import(s, base, pid, archive, poll)
    p.send_signal(signal.SIGINT)
    p.wait()
    delete_import(s, base, m)
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none",
                        "--percent-limit", "0.7"], capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]
    with open(stem + ".txt", "w") as f:
        f.write("perf record -g of the server during one import (%.2fs, job %.2fs); self time:\n" % (m["total_s"], m["job_s"]))
        f.write("\n".join(lines) + "\n")
    os.remove(data)
    print("  perf profile of one extra import: %s.txt" % stem, flush=True)
    return lines[:25]


def delete_import(s, base, imp):
    r = s.delete("%s/mysoftware/%d" % (base, imp["bundle"]))
    if r.status_code not in (200, 202, 204):
        die("DELETE mysoftware/%d -> HTTP %d: %s" % (imp["bundle"], r.status_code, r.text[:300]))
    s.delete("%s/bundleimports/%d" % (base, imp["iid"]))


# ------------------------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--label", default="default")
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench-pw")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--poll", type=float, default=0.05)
    ap.add_argument("--keep-archive", action="store_true")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to wait after each mass delete before the next timed step (ext4 skips inodes "
                         "deleted in the last ~30 s when it allocates new ones, which costs both sides)")
    ap.add_argument("--perf", action="store_true", help="one extra, untimed import under `perf record -g` of the server")
    a = ap.parse_args()

    root = "http://127.0.0.1:%d/api" % a.port
    base = "%s/users/%s" % (root, a.user)
    s = requests.Session()
    s.auth = (a.user, a.password)
    st = s.get(root + "/status", headers={"Accept": "application/json"})
    if st.status_code != 200:
        die("GET /api/status -> HTTP %d" % st.status_code)
    try:
        server_version = st.json().get("version")
    except ValueError:
        server_version = None

    rels = corpus_files(a.corpus)
    sizes = {r: os.path.getsize(os.path.join(a.corpus, r)) for r in rels}
    expanded = sum(sizes.values())
    archive = os.path.join(a.out, "import-%s.tar.gz" % a.label)
    stage = os.path.join(a.out, "import-stage")
    extract = os.path.join(a.out, "import-extract")
    print("[%s] archive of %d files (%.1f MiB): tar | pigz -6 -p 2 ..." % (a.label, len(rels), expanded / MIB), flush=True)
    pigz_s, pigz_cpu, n = make_archive(a.corpus, rels, sizes, stage, archive)
    archive_bytes = os.path.getsize(archive)
    print("  %d bytes (%.2fx) in %.2fs" % (archive_bytes, expanded / archive_bytes, pigz_s), flush=True)

    ref, ref_cpu, ref_sync, runs = [], [], [], []
    check = None
    for i in range(a.runs):
        tag = "(run %d/%d)" % (i + 1, a.runs)
        sh("cat '%s' > /dev/null; sync" % archive)  # both sides read the archive from memory, clean disk
        shutil.rmtree(extract, ignore_errors=True)
        os.makedirs(extract)
        t_x = timed("tar -xzf '%s' -C '%s'" % (archive, extract))
        ref_cpu.append(timed.cpu)
        t_sync = timed("sync")  # the blocks reach the disk: the reference's data is durable when it ends
        ref.append(t_x + t_sync)
        ref_sync.append(t_sync)
        if i == 0:  # the reference really extracted everything
            for r in rels[:: max(1, len(rels) // 50)]:
                p = os.path.join(extract, PREFIX, bundle_path(r, sizes[r]))
                if os.path.getsize(p) != sizes[r]:
                    die("reference extraction: %s has the wrong size" % p)
        shutil.rmtree(extract, ignore_errors=True)
        sh("sync")
        time.sleep(a.settle)
        m = satchel_import(s, base, a.pid, archive, a.poll)
        if i == 0:
            check = check_bundle(s, base, m["bundle"], rels, sizes)
            if not check.startswith("ok"):
                die("the imported bundle: " + check)
        delete_import(s, base, m)
        runs.append(m)
        print("  %s tar -xzf,sync %.2fs | satchel %.2fs (upload %.2fs + job %.2fs), server cpu %.1fs, VmHWM %s"
              % (tag, ref[-1], m["total_s"], m["upload_s"], m["job_s"], m["server_cpu_s"],
                 "%.1f MiB" % (m["vmhwm_kib"] / 1024) if m["vmhwm_kib"] else "n/a"), flush=True)
        sh("sync")
        time.sleep(a.settle)
    perf_top = None
    if a.perf:
        perf_top = profile(s, base, a.pid, archive, a.poll, os.path.join(a.out, "import-%s-perf" % a.label))
    if not a.keep_archive:
        os.remove(archive)

    ref_s = med(ref)
    tot = med([r["total_s"] for r in runs])
    job = med([r["job_s"] for r in runs])
    up = med([r["upload_s"] for r in runs])
    hwms = [r["vmhwm_kib"] for r in runs if r["vmhwm_kib"]]
    peak_kib = max(hwms) if hwms else proc_kib(a.pid, "VmHWM")
    last = runs[-1]
    res = {
        "label": a.label, "corpus": a.corpus, "corpus_files": len(rels), "expanded_bytes": expanded,
        "archive_bytes": archive_bytes, "archive_members": n, "pigz_s": round(pigz_s, 3), "pigz_cpu_s": round(pigz_cpu, 2),
        "runs": a.runs, "settle_s": a.settle,
        "reference_s": round(ref_s, 3), "reference_s_all": [round(x, 3) for x in ref],
        "reference_cpu_s": round(med(ref_cpu), 2),
        "reference_sync_s": round(med(ref_sync), 3), "reference_sync_s_all": [round(x, 3) for x in ref_sync],
        "satchel_total_s": round(tot, 3), "satchel_total_s_all": [round(r["total_s"], 3) for r in runs],
        "satchel_job_s": round(job, 3), "satchel_job_s_all": [round(r["job_s"], 3) for r in runs],
        "satchel_upload_s": round(up, 3),
        "satchel_server_cpu_s": round(med([r["server_cpu_s"] for r in runs]), 2),
        "threads_cpu_s_last_run": last["threads_cpu_s"],
        "ratio_total": round(ref_s / tot, 3), "ratio_job": round(ref_s / job, 3),
        # Satchel's local blob store does not fsync: against the extraction alone, without its sync
        "ratio_total_vs_nosync": round(med([x - y for x, y in zip(ref, ref_sync)]) / tot, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "peak_rss_per_run_mib": [round(r["vmhwm_kib"] / 1024, 1) if r["vmhwm_kib"] else None for r in runs],
        "peak_rss_sampled_mib": round(max(r["peak_rss_sampled_kib"] for r in runs) / 1024, 1),
        "vmhwm_process_mib": round(proc_kib(a.pid, "VmHWM") / 1024, 1),
        "bundle_check": check, "server_version": server_version, "cpus": os.cpu_count(),
    }
    res["goals"] = {"ratio_ge_1": res["ratio_total"] >= 1.0, "peak_rss_le_100mib": res["peak_rss_mib"] <= 100.0}

    mb = lambda b, t: b / MIB / t
    ok = lambda x: "ok" if x else "MISSED"
    L = []
    L.append("[%s] %s: %d files, %.1f MiB expanded; archive %.1f MiB (%d files in it, %.2fx); %d CPUs; median of %d run(s)"
             % (a.label, a.corpus, len(rels), expanded / MIB, archive_bytes / MIB, n, expanded / archive_bytes,
                os.cpu_count(), a.runs))
    if a.settle:
        L.append("(%.0f s pause after each delete before the next timed step)" % a.settle)
    L.append("%-42s %8s %10s %11s %7s" % ("", "seconds", "arch MiB/s", "exp. MiB/s", "cpu s"))
    L.append("%-42s %8.2f %10.1f %11.1f %7.2f" % ("make archive: tar | pigz -6 -p 2 (info)", pigz_s,
                                                  mb(archive_bytes, pigz_s), mb(expanded, pigz_s), pigz_cpu))
    L.append("%-42s %8.2f %10.1f %11.1f %7.2f" % ("reference: tar -xzf, then sync", ref_s, mb(archive_bytes, ref_s),
                                                  mb(expanded, ref_s), res["reference_cpu_s"]))
    L.append("%-42s %8.2f %10s %11s %7s" % ("  of which the final sync", res["reference_sync_s"], "", "", ""))
    L.append("%-42s %8.2f %10.1f %11.1f %7.2f" % ("satchel: upload start -> complete", tot, mb(archive_bytes, tot),
                                                  mb(expanded, tot), res["satchel_server_cpu_s"]))
    L.append("%-42s %8.2f %10.1f %11.1f %7s" % ("  of which upload (request -> answer)", up, mb(archive_bytes, up),
                                                mb(expanded, up), ""))
    L.append("%-42s %8.2f %10.1f %11.1f %7s" % ("  of which job (upload answer -> complete)", job, mb(archive_bytes, job),
                                                mb(expanded, job), ""))
    L.append("ratio satchel/reference speed (ref_s / satchel_s)  %5.2f  goal >= 1.0  %s   (job alone %.2f; "
             "vs tar -xzf without its sync %.2f)" % (res["ratio_total"], ok(res["goals"]["ratio_ge_1"]), res["ratio_job"],
                                                     res["ratio_total_vs_nosync"]))
    L.append("peak server RSS (VmHWM, reset each run)     %6.1f MiB  goal <= 100  %s   (per run %s; sampled VmRSS max %.1f)"
             % (res["peak_rss_mib"], ok(res["goals"]["peak_rss_le_100mib"]),
                "/".join("%.1f" % x for x in res["peak_rss_per_run_mib"] if x), res["peak_rss_sampled_mib"]))
    L.append("runs: reference %s | satchel %s | job %s"
             % (" ".join("%.2f" % x for x in ref), " ".join("%.2f" % r["total_s"] for r in runs),
                " ".join("%.2f" % r["job_s"] for r in runs)))
    L.append("server CPU by thread, last run: %s" % ", ".join("%s %.2fs" % kv for kv in last["threads_cpu_s"].items()))
    L.append("imported bundle: %s" % check)
    if perf_top:
        L.append("perf, one extra import (self time, top):")
        L += ["  " + l.strip() for l in perf_top[:15]]
    text = "\n".join(L) + "\n"
    print()
    print(text)
    with open(os.path.join(a.out, "import-%s.txt" % a.label), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "import-%s.json" % a.label), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
