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


if __name__ == "__main__":
    unittest.main(verbosity=2)
