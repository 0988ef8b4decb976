"""The cluster trusts only itself (docs/security.md, "The cluster's trust").

A process that reaches a service node's RPC port, and holds no node
certificate of the cluster's CA, must not read, send or log out anything:
its connection closes before a byte of it is read as a call. A certificate
of the cluster whose role is not "gateway" gets every call refused
(RPC_UNAUTHORISED): only a gateway may say which user is calling.

Each refused attempt sends the calls a gateway would send for alice (read her
history with bob, send bob a message as her, log out all her sessions);
the same history call over a gateway's certificate shows that the calls are
well-formed and would be served."""
import os
import re
import socket
import ssl
import subprocess
import tempfile
import unittest

from harness import Client, Cluster, frame, pb, pb_decode, tcp_connect

# proto/rpc.proto
RPC_OK, RPC_UNAUTHORISED = 0, 3
# ClientFrame bodies (proto/parley.proto)
F_LOGOUT, F_SEND_DIRECT, F_HISTORY = 23, 50, 52

SECRET = "the launch code is 4711"
FORGED = "forged by a stranger"


def rpc_call(call_id, service, method, user_id, body_field, body):
    """One framed RpcRequest carrying a Call as the gateway makes it."""
    caller = pb((1, user_id), (2, 424242), (3, 1), (4, 1), (5, "127.0.0.1"))
    client_frame = pb((1, call_id), (body_field, body))
    call = pb((1, caller), (2, client_frame))
    return frame(pb((1, call_id), (2, "parley." + service), (3, method), (4, 5000),
                    (5, call)))


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=30)


def make_ca(d, name):
    """d/name.pem and d/name.key: a CA as scripts/cluster.sh makes one."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "%s/%s.key" % (d, name), "-out", "%s/%s.pem" % (d, name), "-days", "2",
            "-subj", "/O=Parley cluster/CN=Parley cluster CA",
            "-addext", "basicConstraints=critical,CA:TRUE")


def make_node(d, ca, name, ous):
    """d/name.pem and d/name.key signed by d/ca, its subject's OUs ous."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "%s/%s.key" % (d, name), "-out", "%s/%s.csr" % (d, name),
            "-subj", "/O=Parley cluster%s/CN=%s" % ("".join("/OU=" + o for o in ous), name))
    openssl("x509", "-req", "-in", "%s/%s.csr" % (d, name), "-CA", "%s/%s.pem" % (d, ca),
            "-CAkey", "%s/%s.key" % (d, ca), "-set_serial", "7", "-days", "2",
            "-out", "%s/%s.pem" % (d, name))
    os.chmod("%s/%s.key" % (d, name), 0o600)


def read_frames(sock, count, timeout=10):
    """Up to count RpcResponses decoded; fewer if the node closes first."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < count:
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + n:
                break
            out.append(pb_decode(buf[4:4 + n]))
            buf = buf[4 + n:]
        if len(out) >= count:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out


class ClusterTrustTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        try:
            cls.cluster.up()
        except BaseException:
            cls.cluster.down()
            raise
        cls.pki = os.path.join(cls.cluster.dir, "pki")
        cls.message_port = cls.rpc_port("message1")
        cls.user_port = cls.rpc_port("user1")
        cls.alice = Client(cls.cluster.gateway_port(1))
        cls.bob = Client(cls.cluster.gateway_port(2))
        cls.a = cls.alice.ok("register:alice:secret123")["id"]
        cls.alice.ok("login:alice:secret123")
        cls.b = cls.bob.ok("register:bob:secret123")["id"]
        cls.bob.ok("login:bob:secret123")
        cls.alice.ok("chat:%d:%s" % (cls.b, SECRET))
        cls.other_ca = tempfile.mkdtemp(prefix="parley-other-ca-")

    @classmethod
    def tearDownClass(cls):
        for c in (cls.alice, cls.bob):
            c.kill()
        subprocess.run(["rm", "-rf", cls.other_ca])
        cls.cluster.down()

    @classmethod
    def rpc_port(cls, name):
        m = re.search(r"serving RPC on [0-9.]+:(\d+)", cls.cluster.log(name))
        assert m, "no RPC port in the log of " + name
        return int(m.group(1))

    def tearDown(self):
        bad = self.cluster.logs_with_errors()
        if bad:
            self.fail("a parleyd reported a sanitizer error:\n" + bad)

    # ---- what a stranger sends ----

    def message_calls(self, user=None):
        """As user (alice): read the history with bob, send bob a message."""
        user = user or self.a
        history = rpc_call(1, "MessageService", "History", user, F_HISTORY, pb((1, self.b)))
        send = rpc_call(2, "MessageService", "SendDirect", user, F_SEND_DIRECT,
                        pb((1, self.b), (2, FORGED)))
        return history + send

    def logout_call(self, user=None):
        """As user (alice): log out every session (Logout{all: true})."""
        return rpc_call(3, "UserService", "Logout", user or self.a, F_LOGOUT, pb((2, 1)))

    def context(self, cert=None, ca=None):
        """A TLS client context trusting the cluster CA (or ca), presenting
        cert (a path without .pem/.key) if given."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(ca or os.path.join(self.pki, "ca.pem"))
        if cert:
            ctx.load_cert_chain(cert + ".pem", cert + ".key")
        return ctx

    def attempt(self, port, data, ctx=None, timeout=15):
        """Connects (over TLS with ctx), sends data and reads until the node
        closes. Returns the bytes read; fails if the node keeps the
        connection open."""
        sock = tcp_connect(port, timeout=timeout)
        got = b""
        try:
            if ctx:
                sock = ctx.wrap_socket(sock)  # the handshake may fail here
            try:
                sock.sendall(data)
            except (OSError, ssl.SSLError):
                pass  # closed already: what it read is read below
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return got
                got += chunk
        except socket.timeout:
            self.fail("the node kept a connection open that it should have closed")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return got
        finally:
            sock.close()

    def assert_nothing_happened(self):
        """alice is still logged in, and the conversation holds only what
        she sent herself."""
        h = self.alice.ok("history:%d" % self.b)["messages"]
        self.assertEqual([m["body"] for m in h], [SECRET])
        h = self.bob.ok("history:%d" % self.a)["messages"]
        self.assertEqual([m["body"] for m in h], [SECRET])

    # ---- the attempts ----

    def test_plain_tcp_gets_nothing(self):
        for port, data in ((self.message_port, self.message_calls()),
                           (self.user_port, self.logout_call())):
            got = self.attempt(port, data)
            # At most a TLS alert (content type 21): never a response.
            self.assertTrue(got == b"" or got[0] == 0x15, got[:64])
            self.assertNotIn(SECRET.encode(), got)
        self.assert_nothing_happened()
        self.assertIn("closed before any call", self.cluster.log("message1"))

    def test_tls_without_a_certificate_gets_nothing(self):
        for port, data in ((self.message_port, self.message_calls()),
                           (self.user_port, self.logout_call())):
            self.assertEqual(self.attempt(port, data, self.context()), b"")
        self.assert_nothing_happened()

    def test_certificate_of_another_ca_gets_nothing(self):
        d = self.other_ca
        make_ca(d, "ca")
        make_node(d, "ca", "gw", ["gateway"])
        # A gateway's certificate in every field but its signer; it even
        # trusts the cluster's CA, so only the node's check can stop it.
        ctx = self.context(d + "/gw")
        for port, data in ((self.message_port, self.message_calls()),
                           (self.user_port, self.logout_call())):
            self.assertEqual(self.attempt(port, data, ctx), b"")
        self.assert_nothing_happened()

    def test_service_certificate_may_not_speak_for_a_user(self):
        # message2's own certificate and key: a service node, or whoever
        # stole its key, is not a gateway.
        ctx = self.context(os.path.join(self.pki, "message2"))
        for port, data, n in ((self.message_port, self.message_calls(), 2),
                              (self.user_port, self.logout_call(), 1)):
            sock = ctx.wrap_socket(tcp_connect(port, timeout=15))
            try:
                sock.sendall(data)
                replies = read_frames(sock, n)
            finally:
                sock.close()
            self.assertEqual(len(replies), n)
            for r in replies:
                self.assertEqual(r.get(2, [0])[0], RPC_UNAUTHORISED, r)
                self.assertNotIn(4, r)  # no payload
        self.assert_nothing_happened()
        self.assertIn("not a gateway's", self.cluster.log("message1"))

    def test_gateway_certificate_is_served(self):
        # The control: the very calls refused above, made for dave over a
        # gateway's certificate, are served: so the refusals are the node's
        # doing, not malformed calls.
        dave = Client(self.cluster.gateway_port(1))
        self.addCleanup(dave.kill)
        d = dave.ok("register:dave:secret123")["id"]
        dave.ok("login:dave:secret123")
        dave.ok("chat:%d:%s" % (self.b, SECRET))
        ctx = self.context(os.path.join(self.pki, "gateway1"))
        for port, data, n in ((self.message_port, self.message_calls(d), 2),
                              (self.user_port, self.logout_call(d), 1)):
            sock = ctx.wrap_socket(tcp_connect(port, timeout=15))
            try:
                sock.sendall(data)
                replies = read_frames(sock, n)
            finally:
                sock.close()
            self.assertEqual(len(replies), n)
            for r in replies:
                self.assertEqual(r.get(2, [RPC_OK])[0], RPC_OK, r)
            if port == self.message_port:
                self.assertIn(SECRET.encode(), replies[0][4][0])
        h = self.bob.ok("history:%d" % d)["messages"]
        self.assertEqual([m["body"] for m in h], [SECRET, FORGED])
        self.assertFalse(dave.cmd("history:%d" % self.b).get("ok"), "dave was not logged out")

class NodeTrustStartTest(unittest.TestCase):
    """What a node says at start about its RPC trust: a loud warning
    without the flags, a refusal of a certificate of the wrong role. The
    registry is unreachable, so each start ends there (status 1) after the
    certificates were judged."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="parley-node-pki-")
        make_ca(cls.dir, "ca")
        make_node(cls.dir, "ca", "gw", ["gateway"])
        make_node(cls.dir, "ca", "svc", ["service"])

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["rm", "-rf", cls.dir])

    def run_parleyd(self, role, *args):
        from harness import PARLEYD, free_port
        dead = "127.0.0.1:%d" % free_port()
        p = subprocess.run([PARLEYD, "--role", role, "--zk", dead, "--redis", dead,
                            "--port", str(free_port()), "--data", self.dir + "/data"] +
                           list(args), capture_output=True, text=True, timeout=60)
        return p.returncode, p.stderr

    def pki(self, name):
        return ["--cluster-ca", self.dir + "/ca.pem", "--node-cert",
                "%s/%s.pem" % (self.dir, name), "--node-key", "%s/%s.key" % (self.dir, name)]

    def test_without_the_flags_a_loud_warning(self):
        rc, err = self.run_parleyd("message")
        self.assertEqual(rc, 1)
        self.assertIn("WARNING: no --cluster-ca: the RPC port trusts anyone", err)
        rc, err = self.run_parleyd("gateway")
        self.assertEqual(rc, 1)
        self.assertIn("WARNING: no --cluster-ca: calls to service nodes", err)

    def test_with_the_right_certificates_no_warning(self):
        for role, name in (("message", "svc"), ("gateway", "gw")):
            rc, err = self.run_parleyd(role, *self.pki(name))
            self.assertEqual(rc, 1)  # the registry is unreachable
            self.assertIn("cannot reach ZooKeeper", err)
            self.assertIn("RPC between nodes: mutual TLS", err)
            self.assertNotIn("WARNING", err)

    def test_the_flags_go_together(self):
        rc, err = self.run_parleyd("message", "--cluster-ca", self.dir + "/ca.pem")
        self.assertEqual(rc, 2)
        self.assertIn("--cluster-ca, --node-cert and --node-key go together", err)

    def test_a_certificate_of_the_wrong_role_is_refused(self):
        rc, err = self.run_parleyd("message", *self.pki("gw"))
        self.assertEqual(rc, 1)
        self.assertIn("is not a service node's", err)
        rc, err = self.run_parleyd("gateway", *self.pki("svc"))
        self.assertEqual(rc, 1)
        self.assertIn("is not a gateway's", err)

    def test_a_key_of_another_certificate_is_refused(self):
        args = self.pki("svc")
        args[-1] = self.dir + "/gw.key"
        rc, err = self.run_parleyd("message", *args)
        self.assertEqual(rc, 1)
        self.assertIn("cannot load the key", err)
        self.assertFalse(os.path.exists(self.dir + "/data"), "a refused start made its data")


if __name__ == "__main__":
    unittest.main()
