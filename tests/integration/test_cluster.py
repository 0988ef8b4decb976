"""Cluster mode against real ZooKeeper, Redis, MariaDB and nginx: gateways and
service nodes in separate processes, and users who keep chatting while any
one of them dies."""
import os
import random
import socket
import struct
import subprocess
import threading
import time
import unittest
from collections import defaultdict

from harness import Client, Cluster, ROOT

PARLEYCTL = os.environ.get("PARLEYCTL", os.path.join(os.path.dirname(os.environ.get(
    "PARLEYD", os.path.join(ROOT, "build/parleyd"))), "parleyctl"))


def is_msg(body=None):
    return lambda e: e.get("type") == "message" and (body is None or e.get("body") == body)


class ClusterTestCase(unittest.TestCase):
    zk_nodes = 1

    def setUp(self):
        self.cluster = Cluster(zk_nodes=self.zk_nodes)
        self.addCleanup(self.cluster.down)
        self.cluster.up()
        self.addCleanup(self._check_logs)

    def _check_logs(self):
        bad = self.cluster.logs_with_errors()
        if bad:
            raise AssertionError("a parleyd reported a sanitizer error:\n" + bad)

    def client(self, port=None, **kw):
        c = Client(port or self.cluster.port, **kw)
        self.addCleanup(c.kill)
        return c

    def user(self, name, port=None):
        c = self.client(port)
        uid = c.ok("register:%s:secret123" % name)["id"]
        c.ok("login:%s:secret123" % name)
        return c, uid

    def ctl(self, *args):
        p = subprocess.run([PARLEYCTL, "--zk", self.cluster.vars["ZK"], "--zk-auth-file",
                            self.cluster.vars["ZK_AUTH_FILE"]] + list(args),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def wait_for(self, pred, timeout=20, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            time.sleep(0.1)
        self.fail("timed out waiting for " + what)


class ChatAcrossGatewaysTest(ClusterTestCase):
    def test_direct_and_group_chat_across_gateways(self):
        alice, a = self.user("alice", self.cluster.gateway_port(1))
        bob, b = self.user("bob", self.cluster.gateway_port(2))
        carol, c = self.user("carol")  # through nginx
        alice.ok("chat:%d:hi bob, from gateway 1" % b)
        self.assertEqual(bob.wait_events(is_msg("hi bob, from gateway 1"))[0]["from"], a)
        bob.ok("chat:%d:hi alice, from gateway 2" % a)
        self.assertEqual(alice.wait_events(is_msg("hi alice, from gateway 2"))[0]["from"], b)

        g = alice.ok("creategroup:cluster-friends:across gateways")["id"]
        bob.ok("addgroup:%d" % g)
        carol.ok("addgroup:%d" % g)
        r = carol.ok("groupchat:%d:hello everyone" % g)
        for member in (alice, bob):
            m = member.wait_events(is_msg("hello everyone"))[0]
            self.assertEqual((m["group"], m["seq"], m["from"]), (g, r["seq"], c))

        alice.ok("addfriend:%d" % b)
        self.assertTrue(bob.ok("showfriendlist")["friends"][0]["online"] is True)

        # Offline delivery across gateways: dave gets what he missed at login.
        reg = self.client()
        d = reg.ok("register:dave:secret123")["id"]
        bob.ok("chat:%d:while you were away" % d)
        dave = self.client(self.cluster.gateway_port(1))
        dave.ok("login:dave:secret123")
        self.assertEqual(dave.wait_events(is_msg("while you were away"))[0]["from"], b)

    def test_parleyctl_lists_nodes_and_maps_keys(self):
        out = self.ctl("nodes")
        for svc in ("user", "social", "message", "gateway"):
            self.assertEqual(sum(1 for l in out.splitlines() if l.split()[0] == svc), 2, out)
        got = self.ctl("ring", "get", "direct:1:2").strip()
        self.assertRegex(got, r"^direct:1:2 -> message[12]-\d{10}$")
        self.assertEqual(self.ctl("ring", "get", "direct:2:1").split()[-1], got.split()[-1])
        listing = self.ctl("ring", "list", "--vnodes", "10").splitlines()
        self.assertEqual(len(listing), 1 + 2 * 10)
        moved = self.ctl("ring", "get", "direct:1:2", "--del", got.split()[-1]).split()[-1]
        self.assertNotEqual(moved, got.split()[-1])


def read(path):
    with open(path) as f:
        return f.read()


def redis_cmd(port, *args):
    """One command on a fresh connection to Redis; its reply's first line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sk:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else a.encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        sk.sendall(out)
        return sk.makefile("rb").readline().decode().strip()


class TrustTest(ClusterTestCase):
    """The cluster trusts only itself: outsiders get nothing from its
    ZooKeeper and Redis, and a push no node wrote is dropped and logged."""

    def test_outsiders_are_refused_and_forged_pushes_dropped(self):
        v = self.cluster.vars
        for f in ("ZK_AUTH_FILE", "REDIS_AUTH_FILE", "CLUSTER_KEY_FILE"):
            self.assertEqual(os.stat(v[f]).st_mode & 0o777, 0o600, f)
        # parleyctl without the credentials cannot even list the nodes.
        p = subprocess.run([PARLEYCTL, "--zk", v["ZK"], "nodes"], capture_output=True,
                           text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("not authenticated", p.stderr.lower() + p.stdout.lower())
        # Redis: nothing without the password, nor with a wrong one.
        port = int(v["REDIS"].split(":")[1])
        self.assertTrue(redis_cmd(port, "PING").startswith("-NOAUTH"))
        self.assertTrue(redis_cmd(port, "PUBLISH", "parley:gw:1", "x").startswith("-NOAUTH"))
        user = read(v["REDIS_AUTH_FILE"]).strip().split(":", 1)[0]
        self.assertTrue(redis_cmd(port, "AUTH", user, "wrong").startswith("-WRONGPASS"))
        # Someone who has the Redis password but not the key forges a push to
        # alice's gateway: she gets nothing, the gateway logs it.
        alice, a = self.user("alice", self.cluster.gateway_port(1))
        bob, b = self.user("bob", self.cluster.gateway_port(2))
        alice.ok("addfriend:%d" % b)
        frame = b"forged by an outsider"
        push = struct.pack("<IIQQ", 1, len(frame), 0, a) + frame
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sk:
            auth = read(v["REDIS_AUTH_FILE"]).strip().split(":", 1)
            for cmd in ([b"AUTH", auth[0].encode(), auth[1].encode()],
                        [b"PUBLISH", b"parley:gw:1", push]):
                sk.sendall(b"*%d\r\n" % len(cmd) +
                           b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in cmd))
            rf = sk.makefile("rb")
            self.assertEqual(rf.readline().strip(), b"+OK")
            self.assertEqual(rf.readline().strip(), b":1")  # the gateway heard it
        log = os.path.join(self.cluster.dir, "log", "gateway1.log")
        self.wait_for(lambda: "without a valid MAC" in read(log), 10, "the drop's log line")
        # Real messages still flow both ways, signed.
        bob.ok("chat:%d:signed and delivered" % a)
        alice.wait_events(is_msg("signed and delivered"))
        self.assertFalse(any("forged" in str(m) for m in alice.messages()))
        for name in ("gateway1", "message1", "user1"):
            text = read(os.path.join(self.cluster.dir, "log", name + ".log"))
            self.assertNotIn("no --zk-auth", text)
            self.assertNotIn("no --redis-auth", text)
            self.assertNotIn("no --cluster-key-file", text)


class ServiceNodeFailureTest(ClusterTestCase):
    SENDERS = 50
    PER_SENDER = 40

    def test_message_node_killed_while_clients_send(self):
        n = self.SENDERS
        admin = self.client()
        ids = [admin.ok("register:s%02d:secret123" % i)["id"] for i in range(n)]
        clients = []
        for i in range(n):
            c = self.client(wait_ms=100)
            c.ok("login:s%02d:secret123" % i)
            clients.append(c)
        rnd = random.Random(7)
        plans = []
        for i in range(n):
            targets = [rnd.choice([j for j in range(n) if j != i]) for _ in range(self.PER_SENDER)]
            plans.append(targets)
        results = defaultdict(list)

        def send_all(i):
            for k, t in enumerate(plans[i]):
                r = clients[i].cmd("chat:%d:m %d %d" % (ids[t], i, k), timeout=60)
                results[i].append((t, r))
                time.sleep(0.01)

        threads = [threading.Thread(target=send_all, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = self.ctl("nodes")
        victim = "message1"
        self.cluster.kill(victim)
        for t in threads:
            t.join(timeout=300)

        expected = defaultdict(set)
        failed = 0
        for i in range(n):
            for t, r in results[i]:
                if r.get("ok"):
                    expected[t].add(r["msgid"])
                else:
                    failed += 1
        self.assertEqual(failed, 0, "sends failed while a message node died")
        total = sum(len(v) for v in expected.values())
        self.assertEqual(total, n * self.PER_SENDER)
        for i, c in enumerate(clients):
            deadline = time.time() + 60
            while len({m["msgid"] for m in c.messages()}) < len(expected[i]) and \
                    time.time() < deadline:
                c.drain(0.2)
        for i, c in enumerate(clients):
            c.drain(0.05)
            got = [m["msgid"] for m in c.messages()]
            self.assertEqual(len(got), len(set(got)), "client %d saw a duplicate" % i)
            self.assertEqual(set(got), expected[i], "client %d lost messages" % i)

        # Its znode goes once its session expires; traffic is on the other node.
        addr_lines = [l for l in before.splitlines() if l.startswith("message")]
        self.assertEqual(len(addr_lines), 2)
        self.wait_for(lambda: sum(1 for l in self.ctl("nodes").splitlines()
                                  if l.startswith("message")) == 1,
                      timeout=20, what="the dead node's znode to go")
        r = clients[0].cmd("chat:%d:after the failover" % ids[1])
        self.assertTrue(r["ok"], r)

    def test_third_node_receives_calls(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        self.cluster.start("message3", "message")
        self.cluster.start("social3", "social")
        deadline = time.time() + 20
        # Conversations hash over the ring: enough of them reach the new node.
        k = 0
        while time.time() < deadline and "first request served" not in self.cluster.log("message3"):
            alice.ok("chat:%d:probe %d" % (b, k))
            alice.ok("showfriendlist")
            c = self.client()
            c.ok("register:probe%d:secret123" % k)
            c.ok("login:probe%d:secret123" % k)
            c.ok("chat:%d:hello %d" % (b, k))
            c.kill()
            k += 1
        self.assertIn("first request served", self.cluster.log("message3"))
        self.wait_for(lambda: "first request served" in self.cluster.log("social3") or
                      alice.ok("showfriendlist") and False, timeout=10,
                      what="the new social node to serve")


class GatewayFailureTest(ClusterTestCase):
    def test_gateway_killed_clients_reconnect_and_catch_up(self):
        alice, a = self.user("alice", self.cluster.gateway_port(2))
        victims = []
        for i in range(6):
            c, uid = self.user("v%d" % i)  # through nginx: spread over both gateways
            victims.append((c, uid))
        self.cluster.kill("gateway1")
        # While they are cut off (or just reconnecting) messages keep coming.
        sent = defaultdict(list)
        for c, uid in victims:
            for k in range(3):
                sent[uid].append(alice.ok("chat:%d:during outage %d" % (uid, k))["msgid"])
        for c, uid in victims:
            deadline = time.time() + 30
            while set(sent[uid]) - {m["msgid"] for m in c.messages()} and time.time() < deadline:
                c.drain(0.2)
            got = [m["msgid"] for m in c.messages()]
            self.assertEqual(sorted(set(got)), sorted(sent[uid]), "user %d lost messages" % uid)
            self.assertEqual(len(got), len(set(got)))
        # Everybody can still talk.
        for c, uid in victims:
            r = c.cmd("chat:%d:still here" % a)
            self.assertTrue(r["ok"], r)


class RedisRestartTest(ClusterTestCase):
    def test_delivery_resumes_after_redis_restart(self):
        alice, a = self.user("alice", self.cluster.gateway_port(1))
        bob, b = self.user("bob", self.cluster.gateway_port(2))
        alice.ok("chat:%d:before" % b)
        bob.wait_events(is_msg("before"))
        port = self.cluster.vars["REDIS"].split(":")[1]
        rdir = os.path.join(self.cluster.dir, "redis")
        self.cluster.servers("stop", rdir)
        during = [alice.cmd("chat:%d:during %d" % (b, k)) for k in range(3)]
        r = self.cluster.servers("redis", rdir, port)
        self.assertEqual(r.returncode, 0, r.stderr)
        ok_during = {x["msgid"] for x in during if x.get("ok")}
        self.assertTrue(ok_during, "sends fail while Redis is away: they should still be stored")
        deadline = time.time() + 20
        k = 0
        while time.time() < deadline:
            alice.ok("chat:%d:after %d" % (b, k))
            bob.drain(0.3)
            if any(m["body"] == "after %d" % k for m in bob.messages()):
                break
            k += 1
        self.assertTrue(any(m["body"].startswith("after") for m in bob.messages()),
                        "delivery did not resume")
        bob.drain(1.0)
        self.assertLessEqual(ok_during, {m["msgid"] for m in bob.messages()},
                             "messages sent during the outage were not delivered")


class ZooKeeperEnsembleTest(ClusterTestCase):
    zk_nodes = 3

    def test_one_zookeeper_node_down_changes_nothing(self):
        alice, a = self.user("alice", self.cluster.gateway_port(1))
        bob, b = self.user("bob", self.cluster.gateway_port(2))
        self.cluster.servers("stop", os.path.join(self.cluster.dir, "zk1"))
        time.sleep(3)  # longer than a session timeout's worth of ZooKeeper ticks
        for k in range(5):
            alice.ok("chat:%d:zk down %d" % (b, k))
        bob.wait_events(is_msg(), count=5)
        self.cluster.start("message3", "message")  # registering still works
        out = self.ctl("nodes")
        self.assertEqual(sum(1 for l in out.splitlines() if l.startswith("message")), 3, out)


class GroupOrderTest(ClusterTestCase):
    def test_concurrent_group_senders_one_order_no_gaps(self):
        members = []
        for i in range(6):
            port = self.cluster.gateway_port(1 + i % 2)
            members.append(self.user("m%d" % i, port))
        g = members[0][0].ok("creategroup:ordered:")["id"]
        for c, _ in members[1:]:
            c.ok("addgroup:%d" % g)
        senders = members[:4]
        per = 25
        seqs = defaultdict(list)

        def send(idx):
            c, _ = senders[idx]
            for k in range(per):
                seqs[idx].append(c.ok("groupchat:%d:s%d-%d" % (g, idx, k))["seq"])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(senders))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        all_seqs = sorted(s for v in seqs.values() for s in v)
        # Seqs 1..5 are the five members' join events.
        first = len(members)
        self.assertEqual(all_seqs, list(range(first, first + len(senders) * per)),
                         "gaps or repeats")
        # Every member sees one and the same order (minus its own messages).
        total = len(senders) * per
        orders = []
        for i, (c, uid) in enumerate(members):
            own = per if i < len(senders) else 0
            deadline = time.time() + 30
            while len(c.messages()) < total - own and time.time() < deadline:
                c.drain(0.2)
            got = [(m["seq"], m["body"]) for m in c.messages()]
            self.assertEqual(len(got), total - own)
            self.assertEqual([s for s, _ in got], sorted(s for s, _ in got),
                             "member %d saw messages out of order" % i)
            orders.append(dict(got))
        merged = {}
        for o in orders:
            for s, body in o.items():
                self.assertEqual(merged.setdefault(s, body), body, "two members disagree")


if __name__ == "__main__":
    unittest.main()


class StartErrorsTest(unittest.TestCase):
    """A node that cannot reach what it needs says which and exits non-zero."""

    def run_parleyd(self, *args):
        from harness import PARLEYD, free_port
        p = subprocess.run([PARLEYD, "--port", str(free_port()), "--data", "/tmp/parley-none"] +
                           list(args), capture_output=True, text=True, timeout=60)
        return p.returncode, p.stderr

    def test_unreachable_servers(self):
        from harness import free_port
        dead = "127.0.0.1:%d" % free_port()
        rc, err = self.run_parleyd("--role", "message", "--zk", dead, "--redis", dead)
        self.assertEqual(rc, 1)
        self.assertIn("cannot reach ZooKeeper at " + dead, err)

    def test_cluster_role_needs_zookeeper(self):
        rc, err = self.run_parleyd("--role", "gateway")
        self.assertEqual(rc, 1)
        self.assertIn("needs --zk", err)

    def test_unknown_role(self):
        rc, err = self.run_parleyd("--role", "kitchen")
        self.assertEqual(rc, 1)
        self.assertIn("unknown role 'kitchen'", err)


class StartErrorsWithZooKeeperTest(unittest.TestCase):
    def setUp(self):
        import shutil
        import tempfile
        from harness import free_port
        self.dir = tempfile.mkdtemp(prefix="parley-start-")
        # Cleanups run last first: the directory goes after the servers whose
        # pid files it holds have been stopped.
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.zk_port = free_port()
        servers = os.path.join(ROOT, "scripts", "servers.sh")
        self.addCleanup(lambda: subprocess.run([servers, "stop", self.dir + "/zk"]))
        r = subprocess.run([servers, "zookeeper", self.dir + "/zk", str(self.zk_port)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_unreachable_redis_and_mariadb(self):
        from harness import PARLEYD, free_port
        zk = "127.0.0.1:%d" % self.zk_port
        dead = "127.0.0.1:%d" % free_port()
        p = subprocess.run([PARLEYD, "--role", "message", "--zk", zk, "--redis", dead,
                            "--data", self.dir], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot reach Redis at " + dead, p.stderr)
        redis_port = free_port()
        servers = os.path.join(ROOT, "scripts", "servers.sh")
        self.addCleanup(lambda: subprocess.run([servers, "stop", self.dir + "/redis"]))
        subprocess.run([servers, "redis", self.dir + "/redis", str(redis_port)], check=True)
        p = subprocess.run([PARLEYD, "--role", "message", "--zk", zk, "--redis",
                            "127.0.0.1:%d" % redis_port, "--db",
                            "mariadb://parley:parley@%s/parley" % dead, "--data", self.dir],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot connect to MariaDB at " + dead, p.stderr)
