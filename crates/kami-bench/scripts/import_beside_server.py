"""Orders placed while `kami cards import` runs beside a SQLite shop.

Usage: python3 import_beside_server.py KAMI_BINARY [CODES]
Starts `kami serve` on 127.0.0.1:18960 (data in /tmp/kami-import-beside),
eight buyers ordering in a loop, then imports CODES codes (150,000 by
default) with the CLI into another product, and prints how long the import
took and how long orders placed during it waited. Figures only: it judges
nothing.
"""
import os, sys, json, time, threading, subprocess, urllib.request, shutil
KAMI = sys.argv[1]; N = int(sys.argv[2]) if len(sys.argv) > 2 else 150000
D = "/tmp/kami-import-beside"; shutil.rmtree(D, ignore_errors=True); os.makedirs(D)
env = {k: v for k, v in os.environ.items() if not k.startswith("KAMI_")}
env.update(KAMI_DATA_DIR=D, KAMI_BIND="127.0.0.1:18960", KAMI_RATE_LIMITS="off",
           KAMI_SANDBOX_SECRET="s"*32, KAMI_PUBLIC_URL="http://127.0.0.1:18960", KAMI_LOG="warn")
srv = subprocess.Popen([KAMI, "serve"], env=env, stdout=open(D + "/../kami-import-beside.log", "w"), stderr=subprocess.STDOUT)
time.sleep(3)
kr = subprocess.run([KAMI, "api-key", "create", "--name", "t"], env=env, capture_output=True, text=True); key = kr.stdout.strip().splitlines()[-1].strip()
def api(method, path, body=None, ctype="application/json"):
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    r = urllib.request.Request("http://127.0.0.1:18960" + path, data=data, method=method,
        headers={"Authorization": "Bearer " + key, "Content-Type": ctype})
    try:
        with urllib.request.urlopen(r, timeout=60) as res: return res.status, json.loads(res.read() or b"{}")
    except urllib.error.HTTPError as e: return e.code, e.read()
sa, a = api("POST", "/api/v1/admin/products", {"name": "A", "price": 100, "currency": "CNY"})
_, b = api("POST", "/api/v1/admin/products", {"name": "B", "price": 100, "currency": "CNY"})
api("POST", f"/api/v1/admin/products/{a['id']}/cards", "\n".join(f"A{i}" for i in range(20000)).encode(), "text/plain")
open(D + "/codes.txt", "w").write("\n".join(f"B-{i:08d}-xxxxxxxxxxxx" for i in range(N)))
stop = False; lat = []; statuses = {}
def buyer(t):
    i = 0
    while not stop:
        i += 1; t0 = time.time()
        s, _ = api("POST", "/api/v1/orders", {"product_id": a["id"], "quantity": 1, "email": f"b{t}-{i}@x.com", "channel": "sandbox"})
        lat.append((t0, time.time() - t0)); statuses[s] = statuses.get(s, 0) + 1
        time.sleep(0.01)
ths = [threading.Thread(target=buyer, args=(t,)) for t in range(8)]; [t.start() for t in ths]
time.sleep(1); t0 = time.time()
cmd = [KAMI, "cards", "import", "--product", str(b["id"]), D + "/codes.txt"] if len(sys.argv) < 4 else [KAMI] + sys.argv[3].split()
out = subprocess.run(cmd, env=env, capture_output=True, text=True)
t1 = time.time(); time.sleep(2); stop = True; [t.join() for t in ths]
srv.terminate(); srv.wait()
during = [l for s, l in lat if t0 <= s <= t1]
print("cli import %.1fs rc=%d %s" % (t1 - t0, out.returncode, out.stdout.strip()[:80]))
print("orders during import:", len(during), "max %.2fs" % max(during), ">1s:", sum(l > 1 for l in during), ">5s:", sum(l > 5 for l in during), "statuses", statuses)
slow = sorted((s - t0, l) for s, l in lat if l > 0.5)
print("slow (start offset, latency):", [("%.1f" % s, "%.1f" % l) for s, l in slow[:15]])
