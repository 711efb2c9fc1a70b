#!/usr/bin/env python3
"""Backups (#27): throughput of `mamori backup create` and `restore` (MB/s of the plaintext
copy, resources/s), a restore drill's recovery time (RTO), and the server's read and write
throughput while generations are taken, as a ratio to the same server without, in the same run.

  scripts/bench-backup.py BIN [RESOURCES=100000] [LOAD_SECS=20] [WORK_DIR]

With WORK_DIR (a directory an earlier run left, printed at its start), only the load figures are
measured again, on its data.

Data: scripts/gen-ndjson.py (1 Patient per 50 resources, the rest Observations), loaded with
`mamori import`. Embedded store. Load: wrk, 16 connections (`apt-get install wrk`): GET of one
Patient, and POST of a new Patient; each measured without a backup and then while backups run
back to back, alternated twice, medians compared. Then the newest generation is pushed to a vault
on loopback (`mamori backup vault serve`). Run as root, the vault's files are immutable: remove
the work directory with `chattr -R -i WORK_DIR && rm -rf WORK_DIR`.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
LOAD = int(sys.argv[3]) if len(sys.argv) > 3 else 20
HERE = os.path.dirname(os.path.abspath(__file__))


def run(*args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw).stdout


def timed(*args):
    t = time.monotonic()
    out = run(*args)
    return time.monotonic() - t, out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    reuse = sys.argv[4] if len(sys.argv) > 4 else None
    work = reuse or tempfile.mkdtemp(prefix="mamori-bench-backup-")
    print(f"work directory: {work}", flush=True)
    data, repo = os.path.join(work, "d"), os.path.join(work, "repo")
    ident = os.path.join(work, "id.txt")
    if reuse:
        rcpt = [l for l in open(ident).read().splitlines() if l.startswith("# public key: ")][0].split(": ")[1]
        load(work, data, repo, rcpt)
        vault_push(work, data, repo)
        return
    nd = os.path.join(work, "data.ndjson")
    subprocess.run([sys.executable, os.path.join(HERE, "gen-ndjson.py"), str(N), nd], check=True)
    run("init", "--data-dir", data)
    secs, _ = timed("import", "--data-dir", data, nd)
    print(f"import: {N} resources in {secs:.1f} s ({N / secs:.0f}/s)", flush=True)
    rcpt = run("backup", "keygen", "--out", ident).strip().splitlines()[-1]
    db_mb = os.path.getsize(os.path.join(data, "mamori.db")) / 2**20

    secs, out = timed("backup", "create", "--data-dir", data, "--repo", repo, "--recipient", rcpt)
    m = re.search(r"([\d.]+) MiB read, ([\d.]+) MiB written", out)
    plain, enc = float(m.group(1)), float(m.group(2))
    gen = out.split()[1].rstrip(":")
    print(f"backup create: {secs:.1f} s; store {db_mb:.0f} MiB on disk, copy {plain:.0f} MiB, "
          f"{enc:.0f} MiB encrypted ({enc / plain:.2f}); {plain / secs:.1f} MiB/s, {N / secs:.0f} resources/s")
    secs, _ = timed("backup", "verify", "--data-dir", data, "--repo", repo, "--identity", ident)
    print(f"backup verify (decrypt, every hash): {secs:.1f} s ({plain / secs:.1f} MiB/s)")
    to = os.path.join(work, "restored")
    secs, out = timed("backup", "restore", "--data-dir", data, "--repo", repo, "--identity", ident, "--to", to)
    assert "restore proven" in out, out
    print(f"backup restore (load, index rebuild, fsck, audit verify): {secs:.1f} s "
          f"({plain / secs:.1f} MiB/s, {N / secs:.0f} resources/s)")
    secs, out = timed("backup", "drill", "--data-dir", data, "--repo", repo, "--identity", ident)
    rto = re.search(r"RTO ([\d.]+) s", out).group(1)
    print(f"backup drill: RTO {rto} s (whole command {secs:.1f} s)")
    load(work, data, repo, rcpt)
    vault_push(work, data, repo)


def vault_push(work, data, repo):
    """`mamori backup push` of the newest generation to a new vault on loopback (plain http: the
    vault allows it only there), MiB/s of the encrypted file. mamori.toml is put back after."""
    key = run("audit", "verifier-key", "--data-dir", data).strip()
    vdir = tempfile.mkdtemp(prefix="vault-", dir=work)
    os.rmdir(vdir)
    token = run("backup", "vault", "init", "--dir", vdir, "--node-key", key).strip()
    tfile = os.path.join(work, "vault-token")
    with open(tfile, "w") as f:
        f.write(token + "\n")
    v = subprocess.Popen([BIN, "backup", "vault", "serve", "--listen", "127.0.0.1:0", "--dir", vdir],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = v.stdout.readline().split()[3].split("/v1/")[0]
    toml = os.path.join(data, "mamori.toml")
    original = open(toml).read()
    try:
        with open(toml, "w") as f:
            f.write(original + f'\n[backup]\nvault = "{url}"\nvault_token_file = "{tfile}"\n'
                    if "\n[backup]" not in original else
                    original.replace("\n[backup]\n", f'\n[backup]\nvault = "{url}"\nvault_token_file = "{tfile}"\n', 1))
        newest = sorted(f for f in os.listdir(repo) if f.endswith(".age"))[-1]
        size = os.path.getsize(os.path.join(repo, newest)) / 2**20
        secs, out = timed("backup", "push", "--data-dir", data, "--repo", repo, "--generation", newest[:-4])
        print(f"backup push to a vault on loopback: {size:.0f} MiB in {secs:.1f} s ({size / secs:.1f} MiB/s) — {out.strip()}")
    finally:
        with open(toml, "w") as f:
            f.write(original)
        v.terminate()
        v.wait()


def load(work, data, repo, rcpt):
    if not subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode == 0:
        print("wrk not found: no load figures")
        return
    port = free_port()
    p = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.readline()
    try:
        out = run("client", "add", "bench", "--scope", "system/*.cruds", "--data-dir", data)
        secret = re.search(r"client_secret=(\S+)", out).group(1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/oauth/token",
                                     data=f"grant_type=client_credentials&client_id=bench&client_secret={secret}".encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        tok = json.loads(urllib.request.urlopen(req, timeout=10).read())["access_token"]
        lua = os.path.join(work, "post.lua")
        with open(lua, "w") as f:
            f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/fhir+json"\n'
                    'wrk.body = \'{"resourceType":"Patient","name":[{"family":"負荷","given":["試験"]}]}\'\n')

        def wrk(kind):
            args = ["wrk", "-t2", "-c16", f"-d{LOAD}s", "-H", f"Authorization: Bearer {tok}"]
            if kind == "write":
                args += ["-s", lua, f"http://127.0.0.1:{port}/fhir/Patient"]
            else:
                args += [f"http://127.0.0.1:{port}/fhir/Patient/pt-0000001"]
            o = subprocess.run(args, capture_output=True, text=True).stdout
            return float(re.search(r"Requests/sec:\s+([\d.]+)", o).group(1))

        def backups(stop, taken):
            while not stop.is_set():
                subprocess.run([BIN, "backup", "create", "--data-dir", data, "--repo", repo, "--recipient", rcpt],
                               capture_output=True)
                taken.append(1)

        for kind in ["read", "write"]:
            base, during, n = [], [], []
            for _ in range(2):
                base.append(wrk(kind))
                stop, taken = threading.Event(), []
                t = threading.Thread(target=backups, args=(stop, taken))
                t.start()
                during.append(wrk(kind))
                stop.set()
                t.join()
                n.append(len(taken))
            b, d = statistics.median(base), statistics.median(during)
            print(f"{kind}s at 16 connections: {b:.0f}/s without, {d:.0f}/s while backups run "
                  f"({sum(n)} generations taken in the windows): ratio {d / b:.3f}  [runs: {base} vs {during}]")
    finally:
        p.terminate()
        p.wait()


main()
