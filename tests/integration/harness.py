"""Test harness: real parleyd processes on free loopback ports with temporary
data directories, and real `parley --json` clients driven through pipes.

Every process started here is stopped when the test ends, pass or fail
(TestCase.addCleanup), and every temporary directory is removed.
"""
import json
import multiprocessing
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

    def __init__(self, data=None, extra=(), pwhash_cost="min", env=None, binary=None):
        self.binary = binary or PARLEYD
        self.port = free_port()
        self.own_data = data is None
        self.data = data or tempfile.mkdtemp(prefix="parley-test-")
        self.extra = list(extra)
        self.pwhash_cost = pwhash_cost
        self.env = env  # None: this process's environment
        self.proc = None
        self.log_path = os.path.join(self.data, "parleyd.log")

    def start(self):
        args = [self.binary, "--port", str(self.port), "--data", self.data,
                "--pwhash-cost", self.pwhash_cost] + self.extra
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=self.env)
        # parleyd binds its port before it opens its store and installs its
        # signal handlers: the ready line, not the port, says it is up.
        deadline = time.time() + 30
        while "Parley is ready" not in self.logs():
            if self.proc.poll() is not None:
                raise RuntimeError("parleyd exited with %d before it was ready:\n%s" %
                                   (self.proc.returncode, self.logs()[-3000:]))
            if time.time() > deadline:
                raise RuntimeError("parleyd not ready after 30 s:\n" + self.logs()[-3000:])
            time.sleep(0.02)
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
    if n < 0:  # as protobuf encodes a negative int64: ten bytes
        n += 1 << 64
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


IP_BIND_ADDRESS_NO_PORT = 24  # Linux; not in the socket module


def tcp_connect(port, source=None, timeout=10, host="127.0.0.1"):
    """A TCP socket connected to host:port, its source address bound to
    `source` (any 127.x.y.z works on Linux loopback) when given: per-address
    limits then see that address. The source port is picked at connect()
    (IP_BIND_ADDRESS_NO_PORT), so thousands of connections from one address
    do not run out of ports to bind."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        if source:
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


class RawConn:
    """A bare TCP connection speaking frames, from 127.0.0.1 or from the
    loopback address `source`."""

    def __init__(self, port, source=None, timeout=10):
        self.sock = tcp_connect(port, source, timeout)
        self.source = source or "127.0.0.1"
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

    def reset(self):
        """Closes with a TCP RST instead of a FIN, as a crashed client might."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()


# ---- a raw-protocol client, for hostile tests ----

# ErrorCode values (proto/parley.proto)
BAD_REQUEST, UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, CONFLICT = 1, 2, 3, 4, 5
TOO_LARGE, UNSUPPORTED, INTERNAL, UNAVAILABLE, EXPIRED, BUSY = 6, 7, 8, 9, 10, 11
ERROR_NAMES = {1: "BAD_REQUEST", 2: "UNAUTHENTICATED", 3: "FORBIDDEN", 4: "NOT_FOUND",
               5: "CONFLICT", 6: "TOO_LARGE", 7: "UNSUPPORTED", 8: "INTERNAL",
               9: "UNAVAILABLE", 10: "EXPIRED", 11: "BUSY"}

# ClientFrame body field numbers
F_HELLO, F_PING, F_ACK, F_REG, F_LOGIN, F_RESUME, F_LOGOUT = 10, 11, 12, 20, 21, 22, 23
F_FRIEND_ADD, F_FRIEND_DEL, F_FRIEND_LIST = 30, 31, 32
F_GROUP_CREATE, F_GROUP_JOIN, F_GROUP_QUIT, F_GROUP_DELETE = 40, 41, 42, 43
F_SEND_DIRECT, F_SEND_GROUP, F_HISTORY, F_RECALL = 50, 51, 52, 53
# ServerFrame body field numbers
S_HELLO_OK, S_PONG, S_REGISTER_OK, S_LOGIN_OK, S_DONE = 10, 11, 20, 21, 22
S_FRIEND_LIST_OK, S_GROUP_CREATE_OK, S_SEND_OK, S_HISTORY_OK = 30, 40, 50, 52
S_MESSAGE, S_RECALL_EVENT, S_GROUP_DELETED, S_PRESENCE, S_BYE = 100, 101, 102, 103, 104


def pb(*fields):
    """A protobuf message from (number, value) pairs; None values are left out."""
    return b"".join(pb_field(n, v) for n, v in fields if v is not None)


def request(field, body=b"", req_id=1):
    """One framed ClientFrame: id and one body field."""
    return frame(pb_field(1, req_id) + pb_field(field, body))


class Err:
    """The Error of a ServerFrame."""

    def __init__(self, raw):
        e = pb_decode(raw)
        self.code = e.get(1, [0])[0]
        self.text = e.get(2, [b""])[0].decode("utf-8", "replace")
        self.retry_after_ms = e.get(3, [0])[0]

    def __repr__(self):
        return "Err(%s %r retry_after_ms=%d)" % (ERROR_NAMES.get(self.code, self.code),
                                                 self.text, self.retry_after_ms)


def error(f):
    """The Err of a decoded ServerFrame, or None when it has none."""
    return Err(f[2][0]) if f and 2 in f else None


def frame_id(f):
    return f.get(1, [0])[0]


def body(f, field):
    """The decoded body `field` of a ServerFrame ({number: [values]}), or None."""
    return pb_decode(f[field][0]) if f and field in f else None


def one(d, num, default=0):
    """The single value of field `num` of a decoded message."""
    return d.get(num, [default])[0] if d else default


def message_of(raw):
    """A decoded Message (pushed or in history) as a dict."""
    m = pb_decode(raw)
    return {"msgid": one(m, 1), "conv": one(m, 2), "seq": one(m, 3), "from": one(m, 4),
            "to": one(m, 5), "group": one(m, 6), "body": one(m, 7, b""), "ts": one(m, 8),
            "recalled": one(m, 9), "kind": one(m, 13)}


def describe(f):
    """A short text for a ServerFrame in assertion messages."""
    if f is None:
        return "<closed>"
    e = error(f)
    if e:
        return "id=%d %r" % (frame_id(f), e)
    return "id=%d body=%s" % (frame_id(f), sorted(k for k in f if k >= 10))


class Closed(Exception):
    """The server closed the connection while a reply was awaited."""


class Peer:
    """A client speaking the raw protocol over one RawConn: hello, register,
    login and the other requests, each waiting for its own reply by id.
    Pushes (frames with id 0) that arrive meanwhile are kept in self.pushes.
    Not thread-safe: one thread per Peer."""

    def __init__(self, port, source=None, hello=True, timeout=10):
        self.conn = RawConn(port, source, timeout)
        self.source = self.conn.source
        self.timeout = timeout
        self.next_id = 1
        self.pushes = []
        self.early = {}  # replies that came before their turn was awaited, by id
        self.user_id = 0
        self.token = None
        self.is_closed = False
        if hello:
            f = self.call(F_HELLO, pb((1, 1), (2, "hostile-test")))
            if S_HELLO_OK not in f:
                raise AssertionError("hello refused: %s" % describe(f))

    def close(self):
        self.conn.close()

    def reset(self):
        self.conn.reset()

    def send_raw(self, data):
        self.conn.send(data)

    def take_id(self):
        self.next_id += 1
        return self.next_id

    def send_req(self, field, body_bytes=b""):
        """Sends one request; returns its id (no wait)."""
        rid = self.take_id()
        self.conn.send(request(field, body_bytes, rid))
        return rid

    def recv(self, timeout=None):
        """The next frame, or None if the connection was closed (FIN or RST)."""
        if self.is_closed:
            return None
        try:
            f = self.conn.recv_frame(timeout=self.timeout if timeout is None else timeout)
        except (ConnectionResetError, BrokenPipeError):
            f = None
        if f is None:
            self.is_closed = True
        return f

    def wait_reply(self, rid, timeout=None):
        """The reply with id `rid`; raises Closed if the connection closes and
        socket.timeout if nothing comes in time. Pushes are kept, and so are
        replies to other requests (replies may come in any order: a BUSY is
        answered at once, a stored answer later)."""
        if rid in self.early:
            return self.early.pop(rid)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no reply to request %d" % rid)
            f = self.recv(timeout=left)
            if f is None:
                raise Closed("connection closed while waiting for reply %d" % rid)
            if frame_id(f) == rid:
                return f
            self._keep(f)

    def _keep(self, f):
        """Files a frame nobody is waiting for yet: a reply by its id, a push."""
        if frame_id(f):
            self.early[frame_id(f)] = f
        else:
            self.pushes.append(f)

    def call(self, field, body_bytes=b"", timeout=None):
        """Sends one request and returns its reply frame."""
        return self.wait_reply(self.send_req(field, body_bytes), timeout)

    def wait_push(self, pred, timeout=None):
        """The first push (kept or new) for which pred(frame) holds; it is
        removed from self.pushes. Raises Closed or socket.timeout."""
        for i, f in enumerate(self.pushes):
            if pred(f):
                return self.pushes.pop(i)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no matching push")
            f = self.recv(timeout=left)
            if f is None:
                raise Closed("connection closed while waiting for a push")
            if pred(f):
                return f
            self._keep(f)

    def closed_within(self, timeout):
        """True if the server closes the connection within `timeout` seconds
        (frames that arrive meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        while not self.is_closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                f = self.recv(timeout=left)
            except socket.timeout:
                return False
            if f is not None:
                self._keep(f)
        return True

    # ---- requests ----

    def register(self, name, password="secret123", timeout=None):
        return self.call(F_REG, pb((1, name), (2, password)), timeout)

    def login(self, name, password="secret123", timeout=None):
        """Logs in by name (str) or id (int); on success remembers id and token."""
        if isinstance(name, int):
            req = pb((1, name), (3, password))
        else:
            req = pb((2, name), (3, password))
        f = self.call(F_LOGIN, req, timeout)
        ok = body(f, S_LOGIN_OK)
        if ok:
            self.user_id = one(pb_decode(ok[1][0]), 1)
            self.token = one(ok, 2, b"")
        return f

    def resume(self, token, timeout=None):
        return self.call(F_RESUME, pb((1, token)), timeout)

    def ping(self, nonce=1, timeout=None):
        return self.call(F_PING, pb((1, nonce)), timeout)

    def send(self, to, text, timeout=None):
        return self.call(F_SEND_DIRECT, pb((1, to), (2, text)), timeout)

    def send_group(self, group_id, text, timeout=None):
        return self.call(F_SEND_GROUP, pb((1, group_id), (2, text)), timeout)

    def ack(self, conv, seq):
        """Acks get no reply; sent with id 0 as the protocol says."""
        self.conn.send(frame(pb_field(1, 0) + pb_field(F_ACK, pb((1, conv), (2, seq)))))

    def history(self, peer=None, group=None, limit=None, before=None, timeout=None):
        return self.call(F_HISTORY, pb((1, peer), (2, group), (3, limit), (4, before)), timeout)

    def history_messages(self, peer=None, group=None, limit=100, events=False):
        """The texts of a history page; with events, social events too."""
        f = self.history(peer=peer, group=group, limit=limit)
        h = body(f, S_HISTORY_OK)
        if h is None:
            raise AssertionError("history refused: %s" % describe(f))
        msgs = [message_of(m) for m in h.get(1, [])]
        return msgs if events else [m for m in msgs if not m["kind"]]

    def friend_add(self, user_id, timeout=None):
        return self.call(F_FRIEND_ADD, pb((1, user_id)), timeout)

    def friend_list(self, timeout=None):
        return self.call(F_FRIEND_LIST, b"", timeout)

    def group_create(self, name, desc="", timeout=None):
        return self.call(F_GROUP_CREATE, pb((1, name), (2, desc)), timeout)

    def logout(self, all_devices=False, timeout=None):
        return self.call(F_LOGOUT, pb((2, 1 if all_devices else None)), timeout)

    def messages(self):
        """Pushed messages kept so far, decoded."""
        return [message_of(f[S_MESSAGE][0]) for f in self.pushes if S_MESSAGE in f]


def expect_ok(f, field, what=""):
    """The decoded reply body `field`; fails with the error if there is none."""
    b = body(f, field)
    if b is None:
        raise AssertionError("%s: expected reply body %d, got %s" % (what, field, describe(f)))
    return b


class ChatPair:
    """Two well-behaved users on their own connections from 127.0.0.1, chatting
    while a test attacks the server: A sends B a message and waits for
    send_ok, B waits for the push and acks it, then the other way round; every
    tenth round each also pings. Every wait is timed: check() asserts that no
    reply or push took longer than `limit` seconds, that nothing failed, and
    that the pair kept chatting the whole time.

    The pair registers and logs in here, then chats in a forked process of
    its own: the test's flooding threads then cannot hold it up (Python runs
    one thread at a time), so its timings are the server's."""

    # `limit`: what the pair may wait for one reply or push. The attacks this
    # guards against held it up for 10 s and more; on a shared 2-core CI
    # machine running two sanitized suites side by side (a ZooKeeper ensemble
    # starting next door) one round once took 1.15 s with no attack involved,
    # so the bound leaves room for that and no more.
    def __init__(self, port, prefix="pair", interval=0.05, limit=2.0, wait=10.0):
        self.port = port
        self.prefix = prefix
        self.interval = interval
        self.limit = limit
        self.wait = wait
        self.failures = []
        self.latencies = []
        self.slow = []
        self.received = []  # bodies of the messages the pair was pushed
        self.rounds = 0
        self.started_at = self.stopped_at = None
        self.peers = []
        self.proc = None
        self._mp = multiprocessing.get_context("fork")
        self._stopping = self._mp.Event()
        self._rounds = self._mp.Value("i", 0)
        self._result, self._child_end = self._mp.Pipe(duplex=False)

    def start(self):
        a = Peer(self.port, timeout=30)
        b = Peer(self.port, timeout=30)
        self.peers = [a, b]
        for p, name in ((a, self.prefix + "-a"), (b, self.prefix + "-b")):
            expect_ok(p.register(name), S_REGISTER_OK, "register " + name)
            expect_ok(p.login(name), S_LOGIN_OK, "login " + name)
            p.timeout = self.wait
        self.started_at = time.monotonic()
        self.proc = self._mp.Process(target=self._child, daemon=True)
        self.proc.start()
        return self

    def _child(self):
        try:
            self._run()
        finally:
            self._child_end.send({"failures": self.failures, "latencies": self.latencies,
                                  "slow": self.slow, "rounds": self.rounds,
                                  "received": self.received, "stopped_at": time.monotonic()})

    def _timed(self, what, fn):
        t0 = time.monotonic()
        r = fn()
        dt = time.monotonic() - t0
        self.latencies.append(dt)
        if dt > self.limit:
            self.slow.append("%s took %.2fs at +%.1fs" % (what, dt, t0 - self.started_at))
        return r

    def _run(self):
        a, b = self.peers
        last_seq = {}
        n = 0
        try:
            while not self._stopping.is_set():
                sender, receiver = (a, b) if n % 2 == 0 else (b, a)
                text = "%s round %d" % (self.prefix, n)
                t0 = time.monotonic()
                f = self._timed("send_ok %d" % n, lambda: sender.send(receiver.user_id, text))
                ok = body(f, S_SEND_OK)
                if ok is None:
                    self.failures.append("send %d: %s" % (n, describe(f)))
                    break
                msgid = one(ok, 1)
                push = receiver.wait_push(
                    lambda g: S_MESSAGE in g and message_of(g[S_MESSAGE][0])["msgid"] == msgid)
                dt = time.monotonic() - t0
                self.latencies.append(dt)
                if dt > self.limit:
                    self.slow.append("push %d arrived %.2fs after the send at +%.1fs" %
                                     (n, dt, t0 - self.started_at))
                m = message_of(push[S_MESSAGE][0])
                if m["body"] != text.encode():
                    self.failures.append("push %d has body %r" % (n, m["body"]))
                want = last_seq.get(m["conv"], 0) + 1
                if m["seq"] != want:
                    self.failures.append("push %d: seq %d, expected %d" % (n, m["seq"], want))
                last_seq[m["conv"]] = m["seq"]
                receiver.ack(m["conv"], m["seq"])
                if n % 10 == 0:
                    for p in (a, b):
                        f = self._timed("ping %d" % n, lambda: p.ping(n + 1))
                        if S_PONG not in f:
                            self.failures.append("ping %d: %s" % (n, describe(f)))
                self.rounds += 1
                self._rounds.value = self.rounds
                n += 1
                self._stopping.wait(self.interval)
        except Exception as e:  # reported by check()
            self.failures.append("round %d: %r" % (n, e))
        for p in (a, b):
            self.received += [m["body"] for m in p.messages()]

    def stop(self):
        """Stops the chatting process and takes its figures (idempotent)."""
        if self.proc is not None:
            self._stopping.set()
            if self._result.poll(self.wait + 5):
                r = self._result.recv()
                self.failures, self.latencies = r["failures"], r["latencies"]
                self.slow, self.rounds, self.received = r["slow"], r["rounds"], r["received"]
                self.stopped_at = r["stopped_at"]
            else:
                self.failures.append("the pair's process hung")
            self.proc.join(timeout=5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
            self.proc = None
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        for p in self.peers:
            p.close()

    def summary(self):
        lat = sorted(self.latencies) or [0.0]
        return ("pair: %d rounds in %.1fs, p50 %.1f ms, p99 %.1f ms, worst %.1f ms" %
                (self.rounds, (self.stopped_at or time.monotonic()) - (self.started_at or 0),
                 1000 * lat[len(lat) // 2], 1000 * lat[int(len(lat) * 0.99)], 1000 * lat[-1]))

    def check(self, tc, min_rounds=5, min_seconds=1.0):
        """Stops the pair and asserts, on the TestCase tc, that it was never
        hurt. A quick test lets the pair go on to `min_rounds` rounds and
        `min_seconds` first, so the pair also sees the attack's aftermath."""
        deadline = time.monotonic() + min_seconds + min_rounds * 2 * self.limit
        while (self.proc is not None and self.proc.is_alive() and time.monotonic() < deadline and
               (self._rounds.value < min_rounds or
                time.monotonic() - self.started_at < min_seconds)):
            time.sleep(0.02)
        self.stop()
        duration = self.stopped_at - self.started_at
        tc.assertEqual(self.failures, [], "the pair failed; " + self.summary())
        tc.assertEqual(self.slow, [], "the pair waited over %.1fs; %s" % (self.limit,
                                                                         self.summary()))
        # Each round is at most two waits of `limit` and a pause: a pair that
        # chatted the whole time did at least this many.
        want = max(min_rounds, int(duration / (2 * self.limit + self.interval)))
        tc.assertGreaterEqual(self.rounds, want, "the pair stopped chatting; " + self.summary())
        return self.summary()


# ---- a whole cluster (scripts/cluster.sh) ----

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
CLUSTER_SH = os.path.join(ROOT, "scripts", "cluster.sh")


class Cluster:
    """ZooKeeper, Redis, MariaDB, nginx, two gateways and two nodes of each
    service, started by scripts/cluster.sh in a temporary directory. With
    tls the gateways serve TLS on their client port (cluster.sh's default;
    the CA that verifies them is self.ca), else plain TCP."""

    def __init__(self, zk_nodes=1, tls=False, admin=False):
        self.dir = tempfile.mkdtemp(prefix="parley-cluster-")
        self.env = dict(os.environ, PARLEYD=PARLEYD, PARLEY_PWHASH_COST="min",
                        PARLEY_ZK_NODES=str(zk_nodes), PARLEY_CLUSTER_TLS="1" if tls else "0",
                        PARLEY_ADMIN="1" if admin else "")
        self.ca = os.path.join(self.dir, "pki", "ca.pem")
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
        return self.read_env()

    def read_env(self):
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

    def admin_port(self, name):
        """The admin port of node name (Cluster(admin=True))."""
        return int(self.read_env().vars["ADMIN_PORT_" + name])

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
