"""Metrics and health as an operator sees them: a local cluster whose every
parleyd has an admin port, scraped by a real Prometheus (Debian's), queried
through its HTTP API while users chat and nodes die; `promtool` checks each
node's exposition and the alert rules in deploy/."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from harness import Cluster, Peer, ROOT, S_LOGIN_OK, S_MESSAGE, S_SEND_OK, Server, free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
RULES = os.path.join(ROOT, "deploy", "prometheus-rules.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana-dashboard.json")
NODES = ["gateway1", "gateway2", "user1", "user2", "social1", "social2", "message1", "message2"]


def http_get(port, path, timeout=5):
    """(status, body text) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))


class Prometheus:
    """Debian's prometheus as a plain process: its own config and storage in
    a temporary directory, on a free loopback port, scraping every second."""

    def __init__(self, targets, rules):
        self.dir = tempfile.mkdtemp(prefix="parley-prometheus-")
        self.port = free_port()
        lines = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 1s",
                 "  evaluation_interval: 1s", "rule_files:", "  - %s" % rules,
                 "scrape_configs:", "  - job_name: parley", "    static_configs:"]
        for name, port in targets.items():
            lines += ["      - targets: ['127.0.0.1:%d']" % port,
                      "        labels: {node: %s}" % name]
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + self.config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        wait_until(self.ready, 30, "Prometheus to start")

    def ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("prometheus exited:\n" + self.logs())
        try:
            return http_get(self.port, "/-/ready")[0] == 200
        except OSError:
            return False

    def logs(self):
        with open(os.path.join(self.dir, "prometheus.log"), errors="replace") as f:
            return f.read()[-3000:]

    def query(self, q):
        """{node: value} of an instant query that has one series per node."""
        status, text = http_get(self.port, "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        r = json.loads(text)
        if status != 200 or r["status"] != "success":
            raise AssertionError("query %s failed: %s" % (q, text))
        return {s["metric"].get("node", ""): float(s["value"][1]) for s in r["data"]["result"]}

    def total(self, q):
        """The sum of every series of q (0 if there is none)."""
        return sum(self.query("sum(%s)" % q).values())

    def alerts(self):
        return json.loads(http_get(self.port, "/api/v1/alerts")[1])["data"]["alerts"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        if not os.environ.get("PARLEY_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipUnless(PROMETHEUS and PROMTOOL, "prometheus not installed (scripts/install-deps.sh)")
class DeployFilesTest(unittest.TestCase):
    def test_alert_rules_and_sample_config_are_valid(self):
        for args in (["check", "rules", RULES],
                     ["check", "config", os.path.join(ROOT, "deploy", "prometheus.yml")]):
            p = subprocess.run([PROMTOOL] + args, capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


@unittest.skipUnless(PROMTOOL, "promtool not installed (scripts/install-deps.sh)")
class EmbeddedTest(unittest.TestCase):
    """The single-process server: the same port, counters that move, and an
    admin port that a silent or hostile peer cannot hold up."""

    def setUp(self):
        self.admin = free_port()
        self.server = Server(extra=["--admin-port", str(self.admin)]).start()
        self.addCleanup(self.server.cleanup)

    def metric(self, series):
        _, text = http_get(self.admin, "/metrics")
        m = re.search(r"(?m)^%s (\S+)$" % re.escape(series), text)
        return float(m.group(1)) if m else None

    def test_metrics_and_health(self):
        self.assertEqual(http_get(self.admin, "/healthz"), (200, "ok\n"))
        self.assertEqual(http_get(self.admin, "/readyz"), (200, "ready\n"))
        a, b = Peer(self.server.port), Peer(self.server.port)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        for p, name in ((a, "erin"), (b, "frank")):
            p.register(name)
            self.assertIn(S_LOGIN_OK, p.login(name))
        self.assertIn(S_SEND_OK, a.send(b.user_id, "hi frank"))
        self.assertIn(S_MESSAGE, b.wait_push(lambda f: S_MESSAGE in f))
        self.assertEqual(self.metric('parley_logins_total{result="ok"}'), 2)
        self.assertEqual(self.metric("parley_registrations_total"), 2)
        self.assertEqual(self.metric('parley_sessions{transport="tcp"}'), 2)
        self.assertEqual(self.metric('parley_requests_total{type="send_direct",result="ok"}'), 1)
        self.assertEqual(self.metric("parley_messages_stored_total"), 1)
        self.assertEqual(self.metric('parley_deliveries_total{path="push"}'), 1)
        self.assertGreaterEqual(self.metric("parley_store_commit_duration_seconds_count"), 1)
        _, text = http_get(self.admin, "/metrics")
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        a.close()
        b.close()
        wait_until(lambda: self.metric('parley_connections{transport="tcp"}') == 0, 10,
                   "the connection gauge to fall back to 0")

    def test_silent_and_hostile_peers(self):
        # Peers that connect and say nothing hold no more than their slot,
        # and only for the deadline; the port answers others meanwhile.
        silent = [socket.create_connection(("127.0.0.1", self.admin)) for _ in range(8)]
        self.addCleanup(lambda: [s.close() for s in silent])
        t0 = time.monotonic()
        self.assertEqual(http_get(self.admin, "/healthz")[0], 200)
        self.assertLess(time.monotonic() - t0, 2)
        for s in silent:
            s.settimeout(15)
            self.assertEqual(s.recv(100), b"")  # closed by the server
        self.assertLess(time.monotonic() - t0, 12)
        for raw, status in ((b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
                            (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", b"414"),
                            (b"GET /metrics HTTP/9.9\r\n\r\n", b"505"),
                            (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", b"400")):
            with socket.create_connection(("127.0.0.1", self.admin), timeout=10) as s:
                s.sendall(raw)
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 " + status), raw)
        self.assertEqual(http_get(self.admin, "/healthz")[0], 200)


@unittest.skipUnless(PROMETHEUS and PROMTOOL, "prometheus not installed (scripts/install-deps.sh)")
class MetricsTest(unittest.TestCase):
    """One cluster and one Prometheus for the whole class (a cluster takes
    a while to start); the tests run in name order, and only the last two
    take nodes or Redis away."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(admin=True)
        cls.addClassCleanup(cls.cluster.down)
        cls.cluster.up()
        cls.admin = {n: cls.cluster.admin_port(n) for n in NODES}
        cls.prom = Prometheus(cls.admin, RULES)
        cls.addClassCleanup(cls.prom.stop)

    def tearDown(self):
        bad = self.cluster.logs_with_errors()
        if bad:
            raise AssertionError("a parleyd reported a sanitizer error:\n" + bad)

    def peer(self, port, name):
        p = Peer(port)
        self.addCleanup(p.close)
        p.register(name)
        self.assertIn(S_LOGIN_OK, p.login(name))
        return p

    def test_every_node_exposes_valid_metrics_and_health(self):
        names = set()
        for node, port in self.admin.items():
            self.assertEqual(http_get(port, "/healthz"), (200, "ok\n"), node)
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20, node + " to be ready")
            status, text = http_get(port, "/metrics")
            self.assertEqual(status, 200, node)
            p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, "%s: %s%s" % (node, p.stdout, p.stderr))
            self.assertIn('parley_build_info{version="', text)
            names |= set(re.findall(r"^# TYPE (\w+) ", text, re.M))
            self.assertEqual(http_get(port, "/nope")[0], 404)
        # What the dashboard and the alert rules ask for exists.
        with open(DASHBOARD) as f:
            wanted = set(re.findall(r"\b(parley_\w+)", f.read()))
        with open(RULES) as f:
            wanted |= set(re.findall(r"\b(parley_\w+)", f.read()))
        base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in wanted}
        self.assertEqual(base - names, set(), "named in deploy/ but not exported")

    def test_prometheus_sees_traffic_and_a_dead_node(self):
        p = self.prom
        wait_until(lambda: len([v for v in p.query('up{job="parley"}').values() if v == 1])
                   == len(NODES), 30, "Prometheus to scrape every node")
        before = {q: p.total(q) for q in (
            "parley_messages_stored_total", 'parley_logins_total{result="ok"}',
            'parley_logins_total{result="failed"}', "parley_registrations_total",
            'parley_rpc_client_calls_total{service="message",method="SendDirect",status="ok"}',
            'parley_rpc_server_calls_total{service="message",method="SendDirect",status="ok"}',
            'parley_requests_total{type="send_direct",result="ok"}',
            "parley_deliveries_total", "parley_bus_publishes_total",
            "parley_store_append_batch_size_count")}

        # Two users on different gateways chat; one password is wrong once.
        alice = self.peer(self.cluster.gateway_port(1), "alice")
        bob = self.peer(self.cluster.gateway_port(2), "bob")
        wrong = Peer(self.cluster.gateway_port(1))
        self.addCleanup(wrong.close)
        self.assertNotIn(S_LOGIN_OK, wrong.login("bob", "wrong"))
        n = 10
        for i in range(n):
            self.assertIn(S_SEND_OK, alice.send(bob.user_id, "hello %d" % i))
        for i in range(n):
            bob.wait_push(lambda f: S_MESSAGE in f)

        seen = {}

        def moved():
            now = {q: p.total(q) for q in before}
            d = {q: now[q] - before[q] for q in before}
            seen.update(d)
            ok = (d["parley_messages_stored_total"] >= n
                  and d['parley_logins_total{result="ok"}'] >= 2
                  and d['parley_logins_total{result="failed"}'] >= 1
                  and d["parley_registrations_total"] >= 2
                  and all(d[q] >= n for q in before if "SendDirect" in q or "send_direct" in q)
                  and d["parley_deliveries_total"] >= n
                  and d["parley_bus_publishes_total"] >= n
                  and d["parley_store_append_batch_size_count"] >= 1)
            return d if ok else None
        try:
            wait_until(moved, 20, "counters to move with the chat")
        except AssertionError as e:
            raise AssertionError("%s; moved by: %r" % (e, seen))
        self.assertGreaterEqual(p.total('parley_sessions{node=~"gateway."}'), 2)
        # A latency histogram Prometheus can take a quantile of.
        q99 = wait_until(lambda: p.total('histogram_quantile(0.99, sum by (le) '
                                         '(parley_rpc_client_duration_seconds_bucket))'), 10,
                         "a p99 of the RPC latency")
        self.assertTrue(0 < q99 <= 5, q99)

        # Kill a node: its `up` falls to 0 and the node-down rule notices.
        self.cluster.kill("message2")
        wait_until(lambda: p.query('up{node="message2"}').get("message2") == 0, 20,
                   "message2's up to fall to 0")
        self.assertEqual(p.query('up{node="message1"}').get("message1"), 1)
        wait_until(lambda: [a for a in p.alerts() if a["labels"]["alertname"] == "ParleyNodeDown"
                            and a["labels"].get("node") == "message2"], 20,
                   "the ParleyNodeDown alert to be pending")
        # Its ZooKeeper session ends and the gateways see one message node.
        wait_until(lambda: p.query('parley_registry_nodes{node="gateway1",service="message"}')
                   .get("gateway1") == 1, 30, "gateway1 to see one message node")

    def test_readyz_follows_redis(self):
        gw = self.admin["gateway1"]
        carol = self.peer(self.cluster.gateway_port(1), "carol")
        dave = self.peer(self.cluster.gateway_port(1), "dave")
        wait_until(lambda: http_get(gw, "/readyz")[0] == 200, 20, "gateway1 to be ready")
        msg_nodes = [n for n in NODES if n.startswith("message")]

        def not_ready():
            """Message nodes whose /readyz says 503 (a dead one says nothing)."""
            out = {}
            for n in msg_nodes:
                try:
                    status, text = http_get(self.admin[n], "/readyz")
                except OSError:
                    continue
                if status == 503:
                    out[n] = text
            return out

        self.assertEqual(not_ready(), {})
        redis_dir = os.path.join(self.cluster.dir, "redis")
        redis_port = self.cluster.vars["REDIS"].rsplit(":", 1)[1]
        r = self.cluster.servers("stop", redis_dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            # A gateway holds links to Redis: it notices at once.
            status, text = wait_until(
                lambda: (lambda r: r if r[0] == 503 else None)(http_get(gw, "/readyz")), 20,
                "gateway1's /readyz to say 503 without Redis")
            self.assertIn("bus:", text)
            self.assertEqual(http_get(gw, "/healthz")[0], 200)
            # A service node reaches Redis when it has something to publish:
            # a message is still stored, and its node is no longer ready.
            self.assertIn(S_SEND_OK, carol.send(dave.user_id, "while Redis is down"))
            down = wait_until(not_ready, 20, "a message node to say 503 without Redis")
            self.assertTrue(all("bus:" in t for t in down.values()), down)
        finally:
            r = self.cluster.servers("redis", redis_dir, redis_port)
            self.assertEqual(r.returncode, 0, r.stderr)
        wait_until(lambda: http_get(gw, "/readyz")[0] == 200, 30,
                   "gateway1's /readyz to be 200 again once Redis is back")

        def recovered():
            carol.send(dave.user_id, "Redis is back")
            return not_ready() == {}
        wait_until(recovered, 30, "the message nodes to be ready again")
        # Each lost link was counted.
        _, text = http_get(gw, "/metrics")
        self.assertRegex(text, r"(?m)^parley_bus_reconnects_total [1-9]")


if __name__ == "__main__":
    unittest.main()
