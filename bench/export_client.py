#!/usr/bin/env python3
"""Drives the benchmark: uploads the corpus (untimed), then times export and download against
`tar | pigz -6 -p 2`, sampling the server's RSS every 20 ms during export + download."""
import argparse, json, os, re, subprocess, threading, time
import requests

NS = "http://www.usharesoft.com/uforge"

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    base = "http://127.0.0.1:%d/api/users/bench" % a.port
    s = requests.Session()
    s.auth = ("bench", "bench-pw")
    H = {"Content-Type": "application/xml", "Accept": "application/xml"}
    for _ in range(200):
        try:
            if s.get("http://127.0.0.1:%d/api/status" % a.port).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    dbid = lambda r: int(re.search(r"<dbId>(\d+)</dbId>", r.text).group(1))
    r = s.post(base + "/mysoftware", data='<ns0:mySoftware xmlns:ns0="%s"><name>corpus</name><version>1.0</version></ns0:mySoftware>' % NS, headers=H)
    r.raise_for_status()
    msid = dbid(r)
    names = sorted(n for n in os.listdir(a.corpus) if not n.startswith("."))
    t0 = time.time()
    for n in names:
        r = s.post("%s/mysoftware/%d/artifacts" % (base, msid), data='<ns0:softwareArtifact xmlns:ns0="%s"><name>%s</name><type>file</type></ns0:softwareArtifact>' % (NS, n), headers=H)
        r.raise_for_status()
        with open(os.path.join(a.corpus, n), "rb") as f:
            s.post("%s/mysoftware/%d/artifacts/%d/bin/%s" % (base, msid, dbid(r), n), data=f, headers=H).raise_for_status()
    print("uploaded %d files in %.1fs" % (len(names), time.time() - t0))

    # Warm the page cache for both sides, then the reference.
    subprocess.run("cat %s/* > /dev/null" % a.corpus, shell=True, check=True)
    t = time.time()
    subprocess.run("tar -cf - -C %s . | pigz -6 -p 2 > %s/ref.tar.gz" % (a.corpus, a.out), shell=True, check=True)
    pigz_s = time.time() - t
    pigz_size = os.path.getsize(os.path.join(a.out, "ref.tar.gz"))

    rss_before = rss_kib(a.pid)
    peak = [rss_before]
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(a.pid))
            time.sleep(0.02)
    th = threading.Thread(target=sample)
    th.start()
    t = time.time()
    r = s.post("%s/mysoftware/%d/exports" % (base, msid), headers=H)
    r.raise_for_status()
    eid = dbid(r)
    while True:
        st = s.get("%s/mysoftware/%d/exports/%d/status" % (base, msid, eid), headers=H).text
        if "<complete>true</complete>" in st:
            break
        if "<error>true</error>" in st:
            raise SystemExit("export failed: " + st)
        time.sleep(0.05)
    export_s = time.time() - t
    t = time.time()
    path = os.path.join(a.out, "satchel.tar.gz")
    with s.get("%s/mysoftware/%d/exports/%d/downloads" % (base, msid, eid), stream=True) as r:
        r.raise_for_status()
        with open(path, "wb") as f:
            for chunk in r.iter_content(1 << 20):
                f.write(chunk)
    download_s = time.time() - t
    stop.set()
    th.join()
    size = os.path.getsize(path)
    listed = subprocess.run(["tar", "-tzf", path], capture_output=True, text=True, check=True).stdout.split()
    missing = [n for n in names if "bundles/corpus/1.0/" + n not in listed]
    assert not missing, missing[:5]
    for n in (names[0], names[-1], "log_0.log"):
        got = subprocess.run(["tar", "-xzOf", path, "bundles/corpus/1.0/" + n], capture_output=True, check=True).stdout
        assert got == open(os.path.join(a.corpus, n), "rb").read(), n
    res = {
        "corpus_mib": sum(os.path.getsize(os.path.join(a.corpus, n)) for n in names) / 1048576,
        "satchel_export_s": round(export_s, 3), "pigz_s": round(pigz_s, 3),
        "ratio": round(pigz_s / export_s, 2),
        "satchel_size": size, "pigz_size": pigz_size, "size_ratio": round(size / pigz_size, 4),
        "peak_rss_mib": round(peak[0] / 1024, 1), "rss_before_export_mib": round(rss_before / 1024, 1), "download_s": round(download_s, 3),
    }
    with open(os.path.join(a.out, "export-results.json"), "w") as f:
        json.dump(res, f, indent=2)
    for k, v in res.items():
        print("%-18s %s" % (k, v))

if __name__ == "__main__":
    main()
