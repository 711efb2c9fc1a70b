#!/usr/bin/env python3
"""Configuration drift detection (#25): how long from an edit made behind the server's back to
the alert it raises — `alert-config-drift` for a file (mamori.toml), `alert-config-tampered` for
a database row (an application inserted into config_versions with SQL) — 20 tries each at random
moments against the re-hash timer; and the CPU the re-hash costs the server, idle and under the
P1 read load (wrk, 16 connections, GET of one Patient), as a ratio against the same server with
re-hashing every hour (in effect off), measured in the same run.

  scripts/bench-drift.py BIN [TRIES=20] [IDLE_SECS=60]

The edit time is taken just before the edit; the alert is seen on /metrics
(mamori_audit_events_total{action=…}) polled every 10 ms. Embedded store. Needs wrk
(`apt-get install wrk`) for the loaded figure.
"""
import json
import os
import shutil
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


def alerts(port, action):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r'mamori_audit_events_total\{action="' + action + r'",outcome="failure"\} (\d+)', body)
    return int(m.group(1)) if m else 0


def measure(port, edit, undo, interval, action):
    out = []
    for i in range(TRIES):
        time.sleep(random.uniform(0, interval))
        before = alerts(port, action)
        t0 = time.monotonic()
        edit(i)
        while alerts(port, action) == before:
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
        # The row was never served (it carries no seal); reverting writes the removal through the
        # configuration path, so the next try starts clean.
        subprocess.run([BIN, "baseline", "revert", f"client/drift-{i}", "--reason", "bench", "--data-dir", data],
                       check=True, capture_output=True)

    files = measure(port, file_edit, file_undo, interval, "alert-config-drift")
    rows = measure(port, db_edit, db_undo, interval, "alert-config-tampered")
finally:
    p.terminate()
    p.wait()

def token_and_patient(port, data):
    out = subprocess.run([BIN, "client", "add", "bench", "--scope", "system/*.cruds", "--data-dir", data],
                         check=True, capture_output=True, text=True).stdout
    secret = re.search(r"client_secret=(\S+)", out).group(1)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/oauth/token",
                                 data=f"grant_type=client_credentials&client_id=bench&client_secret={secret}".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    tok = json.loads(urllib.request.urlopen(req, timeout=10).read())["access_token"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/fhir/Patient", method="POST",
                                 data=json.dumps({"resourceType": "Patient", "name": [{"family": "山田"}]}).encode(),
                                 headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {tok}"})
    pid = json.loads(urllib.request.urlopen(req, timeout=10).read())["id"]
    return tok, pid


# CPU: re-hashing every 3 s against every hour, same build, same data, one after the other; idle,
# then under the read load.
idle, loaded, rps = {}, {}, {}
for rehash in (interval, 3600):
    data, toml, text, port, p = setup(rehash)
    try:
        tok, pid = token_and_patient(port, data)
        time.sleep(2)
        c0, t0 = cpu_secs(p.pid), time.monotonic()
        time.sleep(IDLE)
        idle[rehash] = (cpu_secs(p.pid) - c0) / (time.monotonic() - t0)
        if shutil.which("wrk"):
            c0, t0 = cpu_secs(p.pid), time.monotonic()
            out = subprocess.run(["wrk", "-t2", "-c16", f"-d{IDLE}s", "-H", f"Authorization: Bearer {tok}",
                                  f"http://127.0.0.1:{port}/fhir/Patient/{pid}"],
                                 check=True, capture_output=True, text=True).stdout
            loaded[rehash] = (cpu_secs(p.pid) - c0) / (time.monotonic() - t0)
            rps[rehash] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
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
if loaded:
    print(f"under the read load (16 connections): CPU {loaded[interval] * 100:.1f}% vs {loaded[3600] * 100:.1f}% of a "
          f"core (ratio {loaded[interval] / loaded[3600]:.3f}); reads {rps[interval]:.0f}/s vs {rps[3600]:.0f}/s "
          f"(ratio {rps[interval] / rps[3600]:.3f})")
