#!/usr/bin/env python3
"""Configuration drift detection (#25): how long from an edit made behind the server's back to
the `alert-config-drift` it raises, for a file (mamori.toml) and for a database row (an
application inserted into config_versions with SQL), 20 tries each at random moments against
the re-hash timer; and the CPU the re-hash costs an idle server, as a ratio against the same
server with re-hashing every hour (in effect off), measured in the same run.

  scripts/bench-drift.py BIN [TRIES=20] [IDLE_SECS=60]

The edit time is taken just before the edit; the alert is seen on /metrics
(mamori_audit_events_total{action="alert-config-drift"}) polled every 10 ms. Embedded store.
"""
import os
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = sys.argv[1]
TRIES = int(sys.argv[2]) if len(sys.argv) > 2 else 20
IDLE = int(sys.argv[3]) if len(sys.argv) > 3 else 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(rehash):
    data = tempfile.mkdtemp()
    subprocess.run([BIN, "init", "--data-dir", data], check=True, capture_output=True)
    toml = os.path.join(data, "mamori.toml")
    text = open(toml).read().replace("# rehash_secs = 3", f"rehash_secs = {rehash}")
    open(toml, "w").write(text)
    subprocess.run([BIN, "baseline", "approve", "--reason", "bench", "--data-dir", data], check=True,
                   capture_output=True)
    port = free_port()
    p = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.readline()
    return data, toml, text, port, p


def drift_alerts(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r'mamori_audit_events_total\{action="alert-config-drift",outcome="failure"\} (\d+)', body)
    return int(m.group(1)) if m else 0


def measure(port, edit, undo, interval):
    out = []
    for i in range(TRIES):
        time.sleep(random.uniform(0, interval))
        before = drift_alerts(port)
        t0 = time.monotonic()
        edit(i)
        while drift_alerts(port) == before:
            time.sleep(0.01)
        out.append(time.monotonic() - t0)
        undo(i)
        time.sleep(interval + 0.5)  # the watcher sees the clean state: the next edit raises anew
    return out


def cpu_secs(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


interval = 3
data, toml, text, port, p = setup(interval)
try:
    def file_edit(i):
        open(toml, "w").write(text + f"\n# edit {i}\n")

    def file_undo(i):
        open(toml, "w").write(text)

    db = sqlite3.connect(os.path.join(data, "mamori.db"), timeout=30)

    def db_edit(i):
        db.execute("INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) "
                   "VALUES ('client', ?, 1, ?, 'bench', 0, 'bench')",
                   (f"drift-{i}", '{"id":"drift-%d","scope":"system/Patient.rs","token_lifetime_secs":900}' % i))
        db.commit()

    def db_undo(i):
        db.execute("INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) "
                   "VALUES ('client', ?, 2, NULL, 'bench', 0, 'bench')", (f"drift-{i}",))
        db.commit()

    files = measure(port, file_edit, file_undo, interval)
    rows = measure(port, db_edit, db_undo, interval)
finally:
    p.terminate()
    p.wait()

# Idle CPU: re-hashing every 3 s against every hour, same build, same data, one after the other.
idle = {}
for rehash in (interval, 3600):
    data, toml, text, port, p = setup(rehash)
    try:
        time.sleep(2)
        c0, t0 = cpu_secs(p.pid), time.monotonic()
        time.sleep(IDLE)
        idle[rehash] = (cpu_secs(p.pid) - c0) / (time.monotonic() - t0)
    finally:
        p.terminate()
        p.wait()


def row(name, xs):
    return f"| {name} | {len(xs)} | {statistics.median(xs):.2f} s | {max(xs):.2f} s |"


print("| edit | tries | median | worst |")
print("|---|---|---|---|")
print(row("mamori.toml edited (goal ≤ 5 s)", files))
print(row("a row inserted with SQL (goal ≤ 10 s)", rows))
print()
print(f"idle CPU, re-hash every {interval} s: {idle[interval] * 100:.3f}% of a core; every hour: "
      f"{idle[3600] * 100:.3f}%; ratio {idle[interval] / max(idle[3600], 1e-9):.2f}")
