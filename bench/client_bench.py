"""Measures the `satchel` client against curl (see bench/client.sh). Prints a table and writes
bench/out/client-results.json."""

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time

import requests

NS = "http://www.usharesoft.com/uforge"
XML = {"Content-Type": "application/xml", "Accept": "application/xml"}


def db_id(r, what):
    if r.status_code not in (200, 201):
        sys.exit("%s -> HTTP %d: %s" % (what, r.status_code, r.text[:300]))
    m = re.search(r"<dbId>(\d+)</dbId>", r.text)
    if not m:
        sys.exit("%s: no dbId in %s" % (what, r.text[:300]))
    return int(m.group(1))


def make_bundle(s, base, name, files):
    msid = db_id(s.post(base + "/mysoftware", headers=XML,
                        data='<ns0:mySoftware xmlns:ns0="%s"><name>%s</name><version>1.0</version></ns0:mySoftware>' % (NS, name)),
                 "create bundle")
    for fname, path in files:
        said = db_id(s.post("%s/mysoftware/%d/artifacts" % (base, msid), headers=XML,
                            data='<ns0:softwareArtifact xmlns:ns0="%s"><name>%s</name><type>file</type></ns0:softwareArtifact>' % (NS, fname)),
                     "create artifact")
        with open(path, "rb") as f:
            r = s.post("%s/mysoftware/%d/artifacts/%d/bin/%s" % (base, msid, said, fname), data=f,
                       headers={"Content-Type": "application/octet-stream", "Accept": "application/xml"})
        if r.status_code not in (200, 201):
            sys.exit("upload -> HTTP %d: %s" % (r.status_code, r.text[:300]))
    return msid


CURL_LOOP = r'''
set -e
A="-s -u $U:$P"
eid=$(curl $A -X POST -H 'Accept: application/xml' "$B/mysoftware/$M/exports" | sed -n 's:.*<dbId>\([0-9]*\)</dbId>.*:\1:p' | head -1)
until curl $A -H 'Accept: application/xml' "$B/mysoftware/$M/exports/$eid/status" | grep -q '<complete>true</complete>'; do
    sleep 0.01
done
curl $A -o "$F" "$B/mysoftware/$M/exports/$eid/downloads"
'''


def timed(cmd, env):
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--dl-runs", type=int, default=3)
    a = ap.parse_args()
    url = "http://127.0.0.1:%d" % a.port
    base = "%s/api/users/%s" % (url, a.user)
    s = requests.Session()
    s.auth = (a.user, a.password)
    work = os.path.join(a.out, "client-bench")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, SATCHEL_URL=url, SATCHEL_USER=a.user, SATCHEL_PASSWORD=a.password,
               XDG_CONFIG_HOME=work)

    # 1. A small bundle: one 10 KiB file.
    small = os.path.join(work, "small.bin")
    with open(small, "wb") as f:
        f.write(os.urandom(10 << 10))
    msid = make_bundle(s, base, "small", [("small.bin", small)])
    out_c, out_s = os.path.join(work, "curl.tar.gz"), os.path.join(work, "satchel.tar.gz")
    curl_env = dict(env, U=a.user, P=a.password, B=base, M=str(msid), F=out_c)
    cli, curl = [], []
    for i in range(a.runs):
        # Alternate which goes first, so neither always finds a warmer server.
        pair = [("curl", lambda: timed(["bash", "-c", CURL_LOOP], curl_env)),
                ("satchel", lambda: timed([a.bin, "export", "bundle", str(msid), "-o", out_s, "--quiet"], env))]
        for name, run in (pair if i % 2 == 0 else pair[::-1]):
            mine = out_c if name == "curl" else out_s
            if os.path.exists(mine):
                os.remove(mine)
            (curl if name == "curl" else cli).append(run())
    # Both got the same archive (the server builds a bundle's archive byte for byte the same each time).
    assert sha256(out_s) == sha256(out_c), "the client's archive differs from curl's"
    small_res = {"runs": a.runs, "satchel_median_s": statistics.median(cli), "curl_median_s": statistics.median(curl),
                 "satchel_p90_s": sorted(cli)[int(0.9 * (len(cli) - 1))], "curl_p90_s": sorted(curl)[int(0.9 * (len(curl) - 1))]}
    small_res["ratio_curl_over_satchel"] = small_res["curl_median_s"] / small_res["satchel_median_s"]

    # 2. A large archive: one random file, exported once, downloaded by each.
    big = os.path.join(work, "big.bin")
    if not os.path.exists(big) or os.path.getsize(big) != a.big_mib << 20:
        subprocess.run(["dd", "if=/dev/urandom", "of=" + big, "bs=1M", "count=%d" % a.big_mib, "status=none"], check=True)
    bmsid = make_bundle(s, base, "big", [("big.bin", big)])
    r = s.post("%s/mysoftware/%d/exports" % (base, bmsid), headers={"Accept": "application/xml"})
    eid = db_id(r, "export big")
    while "<complete>true</complete>" not in s.get("%s/mysoftware/%d/exports/%d/status" % (base, bmsid, eid),
                                                   headers={"Accept": "application/xml"}).text:
        time.sleep(0.2)
    dl_s, dl_c, dl_f = [], [], []
    for i in range(a.dl_runs):
        for name in (["satchel", "curl", "fsync"] if i % 2 == 0 else ["curl", "fsync", "satchel"]):
            mine = out_c if name == "curl" else out_s
            if os.path.exists(mine):
                os.remove(mine)
            if name == "satchel":
                dl_s.append(timed([a.bin, "exports", "download", str(eid), "-o", out_s, "--quiet"], env))
            elif name == "fsync":
                dl_f.append(timed([a.bin, "exports", "download", str(eid), "-o", out_s, "--quiet", "--fsync"], env))
            else:
                dl_c.append(timed(["curl", "-s", "-u", "%s:%s" % (a.user, a.password), "-o", out_c,
                                   "%s/mysoftware/%d/exports/%d/downloads" % (base, bmsid, eid)], env))
    size = os.path.getsize(out_s)
    assert sha256(out_s) == sha256(out_c), "downloads differ"
    dl = {"archive_bytes": size, "runs": a.dl_runs,
          "satchel_mib_s": size / (1 << 20) / statistics.median(dl_s),
          "curl_mib_s": size / (1 << 20) / statistics.median(dl_c),
          "satchel_fsync_mib_s": size / (1 << 20) / statistics.median(dl_f)}
    dl["ratio_satchel_over_curl"] = dl["satchel_mib_s"] / dl["curl_mib_s"]
    res = {"small_bundle_cold_start": small_res, "download": dl,
           "goals": {"cold_start_no_slower": small_res["satchel_median_s"] <= small_res["curl_median_s"],
                     "download_at_least_0.9": dl["ratio_satchel_over_curl"] >= 0.9}}
    with open(os.path.join(a.out, "client-results.json"), "w") as f:
        json.dump(res, f, indent=2)
    print("small bundle, start to archive on disk (median of %d): satchel %.1f ms, curl loop %.1f ms (curl/satchel %.2fx)"
          % (a.runs, small_res["satchel_median_s"] * 1e3, small_res["curl_median_s"] * 1e3, small_res["ratio_curl_over_satchel"]))
    print("download of %.0f MiB (median of %d): satchel %.0f MiB/s, curl -o %.0f MiB/s (satchel/curl %.2fx); "
          "satchel --fsync %.0f MiB/s (flushed to disk before the rename)"
          % (size / (1 << 20), a.dl_runs, dl["satchel_mib_s"], dl["curl_mib_s"], dl["ratio_satchel_over_curl"],
             dl["satchel_fsync_mib_s"]))


if __name__ == "__main__":
    main()
