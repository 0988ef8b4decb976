"""Every user-facing feature, through real `parley --json` clients against a
real parleyd."""
import time
import unittest

from harness import ParleyTest, Server, Client


def is_msg(body=None):
    return lambda e: e.get("type") == "message" and (body is None or e.get("body") == body)


class AccountTest(ParleyTest):
    def test_register_login_logout(self):
        c = self.client()
        r = c.ok("register:alice:secret123")
        self.assertIsInstance(r["id"], int)
        self.assertFalse(c.cmd("register:alice:other123")["ok"], "names are unique")
        bad = c.cmd("login:alice:wrongpass")
        self.assertFalse(bad["ok"])
        self.assertEqual(bad["code"], "UNAUTHENTICATED")
        r = c.ok("login:%d:secret123" % r["id"])  # by id
        self.assertEqual(r["name"], "alice")
        self.assertEqual(r["friends"], [])
        self.assertEqual(r["groups"], [])
        c.ok("logout")
        after = c.cmd("chat:1:hello")
        self.assertFalse(after["ok"])
        self.assertEqual(after["code"], "UNAUTHENTICATED")
        c.ok("login:alice:secret123")  # by name, again
        c.ok("loginout")

    def test_limits_on_names_passwords_and_messages(self):
        c = self.client()
        self.assertFalse(c.cmd("register:%s:secret123" % ("n" * 33))["ok"])
        self.assertTrue(c.cmd("register:%s:secret123" % ("n" * 32))["ok"])
        self.assertFalse(c.cmd("register:shorty:12345")["ok"])
        c.ok("register:bob:secret123")
        c.ok("login:bob:secret123")
        long_msg = c.cmd("chat:1:" + "x" * 4001)
        self.assertFalse(long_msg["ok"])
        self.assertEqual(long_msg["code"], "BAD_REQUEST")
        self.assertTrue(c.cmd("chat:1:" + "x" * 4000)["ok"])
        missing = c.cmd("chat:999:hello")
        self.assertEqual(missing["code"], "NOT_FOUND")

    def test_password_is_stored_as_argon2id(self):
        import sqlite3
        c = self.client()
        c.ok("register:carol:my-secret-pw")
        db = sqlite3.connect(self.server.data + "/parley.db")
        self.addCleanup(db.close)
        (h,) = db.execute("SELECT pwhash FROM users WHERE name = 'carol'").fetchone()
        self.assertTrue(h.startswith("$argon2id$"), h)
        self.assertNotIn("my-secret-pw", h)


class DirectChatTest(ParleyTest):
    def test_online_delivery_with_every_field(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        r = alice.ok("chat:%d:hello: bob, with: colons" % b)
        self.assertEqual(r["seq"], 1)
        m = bob.wait_events(is_msg())[0]
        self.assertEqual(m["msgid"], r["msgid"])
        self.assertEqual(m["seq"], 1)
        self.assertEqual(m["from"], a)
        self.assertEqual(m["to"], b)
        self.assertEqual(m["body"], "hello: bob, with: colons")
        self.assertLess(abs(m["ts"] - time.time() * 1000), 60000)
        self.assertNotIn("group", m)
        bob.ok("chat:%d:hi alice" % a)
        self.assertEqual(alice.wait_events(is_msg("hi alice"))[0]["seq"], 2)
        self.assertEqual(alice.messages()[0]["from"], b)

    def test_offline_messages_arrive_at_login_in_order(self):
        alice, a = self.user("alice")
        reg = self.client()
        b = reg.ok("register:bob:secret123")["id"]
        for i in range(5):
            alice.ok("chat:%d:offline %d" % (b, i))
        bob = self.client()
        bob.ok("login:bob:secret123")
        got = bob.wait_events(is_msg(), count=5)
        self.assertEqual([m["body"] for m in got], ["offline %d" % i for i in range(5)])
        self.assertEqual([m["seq"] for m in got], [1, 2, 3, 4, 5])
        bob.drain(0.5)
        bob.ok("logout")
        # Acknowledged: a later login does not deliver them again.
        again = self.client()
        again.ok("login:bob:secret123")
        again.drain(1.0)
        self.assertEqual(again.messages(), [])

    def test_two_sessions_of_one_user_both_receive(self):
        alice, a = self.user("alice")
        bob1, b = self.user("bob")
        bob2 = self.client()
        bob2.ok("login:bob:secret123")
        alice.ok("chat:%d:to both" % b)
        self.assertEqual(bob1.wait_events(is_msg("to both"))[0]["from"], a)
        self.assertEqual(bob2.wait_events(is_msg("to both"))[0]["from"], a)

    def test_history_newest_n_oldest_first(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        for i in range(1, 8):
            (alice if i % 2 else bob).ok("chat:%d:m%d" % (b if i % 2 else a, i))
        h = alice.ok("history:%d:3" % b)["messages"]
        self.assertEqual([m["body"] for m in h], ["m5", "m6", "m7"])
        self.assertEqual([m["seq"] for m in h], [5, 6, 7])
        self.assertEqual(len(bob.ok("history:%d" % a)["messages"]), 7)

    def test_recall_rules(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        r = alice.ok("chat:%d:oops" % b)
        bob.wait_events(is_msg("oops"))
        theirs = bob.cmd("recall:%d" % r["msgid"])
        self.assertFalse(theirs["ok"])
        self.assertEqual(theirs["code"], "FORBIDDEN")
        alice.ok("recall:%d" % r["msgid"])
        ev = bob.wait_events(lambda e: e.get("type") == "recall")[0]
        self.assertEqual(ev["msgid"], r["msgid"])
        h = bob.ok("history:%d" % a)["messages"]
        self.assertTrue(h[0]["recalled"])
        self.assertEqual(h[0]["body"], "")
        self.assertEqual(bob.cmd("recall:999999")["code"], "NOT_FOUND")


class RecallWindowTest(ParleyTest):
    server_extra = ("--recall-window", "1")

    def test_recall_after_the_window_is_refused(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        r = alice.ok("chat:%d:too late" % b)
        time.sleep(1.5)
        late = alice.cmd("recall:%d" % r["msgid"])
        self.assertFalse(late["ok"])
        self.assertEqual(late["code"], "EXPIRED")
        self.assertFalse(bob.ok("history:%d" % a)["messages"][0].get("recalled", False))


class FriendTest(ParleyTest):
    def test_add_list_delete_and_presence(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        alice.ok("addfriend:%d" % b)
        self.assertFalse(alice.cmd("addfriend:%d" % b)["ok"], "already friends")
        self.assertEqual(alice.cmd("addfriend:424242")["code"], "NOT_FOUND")
        fl = bob.ok("showfriendlist")["friends"]
        self.assertEqual(fl, [{"id": a, "name": "alice", "online": True}], "both directions")
        bob.ok("logout")
        off = alice.wait_events(lambda e: e.get("type") == "presence" and not e["online"])[0]
        self.assertEqual(off["user"], b)
        self.assertFalse(alice.ok("showfriendlist")["friends"][0]["online"])
        bob.ok("login:bob:secret123")
        on = alice.wait_events(lambda e: e.get("type") == "presence" and e["online"])[0]
        self.assertEqual(on["user"], b)
        login = self.client().ok("login:alice:secret123")
        self.assertEqual(login["friends"], [{"id": b, "name": "bob", "online": True}])
        alice.ok("delfriend:%d" % b)
        self.assertEqual(bob.ok("showfriendlist")["friends"], [])
        self.assertEqual(alice.cmd("delfriend:%d" % b)["code"], "NOT_FOUND")


class GroupTest(ParleyTest):
    def test_group_life_cycle(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        carol, c = self.user("carol")
        dave, d = self.user("dave")
        g = alice.ok("creategroup:friends:a group: for friends")["id"]
        self.assertEqual(bob.cmd("creategroup:friends:dup")["code"], "CONFLICT")
        bob.ok("addgroup:%d" % g)
        carol.ok("addgroup:%d" % g)
        self.assertEqual(carol.cmd("addgroup:%d" % g)["code"], "CONFLICT")
        self.assertEqual(carol.cmd("addgroup:99999")["code"], "NOT_FOUND")
        groups = bob.ok("showfriendlist")["groups"]
        self.assertEqual(len(groups), 1)
        self.assertEqual(groups[0]["name"], "friends")
        self.assertEqual(groups[0]["desc"], "a group: for friends")
        self.assertEqual(sorted((m["id"], m["role"]) for m in groups[0]["members"]),
                         sorted([(a, "creator"), (b, "normal"), (c, "normal")]))

        r = bob.ok("groupchat:%d:hello group" % g)
        for member in (alice, carol):
            m = member.wait_events(is_msg("hello group"))[0]
            self.assertEqual(m["group"], g)
            self.assertEqual(m["from"], b)
            self.assertEqual(m["seq"], r["seq"])
            self.assertNotIn("to", m)
        bob.drain(0.3)
        self.assertEqual(bob.messages(), [], "the sender gets no copy")

        outsider = dave.cmd("groupchat:%d:let me in" % g)
        self.assertFalse(outsider["ok"])
        self.assertEqual(outsider["code"], "FORBIDDEN")
        self.assertEqual(dave.cmd("grouphistory:%d" % g)["code"], "FORBIDDEN")
        self.assertEqual(len(carol.ok("grouphistory:%d" % g)["messages"]), 1)

        carol.ok("quitgroup:%d" % g)
        self.assertEqual(carol.cmd("groupchat:%d:still here?" % g)["code"], "FORBIDDEN")
        self.assertEqual(alice.cmd("quitgroup:%d" % g)["code"], "FORBIDDEN", "creator deletes")

        not_creator = bob.cmd("delgroup:%d" % g)
        self.assertFalse(not_creator["ok"])
        self.assertEqual(not_creator["code"], "FORBIDDEN")
        alice.ok("delgroup:%d" % g)
        ev = bob.wait_events(lambda e: e.get("type") == "group_deleted")[0]
        self.assertEqual(ev["group"], g)
        self.assertEqual(bob.cmd("groupchat:%d:gone" % g)["code"], "NOT_FOUND")
        self.assertEqual(bob.ok("showfriendlist")["groups"], [])

    def test_offline_member_gets_group_messages_at_login(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        g = alice.ok("creategroup:club:")["id"]
        bob.ok("addgroup:%d" % g)
        bob.ok("logout")
        for i in range(3):
            alice.ok("groupchat:%d:while away %d" % (g, i))
        bob.ok("login:bob:secret123")
        got = bob.wait_events(is_msg(), count=3)
        self.assertEqual([m["body"] for m in got], ["while away %d" % i for i in range(3)])


class RestartTest(unittest.TestCase):
    def test_messages_survive_a_restart(self):
        server = Server()
        self.addCleanup(server.cleanup)
        server.start()
        alice = Client(server.port)
        self.addCleanup(alice.kill)
        a = alice.ok("register:alice:secret123")["id"]
        b = alice.ok("register:bob:secret123")["id"]
        alice.ok("login:alice:secret123")
        sent = [alice.ok("chat:%d:before restart %d" % (b, i))["msgid"] for i in range(3)]
        # A clean stop (SIGTERM) tells the client and exits 0.
        self.assertEqual(server.stop(), 0)
        bye = alice.wait_events(lambda e: e.get("type") in ("bye", "disconnected"))
        self.assertTrue(bye)
        alice.kill()
        server.start()
        bob = Client(server.port)
        self.addCleanup(bob.kill)
        bob.ok("login:bob:secret123")
        got = bob.wait_events(is_msg(), count=3)
        self.assertEqual([m["msgid"] for m in got], sent)
        self.assertEqual(len(bob.ok("history:%d" % a)["messages"]), 3)


if __name__ == "__main__":
    unittest.main()
