"""WebSocket (RFC 6455) on --ws-port, with real parleyd processes and a small
WebSocket client written here (socket + os.urandom masking, stdlib only):
a WebSocket user and a TCP user chat; the same port serves the web client's
files with their content types and refuses every way out of the web root;
a hostile pass (bad handshakes, unmasked and text frames, oversized and
fragmented messages, control frames between fragments, close mid-message, a
slowloris handshake) gets the RFC's answers while well-behaved pairs, one
over WebSocket and one over TCP, keep chatting with every reply within 2 s;
and all of it over TLS (wss).
"""
import base64
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

from harness import (F_HELLO, S_HELLO_OK, S_LOGIN_OK, S_MESSAGE, S_PONG, S_REGISTER_OK,
                     S_SEND_OK, TOO_LARGE, ChatPair, Peer, Server, body,
                     describe, error, expect_ok, free_port, message_of, one, pb, pb_decode,
                     pb_field)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
OPENSSL = shutil.which("openssl")


def accept_of(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def ws_header(opcode, n, fin=True, mask=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if mask else 0
    if n < 126:
        return bytes([b0, m | n])
    if n < 65536:
        return bytes([b0, m | 126]) + struct.pack(">H", n)
    return bytes([b0, m | 127]) + struct.pack(">Q", n)


def ws_frame(opcode, payload, fin=True, mask=True, rsv=0):
    """One client frame: masked with a fresh random key unless mask=False."""
    h = ws_header(opcode, len(payload), fin, mask, rsv)
    if not mask:
        return h + payload
    key = os.urandom(4)
    return h + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


class Ws:
    """A WebSocket client connection, from the handshake on."""

    def __init__(self, port, tls=None, timeout=10):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = tls.wrap_socket(s, server_hostname="localhost") if tls else s
        self.sock.settimeout(timeout)
        self.port = port
        self.buf = b""

    def request(self, raw):
        """Sends raw request bytes; returns (status, {lower-case name: value},
        body) of the answer. The body is read only for a non-101 answer
        (the server closes after it)."""
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake: %r" % self.buf)
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        bodytext = b""
        if status != 101:
            bodytext = self.read_to_close()
        return status, hdrs, bodytext

    def read_to_close(self, timeout=10):
        self.sock.settimeout(timeout)
        data, self.buf = self.buf, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data

    def handshake(self, path="/ws", key=None, version="13", origin=None, host=None, extra=""):
        key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path,
                 "Host: %s" % (host or "127.0.0.1:%d" % self.port),
                 "Upgrade: websocket", "Connection: Upgrade"]
        if key:
            lines.append("Sec-WebSocket-Key: " + key)
        if version:
            lines.append("Sec-WebSocket-Version: " + version)
        if origin:
            lines.append("Origin: " + origin)
        raw = ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()
        status, hdrs, b = self.request(raw)
        if status == 101 and hdrs.get("sec-websocket-accept") != accept_of(key):
            raise AssertionError("wrong Sec-WebSocket-Accept: %r" % hdrs)
        return status, hdrs, b

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload, **kw):
        self.sock.sendall(ws_frame(opcode, payload, **kw))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv_ws(self, timeout=10):
        """The next server frame as (fin, opcode, payload), or None at EOF."""
        self.sock.settimeout(timeout)
        try:
            if not self._need(2):
                return None
            b0, b1 = self.buf[0], self.buf[1]
            if b1 & 0x80:
                raise AssertionError("the server masked a frame")
            n, h = b1 & 0x7F, 2
            if n == 126:
                if not self._need(4):
                    return None
                n, h = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                if not self._need(10):
                    return None
                n, h = struct.unpack(">Q", self.buf[2:10])[0], 10
            if not self._need(h + n):
                return None
        except ConnectionResetError:
            return None
        payload, self.buf = self.buf[h:h + n], self.buf[h + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def close_code(self, timeout=10):
        """Reads until the server's Close: its code (None for an empty one),
        then expects the TCP close. Binary messages met on the way are kept
        in self.seen. Raises if the connection ends without a Close."""
        self.seen = []
        while True:
            f = self.recv_ws(timeout)
            if f is None:
                raise AssertionError("closed without a Close frame")
            fin, op, p = f
            if op == OP_CLOSE:
                code = struct.unpack(">H", p[:2])[0] if len(p) >= 2 else None
                if not self.closed(timeout):
                    raise AssertionError("no TCP close after the Close frame")
                self.sock.close()
                return code
            self.seen.append((op, p))

    def closed(self, timeout=10):
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    # As harness.RawConn, so that harness.Peer can speak over it.
    def send(self, data):
        """TCP-framed requests ([4-byte length][payload]...), one binary
        message each."""
        out = b""
        while data:
            n = struct.unpack(">I", data[:4])[0]
            out += ws_frame(OP_BINARY, data[4:4 + n])
            data = data[4 + n:]
        self.sock.sendall(out)

    def recv_frame(self, timeout=10):
        """The next binary message decoded as a ServerFrame, None if closed."""
        while True:
            f = self.recv_ws(timeout)
            if f is None:
                return None
            fin, op, p = f
            if op == OP_BINARY:
                if not fin:
                    raise AssertionError("the server fragmented a message")
                return pb_decode(p)
            if op == OP_CLOSE:
                return None
            if op != OP_PONG:
                raise AssertionError("unexpected opcode %d" % op)

    def close(self):
        self.sock.close()

    def reset(self):
        self.sock.close()


class WsPeer(Peer):
    """harness.Peer over WebSocket: the same requests, one message each."""

    def __init__(self, port, tls=None, hello=True, timeout=10, origin=None):
        self.conn = Ws(port, tls=tls, timeout=timeout)
        status, hdrs, b = self.conn.handshake(origin=origin)
        if status != 101:
            raise AssertionError("handshake refused: %d %r" % (status, b))
        self.source = "127.0.0.1"
        self.timeout = timeout
        self.next_id = 1
        self.pushes = []
        self.early = {}
        self.user_id = 0
        self.token = None
        self.is_closed = False
        if hello:
            f = self.call(F_HELLO, pb((1, 1), (2, "ws-test")))
            if S_HELLO_OK not in f:
                raise AssertionError("hello refused: %s" % describe(f))


class WsChatPair(ChatPair):
    """harness.ChatPair with both users on WebSocket."""

    def start(self):
        a = WsPeer(self.port, timeout=30)
        b = WsPeer(self.port, timeout=30)
        self.peers = [a, b]
        for p, name in ((a, self.prefix + "-a"), (b, self.prefix + "-b")):
            expect_ok(p.register(name), S_REGISTER_OK, "register " + name)
            expect_ok(p.login(name), S_LOGIN_OK, "login " + name)
            p.timeout = self.wait
        self.started_at = time.monotonic()
        self.proc = self._mp.Process(target=self._child, daemon=True)
        self.proc.start()
        return self


def hs(port, **kw):
    """The status of a handshake on a fresh connection."""
    c = Ws(port)
    try:
        return c.handshake(**kw)[0]
    finally:
        c.close()


def http_get(port, path, method="GET", tls=None, extra=""):
    """(status, headers, body) of one request on a fresh connection."""
    c = Ws(port, tls=tls)
    try:
        raw = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (method, path, port, extra)
        return c.request(raw.encode("latin-1"))
    finally:
        c.close()


def make_cert(directory):
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


FILES = {
    "index.html": (b"<!doctype html><title>Parley</title>", "text/html; charset=utf-8"),
    "app-5XPSUMVK.js": (b"console.log('hi')", "text/javascript; charset=utf-8"),
    "app.js.map": (b"{}", "application/json"),
    "style.css": (b"body{}", "text/css; charset=utf-8"),
    "logo.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, "image/png"),
    "icon.svg": (b"<svg/>", "image/svg+xml"),
    "data.json": (b"[1,2]", "application/json"),
    "favicon.ico": (b"\x00\x00\x01\x00", "image/x-icon"),
    "mod.wasm": (b"\x00asm\x01\x00\x00\x00", "application/wasm"),
}
SECRET = b"the secret outside the web root"


class WsTest(unittest.TestCase):
    def setUp(self):
        self.servers = []
        self.addCleanup(self._dump_logs_on_failure)

    def _dump_logs_on_failure(self):
        outcome = getattr(self, "_outcome", None)
        errors = getattr(outcome, "errors", None) or []
        if any(exc for _, exc in errors):
            for srv in self.servers:
                print("---- parleyd log ----\n" + srv.logs()[-4000:])

    def make_root(self):
        top = tempfile.mkdtemp(prefix="parley-web-")
        self.addCleanup(shutil.rmtree, top, True)
        root = os.path.join(top, "web")
        os.makedirs(os.path.join(root, "assets"))
        for name, (data, _) in FILES.items():
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        with open(os.path.join(root, "assets", "a.css"), "wb") as f:
            f.write(b"p{}")
        with open(os.path.join(root, ".env"), "wb") as f:
            f.write(SECRET)
        with open(os.path.join(top, "secret.txt"), "wb") as f:
            f.write(SECRET)
        os.symlink(os.path.join(top, "secret.txt"), os.path.join(root, "link.txt"))
        os.symlink(top, os.path.join(root, "up"))
        return root

    def ws_server(self, extra=(), tls=False):
        self.root = self.make_root()
        self.ws_port = free_ws_port()
        args = ["--ws-port", str(self.ws_port), "--web-root", self.root] + list(extra)
        self.tls_ctx = None
        if tls:
            if not OPENSSL:
                self.skipTest("the openssl tool is missing (scripts/install-deps.sh installs it)")
            cert, key = make_cert(tempfile.mkdtemp(prefix="parley-certs-", dir=self.root + "/.."))
            args += ["--tls-cert", cert, "--tls-key", key]
            self.tls_ctx = ssl.create_default_context(cafile=cert)
        srv = self.start_server(args)
        return srv

    def start_server(self, extra):
        srv = Server(extra=extra)
        self.addCleanup(srv.cleanup)
        self.servers.append(srv)
        return srv.start()

    # ---- chat ----

    def test_ws_user_and_tcp_user_chat(self):
        srv = self.ws_server()
        self.assertIn("web client at http://127.0.0.1:%d/" % self.ws_port, srv.logs())
        alice = WsPeer(self.ws_port)
        bob = Peer(srv.port)
        self.addCleanup(alice.close)
        self.addCleanup(bob.close)
        expect_ok(alice.register("alice"), S_REGISTER_OK)
        expect_ok(alice.login("alice"), S_LOGIN_OK)
        expect_ok(bob.register("bob"), S_REGISTER_OK)
        expect_ok(bob.login("bob"), S_LOGIN_OK)
        for i in range(3):
            ok = expect_ok(alice.send(bob.user_id, "hello bob %d" % i), S_SEND_OK)
            push = bob.wait_push(lambda f: S_MESSAGE in f)
            self.assertEqual(message_of(push[S_MESSAGE][0])["body"], b"hello bob %d" % i)
            self.assertEqual(message_of(push[S_MESSAGE][0])["msgid"], one(ok, 1))
            expect_ok(bob.send(alice.user_id, "hello alice %d" % i), S_SEND_OK)
            push = alice.wait_push(lambda f: S_MESSAGE in f)
            self.assertEqual(message_of(push[S_MESSAGE][0])["body"], b"hello alice %d" % i)
        self.assertIn(S_PONG, alice.ping(7))
        # A message larger than 125 and than 65535 bytes' worth of header
        # forms: the 16-bit length both ways.
        text = "x" * 3000
        expect_ok(alice.send(bob.user_id, text), S_SEND_OK)
        push = bob.wait_push(lambda f: S_MESSAGE in f)
        self.assertEqual(message_of(push[S_MESSAGE][0])["body"], text.encode())
        hist = alice.history_messages(peer=bob.user_id)
        self.assertEqual(len(hist), 7)
        # A clean close: the server echoes the code and closes.
        alice.conn.send_frame(OP_CLOSE, struct.pack(">H", 1000) + b"bye")
        self.assertEqual(alice.conn.close_code(), 1000)

    # ---- static files ----

    def test_static_files(self):
        self.ws_server()
        for name, (data, ctype) in FILES.items():
            status, hdrs, b = http_get(self.ws_port, "/" + name)
            self.assertEqual(status, 200, name)
            self.assertEqual(hdrs["content-type"], ctype, name)
            self.assertEqual(int(hdrs["content-length"]), len(data), name)
            self.assertEqual(b, data, name)
            self.assertEqual(hdrs["connection"], "close")
            self.assertEqual(hdrs["x-content-type-options"], "nosniff")
            if name == "app-5XPSUMVK.js":
                self.assertIn("max-age=31536000", hdrs["cache-control"])
            else:
                self.assertEqual(hdrs["cache-control"], "no-cache", name)
        status, hdrs, b = http_get(self.ws_port, "/")
        self.assertEqual((status, b), (200, FILES["index.html"][0]))
        self.assertEqual(hdrs["cache-control"], "no-cache")
        status, hdrs, b = http_get(self.ws_port, "/index.html?v=2")
        self.assertEqual((status, b), (200, FILES["index.html"][0]))
        status, hdrs, b = http_get(self.ws_port, "/assets/a.css")
        self.assertEqual((status, b), (200, b"p{}"))
        status, hdrs, b = http_get(self.ws_port, "/logo.png", method="HEAD")
        self.assertEqual((status, b), (200, b""))
        self.assertEqual(int(hdrs["content-length"]), len(FILES["logo.png"][0]))
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            status, hdrs, b = http_get(self.ws_port, "/index.html", method=method)
            self.assertEqual(status, 405, method)
            self.assertEqual(hdrs["allow"], "GET, HEAD")
        self.assertEqual(http_get(self.ws_port, "/nope.js")[0], 404)
        self.assertEqual(http_get(self.ws_port, "/assets")[0], 404)  # a directory
        # A request head too large to keep.
        status, _, _ = http_get(self.ws_port, "/", extra="X-Big: %s\r\n" % ("a" * 9000))
        self.assertEqual(status, 431)

    def test_no_web_root(self):
        port = free_ws_port()
        self.start_server(["--ws-port", str(port), "--web-root", ""])
        self.assertEqual(http_get(port, "/")[0], 404)
        self.assertEqual(http_get(port, "/index.html")[0], 404)

    def test_traversal_refused(self):
        self.ws_server()
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
                     "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt", "/assets/../../secret.txt",
                     "/assets/%2e%2e/%2e%2e/secret.txt", "/.env", "/%2eenv", "/link.txt",
                     "/up/secret.txt", "/up/web/index.html", "//secret.txt",
                     "/index.html%00.png", "/%00", "/..\\secret.txt", "/%5c..%5csecret.txt",
                     "/assets/./a.css", "/%", "/%zz", "/assets/%2fa.css"):
            status, hdrs, b = http_get(self.ws_port, path)
            self.assertIn(status, (400, 404), path)
            self.assertNotIn(SECRET, b, path)
        # Raw bytes a request line may not hold.
        c = Ws(self.ws_port)
        status, _, b = c.request(b"GET /\x00/../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, 400)
        c.close()
        c = Ws(self.ws_port)
        status, _, b = c.request(b"GET http://evil/../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, 400)
        c.close()

    # ---- origins ----

    def test_origins(self):
        srv = self.ws_server()
        port = self.ws_port
        same = "http://127.0.0.1:%d" % port
        self.assertEqual(hs(port, origin=same), 101)
        self.assertEqual(hs(port), 101)  # no Origin: not a browser
        for bad in ("http://evil.example", "http://127.0.0.1:1", "null",
                    "http://127.0.0.1:%d.evil" % port, "https://127.0.0.1:%d/x" % port):
            self.assertEqual(hs(port, origin=bad), 403, bad)
        # Behind a proxy on the default port: Host without a port.
        self.assertEqual(hs(port, origin="https://chat.example", host="chat.example"),
                         101)
        self.assertEqual(
            hs(port, origin="https://chat.example:8443", host="chat.example"), 403)
        srv.cleanup()
        port = free_ws_port()
        self.start_server(["--ws-port", str(port),
                           "--ws-origins", "https://app.example, localhost:5173"])
        self.assertEqual(hs(port, origin="https://app.example"), 101)
        self.assertEqual(hs(port, origin="http://localhost:5173"), 101)
        self.assertEqual(hs(port, origin="http://app.example"), 403)
        self.assertEqual(hs(port, origin="http://127.0.0.1:%d" % port), 403)
        port2 = free_ws_port()
        self.start_server(["--ws-port", str(port2), "--ws-origins", "*"])
        self.assertEqual(hs(port2, origin="http://anything.example"), 101)

    # ---- hostile ----

    def expect_http(self, raw, want, what):
        c = Ws(self.ws_port)
        try:
            status, hdrs, b = c.request(raw)
        finally:
            c.close()
        self.assertEqual(status, want, what)
        return hdrs

    def bad_handshakes(self):
        p = self.ws_port
        base = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n" \
               "Connection: Upgrade\r\n" % p
        key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        ver = "Sec-WebSocket-Version: 13\r\n"
        self.expect_http((base + ver + "\r\n").encode(), 400, "missing key")
        self.expect_http((base + ver + "Sec-WebSocket-Key: short\r\n\r\n").encode(), 400,
                         "bad key")
        hdrs = self.expect_http((base + key + "Sec-WebSocket-Version: 8\r\n\r\n").encode(), 426,
                                "wrong version")
        self.assertEqual(hdrs["sec-websocket-version"], "13")
        self.expect_http((base + key + "\r\n").encode(), 426, "no version")
        self.expect_http((base + key + ver + "Origin: http://evil.example\r\n\r\n").encode(), 403,
                         "bad origin")
        self.expect_http(("POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n" + key + ver + "\r\n").encode(), 405, "POST")
        self.expect_http(("GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n" + key + ver + "\r\n").encode(), 400,
                         "HTTP/1.0")
        self.expect_http(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" + key + ver +
                          "\r\n").encode(), 400, "no Connection: Upgrade")
        self.expect_http((base + key + key + ver + "\r\n").encode(), 400, "two keys")
        self.expect_http(b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400, "garbage")
        self.expect_http(os.urandom(64).replace(b"\n", b"x") + b"\r\n\r\n", 400,
                         "random bytes")
        self.expect_http(b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0")
        self.expect_http((base + key + ver + "X: " + "y" * 9000 + "\r\n\r\n").encode(), 431,
                         "huge head")

    def open_ws(self):
        c = Ws(self.ws_port)
        self.addCleanup(c.close)
        self.assertEqual(c.handshake()[0], 101)
        return c

    def hostile_frames(self):
        hello = pb_field(1, 5) + pb_field(F_HELLO, pb((1, 1), (2, "x")))
        # Unmasked client frame: 1002.
        c = self.open_ws()
        c.send_frame(OP_BINARY, hello, mask=False)
        self.assertEqual(c.close_code(), 1002, "unmasked")
        # A text frame: 1003 (binary only).
        c = self.open_ws()
        c.send_frame(OP_TEXT, b'{"hello":1}')
        self.assertEqual(c.close_code(), 1003, "text")
        # RSV bits without an extension: 1002.
        c = self.open_ws()
        c.send_frame(OP_BINARY, hello, rsv=4)
        self.assertEqual(c.close_code(), 1002, "rsv")
        # An unknown opcode: 1002.
        c = self.open_ws()
        c.send_frame(3, b"")
        self.assertEqual(c.close_code(), 1002, "opcode 3")
        # A continuation with no message begun: 1002.
        c = self.open_ws()
        c.send_frame(OP_CONT, hello)
        self.assertEqual(c.close_code(), 1002, "stray continuation")
        # A control frame fragmented, or over 125 bytes: 1002.
        c = self.open_ws()
        c.send_frame(OP_PING, b"x", fin=False)
        self.assertEqual(c.close_code(), 1002, "fragmented ping")
        c = self.open_ws()
        c.send_frame(OP_PING, b"x" * 126)
        self.assertEqual(c.close_code(), 1002, "long ping")
        # A 64-bit length with its top bit set: 1002, nothing allocated.
        c = self.open_ws()
        c.send_raw(bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 63) + os.urandom(4))
        self.assertEqual(c.close_code(), 1002, "length top bit")
        # Oversized: the header alone is refused, with TOO_LARGE then 1009.
        c = self.open_ws()
        c.send_raw(ws_header(OP_BINARY, 65537) + os.urandom(4) + b"x" * 100)
        self.assertEqual(c.close_code(), 1009, "oversized")
        errs = [error(pb_decode(p)) for op, p in c.seen if op == OP_BINARY]
        self.assertTrue(errs and errs[0].code == TOO_LARGE, errs)
        # Oversized in pieces: each fragment small, the message too large.
        c = self.open_ws()
        c.send_frame(OP_BINARY, b"a" * 40000, fin=False)
        c.send_frame(OP_CONT, b"b" * 40000, fin=False)
        self.assertEqual(c.close_code(), 1009, "oversized in fragments")
        # A new message inside a fragmented one: 1002.
        c = self.open_ws()
        c.send_frame(OP_BINARY, hello[:3], fin=False)
        c.send_frame(OP_BINARY, hello)
        self.assertEqual(c.close_code(), 1002, "interleaved messages")
        # Fragments with control frames between them: the ping is answered
        # at once, the message handled once whole.
        c = self.open_ws()
        c.send_frame(OP_BINARY, hello[:2], fin=False)
        c.send_frame(OP_PING, b"ping-1")
        fin, op, p = c.recv_ws()
        self.assertEqual((op, p), (OP_PONG, b"ping-1"))
        c.send_frame(OP_CONT, hello[2:5], fin=False)
        c.send_frame(OP_PONG, b"unasked")
        c.send_frame(OP_PING, b"")
        c.send_frame(OP_CONT, b"", fin=False)
        c.send_frame(OP_CONT, hello[5:])
        fin, op, p = c.recv_ws()
        self.assertEqual((op, p), (OP_PONG, b""))
        f = c.recv_frame()
        self.assertIn(S_HELLO_OK, f, describe(f))
        self.assertEqual(one(f, 1), 5)
        # Close mid-message: answered with the same code, the part dropped.
        c.send_frame(OP_BINARY, hello[:4], fin=False)
        c.send_frame(OP_CLOSE, struct.pack(">H", 1001))
        self.assertEqual(c.close_code(), 1001, "close mid-message")
        # A bad Close: a code never sent on the wire, a reason not UTF-8.
        c = self.open_ws()
        c.send_frame(OP_CLOSE, struct.pack(">H", 1005))
        self.assertEqual(c.close_code(), 1002, "close 1005")
        c = self.open_ws()
        c.send_frame(OP_CLOSE, struct.pack(">H", 1000) + b"\xff\xfe")
        self.assertEqual(c.close_code(), 1007, "close reason not utf-8")
        c = self.open_ws()
        c.send_frame(OP_CLOSE, b"")
        self.assertIsNone(c.close_code(), "empty close")
        # A frame that is not a ClientFrame gets the protocol's answer, in
        # a binary message.
        c = self.open_ws()
        c.send_frame(OP_BINARY, b"\xff\xff\xff")
        f = c.recv_frame()
        self.assertIsNotNone(error(f), describe(f))
        c.close()

    def slowloris(self):
        """A handshake dribbled a byte a second is cut by the frame timeout
        (2 s here); a handshake that never comes by the hello deadline."""
        c = Ws(self.ws_port)
        self.addCleanup(c.close)
        req = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        t0 = time.monotonic()
        closed = False
        for b in req:
            try:
                c.send_raw(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if c.closed(timeout=0.5):
                closed = True
                break
        self.assertTrue(closed or c.closed(timeout=8), "slowloris kept its connection")
        self.assertLess(time.monotonic() - t0, 12)
        # Nothing sent at all: the hello deadline (3 s).
        c = Ws(self.ws_port)
        self.addCleanup(c.close)
        self.assertTrue(c.closed(timeout=10))
        # Upgraded, then silent: the hello deadline too.
        c = self.open_ws()
        t0 = time.monotonic()
        f = c.recv_frame(timeout=10)
        self.assertIsNotNone(error(f), describe(f))
        self.assertTrue(c.closed(timeout=10))
        self.assertLess(time.monotonic() - t0, 10)

    def test_hostile(self):
        srv = self.ws_server(["--frame-timeout", "2", "--hello-timeout", "3",
                              "--max-conns-per-ip", "0"])
        ws_pair = WsChatPair(self.ws_port, prefix="wsp").start()
        tcp_pair = ChatPair(srv.port, prefix="tcp").start()
        try:
            self.bad_handshakes()
            self.hostile_frames()
            self.slowloris()
        finally:
            ws_pair.check(self)
            tcp_pair.check(self)

    # ---- TLS ----

    def test_wss(self):
        srv = self.ws_server(tls=True)
        self.assertIn("web client at https://127.0.0.1:%d/" % self.ws_port, srv.logs())
        status, hdrs, b = http_get(self.ws_port, "/", tls=self.tls_ctx)
        self.assertEqual((status, b), (200, FILES["index.html"][0]))
        status, hdrs, b = http_get(self.ws_port, "/logo.png", tls=self.tls_ctx)
        self.assertEqual((status, b), (200, FILES["logo.png"][0]))
        alice = WsPeer(self.ws_port, tls=self.tls_ctx)
        bob = WsPeer(self.ws_port, tls=self.tls_ctx)
        self.addCleanup(alice.close)
        self.addCleanup(bob.close)
        for p, name in ((alice, "alice"), (bob, "bob")):
            expect_ok(p.register(name), S_REGISTER_OK)
            expect_ok(p.login(name), S_LOGIN_OK)
        for i in range(6):
            big = expect_ok(alice.send(bob.user_id, "%d " % i + "y" * 3900), S_SEND_OK)
            push = bob.wait_push(lambda f: S_MESSAGE in f)
            self.assertEqual(message_of(push[S_MESSAGE][0])["msgid"], one(big, 1))
        # A reply past one TLS record (16 KiB).
        hist = bob.history_messages(peer=alice.user_id)
        self.assertEqual(len(hist), 6)
        expect_ok(bob.send(alice.user_id, "back"), S_SEND_OK)
        push = alice.wait_push(lambda f: S_MESSAGE in f)
        self.assertEqual(message_of(push[S_MESSAGE][0])["body"], b"back")
        # Plain WebSocket on the TLS port gets nowhere.
        c = Ws(self.ws_port)
        try:
            c.send_raw(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(c.closed(timeout=10))
        except (ConnectionResetError, BrokenPipeError):
            pass
        c.close()
        # A text frame over TLS: the same answer.
        c = Ws(self.ws_port, tls=self.tls_ctx)
        self.addCleanup(c.close)
        self.assertEqual(c.handshake()[0], 101)
        c.send_frame(OP_TEXT, b"hi")
        self.assertEqual(c.close_code(), 1003)


def free_ws_port():
    return free_port()


if __name__ == "__main__":
    unittest.main()
