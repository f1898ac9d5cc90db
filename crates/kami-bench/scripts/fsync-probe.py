#!/usr/bin/env python3
"""How long the disk takes to make a small write durable, as PostgreSQL's WAL
flush and SQLite's commit need: writes 8 KiB and calls fdatasync in a loop
for SECONDS, then prints the distribution. Run it on the filesystem the
database lives on, with nothing else running, to tell the disk's own stalls
from the server's.

    python3 crates/kami-bench/scripts/fsync-probe.py /var/lib/postgresql/probe 20
"""
import os, sys, time
path = sys.argv[1]; secs = float(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
buf = os.urandom(8192); lat = []; off = 0; end = time.time() + secs
while time.time() < end:
    os.pwrite(fd, buf, off); off = (off + 8192) % (16 << 20)
    t = time.perf_counter(); os.fdatasync(fd); lat.append(time.perf_counter() - t)
os.close(fd); os.unlink(path)
lat.sort(); n = len(lat)
print(f"{n} syncs: p50 {lat[n//2]*1e3:.2f} ms, p99 {lat[int(n*.99)]*1e3:.2f}, p99.9 {lat[int(n*.999)]*1e3:.2f}, max {lat[-1]*1e3:.1f}; over 100 ms: {sum(1 for x in lat if x > .1)}")
