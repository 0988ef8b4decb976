"""A TLS-terminated cluster (docs/security.md): scripts/cluster.sh's gateways
serve TLS on their client port with a certificate of the cluster CA, and
nginx passes the TCP stream through to them.

- two `parley --tls --ca CLUSTER/pki/ca.pem` clients chat through nginx;
- a plain connection through nginx gets no service; openssl s_client through
  nginx sees TLS 1.3 and a certificate that verifies with the cluster CA;
- the service nodes reach MariaDB over TLS, verified with the cluster CA, as
  a user that may touch database parley only, and no other (mysql), and
  that is refused without TLS;
- parleyd refuses to start when TLS to MariaDB is required and the server
  offers none, or its certificate does not chain to --db-ca.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
from unittest import mock

from harness import (PARLEY, PARLEYD, ROOT, Client, Cluster, RawConn, frame, free_port,
                     pb_field)

OPENSSL = shutil.which("openssl")
MARIADB = shutil.which("mariadb")
SERVERS_SH = os.path.join(ROOT, "scripts", "servers.sh")


def hello():
    return frame(pb_field(1, 1) + pb_field(10, pb_field(1, 1) + pb_field(2, "test")))


class ClusterTLSTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not OPENSSL or not MARIADB:
            raise unittest.SkipTest("openssl or the mariadb client is missing "
                                    "(scripts/install-deps.sh installs them)")
        cls.home = tempfile.mkdtemp(prefix="parley-home-")
        cls.cluster = Cluster(tls=True)
        try:
            cls.cluster.up()
        except BaseException:
            cls.cluster.down()
            shutil.rmtree(cls.home, ignore_errors=True)
            raise
        v = cls.cluster.vars
        m = re.match(r"mariadb://parley@127\.0\.0\.1:(\d+)/parley$", v["DB"])
        assert m, "unexpected DB in cluster.env: " + v["DB"]
        cls.db_port = int(m.group(1))
        with open(v["DB_PASSWORD_FILE"]) as f:
            cls.db_password = f.readline().strip()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.down()
        shutil.rmtree(cls.home, ignore_errors=True)

    def setUp(self):
        # Clients keep ~/.parley/known_servers: the test's own.
        patch = mock.patch.dict(os.environ, {"HOME": self.home})
        patch.start()
        self.addCleanup(patch.stop)

    def tearDown(self):
        bad = self.cluster.logs_with_errors()
        if bad:
            self.fail("sanitizer reports in the cluster's logs:\n" + bad)

    def client(self, *args):
        c = Client(self.cluster.port, extra=list(args))
        self.addCleanup(c.kill)
        return c

    def user(self, name):
        c = self.client("--tls", "--ca", self.cluster.ca)
        uid = c.ok("register:%s:secret123" % name)["id"]
        c.ok("login:%s:secret123" % name)
        return c, uid

    def sql(self, sql, *args):
        """The mariadb client as Parley's database user: (exit code, output)."""
        p = subprocess.run([MARIADB, "--no-defaults", "-h", "127.0.0.1", "-P", str(self.db_port),
                            "-u", "parley", "-p" + self.db_password, "-N", "-B"] + list(args) +
                           ["-e", sql], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    def parleyd_fails(self, *args):
        """A parleyd that must not start: its exit code and output."""
        data = tempfile.mkdtemp(prefix="parley-test-")
        self.addCleanup(shutil.rmtree, data, True)
        p = subprocess.run([PARLEYD, "--port", str(free_port()), "--data", data,
                            "--pwhash-cost", "min"] + list(args),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    # ---- clients: TLS at the gateways, through nginx ----

    def test_two_tls_clients_chat_through_nginx(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        alice.ok("chat:%d:hello bob, TLS to the gateway" % b)
        bob.wait_events(lambda e: e.get("type") == "message" and
                        e.get("body") == "hello bob, TLS to the gateway")
        bob.ok("chat:%d:hello alice" % a)
        alice.wait_events(lambda e: e.get("type") == "message" and e.get("body") == "hello alice")
        history = alice.ok("history:%d" % b)["messages"]
        self.assertEqual([m["body"] for m in history],
                         ["hello bob, TLS to the gateway", "hello alice"])

    def test_plain_connection_through_nginx_gets_no_service(self):
        raw = RawConn(self.cluster.port)
        self.addCleanup(raw.close)
        raw.send(hello())
        data = b""
        raw.sock.settimeout(15)
        try:
            while True:
                chunk = raw.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        # Closed; whatever came is a TLS alert, never a frame.
        self.assertTrue(data == b"" or data[0] == 0x15, data[:32])
        # The plain client is refused and told to use --tls.
        p = subprocess.run([PARLEY, "--json", "--port", str(self.cluster.port), "--wait-ms", "0",
                            "--no-reconnect"], input="register:plain:secret123\n",
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertNotIn('"ok":true', p.stdout)
        self.assertIn("--tls", p.stderr)
        # A client that trusts another CA is refused too.
        p = subprocess.run([PARLEY, "--json", "--port", str(self.cluster.port), "--wait-ms", "0",
                            "--no-reconnect", "--tls", "--ca",
                            os.path.join(self.cluster.dir, "pki", "mariadb.pem")],
                           input="register:wrongca:secret123\n", capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertNotIn('"ok":true', p.stdout)

    def test_openssl_s_client_through_nginx_sees_tls13(self):
        p = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % self.cluster.port,
                            "-CAfile", self.cluster.ca, "-verify_return_error",
                            "-verify_ip", "127.0.0.1", "-brief"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        out = p.stdout + p.stderr
        self.assertIn("Protocol version: TLSv1.3", out)
        self.assertIn("Verification: OK", out)

    def test_connect_command_printed(self):
        env = self.cluster.vars
        self.assertEqual(env["CLIENT_TLS"], "1")
        self.assertEqual(env["CA"], self.cluster.ca)

    # ---- MariaDB: TLS and a least-privilege user ----

    def test_nodes_reach_mariadb_over_verified_tls(self):
        for name in ("user1", "social1", "message1"):
            log = self.cluster.log(name)
            self.assertRegex(log, r"mariadb: connected over TLSv1\.[23] to 127\.0\.0\.1:%d "
                             r"\(server certificate verified" % self.db_port, name)
            self.assertNotIn("without TLS", log)
            # The password came from a file: never on a command line or in a log.
            self.assertNotIn(self.db_password, log)
        with open("/proc/%d/cmdline" % self.cluster.pid("user1"), "rb") as f:
            self.assertNotIn(self.db_password.encode(), f.read())
        # The server's view of a session like the nodes'.
        rc, out = self.sql("SHOW SESSION STATUS LIKE 'Ssl_version'", "--ssl",
                           "--ssl-ca=" + self.cluster.ca, "--ssl-verify-server-cert")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"Ssl_version\s+TLSv1\.[23]")

    def test_database_user_without_tls_is_refused(self):
        rc, out = self.sql("SELECT 1", "--skip-ssl")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ERROR", out)

    def test_database_user_has_its_own_database_only(self):
        tls = ("--ssl", "--ssl-ca=" + self.cluster.ca)
        rc, out = self.sql("SELECT COUNT(*) FROM users", "parley", *tls)
        self.assertEqual(rc, 0, out)
        rc, out = self.sql("SELECT user, password FROM mysql.user", *tls)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("denied", out)
        rc, out = self.sql("SHOW DATABASES", *tls)
        self.assertEqual(rc, 0, out)
        self.assertEqual(sorted(out.split()), ["information_schema", "parley"])
        for sql in ("CREATE DATABASE parley_other", "DROP TABLE parley.messages",
                    "GRANT SELECT ON parley.* TO 'parley'@'127.0.0.1'",
                    "SELECT * FROM information_schema.PROCESSLIST WHERE USER = 'root'"):
            rc, out = self.sql(sql, *tls)
            if sql.startswith("SELECT"):
                self.assertEqual(out.strip(), "", sql)  # nobody else's sessions
            else:
                self.assertNotEqual(rc, 0, sql + ": " + out)

    # ---- parleyd refuses a database it cannot trust ----

    def test_parleyd_refuses_a_database_certificate_of_another_ca(self):
        other = tempfile.mkdtemp(prefix="parley-other-ca-")
        self.addCleanup(shutil.rmtree, other, True)
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", other + "/ca.key",
                        "-out", other + "/ca.pem", "-days", "2", "-subj", "/CN=Another CA"],
                       check=True, capture_output=True, timeout=60)
        v = self.cluster.vars
        rc, out = self.parleyd_fails("--db", v["DB"], "--db-ca", other + "/ca.pem",
                                     "--db-password-file", v["DB_PASSWORD_FILE"])
        self.assertEqual(rc, 1, out)
        self.assertIn("cannot connect to MariaDB", out)
        self.assertIn("TLS", out)
        self.assertNotIn("Parley is ready", out)

    def test_parleyd_refuses_a_database_certificate_for_another_host(self):
        # Signed by the cluster CA, but for another name than the one dialled.
        d = tempfile.mkdtemp(prefix="parley-other-mariadb-")
        self.addCleanup(shutil.rmtree, d, True)
        pki = os.path.join(self.cluster.dir, "pki")
        subprocess.run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/db.key",
                        "-out", d + "/db.csr", "-subj", "/CN=db.example"],
                       check=True, capture_output=True, timeout=60)
        with open(d + "/db.ext", "w") as f:
            f.write("subjectAltName=DNS:db.example\n")
        subprocess.run([OPENSSL, "x509", "-req", "-in", d + "/db.csr", "-CA", pki + "/ca.pem",
                        "-CAkey", pki + "/ca.key", "-set_serial", "99", "-days", "2",
                        "-extfile", d + "/db.ext", "-out", d + "/db.pem"],
                       check=True, capture_output=True, timeout=60)
        os.chmod(d + "/db.key", 0o600)
        port = free_port()
        self.addCleanup(subprocess.run, [SERVERS_SH, "stop", d + "/m"], capture_output=True,
                        timeout=120)
        p = subprocess.run([SERVERS_SH, "mariadb", d + "/m", str(port), d + "/db.pem",
                            d + "/db.key", pki + "/ca.pem", self.cluster.vars["DB_PASSWORD_FILE"]],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        uri = "mariadb://parley@127.0.0.1:%d/parley" % port
        pw = ["--db-password-file", self.cluster.vars["DB_PASSWORD_FILE"]]
        rc, out = self.parleyd_fails("--db", uri, "--db-ca", self.cluster.ca, *pw)
        self.assertEqual(rc, 1, out)
        self.assertIn("cannot connect to MariaDB", out)
        self.assertNotIn("Parley is ready", out)
        # Encrypted but not verified, as --db-tls require alone asks: it starts.
        data = tempfile.mkdtemp(prefix="parley-test-")
        self.addCleanup(shutil.rmtree, data, True)
        out = self.parleyd_starts(["--data", data, "--db", uri, "--db-tls", "require"] + pw)
        self.assertRegex(out, r"mariadb: connected over TLSv1\.[23] .*not verified")

    def parleyd_starts(self, args):
        """Starts parleyd, waits for it to be ready, stops it: its output."""
        proc = subprocess.Popen([PARLEYD, "--port", str(free_port()), "--pwhash-cost", "min"] +
                                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.addCleanup(proc.kill)
        out = ""
        deadline = time.time() + 60
        while "Parley is ready" not in out and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()
        self.assertIn("Parley is ready", out)
        return out

    def test_parleyd_refuses_a_database_without_tls(self):
        d = tempfile.mkdtemp(prefix="parley-plain-mariadb-")
        port = free_port()
        self.addCleanup(shutil.rmtree, d, True)
        self.addCleanup(subprocess.run, [SERVERS_SH, "stop", d], capture_output=True, timeout=120)
        p = subprocess.run([SERVERS_SH, "mariadb", d, str(port)], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        uri = "mariadb://parley:parley@127.0.0.1:%d/parley" % port
        for extra in (["--db-tls", "require"], ["--db-ca", self.cluster.ca]):
            rc, out = self.parleyd_fails("--db", uri, *extra)
            self.assertEqual(rc, 1, out)
            self.assertIn("cannot connect to MariaDB", out)
            self.assertIn("TLS required", out)
            self.assertNotIn("Parley is ready", out)
        # The same server, TLS not asked for: it starts (and says it has no TLS).
        data = tempfile.mkdtemp(prefix="parley-test-")
        self.addCleanup(shutil.rmtree, data, True)
        out = self.parleyd_starts(["--data", data, "--db", uri])
        self.assertIn("mariadb: connected without TLS", out)


if __name__ == "__main__":
    unittest.main()
