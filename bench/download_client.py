#!/usr/bin/env python3
"""Download benchmark (bench/download.sh): the same archive file served by Satchel
(`GET .../exports/{eid}/downloads`) and by nginx (`sendfile on`), over loopback, alternating, to
/dev/null with curl; one download at a time and four at once. See bench/README.md."""
import argparse, hashlib, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(__file__))
import perf_client as pc  # noqa: E402


def free_port():
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def timed_curls(urls, auth=None):
    """Runs one curl per url at once; returns (seconds, bytes) for the whole set."""
    t = time.perf_counter()
    procs = []
    for u in urls:
        cmd = ["curl", "-fsS", "-o", "/dev/null", "-w", "%{size_download}"]
        if auth:
            cmd += ["-u", auth]
        procs.append(subprocess.Popen(cmd + [u], stdout=subprocess.PIPE, text=True))
    total = 0
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            pc.die("curl %s failed (%d)" % (urls[0], p.returncode))
        total += int(out)
    return time.perf_counter() - t, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--data", required=True, type=os.path.abspath)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--random-file", required=True)
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench-pw")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nginx", default="nginx")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import requests
    s = requests.Session()
    s.auth = (a.user, a.password)
    base = "http://127.0.0.1:%d/api/users/%s" % (a.port, a.user)
    rels = pc.corpus_files(a.corpus)
    files = [("random.bin", a.random_file)] + [(pc.flat(r), os.path.join(a.corpus, r)) for r in rels]
    print("== uploading %d files ..." % len(files), flush=True)
    msid = pc.upload(s, base, "download", files)
    e = pc.export(s, base, msid, a.pid)
    url = pc.download_url(base, msid, e["eid"])
    head = s.head(url)
    size = int(head.headers["content-length"])
    want = head.headers.get("x-checksum-sha256")
    # The archive as stored: the one file of that size under the data dir.
    path = None
    for d, _, fs in os.walk(a.data):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.getsize(p) == size:
                path = p
    if path is None:
        pc.die("no file of %d bytes under %s" % (size, a.data))
    print("== archive: %.1f MiB at %s" % (size / pc.MIB, path), flush=True)
    h = hashlib.sha256()
    with open(path, "rb") as f:  # also warms the page cache for both servers
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    if want and h.hexdigest() != want:
        pc.die("the stored file's sha256 is not X-Checksum-Sha256")

    tmp = tempfile.mkdtemp(prefix="satchel-dl-")
    os.makedirs(os.path.join(tmp, "logs"))
    nport = free_port()
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        # The data dir is private to its owner: nginx's workers read it as that user (root here).
        f.write(("user root;\n" if os.geteuid() == 0 else "") + """worker_processes auto; daemon off; pid %(t)s/nginx.pid; error_log %(t)s/logs/error.log warn;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path %(t)s/body; proxy_temp_path %(t)s/proxy; fastcgi_temp_path %(t)s/fastcgi;
  uwsgi_temp_path %(t)s/uwsgi; scgi_temp_path %(t)s/scgi;
  server { listen 127.0.0.1:%(p)d; location = /archive { alias %(f)s; default_type application/gzip; } } }
""" % {"t": tmp, "p": nport, "f": path})
    ng = subprocess.Popen([a.nginx, "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        nurl = "http://127.0.0.1:%d/archive" % nport
        for _ in range(100):
            if subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-r", "0-0", nurl]).returncode == 0:
                break
            time.sleep(0.05)
        auth = "%s:%s" % (a.user, a.password)
        res = {}
        for label, n in (("one", 1), ("four", 4)):
            rows = {"nginx": [], "satchel": []}
            for i in range(a.runs):
                for who in ("nginx", "satchel"):
                    os.sync()
                    t, got = timed_curls([nurl] * n) if who == "nginx" else timed_curls([url] * n, auth)
                    if got != size * n:
                        pc.die("%s: %d bytes, not %d" % (who, got, size * n))
                    rows[who].append(got / t / pc.MIB)
                print("  %s download(s), run %d: nginx %.0f MiB/s | satchel %.0f MiB/s"
                      % (n, i + 1, rows["nginx"][-1], rows["satchel"][-1]), flush=True)
            med = {k: statistics.median(v) for k, v in rows.items()}
            res[label] = {"nginx_mib_s": round(med["nginx"]), "satchel_mib_s": round(med["satchel"]),
                          "ratio": round(med["satchel"] / med["nginx"], 3), "runs": rows}
    finally:
        ng.terminate()
        ng.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("download of a %.1f MiB archive, RUNS=%d, medians (MiB/s, aggregate for four at once)" % (size / pc.MIB, a.runs))
    print("| downloads at once | nginx sendfile | Satchel | Satchel / nginx | goal |")
    print("| --- | --- | --- | --- | --- |")
    ok = True
    for label, n in (("one", 1), ("four", 4)):
        r = res[label]
        goal = "≥ 0.9×: %s" % ("ok" if r["ratio"] >= 0.9 else "MISSED") if n == 1 else "–"
        ok = ok and (n != 1 or r["ratio"] >= 0.9)
        print("| %d | %d | %d | %.2f× | %s |" % (n, r["nginx_mib_s"], r["satchel_mib_s"], r["ratio"], goal))
    import json
    with open(os.path.join(a.out, "download-results.json"), "w") as f:
        json.dump({"size": size, "runs": a.runs, "results": res}, f, indent=1)
    print("\nall goals met" if ok else "\nsome goals MISSED")


if __name__ == "__main__":
    main()
