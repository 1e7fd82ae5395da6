"""Drives bench/hostile.sh's measurements against a running server (stdlib only)."""
import base64
import concurrent.futures as cf
import http.client
import statistics
import sys
import threading
import time

PORT, MPORT, PID = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def rss_mib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(method, path, user=None, password=None, body=None, port=PORT):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    h = {"Content-Type": "application/xml", "Accept": "application/xml"}
    if user:
        h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    t = time.perf_counter()
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, time.perf_counter() - t, data


def poll_while(stop, path, user=None, password=None):
    lat = []
    while not stop.is_set() or not lat:
        s, dt, _ = request("GET", path, user, password)
        assert s == 200, s
        lat.append(dt)
        time.sleep(0.01)
    return lat


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def metric(name):
    _, _, text = request("GET", "/metrics", port=MPORT)
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


# Warm bob's login so his polls measure the cached path.
request("GET", "/api/users/bob", "bob", "bob-pw")
idle = [request("GET", "/api/status")[1] for _ in range(50)]
idle_bob = [request("GET", "/api/users/bob", "bob", "bob-pw")[1] for _ in range(50)]
print(f"reference: GET /api/status idle p50 {statistics.median(idle)*1000:.2f} ms, max {max(idle)*1000:.2f} ms")
print(f"reference: cached user poll idle p50 {statistics.median(idle_bob)*1000:.2f} ms, max {max(idle_bob)*1000:.2f} ms")

# 1. Four attribute bombs at once.
doc = ('<ns1:mySoftware xmlns:ns1="http://www.usharesoft.com/uforge"'
       + "".join(f' a{i}="1"' for i in range(90000))
       + "><name>x</name><version>1</version></ns1:mySoftware>").encode()
request("GET", "/api/users/alice", "alice", "alice-pw")
stop = threading.Event()
with cf.ThreadPoolExecutor(8) as ex:
    poller = ex.submit(poll_while, stop, "/api/status")
    bombs = [ex.submit(request, "POST", "/api/users/alice/mysoftware", "alice", "alice-pw", doc) for _ in range(4)]
    res = [b.result() for b in bombs]
    stop.set()
    lat = poller.result()
print(f"1. 90k-attribute document ({len(doc)} bytes) x4 in parallel: statuses {sorted(r[0] for r in res)}, "
      f"slowest answer {max(r[1] for r in res)*1000:.1f} ms; GET /api/status meanwhile: "
      f"max {max(lat)*1000:.2f} ms over {len(lat)} polls")

def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.005)


# 2. 64 cold logins of one user (carol has not logged in yet). Before the storm, which throttles this address.
checks_before = metric("satchel_password_checks_total")
before = rss_mib()
peak = [before]
stop = threading.Event()
sampler = threading.Thread(target=sample)
sampler.start()
with cf.ThreadPoolExecutor(64) as ex:
    t = time.perf_counter()
    res = list(ex.map(lambda _: request("GET", "/api/users/carol", "carol", "carol-pw"), range(64)))
    wall = time.perf_counter() - t
stop.set()
sampler.join()
codes = {}
for s, _, _ in res:
    codes[s] = codes.get(s, 0) + 1
checks = metric("satchel_password_checks_total") - checks_before
print(f"2. 64 cold logins of one user at once: answers {codes} in {wall*1000:.0f} ms, argon2 checks run: {checks:.0f}, "
      f"RSS +{peak[0]-before:.1f} MiB")

# 3. 256 wrong passwords at once.
before = rss_mib()
peak = [before]
stop = threading.Event()


sampler = threading.Thread(target=sample)
sampler.start()
with cf.ThreadPoolExecutor(300) as ex:
    poller = ex.submit(poll_while, stop, "/api/users/bob", "bob", "bob-pw")
    t = time.perf_counter()
    crowd = [ex.submit(request, "GET", "/api/users/alice",
                       "alice" if i % 2 == 0 else f"nobody{i}", f"wrong-{i}") for i in range(256)]
    res = [c.result() for c in crowd]
    wall = time.perf_counter() - t
    stop.set()
    lat = poller.result()
sampler.join()
codes = {}
for s, _, _ in res:
    codes[s] = codes.get(s, 0) + 1
print(f"3. 256 wrong passwords at once: answers {codes} in {wall:.2f} s, slowest {max(r[1] for r in res)*1000:.0f} ms; "
      f"RSS {before:.1f} -> peak {peak[0]:.1f} MiB (+{peak[0]-before:.1f}); cached user's polls meanwhile: "
      f"p50 {statistics.median(lat)*1000:.2f} ms, p99 {pct(lat, 99)*1000:.2f} ms, max {max(lat)*1000:.2f} ms "
      f"over {len(lat)} polls")

