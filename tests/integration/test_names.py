"""People, not numbers: every message carries its sender's name, and a
group message its group's name, filled by the server: live, in the catch-up
at login and in history. A group member who is not a friend, whose name the
receiving client never saw, is shown by name."""

import subprocess
import unittest

from harness import PARLEY, ParleyTest


def is_msg(body):
    return lambda e: e.get("type") == "message" and e.get("body") == body


class NamesOnMessagesTest(ParleyTest):

    def setUp(self):
        super().setUp()
        self.alice, self.a = self.user("alice")
        self.bob, self.b = self.user("bob")
        self.carol, self.c = self.user("carol")
        self.g = self.alice.ok("creategroup:team:the team")["id"]
        self.bob.ok("addgroup:%d" % self.g)
        self.carol.ok("addgroup:%d" % self.g)

    def test_live_group_and_direct_messages_carry_names(self):
        self.carol.ok("groupchat:%d:hello team" % self.g)
        m = self.bob.wait_events(is_msg("hello team"))[0]
        self.assertEqual((m["from"], m.get("from_name")), (self.c, "carol"))
        self.assertEqual((m["group"], m.get("group_name")), (self.g, "team"))
        self.carol.ok("chat:%d:psst" % self.b)
        m = self.bob.wait_events(is_msg("psst"))[0]
        self.assertEqual(m.get("from_name"), "carol", "a stranger's direct message is named")
        self.assertNotIn("group_name", m)

    def test_catch_up_and_history_carry_names(self):
        self.bob.ok("logout")
        self.carol.ok("groupchat:%d:while you were out" % self.g)
        self.alice.ok("chat:%d:and from me" % self.b)
        bob = self.client()
        bob.ok("login:bob:secret123")
        m = bob.wait_events(is_msg("while you were out"))[0]
        self.assertEqual((m.get("from_name"), m.get("group_name")), ("carol", "team"))
        m = bob.wait_events(is_msg("and from me"))[0]
        self.assertEqual(m.get("from_name"), "alice")
        h = bob.ok("grouphistory:%d" % self.g)
        msgs = h.get("messages", [])
        self.assertTrue(msgs, h)
        for m in msgs:
            self.assertEqual(m.get("group_name"), "team", m)
            self.assertEqual(m.get("from_name"), {self.c: "carol", self.a: "alice"}[m["from"]], m)

    def test_text_client_shows_names_not_numbers(self):
        # dave's client knows nobody at login (no friends, no groups): the
        # name comes with the message.
        dave_id = self.client().ok("register:dave:secret123")["id"]
        self.carol.ok("chat:%d:hi dave" % dave_id)
        p = subprocess.Popen([PARLEY, "--port", str(self.server.port), "--wait-ms", "1500"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(p.kill)
        out, _ = p.communicate(b"login:dave:secret123\n", timeout=30)
        text = out.decode("utf-8", "replace")
        self.assertRegex(text, r"\] carol -> you: hi dave")
        self.assertNotIn("user %d" % self.c, text)


class NamesInRequestsTest(ParleyTest):
    """chat:bob:hi, addfriend:bob, groupchat:team:hi, whois and who."""

    def test_whois_who_and_requests_by_name(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        carol, c = self.user("carol")
        # whois by name and by id; presence only for a friend.
        w = alice.ok("whois:bob")
        self.assertEqual((w["id"], w["name"], w["online"]), (b, "bob", False),
                         "a stranger's presence is not told")
        self.assertEqual(alice.ok("whois:%d" % c)["name"], "carol")
        r = alice.cmd("whois:nobody")
        self.assertEqual((r["ok"], r.get("code")), (False, "NOT_FOUND"), r)
        # Requests by name: bob is known now (whois), carol too.
        alice.ok("addfriend:bob")
        self.assertTrue(alice.ok("whois:bob")["online"], "a friend's presence is told")
        alice.ok("chat:bob:hello by name")
        m = bob.wait_events(lambda e: e.get("body") == "hello by name")[0]
        self.assertEqual(m["from"], a)
        self.assertEqual([u["name"] for u in alice.ok("who")["online"]], ["bob"])
        bob.ok("logout")
        self.assertEqual(alice.ok("who")["online"], [], "bob left")
        h = alice.ok("history:bob")
        self.assertEqual([m["body"] for m in h["messages"]], ["hello by name"])
        # Groups by name, among the user's own groups.
        g = alice.ok("creategroup:team:")["id"]
        carol.ok("addgroup:%d" % g)
        alice.ok("showfriendlist")  # learns the group (and its members)
        alice.ok("groupchat:team:hello team")
        m = carol.wait_events(lambda e: e.get("body") == "hello team")[0]
        self.assertEqual((m["group"], m.get("group_name")), (g, "team"))
        # A name this client never saw: a clear error, nothing sent.
        r = alice.cmd("chat:dave:anyone there?")
        self.assertEqual((r["ok"], r.get("code")), (False, "NOT_FOUND"), r)
        self.assertIn("whois:dave", r.get("error", r.get("text", "")) + str(r))
        r = alice.cmd("groupchat:nosuchgroup:hi")
        self.assertEqual((r["ok"], r.get("code")), (False, "NOT_FOUND"), r)


class WhoisHostileTest(ParleyTest):
    """Whois as an attacker sends it: before login, empty, a huge name,
    invalid UTF-8, an id past every user. Clear errors; the server serves on."""

    def test_hostile_whois(self):
        from harness import (BAD_REQUEST, NOT_FOUND, S_PONG, UNAUTHENTICATED, Peer, error,
                             frame, pb, pb_field)
        F_WHOIS = 33
        p = Peer(self.server.port)
        self.addCleanup(p.close)
        self.assertEqual(error(p.call(F_WHOIS, pb((2, "bob")))).code, UNAUTHENTICATED)
        self.user("bob")
        p.register("mallory")
        p.login("mallory")
        self.assertEqual(error(p.call(F_WHOIS, b"")).code, BAD_REQUEST, "neither id nor name")
        self.assertIn(error(p.call(F_WHOIS, pb((2, "b" * 5000)))).code, (BAD_REQUEST, NOT_FOUND))
        rid = p.take_id()
        p.send_raw(frame(pb_field(1, rid) + pb_field(F_WHOIS, pb_field(2, b"b\xffob"))))
        self.assertEqual(error(p.wait_reply(rid)).code, BAD_REQUEST, "invalid UTF-8")
        self.assertEqual(error(p.call(F_WHOIS, pb((1, (1 << 64) - 1)))).code, NOT_FOUND)
        self.assertIn(S_PONG, p.ping(), "the connection still works")


if __name__ == "__main__":
    unittest.main(verbosity=2)
