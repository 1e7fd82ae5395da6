#!/usr/bin/env python3
"""Driver of bench/image.sh (run that, not this).

Uploads the corpus as one bundle (untimed), creates a container template, then in the same run, N rounds:
  * reference: `tar -cf - -C corpus . | pigz -6 -p 2 > ref.tar.gz` (page cache warm);
  * Satchel: POST .../templates/{tid}/images (compress=true) -> poll .../status every 50 ms until complete
    (generation time), then GET .../downloads (download time), sampling the server's VmRSS every 20 ms.
Verifies the last image (unpacked with tar): every blob matches its digest, and every corpus file is in
the layer under opt/corpus/, byte for byte; `skopeo inspect` reads it when installed.
Writes image-results.json.
"""

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import requests

from export_client import (MIB, NS, RssSampler, XML, child, cpu_s, db_id, die, med, proc_kib, sh,
                           timed, upload)


def generate(s, base, msid, tid, pid, out_path, poll=0.05, timeout=1800):
    images = "%s/mysoftware/%d/templates/%d/images" % (base, msid, tid)
    with RssSampler(pid) as rss:
        cpu0 = cpu_s(pid)
        t0 = time.perf_counter()
        r = s.post(images, headers=XML, data=(
            '<ns0:image xmlns:ns0="%s"><compress>true</compress><format><name>docker</name></format>'
            '<name>corpus</name></ns0:image>' % NS))
        if r.status_code != 201:
            die("POST images -> HTTP %d: %s" % (r.status_code, r.text[:500]))
        itid = db_id(r, "generate image")
        while True:
            st = s.get("%s/%d/status" % (images, itid), headers={"Accept": "application/xml"})
            if st.status_code != 200 or child(st.text, "error") == "true":
                die("image %d: HTTP %d %s" % (itid, st.status_code, st.text[:1000]))
            if child(st.text, "complete") == "true":
                break
            if time.perf_counter() - t0 > timeout:
                die("image %d not generated after %ds" % (itid, timeout))
            time.sleep(poll)
        gen_s = time.perf_counter() - t0
        gen_cpu = cpu_s(pid) - cpu0
        t1 = time.perf_counter()
        h = hashlib.sha256()
        size = 0
        with s.get("%s/%d/downloads" % (images, itid), stream=True) as r:
            if r.status_code != 200:
                die("GET downloads -> HTTP %d: %s" % (r.status_code, r.text[:500]))
            with open(out_path, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        dl_s = time.perf_counter() - t1
    return {"itid": itid, "gen_s": gen_s, "gen_cpu_s": gen_cpu, "download_s": dl_s, "size": size,
            "sha256": h.hexdigest(), "peak_rss_kib": rss.peak_kib, "rss_samples": rss.samples}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(archive, corpus, names, out):
    """Unpacks the image with tar: every blob matches its digest, and every corpus file is in the layer
    under opt/corpus/, byte for byte. `skopeo inspect` reads it too when installed."""
    work = os.path.join(out, "image-verify")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "rootfs"))
    sh("tar -xzf %s -C %s" % (archive, work))
    blobs = os.listdir(os.path.join(work, "blobs", "sha256"))
    for b in blobs:
        if sha256_file(os.path.join(work, "blobs", "sha256", b)) != b:
            die("blob %s does not match its digest" % b)
    with open(os.path.join(work, "index.json")) as f:
        index = json.load(f)
    with open(os.path.join(work, "blobs", "sha256", index["manifests"][0]["digest"][7:])) as f:
        manifest = json.load(f)
    sh("tar -xzf %s -C %s" % (os.path.join(work, "blobs", "sha256", manifest["layers"][0]["digest"][7:]),
                              os.path.join(work, "rootfs")))
    root = os.path.join(work, "rootfs", "opt", "corpus")
    bad = [n for n in names if not filecmp.cmp(os.path.join(corpus, n), os.path.join(root, n), shallow=False)]
    if bad:
        die("%d corpus files differ in the layer, e.g. %s" % (len(bad), bad[:3]))
    if shutil.which("skopeo"):
        subprocess.run(["skopeo", "inspect", "--raw", "oci-archive:" + archive], check=True,
                       stdout=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)
    return len(names), len(blobs)


def main():
    ap = argparse.ArgumentParser()
    for a in ("--port", "--pid", "--runs"):
        ap.add_argument(a, type=int, required=a != "--runs", default=1)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench-pw")
    a = ap.parse_args()

    base = "http://127.0.0.1:%d/api/users/%s" % (a.port, a.user)
    s = requests.Session()
    s.auth = (a.user, a.password)
    names = sorted(n for n in os.listdir(a.corpus) if not n.startswith(".") and os.path.isfile(os.path.join(a.corpus, n)))
    corpus_bytes = sum(os.path.getsize(os.path.join(a.corpus, n)) for n in names)
    print("uploading %d files (%.1f MiB) as bundle corpus/1.0 ..." % (len(names), corpus_bytes / MIB), flush=True)
    msid, _ = upload(s, base, a.corpus, names)
    tid = db_id(s.post("%s/mysoftware/%d/templates" % (base, msid), headers=XML), "create template")

    sh("cat %s/* > /dev/null" % a.corpus)
    ref = os.path.join(a.out, "ref.tar.gz")
    img = os.path.join(a.out, "satchel-image.oci.tar.gz")
    tar = "tar -cf - --exclude=./.corpus-stamp -C %s ." % a.corpus
    pigz, runs = [], []
    for i in range(a.runs):
        print("reference: tar | pigz -6 -p 2 ...", flush=True)
        pigz.append(timed("%s | pigz -6 -p 2 > %s" % (tar, ref)))
        print("satchel: generate image + download ...", flush=True)
        m = generate(s, base, msid, tid, a.pid, img)
        runs.append(m)
        print("  pigz %.2fs | satchel generation %.2fs, download %.2fs, peak RSS %.1f MiB"
              % (pigz[-1], m["gen_s"], m["download_s"], m["peak_rss_kib"] / 1024), flush=True)
    print("verifying the image ...", flush=True)
    files, blobs = verify(img, a.corpus, names, a.out)
    gen_s, pigz_s = med([r["gen_s"] for r in runs]), med(pigz)
    res = {
        "satchel_generate_s": round(gen_s, 3),
        "pigz_s": round(pigz_s, 3),
        "ratio": round(pigz_s / gen_s, 3),
        "image_bytes": runs[-1]["size"],
        "pigz_bytes": os.path.getsize(ref),
        "download_s": round(med([r["download_s"] for r in runs]), 3),
        "peak_rss_mib": round(max(r["peak_rss_kib"] for r in runs) / 1024, 1),
        "satchel_generate_cpu_s": round(med([r["gen_cpu_s"] for r in runs]), 2),
        "reproducible": len(set(r["sha256"] for r in runs)) == 1,
        "layer_files_verified": files,
        "blobs_verified": blobs,
        "corpus_mib": round(corpus_bytes / MIB, 1),
        "runs": a.runs,
        "cpus": os.cpu_count(),
    }
    with open(os.path.join(a.out, "image-results.json"), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print()
    print("corpus %.1f MiB, %d files; %d run(s)" % (res["corpus_mib"], len(names), a.runs))
    print("satchel image generation  %8.2f s  (%d bytes)" % (gen_s, res["image_bytes"]))
    print("tar | pigz -6 -p 2        %8.2f s  (%d bytes)" % (pigz_s, res["pigz_bytes"]))
    print("ratio pigz_s / satchel_s  %8.2f" % res["ratio"])
    print("download                  %8.2f s" % res["download_s"])
    print("peak server RSS           %8.1f MiB" % res["peak_rss_mib"])
    print("same digest every run     %8s" % res["reproducible"])
    print("results: %s" % os.path.join(a.out, "image-results.json"))


if __name__ == "__main__":
    main()
