"""TLS on the client port, with real parleyd and parley processes: clients
chat over TLS, a plain connection to the TLS port gets no service, openssl
s_client sees TLS 1.3, a certificate reloaded by SIGHUP is served to new
connections while old ones keep chatting, --tls auto's fingerprint pins and
trust on first use refuses a changed certificate, and plain text is refused
on an address other than loopback without --allow-plain.

Every client runs with HOME in a temporary directory, so that
~/.parley/known_servers is the test's own.
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
from unittest import mock

from harness import PARLEY, PARLEYD, Client, RawConn, Server, frame, free_port, pb_field

OPENSSL = shutil.which("openssl")


def fp_text(der):
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def file_fingerprint(cert_path):
    with open(cert_path) as f:
        return fp_text(ssl.PEM_cert_to_DER_cert(f.read()))


def served_fingerprint(port):
    """The fingerprint of the certificate a new connection gets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            return fp_text(t.getpeercert(binary_form=True))


def make_cert(directory, name):
    """A self-signed P-256 pair for 127.0.0.1 made by the openssl tool."""
    cert = os.path.join(directory, name + "-cert.pem")
    key = os.path.join(directory, name + "-key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=" + name, "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


def log_fingerprint(server):
    m = re.search(r"SHA-256 fingerprint ([0-9A-F:]{95})", server.logs())
    assert m, "no fingerprint in the log:\n" + server.logs()[-2000:]
    return m.group(1)


def hello():
    return frame(pb_field(1, 1) + pb_field(10, pb_field(1, 1) + pb_field(2, "test")))


class TLSTest(unittest.TestCase):
    """Servers are started by each test; clients get a private HOME."""

    def setUp(self):
        if not OPENSSL:
            self.skipTest("the openssl tool is missing (scripts/install-deps.sh installs it)")
        self.home = tempfile.mkdtemp(prefix="parley-home-")
        self.addCleanup(shutil.rmtree, self.home, True)
        patch = mock.patch.dict(os.environ, {"HOME": self.home})
        patch.start()
        self.addCleanup(patch.stop)
        self.servers = []

    def server(self, extra, port=None, data=None):
        s = Server(data=data, extra=extra)
        if port:
            s.port = port
        self.addCleanup(s.cleanup)
        self.servers.append(s)
        s.start()
        # The port is bound before the rest starts (and a certificate may be
        # made first): wait for the ready line, not just the port.
        deadline = time.time() + 30
        while "Parley is ready" not in s.logs():
            if s.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("parleyd did not get ready:\n" + s.logs()[-3000:])
            time.sleep(0.05)
        return s

    def client(self, port, *args):
        c = Client(port, extra=list(args))
        self.addCleanup(c.kill)
        return c

    def user(self, port, name, *args):
        c = self.client(port, *args)
        uid = c.ok("register:%s:secret123" % name)["id"]
        c.ok("login:%s:secret123" % name)
        return c, uid

    def run_client(self, port, *args, lines="", timeout=30):
        """One parley run to its end: (exit code, stdout, stderr)."""
        p = subprocess.run([PARLEY, "--json", "--port", str(port), "--wait-ms", "0",
                            "--no-reconnect"] + list(args),
                           input=lines, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def chat(self, a, b, b_id, text):
        """a sends text to b, and b shows it."""
        a.ok("chat:%d:%s" % (b_id, text))
        b.wait_events(lambda e: e.get("type") == "message" and e.get("body") == text)

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        errors = getattr(outcome, "errors", None) or []
        if any(exc for _, exc in errors):
            for s in self.servers:
                print("---- parleyd log ----\n" + s.logs()[-4000:])

    # ---- the tests ----

    def test_two_tls_clients_chat(self):
        srv = self.server(["--tls", "auto"])
        cert = os.path.join(srv.data, "tls-cert.pem")
        fp = log_fingerprint(srv)
        # One verifies by the certificate as its CA, the other pins it.
        alice, a_id = self.user(srv.port, "alice", "--tls", "--ca", cert)
        bob, b_id = self.user(srv.port, "bob", "--tls", "--fingerprint", fp)
        self.chat(alice, bob, b_id, "hello bob, over TLS")
        self.chat(bob, alice, a_id, "hello alice: ok")
        history = alice.ok("history:%d" % b_id)["messages"]
        self.assertEqual([m["body"] for m in history],
                         ["hello bob, over TLS", "hello alice: ok"])

    def test_plain_connection_to_the_tls_port_gets_no_service(self):
        srv = self.server(["--tls", "auto"])
        raw = RawConn(srv.port)
        self.addCleanup(raw.close)
        raw.send(hello())
        # Closed at once; whatever came first is a TLS alert, never a frame.
        data = b""
        raw.sock.settimeout(10)
        try:
            while True:
                chunk = raw.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        self.assertTrue(data == b"" or data[0] == 0x15, data[:32])
        # The plain client says what is wrong.
        rc, out, err = self.run_client(srv.port, lines="register:x:secret123\n")
        self.assertEqual(rc, 1, out + err)
        self.assertNotIn('"ok":true', out)
        self.assertIn("--tls", err)
        # ... and the server goes on serving TLS.
        c, _ = self.user(srv.port, "after", "--tls", "--insecure")
        c.ok("showfriendlist")

    def test_tls_client_to_a_plain_port_says_so(self):
        srv = self.server([])
        rc, out, err = self.run_client(srv.port, "--tls", "--insecure",
                                       lines="register:x:secret123\n")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("TLS", err)

    def test_openssl_s_client_sees_tls13(self):
        srv = self.server(["--tls", "auto"])
        p = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                            "-brief"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30)
        self.assertIn("Protocol version: TLSv1.3", p.stdout + p.stderr)
        # TLS 1.1 and older are refused.
        p = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                            "-brief", "-tls1_1"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        self.assertNotIn("CONNECTION ESTABLISHED", p.stdout + p.stderr)

    def test_sighup_reload_serves_new_connections_while_old_ones_chat(self):
        certs = tempfile.mkdtemp(prefix="parley-certs-")
        self.addCleanup(shutil.rmtree, certs, True)
        cert_a, key_a = make_cert(certs, "first")
        cert_b, key_b = make_cert(certs, "second")
        fp_a, fp_b = file_fingerprint(cert_a), file_fingerprint(cert_b)
        cert, key = os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem")
        shutil.copy(cert_a, cert)
        shutil.copy(key_a, key)
        srv = self.server(["--tls-cert", cert, "--tls-key", key])
        self.assertEqual(served_fingerprint(srv.port), fp_a)

        alice, a_id = self.user(srv.port, "alice", "--tls", "--fingerprint", fp_a)
        bob, b_id = self.user(srv.port, "bob", "--tls", "--fingerprint", fp_a)
        self.chat(alice, bob, b_id, "before the reload")

        # The new pair replaces the files (as a renewal would), then SIGHUP.
        os.replace(cert_b, cert + ".new")
        os.replace(key_b, key)
        os.replace(cert + ".new", cert)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "reloaded the TLS certificate" not in srv.logs():
            self.assertLess(time.time(), deadline, "no reload in the log")
            time.sleep(0.05)
        self.assertEqual(served_fingerprint(srv.port), fp_b)

        # The connections made before keep chatting, both ways.
        self.chat(alice, bob, b_id, "after the reload")
        self.chat(bob, alice, a_id, "still here")
        # A new connection gets the new certificate, and chats with the old.
        bob2 = self.client(srv.port, "--tls", "--fingerprint", fp_b)
        bob2.ok("login:bob:secret123")
        self.chat(alice, bob2, b_id, "to both of bob's")
        bob.wait_events(lambda e: e.get("body") == "to both of bob's")
        rc, out, err = self.run_client(srv.port, "--tls", "--fingerprint", fp_a)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("not the --fingerprint", err)

        # A broken file is not served: the server keeps what it has.
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "cannot reload the TLS certificate" not in srv.logs():
            self.assertLess(time.time(), deadline, "no failed reload in the log")
            time.sleep(0.05)
        self.assertEqual(served_fingerprint(srv.port), fp_b)
        self.chat(bob2, alice, a_id, "after a failed reload")
        self.assertIsNone(srv.proc.poll())

    def test_tls_auto_pins_and_trust_on_first_use(self):
        data = tempfile.mkdtemp(prefix="parley-auto-")
        self.addCleanup(shutil.rmtree, data, True)
        srv = self.server(["--tls", "auto"], data=data)
        cert, key = os.path.join(data, "tls-cert.pem"), os.path.join(data, "tls-key.pem")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        fp = log_fingerprint(srv)
        self.assertEqual(fp, file_fingerprint(cert))
        self.assertIn("--tls --fingerprint " + fp, srv.logs())  # the ready line pins it
        port = srv.port

        # A pin that is not the certificate's is refused before any request.
        wrong = ("00" if fp[:2] != "00" else "11") + fp[2:]
        rc, out, err = self.run_client(port, "--tls", "--fingerprint", wrong,
                                       lines="register:mallory:secret123\n")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("not the --fingerprint", err)
        rc, out, err = self.run_client(port, "--tls", "--fingerprint", fp.replace(":", "").lower(),
                                       lines="register:pinned:secret123\n")
        self.assertEqual(rc, 0, err)
        self.assertIn('"ok":true', out)

        # First use: trusted and remembered; then known, silently.
        known = os.path.join(self.home, ".parley", "known_servers")
        rc, out, err = self.run_client(port, "--tls", lines="register:first:secret123\n")
        self.assertEqual(rc, 0, err)
        self.assertIn('"ok":true', out)
        self.assertIn("first use", err)
        with open(known) as f:
            self.assertIn("127.0.0.1:%d %s" % (port, fp), f.read())
        rc, out, err = self.run_client(port, "--tls", lines="login:first:secret123\n")
        self.assertEqual(rc, 0, err)
        self.assertIn('"ok":true', out)
        self.assertNotIn("first use", err)

        # A restart on the same data keeps the certificate.
        self.assertEqual(srv.stop(), 0)
        srv2 = self.server(["--tls", "auto"], port=port, data=data)
        self.assertEqual(log_fingerprint(srv2), fp)
        rc, out, err = self.run_client(port, "--tls", lines="login:first:secret123\n")
        self.assertEqual(rc, 0, err)

        # Another server on that port, with another certificate: refused.
        self.assertEqual(srv2.stop(), 0)
        srv3 = self.server(["--tls", "auto"], port=port)
        self.assertNotEqual(log_fingerprint(srv3), fp)
        rc, out, err = self.run_client(port, "--tls", lines="register:victim:secret123\n")
        self.assertEqual(rc, 1, out + err)
        self.assertNotIn('"ok":true', out)
        self.assertIn("has changed", err)
        self.assertIn(fp, err)
        # Pinning the new one by hand still works.
        rc, out, err = self.run_client(port, "--tls", "--fingerprint", log_fingerprint(srv3),
                                       lines="register:ok:secret123\n")
        self.assertEqual(rc, 0, err)

    def test_plain_text_refused_on_a_non_loopback_address(self):
        base = tempfile.mkdtemp(prefix="parley-bind-")
        self.addCleanup(shutil.rmtree, base, True)
        cases = [
            ["--bind", "0.0.0.0"],
            ["--bind", "0.0.0.0", "--tls", "auto", "--plain-port", str(free_port())],
        ]
        for args in cases:
            data = os.path.join(base, "data")
            p = subprocess.run([PARLEYD, "--port", str(free_port()), "--data", data,
                                "--pwhash-cost", "min"] + args,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=30)
            self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("refusing to serve plain text on 0.0.0.0", p.stderr)
            self.assertIn("--allow-plain", p.stderr)
            self.assertNotIn("ready", p.stdout)
            self.assertFalse(os.path.exists(data), "a refused start made its data directory")

    def test_config_file_keys_and_a_plain_port_beside_tls(self):
        data = tempfile.mkdtemp(prefix="parley-conf-")
        self.addCleanup(shutil.rmtree, data, True)
        plain = free_port()
        conf = os.path.join(data, "parleyd.conf")
        with open(conf, "w") as f:
            f.write("tls = auto\nplain-port = %d\nallow-plain = no\n" % plain)
        srv = self.server(["--config", conf], data=data)
        fp = log_fingerprint(srv)
        alice, a_id = self.user(srv.port, "alice", "--tls", "--fingerprint", fp)
        bob, b_id = self.user(plain, "bob")
        self.chat(alice, bob, b_id, "from TLS to plain")
        self.chat(bob, alice, a_id, "from plain to TLS")
        # Without TLS, a plain port makes no sense.
        p = subprocess.run([PARLEYD, "--plain-port", str(free_port())], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--plain-port", p.stderr)


if __name__ == "__main__":
    unittest.main()
