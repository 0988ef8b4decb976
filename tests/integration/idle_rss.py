#!/usr/bin/env python3
"""Server memory per idle connection, TLS and plain TCP, measured on a real
parleyd (use a build without sanitizers: ASan's redzones would be counted).

    python3 tests/integration/idle_rss.py [--conns N] [--parleyd build/parleyd]

Each connection completes its TLS handshake and a Hello, then sits idle;
the figure is the growth of parleyd's resident set (VmRSS) divided by the
number of connections, after the server had a few seconds to trim its heap.
Not a unittest (no test_ prefix): `make test` runs under ASan.
"""
import argparse
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import frame, free_port, pb_field, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def hello():
    return frame(pb_field(1, 1) + pb_field(10, pb_field(1, 1) + pb_field(2, "idle_rss")))


def read_frame(sock):
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed")
        buf += chunk


def connect(port, ctx):
    s = socket.create_connection(("127.0.0.1", port))
    # Else the Hello waits behind the handshake's last segment (Nagle).
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(s) if ctx else s


def measure(parleyd, conns, tls, settle):
    data = tempfile.mkdtemp(prefix="parley-rss-")
    port = free_port()
    args = [parleyd, "--port", str(port), "--data", data, "--threads", "2",
            "--pwhash-cost", "min", "--max-conns-per-ip", "0", "--hello-timeout", "0",
            "--login-timeout", "0", "--idle-timeout", "86400", "--log-level", "warn"]
    if tls:
        args += ["--tls", "auto"]
    log = open(os.path.join(data, "parleyd.log"), "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    socks = []
    try:
        wait_port(port, proc=proc)
        ctx = None
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        # Warm up: the first connections make per-loop buffers and OpenSSL's
        # one-off tables, which are not a cost of each connection.
        for _ in range(20):
            s = connect(port, ctx)
            s.sendall(hello())
            read_frame(s)
            s.close()
        time.sleep(settle)
        before = rss_kib(proc.pid)
        for _ in range(conns):
            s = connect(port, ctx)
            s.sendall(hello())
            read_frame(s)
            socks.append(s)
        time.sleep(settle)  # the server trims its heap once it is quiet
        after = rss_kib(proc.pid)
        return before, after
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--parleyd", default=os.environ.get("PARLEYD",
                                                        os.path.join(ROOT, "build/parleyd")))
    opt = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, opt.conns + 100)), hard))
    for tls in (False, True):
        before, after = measure(opt.parleyd, opt.conns, tls, opt.settle)
        per = (after - before) * 1024 / opt.conns
        print("%-5s %d idle connections: RSS %d -> %d KiB, %.1f KiB each" %
              ("TLS" if tls else "plain", opt.conns, before, after, per / 1024))


if __name__ == "__main__":
    main()
