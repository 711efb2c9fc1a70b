"""Runs a command with its standard error on a pseudo-terminal (as when run by hand) and its
standard output on a pipe; prints {"code", "stdout", "stderr"} as JSON.

Usage: tty_run.py PROGRAM ARGS...
"""
import json
import os
import pty
import subprocess
import sys

master, slave = pty.openpty()
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
os.close(slave)
err = b""
while True:
    try:
        chunk = os.read(master, 65536)
    except OSError:  # EIO: the other end closed
        break
    if not chunk:
        break
    err += chunk
out = p.stdout.read()
code = p.wait()
print(json.dumps({"code": code, "stdout": out.decode("utf-8", "replace"), "stderr": err.decode("utf-8", "replace")}))
