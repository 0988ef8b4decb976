"""Test harness: real parleyd processes on free loopback ports with temporary
data directories, and real `parley --json` clients driven through pipes.

Every process started here is stopped when the test ends, pass or fail
(TestCase.addCleanup), and every temporary directory is removed.
"""
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

PARLEYD = os.environ.get("PARLEYD", os.path.join(os.path.dirname(__file__), "../../build/parleyd"))
PARLEY = os.environ.get("PARLEY", os.path.join(os.path.dirname(__file__), "../../build/parley"))


def free_port():
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %d before listening" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d after %.0fs" % (port, timeout))


class Server:
    """One parleyd (role all) on a free port with its own data directory."""

    def __init__(self, data=None, extra=(), pwhash_cost="min"):
        self.port = free_port()
        self.own_data = data is None
        self.data = data or tempfile.mkdtemp(prefix="parley-test-")
        self.extra = list(extra)
        self.pwhash_cost = pwhash_cost
        self.proc = None
        self.log_path = os.path.join(self.data, "parleyd.log")

    def start(self):
        args = [PARLEYD, "--port", str(self.port), "--data", self.data,
                "--pwhash-cost", self.pwhash_cost] + self.extra
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self, sig=None, timeout=20):
        """Stops the server (SIGTERM by default) and returns its exit code."""
        if not self.proc or self.proc.poll() is not None:
            if self.proc and not self.log.closed:
                self.log.close()
            return self.proc.returncode if self.proc else None
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cleanup(self):
        rc = self.stop()
        logs = self.logs()
        if self.own_data:
            shutil.rmtree(self.data, ignore_errors=True)
        # A sanitizer report or an unclean exit is a failure of the test that
        # ran, even if every assertion in it held.
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            if marker in logs:
                raise AssertionError("parleyd reported a sanitizer error:\n" + logs[-6000:])
        if rc not in (0, None):
            raise AssertionError("parleyd exited with %s on SIGTERM:\n%s" % (rc, logs[-3000:]))


class Client:
    """A `parley --json` process. cmd() writes one command line and returns
    its reply; pushes that arrive meanwhile are kept in self.events."""

    def __init__(self, port, wait_ms=300, extra=()):
        self.proc = subprocess.Popen(
            [PARLEY, "--json", "--port", str(port), "--wait-ms", str(wait_ms)] + list(extra),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.events = []
        self.all = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"type": "unparsable", "raw": raw.decode("utf-8", "replace")}
            self.lines.put(obj)
        self.lines.put(None)

    def _next(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no output from parley in time")
        obj = self.lines.get(timeout=left)
        if obj is None:
            raise EOFError("parley exited (rc=%s): %s" % (self.proc.poll(),
                                                          self.proc.stderr.read().decode()))
        self.all.append(obj)
        return obj

    def send_line(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def cmd(self, line, timeout=30):
        """Runs one command; returns its reply object."""
        self.send_line(line)
        deadline = time.time() + timeout
        while True:
            obj = self._next(deadline)
            if obj.get("type") == "reply":
                return obj
            self.events.append(obj)

    def ok(self, line, timeout=30):
        r = self.cmd(line, timeout)
        if not r.get("ok"):
            raise AssertionError("%r failed: %r" % (line, r))
        return r

    def wait_events(self, pred, count=1, timeout=20):
        """Waits until `count` events satisfy pred; returns them."""
        deadline = time.time() + timeout
        while True:
            got = [e for e in self.events if pred(e)]
            if len(got) >= count:
                return got
            try:
                obj = self._next(deadline)
            except (TimeoutError, queue.Empty):
                raise AssertionError("waited for %d events, got %d: %r" %
                                     (count, len(got), self.events[-5:]))
            self.events.append(obj)

    def drain(self, seconds=0.3):
        """Collects whatever arrives within `seconds`."""
        deadline = time.time() + seconds
        while True:
            try:
                self.events.append(self._next(deadline))
            except (TimeoutError, queue.Empty):
                return
            except EOFError:
                return

    def messages(self):
        return [e for e in self.events if e.get("type") == "message"]

    def close(self, timeout=15):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Keep what was printed after the last command.
        while True:
            try:
                obj = self.lines.get_nowait()
            except queue.Empty:
                break
            if obj is None:
                break
            self.all.append(obj)
            if obj.get("type") != "reply":
                self.events.append(obj)
        self._release()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._release()

    def _release(self):
        self.reader.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass


class ParleyTest(unittest.TestCase):
    """Base class: self.server is a fresh parleyd; self.client() starts clients."""

    server_extra = ()

    def setUp(self):
        self.server = Server(extra=self.server_extra)
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.addCleanup(self._dump_logs_on_failure)

    def _dump_logs_on_failure(self):
        outcome = getattr(self, "_outcome", None)
        errors = getattr(outcome, "errors", None) or []
        if any(exc for _, exc in errors):
            print("---- parleyd log ----\n" + self.server.logs()[-4000:])

    def client(self, port=None, **kw):
        c = Client(port or self.server.port, **kw)
        self.addCleanup(c.kill)
        return c

    def user(self, name, password="secret123"):
        """A new registered user logged in on a fresh client: (client, id)."""
        c = self.client()
        uid = c.ok("register:%s:%s" % (name, password))["id"]
        c.ok("login:%s:%s" % (name, password))
        return c, uid


# ---- raw protocol, for tests that must send what no real client would ----

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, value):
    """Encodes one protobuf field: int -> varint, bytes/str -> length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def pb_decode(buf):
    """Decodes one protobuf message into {field: [values]} (bytes for
    length-delimited fields, ints for varints)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out


def _read_varint(buf, i):
    n, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


class RawConn:
    """A bare TCP connection speaking frames."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def recv_frame(self, timeout=10):
        """The next ServerFrame decoded, or None if the server closed."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return pb_decode(payload)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def closed(self, timeout=10):
        """True if the server closes the connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


# ---- a whole cluster (scripts/cluster.sh) ----

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
CLUSTER_SH = os.path.join(ROOT, "scripts", "cluster.sh")


class Cluster:
    """ZooKeeper, Redis, MariaDB, nginx, two gateways and two nodes of each
    service, started by scripts/cluster.sh in a temporary directory."""

    def __init__(self, zk_nodes=1):
        self.dir = tempfile.mkdtemp(prefix="parley-cluster-")
        self.env = dict(os.environ, PARLEYD=PARLEYD, PARLEY_PWHASH_COST="min",
                        PARLEY_ZK_NODES=str(zk_nodes))
        self.vars = {}

    def sh(self, *args, check=True, timeout=180):
        p = subprocess.run([CLUSTER_SH] + list(args), env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("cluster.sh %s failed:\n%s%s" % (" ".join(args), p.stdout,
                                                                 p.stderr))
        return p.stdout

    def up(self):
        self.sh("up", self.dir)
        with open(os.path.join(self.dir, "cluster.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                self.vars[k] = v
        return self

    def down(self):
        try:
            self.sh("down", self.dir, check=False)
        finally:
            # PARLEY_KEEP=1 keeps the logs for a look after a failure.
            if not os.environ.get("PARLEY_KEEP"):
                shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def port(self):
        return int(self.vars["NGINX_PORT"])

    def gateway_port(self, n):
        return int(self.vars["GATEWAY%d_PORT" % n])

    def kill(self, name, sig="KILL"):
        self.sh("kill", name, self.dir, sig)

    def start(self, name, role, *args):
        self.sh("start", name, role, self.dir, *args)

    def pid(self, name):
        with open(os.path.join(self.dir, "run", name + ".pid")) as f:
            return int(f.read())

    def log(self, name):
        try:
            with open(os.path.join(self.dir, "log", name + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def servers(self, *args):
        return subprocess.run([os.path.join(ROOT, "scripts", "servers.sh")] + list(args),
                              capture_output=True, text=True, timeout=120)

    def logs_with_errors(self):
        """Every parleyd log that has a sanitizer report, for the failure message."""
        out = []
        for f in sorted(os.listdir(os.path.join(self.dir, "log"))):
            text = self.log(f[:-4])
            if any(m in text for m in ("AddressSanitizer", "LeakSanitizer", "runtime error:")):
                out.append("---- %s ----\n%s" % (f, text[-6000:]))
        return "\n".join(out)
