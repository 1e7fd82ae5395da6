#!/usr/bin/env python3
"""Driver of bench/export.sh (run that, not this).

Uploads the corpus as one bundle's artifacts through the UForge REST API (untimed), then, in the same run:
  * warms the page cache (cat corpus > /dev/null);
  * times the reference `tar -cf - -C corpus . | pigz -6 -p 2 > ref.tar.gz` (and, for context,
    `tar | gzip -6` single-threaded unless --no-gzip);
  * times Satchel: POST .../exports -> poll .../status every 50 ms until complete (export time), then
    GET .../downloads to a file (download time), sampling the server's VmRSS every 20 ms throughout;
  * verifies the archive (every corpus file listed under bundles/corpus/1.0/ and byte-identical after
    extraction, sha256 equal to the X-Checksum-Sha256 header);
  * prints a table and writes export-results.json.
With --runs N the timed part is repeated N times (pigz then Satchel each round) and medians are reported.
"""

import argparse
import filecmp
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

NS = "http://www.usharesoft.com/uforge"
XML = {"Content-Type": "application/xml", "Accept": "application/xml"}
MIB = 1024 * 1024


def die(msg):
    print("export bench: FAIL: " + msg, file=sys.stderr)
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


def cpu_s(pid):
    """utime + stime of a process in seconds (all threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class RssSampler:
    """Max VmRSS of a pid, sampled every `interval` seconds on a thread."""

    def __init__(self, pid, interval=0.02):
        self.pid, self.interval = pid, interval
        self.peak_kib, self.samples = 0, 0
        self.trace = []  # (seconds since start, VmRSS KiB)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.perf_counter()
        while not self._stop.is_set():
            kib = proc_kib(self.pid, "VmRSS")
            self.trace.append((time.perf_counter() - t0, kib))
            self.peak_kib = max(self.peak_kib, kib)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_kib = max(self.peak_kib, proc_kib(self.pid, "VmRSS"))


def child(xml_text, name):
    """Text of the first element whose local name is `name` (namespace-agnostic)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == name:
            return el.text
    return None


def db_id(resp, what):
    if resp.status_code not in (200, 201):
        die("%s: %s %s -> HTTP %d: %s" % (what, resp.request.method, resp.url, resp.status_code, resp.text[:500]))
    v = child(resp.text, "dbId")
    if v is None or not v.strip().isdigit():
        die("%s: no <dbId> in response: %s" % (what, resp.text[:500]))
    return int(v)


def sh(cmd):
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)


def timed(cmd):
    """Wall seconds of a shell pipeline (and its CPU seconds via the children's rusage)."""
    r0 = os.times()
    t = time.perf_counter()
    sh(cmd)
    wall = time.perf_counter() - t
    r1 = os.times()
    timed.cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    return wall


def upload(s, base, corpus, names):
    r = s.post(base + "/mysoftware", headers=XML,
               data='<ns0:mySoftware xmlns:ns0="%s"><name>corpus</name><version>1.0</version></ns0:mySoftware>' % NS)
    msid = db_id(r, "create mySoftware")
    t = time.perf_counter()
    for i, n in enumerate(names):
        r = s.post("%s/mysoftware/%d/artifacts" % (base, msid), headers=XML,
                   data='<ns0:softwareArtifact xmlns:ns0="%s"><name>%s</name><type>file</type></ns0:softwareArtifact>' % (NS, n))
        said = db_id(r, "create artifact %s" % n)
        with open(os.path.join(corpus, n), "rb") as f:  # a file object: requests streams it with Content-Length
            r = s.post("%s/mysoftware/%d/artifacts/%d/bin/%s" % (base, msid, said, n), data=f,
                       headers={"Content-Type": "application/octet-stream", "Accept": "application/xml"})
        if r.status_code not in (200, 201):
            die("upload %s -> HTTP %d: %s" % (n, r.status_code, r.text[:500]))
        if (i + 1) % 500 == 0:
            print("  uploaded %d/%d files (%.1fs)" % (i + 1, len(names), time.perf_counter() - t), flush=True)
    return msid, time.perf_counter() - t


def satchel_export(s, base, msid, pid, out_path, poll=0.05, timeout=1800):
    """One timed export + download. Returns a dict of measurements."""
    hwm_before = proc_kib(pid, "VmHWM")
    rss_before = proc_kib(pid, "VmRSS")
    with RssSampler(pid) as rss:
        cpu0 = cpu_s(pid)
        t0 = time.perf_counter()
        r = s.post("%s/mysoftware/%d/exports" % (base, msid), headers={"Accept": "application/xml"})
        if r.status_code != 201:
            die("POST exports -> HTTP %d (expected 201): %s" % (r.status_code, r.text[:500]))
        eid = db_id(r, "create export")
        polls = 0
        while True:
            st = s.get("%s/mysoftware/%d/exports/%d/status" % (base, msid, eid), headers={"Accept": "application/xml"})
            polls += 1
            if st.status_code != 200:
                die("GET exports/%d/status -> HTTP %d: %s" % (eid, st.status_code, st.text[:500]))
            if child(st.text, "error") == "true" or child(st.text, "cancelled") == "true":
                die("export %d ended in error: %s" % (eid, st.text[:1000]))
            if child(st.text, "complete") == "true":
                break
            if time.perf_counter() - t0 > timeout:
                die("export %d not complete after %ds; last status: %s" % (eid, timeout, st.text[:500]))
            time.sleep(poll)
        export_s = time.perf_counter() - t0
        export_cpu_s = cpu_s(pid) - cpu0

        t1 = time.perf_counter()
        h = hashlib.sha256()
        size = 0
        with s.get("%s/mysoftware/%d/exports/%d/downloads" % (base, msid, eid), stream=True) as r:
            if r.status_code != 200:
                die("GET exports/%d/downloads -> HTTP %d: %s" % (eid, r.status_code, r.text[:500]))
            headers = dict(r.headers)
            with open(out_path, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        download_s = time.perf_counter() - t1
    return {
        "eid": eid, "export_s": export_s, "export_cpu_s": export_cpu_s, "download_s": download_s, "size": size, "sha256": h.hexdigest(),
        "headers": headers, "polls": polls, "peak_rss_kib": rss.peak_kib, "rss_samples": rss.samples,
        "rss_trace": rss.trace, "rss_before_kib": rss_before, "hwm_before_kib": hwm_before, "hwm_after_kib": proc_kib(pid, "VmHWM"),
    }


def verify(archive, corpus, names, out_dir, full=True):
    """Every corpus file is in the archive under bundles/corpus/1.0/ and (full) byte-identical."""
    prefix = "bundles/corpus/1.0/"
    p = subprocess.run(["tar", "-tzf", archive], capture_output=True, text=True)
    if p.returncode != 0:
        die("tar -tzf %s failed: %s" % (archive, p.stderr[:500]))
    listed = [l.rstrip("/") for l in p.stdout.splitlines()]
    listed_set = set(listed)
    missing = [n for n in names if prefix + n not in listed_set]
    if missing:
        die("%d corpus files missing from the archive, e.g. %s" % (len(missing), missing[:5]))
    dups = len(listed) - len(listed_set)
    extra = sorted(m for m in listed_set if not m.startswith(prefix) and m not in ("bundles", "bundles/corpus", "bundles/corpus/1.0"))
    if full:
        d = os.path.join(out_dir, "verify")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        sh("tar -xzf %s -C %s" % (archive, d))
        bad = [n for n in names if not filecmp.cmp(os.path.join(corpus, n), os.path.join(d, prefix, n), shallow=False)]
        shutil.rmtree(d, ignore_errors=True)
        if bad:
            die("%d files differ after extraction, e.g. %s" % (len(bad), bad[:5]))
    else:  # spot check a few, byte for byte
        step = max(1, len(names) // 7)
        for n in names[::step]:
            got = subprocess.run(["tar", "-xzOf", archive, prefix + n], capture_output=True, check=True).stdout
            with open(os.path.join(corpus, n), "rb") as f:
                if got != f.read():
                    die("%s differs in the archive" % n)
    return {"members": len(listed), "duplicate_members": dups, "other_members": extra}


def med(xs):
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench-pw")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-gzip", action="store_true", help="skip the single-threaded tar | gzip -6 context run")
    ap.add_argument("--quick-verify", action="store_true", help="spot-check a few files instead of extracting all")
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

    names = sorted(n for n in os.listdir(a.corpus) if not n.startswith(".") and os.path.isfile(os.path.join(a.corpus, n)))
    corpus_bytes = sum(os.path.getsize(os.path.join(a.corpus, n)) for n in names)
    print("uploading %d files (%.1f MiB) as bundle corpus/1.0 ..." % (len(names), corpus_bytes / MIB), flush=True)
    msid, upload_s = upload(s, base, a.corpus, names)
    print("  upload done in %.1fs (%.0f MiB/s), %d requests" % (upload_s, corpus_bytes / MIB / upload_s, 2 * len(names)), flush=True)
    hwm_after_upload = proc_kib(a.pid, "VmHWM")

    # Warm the page cache so both sides read from memory.
    sh("cat %s/* > /dev/null" % a.corpus)
    ref = os.path.join(a.out, "ref.tar.gz")
    sat = os.path.join(a.out, "satchel.tar.gz")
    tar = "tar -cf - --exclude=./.corpus-stamp -C %s ." % a.corpus

    gzip_s = gzip_size = None
    if not a.no_gzip:
        print("reference (context): tar | gzip -6 ...", flush=True)
        gz = os.path.join(a.out, "ref-gzip.tar.gz")
        gzip_s = timed("%s | gzip -6 > %s" % (tar, gz))
        gzip_size = os.path.getsize(gz)
        os.remove(gz)

    pigz_times, pigz_cpu, runs = [], [], []
    for i in range(a.runs):
        tag = " (run %d/%d)" % (i + 1, a.runs) if a.runs > 1 else ""
        print("reference: tar | pigz -6 -p 2%s ..." % tag, flush=True)
        pigz_times.append(timed("%s | pigz -6 -p 2 > %s" % (tar, ref)))
        pigz_cpu.append(timed.cpu)
        print("satchel: export + download%s ..." % tag, flush=True)
        m = satchel_export(s, base, msid, a.pid, sat)
        runs.append(m)
        print("  pigz %.2fs | satchel export %.2fs (%d polls), download %.2fs, server RSS %.1f MiB before, peak %.1f MiB"
              % (pigz_times[-1], m["export_s"], m["polls"], m["download_s"], m["rss_before_kib"] / 1024,
                 m["peak_rss_kib"] / 1024), flush=True)
        if i < a.runs - 1:  # keep only the last archive on disk
            s.delete("%s/mysoftware/%d/exports/%d" % (base, msid, m["eid"]))
    pigz_size = os.path.getsize(ref)
    last = runs[-1]
    with open(os.path.join(a.out, "rss-trace.csv"), "w") as f:  # last run: time from POST, server VmRSS
        f.write("t_s,vmrss_kib,phase\n")
        for t, kib in last["rss_trace"]:
            f.write("%.3f,%d,%s\n" % (t, kib, "export" if t < last["export_s"] else "download"))

    print("verifying the archive ...", flush=True)
    v = verify(sat, a.corpus, names, a.out, full=not a.quick_verify)
    hdr = {k.lower(): val for k, val in last["headers"].items()}
    checksum_hdr = hdr.get("x-checksum-sha256")
    checksum_ok = None if checksum_hdr is None else checksum_hdr.lower() == last["sha256"]
    if checksum_ok is False:
        die("X-Checksum-Sha256 %s != sha256 of the download %s" % (checksum_hdr, last["sha256"]))
    if len(set(r["size"] for r in runs)) > 1:
        print("  note: archive sizes differ between runs: %s" % [r["size"] for r in runs])

    export_s = med([r["export_s"] for r in runs])
    download_s = med([r["download_s"] for r in runs])
    pigz_s = med(pigz_times)
    peak = max(r["peak_rss_kib"] for r in runs)
    res = {
        "satchel_export_s": round(export_s, 3),
        "pigz_s": round(pigz_s, 3),
        "ratio": round(pigz_s / export_s, 3),
        "satchel_size": last["size"],
        "pigz_size": pigz_size,
        "size_ratio": round(last["size"] / pigz_size, 4),
        "peak_rss_mib": round(peak / 1024, 1),  # max over all runs
        "download_s": round(download_s, 3),
        # context
        "export_plus_download_s": round(export_s + download_s, 3),
        "satchel_export_cpu_s": round(med([r["export_cpu_s"] for r in runs]), 2),
        "pigz_cpu_s": round(med(pigz_cpu), 2),
        "gzip_s": None if gzip_s is None else round(gzip_s, 3),
        "gzip_size": gzip_size,
        "peak_rss_per_run_mib": [round(r["peak_rss_kib"] / 1024, 1) for r in runs],
        "rss_before_export_mib": round(last["rss_before_kib"] / 1024, 1),
        "vmhwm_after_upload_mib": round(hwm_after_upload / 1024, 1),
        "vmhwm_after_export_mib": round(last["hwm_after_kib"] / 1024, 1),
        "rss_samples": sum(r["rss_samples"] for r in runs),
        "upload_s": round(upload_s, 1),
        "corpus_files": len(names),
        "corpus_mib": round(corpus_bytes / MIB, 1),
        "runs": a.runs,
        "satchel_export_s_all": [round(r["export_s"], 3) for r in runs],
        "pigz_s_all": [round(x, 3) for x in pigz_times],
        "archive_members": v["members"],
        "archive_other_members": v["other_members"],
        "archive_sha256": last["sha256"],
        "checksum_header_ok": checksum_ok,
        "verified": "full" if not a.quick_verify else "spot-check",
        "server_version": server_version,
        "cpus": os.cpu_count(),
        "goals": {
            "ratio_ge_2": pigz_s / export_s >= 2.0,
            "size_le_pigz": last["size"] <= pigz_size,
            "peak_rss_le_100mib": peak / 1024 <= 100.0,
        },
    }
    res["goals"]["all"] = all(res["goals"].values())
    with open(os.path.join(a.out, "export-results.json"), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")

    mark = lambda ok: "ok" if ok else "MISSED"
    g = res["goals"]
    print()
    print("corpus: %d files, %.1f MiB; %d CPUs; %s" % (len(names), corpus_bytes / MIB, os.cpu_count(),
                                                   "median of %d runs" % a.runs if a.runs > 1 else "1 run"))
    print("%-34s %10s %10s %14s" % ("", "seconds", "cpu s", "bytes"))
    print("%-34s %10.2f %10.2f %14d" % ("satchel export (POST->complete)", export_s, res["satchel_export_cpu_s"], last["size"]))
    print("%-34s %10.2f %10s %14s" % ("satchel download", download_s, "", ""))
    print("%-34s %10.2f %10.2f %14d" % ("tar | pigz -6 -p 2", pigz_s, res["pigz_cpu_s"], pigz_size))
    if gzip_s is not None:
        print("%-34s %10.2f %10s %14d" % ("tar | gzip -6 (context)", gzip_s, "", gzip_size))
    print()
    print("ratio pigz_s / satchel_export_s  %6.2f   goal >= 2.0   %s" % (res["ratio"], mark(g["ratio_ge_2"])))
    print("size  satchel / pigz             %6.4f   goal <= 1.0   %s" % (res["size_ratio"], mark(g["size_le_pigz"])))
    print("peak server RSS (export+dl)  %6.1f MiB   goal <= 100   %s" % (res["peak_rss_mib"], mark(g["peak_rss_le_100mib"])))
    print("  (RSS before export %.1f MiB; VmHWM after upload %.1f MiB, after export %.1f MiB; %d samples @20ms)"
          % (res["rss_before_export_mib"], res["vmhwm_after_upload_mib"], res["vmhwm_after_export_mib"], res["rss_samples"]))
    print("archive verified (%s): %d members, sha256 %s%s" % (res["verified"], v["members"], last["sha256"][:16],
                                                           "" if checksum_ok is None else ", matches X-Checksum-Sha256"))
    print("results: %s" % os.path.join(a.out, "export-results.json"))


if __name__ == "__main__":
    main()
