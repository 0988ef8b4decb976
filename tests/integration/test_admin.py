"""parleyctl as the admin tool (docs/operations.md "Admin"): users find and
show, sessions, kick, ban and unban, delete-user and reset-password, on an
embedded parleyd through its admin socket and on a cluster through a service
node's RPC port with the admin certificate."""
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
import unittest
from collections import defaultdict

from harness import (Client, F_GROUP_JOIN, S_BYE, S_GROUP_CREATE_OK, S_HISTORY_OK, S_LOGIN_OK,
                     S_SEND_OK, ROOT, Cluster, Peer, Server, body, describe, error, expect_ok,
                     message_of, one, pb, pb_decode)

PARLEYCTL = os.environ.get("PARLEYCTL", os.path.join(os.path.dirname(os.environ.get(
    "PARLEYD", os.path.join(ROOT, "build/parleyd"))), "parleyctl"))

FORBIDDEN, UNAUTHENTICATED = 3, 2


def bye_reason(f):
    b = body(f, S_BYE)
    return one(b, 1, b"").decode() if b is not None else None


class AdminEmbedded(unittest.TestCase):
    """One parleyd (role all); parleyctl --data DIR talks to DIR/admin.sock."""

    def setUp(self):
        self.server = Server()
        self.addCleanup(self.server.cleanup)
        self.server.start()

    def ctl(self, *args, ok=True, stdin=None):
        p = subprocess.run([PARLEYCTL, "--data", self.server.data] + list(args),
                           capture_output=True, text=True, timeout=60, input=stdin)
        if ok:
            self.assertEqual(p.returncode, 0, "parleyctl %s: %s" % (args, p.stderr))
        return p

    def ctl_json(self, *args, ok=True, stdin=None):
        p = self.ctl("--json", *args, ok=ok, stdin=stdin)
        return json.loads(p.stdout)

    def peer(self, name=None, password="secret123", register=False):
        p = Peer(self.server.port)
        self.addCleanup(p.close)
        if register:
            f = p.register(name, password)
            self.assertIsNone(error(f), describe(f))
        if name:
            f = p.login(name, password)
            self.assertIsNotNone(body(f, S_LOGIN_OK), describe(f))
        return p

    def assert_bye(self, p, reason):
        self.assertTrue(p.closed_within(15), "the session was not ended")
        reasons = [bye_reason(f) for f in p.pushes if bye_reason(f) is not None]
        self.assertEqual(reasons, [reason])

    def test_admin_socket_is_the_owners_only(self):
        path = os.path.join(self.server.data, "admin.sock")
        mode = os.stat(path).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        # Unknown users and commands are clear errors, in text and in JSON.
        p = self.ctl("users", "show", "nobody", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no user 'nobody'", p.stderr)
        j = self.ctl_json("ban", "nobody", ok=False)
        self.assertEqual((j["ok"], j["code"]), (False, "NOT_FOUND"))
        self.assertEqual(self.ctl("frobnicate", "x", ok=False).returncode, 2)
        # An embedded parleyd is its own only gateway: nowhere to drain to.
        j = self.ctl_json("drain", "gateway1", ok=False)
        self.assertEqual((j["ok"], j["code"]), (False, "UNSUPPORTED"))
        self.assertIn("drain needs a cluster", j["error"])

    def test_ban_ends_sessions_and_refuses_login_until_unban(self):
        a1 = self.peer("alice", register=True)
        a2 = self.peer("alice")
        token = a1.token
        bob = self.peer("bob", register=True)
        j = self.ctl_json("ban", "alice")
        self.assertTrue(j["ok"])
        self.assertTrue(j["user"]["banned"])
        self.assert_bye(a1, "account suspended")
        self.assert_bye(a2, "account suspended")
        # Nobody else is touched.
        self.assertFalse(bob.closed_within(0.5))
        # The right password is not enough, and the old token is gone.
        p = self.peer()
        f = p.login("alice")
        self.assertEqual((error(f).code, error(f).text), (FORBIDDEN, "account suspended"))
        self.assertIsNotNone(error(p.resume(token)))
        self.assertEqual(self.ctl_json("users", "show", "alice")["user"]["banned"], True)
        out = self.ctl("unban", "alice").stdout
        self.assertIn("unbanned alice", out)
        self.assertIsNotNone(body(self.peer().login("alice"), S_LOGIN_OK))
        self.assertFalse(self.ctl_json("users", "show", "alice")["user"]["banned"])

    def test_kick_ends_every_session_now(self):
        a1 = self.peer("alice", register=True)
        a2 = self.peer("alice")
        uid = a1.user_id
        self.assertEqual(self.ctl_json("users", "show", "alice")["user"]["online"], 2)
        self.assertIn("ended every session of %d" % uid, self.ctl("kick", str(uid)).stdout)
        for p in (a1, a2):
            self.assert_bye(p, "your sessions were ended by an administrator")
        self.assertIsNotNone(error(self.peer().resume(a1.token)))
        show = self.ctl_json("users", "show", "alice")["user"]
        self.assertEqual(show["sessions"], 0)
        # A kick is not a ban: the user logs in again.
        self.assertIsNotNone(body(self.peer().login("alice"), S_LOGIN_OK))

    def test_users_find_show_and_sessions(self):
        names = ["ann%02d" % i for i in range(5)] + ["bea"]
        for n in names:
            self.peer(n, register=True)
        ann0 = self.peer("ann00")
        friend = self.peer("ann01")
        self.assertIsNone(error(ann0.friend_add(friend.user_id)))
        g = expect_ok(ann0.group_create("admins-group"), S_GROUP_CREATE_OK)
        self.assertTrue(one(g, 1))

        page1 = self.ctl_json("users", "find", "ann", "--limit", "3")
        self.assertEqual([u["name"] for u in page1["users"]], ["ann00", "ann01", "ann02"])
        self.assertTrue(page1["more"])
        page2 = self.ctl_json("users", "find", "ann", "--limit", "3", "--after",
                              page1["next_after"])
        self.assertEqual([u["name"] for u in page2["users"]], ["ann03", "ann04"])
        self.assertFalse(page2["more"])
        text = self.ctl("users", "find", "be").stdout
        self.assertIn("bea", text)
        self.assertNotIn("ann", text)

        show = self.ctl_json("users", "show", "ann00")["user"]
        self.assertEqual((show["name"], show["friends"], show["groups"], show["sessions"]),
                         ("ann00", 1, 1, 2))
        self.assertEqual(show["online"], 2)
        self.assertFalse(show["banned"])
        self.assertIn("friends:  1", self.ctl("users", "show", str(show["id"])).stdout)

        s = self.ctl_json("sessions", "ann00")
        self.assertEqual(len(s["sessions"]), 2)
        for sess in s["sessions"]:
            self.assertGreater(sess["created_ms"], 0)
            self.assertGreaterEqual(sess["last_used_ms"], sess["created_ms"])
        # Never a token or its hash.
        raw = self.ctl("sessions", "ann00").stdout + json.dumps(s)
        self.assertNotIn(ann0.token.decode() if isinstance(ann0.token, bytes) else ann0.token,
                         raw)
        self.assertIsNone(re.search(r"[0-9a-fA-F]{32}|[A-Za-z0-9_-]{40}", raw))

    def test_reset_password(self):
        a = self.peer("alice", register=True)
        j = self.ctl_json("reset-password", "alice")
        new = j["password"]
        self.assertGreaterEqual(len(new), 12)
        self.assert_bye(a, "your password was reset by an administrator: log in again")
        f = self.peer().login("alice")
        self.assertEqual(error(f).code, UNAUTHENTICATED)
        self.assertIsNotNone(body(self.peer().login("alice", new), S_LOGIN_OK))
        # Or one the operator chooses, from standard input (never an argument).
        out = self.ctl("reset-password", "alice", "--password-stdin", stdin="chosen-pw-1\n").stdout
        self.assertNotIn("new password", out)
        self.assertIsNotNone(body(self.peer().login("alice", "chosen-pw-1"), S_LOGIN_OK))
        p = self.ctl("reset-password", "alice", "--password-stdin", stdin="x\n", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("password", p.stderr)

    def test_delete_user_leaves_no_personal_data(self):
        name, secret = "zelda-the-deleted", "zelda-secret-body-7731"
        z = self.peer(name, register=True)
        bob = self.peer("bob", register=True)
        carl = self.peer("carl", register=True)
        self.assertIsNone(error(z.friend_add(bob.user_id)))
        gid = one(expect_ok(carl.group_create("carls-group"), S_GROUP_CREATE_OK), 1)
        self.assertIsNone(error(z.call(F_GROUP_JOIN, pb((1, gid)))))
        expect_ok(z.send(bob.user_id, secret + "-direct"), S_SEND_OK)
        expect_ok(z.send_group(gid, secret + "-group"), S_SEND_OK)
        expect_ok(bob.send(z.user_id, "bob to zelda"), S_SEND_OK)
        zid = z.user_id

        j = self.ctl_json("delete-user", name)
        self.assertEqual(j["user"], dict(j["user"], id=zid, name="deleted:%d" % zid,
                                         deleted=True, banned=True))
        self.assert_bye(z, "account deleted")
        f = self.peer().login(name)
        self.assertEqual(error(f).code, UNAUTHENTICATED)
        f = self.peer().login(zid)
        self.assertEqual(error(f).code, UNAUTHENTICATED)
        # What others see: the bodies erased as a recall erases them.
        hist = bob.history_messages(peer=zid)
        # (Her friend request's event is erased with the rest: it shows as a
        # recalled message too.)
        mine = [m for m in bob.history_messages(peer=zid, events=True) if m["from"] == zid]
        self.assertEqual(len(mine), 2)
        self.assertEqual([m["body"] for m in mine], [b"", b""])
        self.assertIn(b"bob to zelda", [m["body"] for m in hist])
        self.assertEqual(self.ctl_json("users", "show", str(zid))["user"]["friends"], 0)
        self.assertEqual(self.ctl_json("users", "show", "bob")["user"]["friends"], 0)
        self.assertEqual(self.ctl_json("users", "find", "zelda")["users"], [])
        # Deleting again is harmless; unban and reset refuse a deleted user.
        self.ctl("delete-user", str(zid))
        self.assertEqual(self.ctl("unban", str(zid), ok=False).returncode, 1)

        # The database, after a clean stop (WAL checkpointed): none of it.
        self.assertEqual(self.server.stop(), 0)
        db = os.path.join(self.server.data, "parley.db")
        c = sqlite3.connect(db)
        try:
            row = c.execute("SELECT name, pwhash, banned FROM users WHERE id = ?",
                            (zid,)).fetchone()
            self.assertEqual(row, ("deleted:%d" % zid, "", 1))
            for sql in ("SELECT count(*) FROM sessions WHERE user_id = ?1",
                        "SELECT count(*) FROM friends WHERE user_id = ?1 OR friend_id = ?1",
                        "SELECT count(*) FROM members WHERE user_id = ?1 AND role > 0",
                        "SELECT count(*) FROM messages WHERE sender = ?1 AND"
                        " (length(body) > 0 OR recalled = 0)"):
                self.assertEqual(c.execute(sql, (zid,)).fetchone()[0], 0, sql)
        finally:
            c.close()
        for f in os.listdir(self.server.data):
            if f.startswith("parley.db"):
                with open(os.path.join(self.server.data, f), "rb") as fh:
                    data = fh.read()
                self.assertNotIn(secret.encode(), data, f)
                self.assertNotIn(name.encode(), data, f)


class AdminCluster(unittest.TestCase):
    """A cluster by scripts/cluster.sh; parleyctl calls a service node found
    in ZooKeeper, with mutual TLS and the admin certificate it made."""

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.down)
        self.cluster.up()
        self.addCleanup(self._check_logs)
        self.pki = os.path.join(self.cluster.dir, "pki")

    def _check_logs(self):
        bad = self.cluster.logs_with_errors()
        if bad:
            raise AssertionError("a parleyd reported a sanitizer error:\n" + bad)

    def ctl(self, *args, ok=True, cert="admin"):
        v = self.cluster.vars
        p = subprocess.run([PARLEYCTL, "--zk", v["ZK"], "--zk-auth-file", v["ZK_AUTH_FILE"],
                            "--cluster-ca", os.path.join(self.pki, "ca.pem"),
                            "--admin-cert", os.path.join(self.pki, cert + ".pem"),
                            "--admin-key", os.path.join(self.pki, cert + ".key")] + list(args),
                           capture_output=True, text=True, timeout=60)
        if ok:
            self.assertEqual(p.returncode, 0, "parleyctl %s: %s" % (args, p.stderr))
        return p

    def ctl_json(self, *args, ok=True):
        return json.loads(self.ctl("--json", *args, ok=ok).stdout)

    def peer(self, port, name=None, register=False):
        p = Peer(port)
        self.addCleanup(p.close)
        if register:
            self.assertIsNone(error(p.register(name)))
        if name:
            self.assertIsNotNone(body(p.login(name), S_LOGIN_OK))
        return p

    def test_admin_commands_across_gateways(self):
        g1, g2 = self.cluster.gateway_port(1), self.cluster.gateway_port(2)
        a1 = self.peer(g1, "alice", register=True)
        a2 = self.peer(g2, "alice")
        bob = self.peer(self.cluster.port, "bob", register=True)
        show = self.ctl_json("users", "show", "alice")["user"]
        self.assertEqual((show["sessions"], show["online"]), (2, 2))
        self.assertEqual(len(self.ctl_json("sessions", "alice")["sessions"]), 2)
        self.assertEqual([u["name"] for u in self.ctl_json("users", "find", "")["users"]],
                         ["alice", "bob"])

        # A ban ends the sessions on both gateways and refuses the login.
        self.ctl("ban", "alice")
        for p in (a1, a2):
            self.assertTrue(p.closed_within(15))
            self.assertEqual([bye_reason(f) for f in p.pushes if S_BYE in f],
                             ["account suspended"])
        self.assertFalse(bob.closed_within(0.5))
        f = self.peer(self.cluster.port).login("alice")
        self.assertEqual((error(f).code, error(f).text), (FORBIDDEN, "account suspended"))
        self.ctl("unban", "alice")
        a3 = self.peer(self.cluster.port, "alice")

        self.ctl("kick", "alice")
        self.assertTrue(a3.closed_within(15))
        new = self.ctl_json("reset-password", "alice")["password"]
        self.assertIsNotNone(body(self.peer(g1).login("alice", new), S_LOGIN_OK))

        secret = "cluster-secret-body-5521"
        expect_ok(bob.send(a1.user_id, secret), S_SEND_OK)
        z = self.peer(g2, "zed", register=True)
        expect_ok(z.send(bob.user_id, secret + "-zed"), S_SEND_OK)
        j = self.ctl_json("delete-user", "zed")
        self.assertTrue(j["user"]["deleted"])
        self.assertTrue(z.closed_within(15))
        self.assertEqual(error(self.peer(g1).login("zed")).code, UNAUTHENTICATED)
        hist = bob.history_messages(peer=z.user_id)
        self.assertEqual([m["body"] for m in hist if m["from"] == z.user_id], [b""])
        # MariaDB's rows, as Parley's database user sees them.
        zid = z.user_id
        rows = self.sql("SELECT name, pwhash, banned FROM users WHERE id = %d" % zid)
        self.assertEqual(rows, "deleted:%d\t\t1" % zid)
        for sql in ("SELECT count(*) FROM sessions WHERE user_id = %d",
                    "SELECT count(*) FROM friends WHERE user_id = %d OR friend_id = %d",
                    "SELECT count(*) FROM members WHERE user_id = %d AND role > 0",
                    "SELECT count(*) FROM messages WHERE sender = %d AND"
                    " (length(body) > 0 OR recalled = 0)",
                    "SELECT count(*) FROM users WHERE name = 'zed'"):
            self.assertEqual(self.sql(sql.replace("%d", str(zid))), "0", sql)
        self.assertEqual(self.sql("SELECT count(*) FROM messages WHERE body LIKE '%%%s%%'"
                                  % secret), "1")  # bob's, to alice: not zed's data

    def sql(self, sql):
        if not shutil.which("mariadb"):
            self.skipTest("no mariadb client")
        v = self.cluster.vars
        port = v["DB"].rsplit(":", 1)[1].split("/")[0]
        with open(v["DB_PASSWORD_FILE"]) as f:
            pw = f.readline().strip()
        p = subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", port, "-u",
                            "parley", "-p" + pw, "--ssl", "--ssl-ca=" + v["DB_CA"], "-N", "-B",
                            "parley", "-e", sql], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def client(self, port):
        c = Client(port)
        self.addCleanup(c.kill)
        return c

    def test_drain_moves_clients_with_nothing_lost(self):
        alice = self.client(self.cluster.gateway_port(2))
        a = alice.ok("register:alice:secret123")["id"]
        alice.ok("login:alice:secret123")
        victims = []
        for i in range(6):  # through nginx: spread over both gateways
            c = self.client(self.cluster.port)
            uid = c.ok("register:v%d:secret123" % i)["id"]
            c.ok("login:v%d:secret123" % i)
            victims.append((c, uid))
        sent = defaultdict(list)  # receiver -> msgids send_ok'd to it
        for c, uid in victims:
            sent[a].append(c.ok("chat:%d:before %d" % (a, uid))["msgid"])
        stop = threading.Event()

        def alice_sends():
            k = 0
            while not stop.is_set() and k < 60:
                uid = victims[k % len(victims)][1]
                r = alice.cmd("chat:%d:during %d" % (uid, k))
                if r.get("ok"):
                    sent[uid].append(r["msgid"])
                k += 1
                time.sleep(0.05)

        t = threading.Thread(target=alice_sends)
        t.start()
        try:
            time.sleep(0.5)
            j = self.ctl_json("drain", "gateway1")
            self.assertTrue(j["left_registry"], j)
            # The victims keep sending across their reconnection.
            for c, uid in victims:
                for k in range(3):
                    r = c.cmd("chat:%d:after %d %d" % (a, uid, k), timeout=60)
                    self.assertTrue(r.get("ok"), r)
                    sent[a].append(r["msgid"])
        finally:
            stop.set()
            t.join(120)
        # gateway1 said why, left, and exited cleanly once its clients were gone.
        byes = [e.get("reason") for c, _ in victims for e in c.events if e.get("type") == "bye"]
        self.assertIn("this gateway is draining: reconnect to another gateway", byes)
        self.assertNotIn("gateway1", [n["name"] for n in self.ctl_json("nodes")["nodes"]])
        deadline = time.time() + 30
        while "stopped cleanly" not in self.cluster.log("gateway1") and time.time() < deadline:
            time.sleep(0.2)
        self.assertIn("stopped cleanly", self.cluster.log("gateway1"))
        # Every send_ok'd message delivered once, none twice.
        for c, uid in victims + [(alice, a)]:
            deadline = time.time() + 30
            while set(sent[uid]) - {m["msgid"] for m in c.messages()} and time.time() < deadline:
                c.drain(0.2)
            got = [m["msgid"] for m in c.messages()]
            self.assertEqual(sorted(set(got)), sorted(sent[uid]), "user %d lost messages" % uid)
            self.assertEqual(len(got), len(set(got)), "user %d got a message twice" % uid)
        # A name nobody registered is an error, not a silent no-op.
        p = self.ctl("drain", "gateway9", ok=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no gateway named gateway9", p.stderr)

    def test_nodes_have_stable_names_and_only_admins_call_admin_methods(self):
        # cluster.sh names every process (--node-name): parleyctl shows the names.
        nodes = self.ctl_json("nodes")["nodes"]
        names = sorted((n["service"], n["name"]) for n in nodes)
        want = sorted([(s, "%s%d" % (s, i)) for s in ("user", "social", "message")
                       for i in (1, 2)] + [("gateway", "gateway1"), ("gateway", "gateway2")])
        self.assertEqual(names, want)
        for n in nodes:
            self.assertRegex(n["znode"], r"^%s-\d{10}$" % n["name"])
            self.assertRegex(n["addr"], r"^127\.0\.0\.1:\d+$")
        text = self.ctl("nodes").stdout
        self.assertIn("gateway1", text)
        self.assertIn(str(self.cluster.gateway_port(1)), text)
        # A gateway's certificate is refused admin methods.
        p = self.ctl("users", "find", "", ok=False, cert="gateway1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("admin methods need an admin certificate", p.stderr)
        # And a service node's is refused everything (neither gateway nor admin).
        p = self.ctl("users", "find", "", ok=False, cert="user1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("only a gateway or an admin", p.stderr)
        self.assertEqual(self.ctl_json("users", "find", "")["users"], [])


if __name__ == "__main__":
    unittest.main()
