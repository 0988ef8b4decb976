"""People, not numbers (issue 16): find, every device in sync, read state,
typing and social events, as users see them through `parley --json` and, for
what no real client sends, the raw protocol."""

import subprocess
import time
import unittest

from harness import PARLEY, Client, Cluster, ParleyTest, Peer, body, error, one, pb, pb_decode

F_FIND = 34
S_FIND_OK = 32


def is_msg(body_text):
    return lambda e: e.get("type") == "message" and e.get("body") == body_text


def is_social(kind):
    return lambda e: e.get("type") == "social" and e.get("kind") == kind


class FindTest(ParleyTest):

    def test_find_who_and_whois(self):
        alice, a = self.user("alice")
        for n in ("bob", "bobby", "bobo", "carol"):
            self.client().ok("register:%s:secret123" % n)
        r = alice.ok("find:bob")
        self.assertEqual([u["name"] for u in r["users"]], ["bob", "bobby", "bobo"])
        self.assertFalse(r["more"])
        self.assertEqual(alice.ok("find:zz")["users"], [])
        self.assertEqual(alice.cmd("find:")["code"], "USAGE")
        # whois and who answer by name.
        b = alice.ok("whois:bob")["id"]
        alice.ok("addfriend:bob")
        self.assertEqual(alice.ok("who")["online"], [])
        # Paged: at most `limit` a page, `after` continues.
        p = Peer(self.server.port)
        self.addCleanup(p.close)
        p.login("alice")
        f = p.call(F_FIND, pb((1, "bob"), (2, 2)))
        ok = body(f, S_FIND_OK)
        names = [one(pb_decode(u), 2) for u in ok.get(1, [])]
        self.assertEqual(names, [b"bob", b"bobby"])
        self.assertEqual(one(ok, 2), 1, "more follows")
        ok = body(p.call(F_FIND, pb((1, "bob"), (2, 2), (3, "bobby"))), S_FIND_OK)
        self.assertEqual([one(pb_decode(u), 2) for u in ok.get(1, [])], [b"bobo"])
        self.assertEqual(one(ok, 2), 0)
        self.assertEqual(one(pb_decode(ok[1][0]), 1), b + 2)
        # A limit over 50 is cut to 50; an empty prefix is refused.
        self.assertIsNotNone(body(p.call(F_FIND, pb((1, "b"), (2, 100000))), S_FIND_OK))
        self.assertEqual(error(p.call(F_FIND, pb((2, 5)))).code, 1)


class DevicesTest(ParleyTest):

    def test_own_send_reaches_the_other_session_live_and_later(self):
        alice, a = self.user("alice")
        bob1, b = self.user("bob")
        bob2 = self.client()
        bob2.ok("login:bob:secret123")
        g = alice.ok("creategroup:team:")["id"]
        bob1.ok("addgroup:%d" % g)
        # Live, direct and group: session 2 gets it as bob's own; session 1
        # has its send_ok and no copy.
        r = bob1.ok("chat:%d:from my phone" % a)
        m = bob2.wait_events(is_msg("from my phone"))[0]
        self.assertEqual((m["from"], m["to"], m["msgid"]), (b, a, r["msgid"]))
        alice.wait_events(is_msg("from my phone"))
        bob1.ok("groupchat:%d:to the team" % g)
        m = bob2.wait_events(is_msg("to the team"))[0]
        self.assertEqual((m["from"], m["group"]), (b, g))
        bob1.drain(0.5)
        self.assertEqual([e for e in bob1.messages() if e["from"] == b], [],
                         "the sending session gets no copy")
        # Later: session 2 logs out, session 1 sends, session 2 logs in again.
        bob2.ok("logout")
        bob1.ok("chat:%d:while you slept" % a)
        bob2.ok("login:bob:secret123")
        m = bob2.wait_events(is_msg("while you slept"))[0]
        self.assertEqual(m["from"], b)

    def test_second_session_does_not_repeat_online(self):
        alice, a = self.user("alice")
        bob1, b = self.user("bob")
        alice.ok("addfriend:%d" % b)
        bob1.ok("logout")
        alice.drain(0.3)
        alice.events.clear()
        bob1.ok("login:bob:secret123")
        alice.wait_events(lambda e: e.get("type") == "presence" and e["online"])
        bob2 = self.client()
        bob2.ok("login:bob:secret123")
        bob2.ok("whoami")
        alice.drain(1.0)
        online = [e for e in alice.events if e.get("type") == "presence"]
        self.assertEqual(len(online), 1, online)


class ReadStateTest(ParleyTest):

    def test_read_event_and_unread_counts(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        alice.ok("logout")
        sent = [bob.ok("chat:%d:backlog %d" % (a, i)) for i in range(5)]
        conv = sent[0]["conv"]
        alice.ok("login:alice:secret123")
        login = alice.all[-1] if alice.all[-1].get("cmd") == "login" else None
        login = login or [e for e in alice.all if e.get("cmd") == "login"][-1]
        self.assertEqual([(u["conv"], u["peer"], u["count"], u["last_read_seq"])
                          for u in login["unread"]], [(conv, b, 5, 0)])
        alice.wait_events(is_msg("backlog 4"))
        self.assertEqual(alice.ok("unread")["unread"][0]["count"], 5)
        # Alice reads three of them: bob hears of it, the counts follow.
        alice.ok("read:%d:%d" % (conv, sent[2]["seq"]))
        ev = bob.wait_events(lambda e: e.get("type") == "read")[0]
        self.assertEqual((ev["conv"], ev["user"], ev["seq"], ev.get("user_name")),
                         (conv, a, sent[2]["seq"], "alice"))
        self.assertEqual(alice.ok("unread")["unread"][0]["count"], 2)
        alice.ok("logout")
        alice.ok("login:alice:secret123")
        login = [e for e in alice.all if e.get("cmd") == "login"][-1]
        self.assertEqual([(u["count"], u["last_read_seq"]) for u in login["unread"]],
                         [(2, sent[2]["seq"])])
        # Never backwards; beyond the end is the end.
        alice.ok("read:%d:1" % conv)
        alice.ok("read:%d:999" % conv)
        alice.ok("logout")
        alice.ok("login:alice:secret123")
        login = [e for e in alice.all if e.get("cmd") == "login"][-1]
        self.assertEqual(login["unread"], [])
        # Bob's own sends never count as unread for him.
        bob.ok("logout")
        bob.ok("login:bob:secret123")
        self.assertEqual([e for e in bob.all if e.get("cmd") == "login"][-1]["unread"], [])

    def test_read_on_one_device_clears_unread_on_the_other(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        alice2 = self.client()
        alice2.ok("login:alice:secret123")
        sent = [bob.ok("chat:%d:twice seen %d" % (a, i)) for i in range(3)]
        conv = sent[0]["conv"]
        alice2.wait_events(is_msg("twice seen 2"))
        self.assertEqual(alice2.ok("unread")["unread"][0]["count"], 3)
        # Read on the first device: the second hears it as her own read
        # event and counts only what is above it.
        alice.wait_events(is_msg("twice seen 2"))
        alice.ok("read:%d:%d" % (conv, sent[1]["seq"]))
        ev = alice2.wait_events(lambda e: e.get("type") == "read" and e["user"] == a)[0]
        self.assertEqual((ev["conv"], ev["seq"]), (conv, sent[1]["seq"]))
        self.assertEqual(alice2.ok("unread")["unread"][0]["count"], 1)
        # Bob is told as before, once.
        self.assertEqual(bob.wait_events(lambda e: e.get("type") == "read")[0]["user"], a)

    def test_group_read_events(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        carol, c = self.user("carol")
        g = alice.ok("creategroup:team:")["id"]
        bob.ok("addgroup:%d" % g)
        carol.ok("addgroup:%d" % g)
        r = bob.ok("groupchat:%d:read me" % g)
        carol.ok("read:%d:%d" % (r["conv"], r["seq"]))
        for member in (alice, bob):
            ev = member.wait_events(lambda e: e.get("type") == "read")[0]
            self.assertEqual((ev["user"], ev["group"], ev["seq"]), (c, g, r["seq"]))
        # A second read within the second moves the cursor but tells nobody.
        r2 = bob.ok("groupchat:%d:and me" % g)
        carol.ok("read:%d:%d" % (r2["conv"], r2["seq"]))
        bob.drain(0.5)
        self.assertEqual(len([e for e in bob.events if e.get("type") == "read"]), 1)

    def test_terminal_marks_read_what_it_shows(self):
        """A person's terminal (not --json) reads what it prints; the sender
        sees the mark."""
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        r = bob.ok("chat:%d:are you there" % a)
        alice.wait_events(is_msg("are you there"))
        alice.ok("read:%d:%d" % (r["conv"], r["seq"]))
        p = subprocess.Popen([PARLEY, "--port", str(self.server.port), "--wait-ms", "800"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(p.kill)
        # Script mode over a pipe: not a terminal, so it reports but does
        # not read; the unread line is shown at login.
        bob.ok("chat:%d:one more" % a)
        out, _ = p.communicate(b"login:alice:secret123\nunread\n", timeout=30)
        text = out.decode("utf-8", "replace")
        self.assertRegex(text, r"unread: bob 1")


class TypingTest(ParleyTest):

    def test_typing_appears_is_limited_and_expires(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        carol, c = self.user("carol")
        g = alice.ok("creategroup:team:")["id"]
        bob.ok("addgroup:%d" % g)
        carol.ok("addgroup:%d" % g)
        bob.ok("typing:%d" % a)
        ev = alice.wait_events(lambda e: e.get("type") == "typing")[0]
        self.assertEqual((ev["user"], ev.get("user_name"), ev["expires_ms"]), (b, "bob", 5000))
        self.assertNotIn("group", ev)
        # Again at once: too fast, refused without a relay.
        r = bob.cmd("typing:%d" % a)
        self.assertEqual(r["code"], "BUSY")
        # In the group: every other member, not the typist.
        bob.ok("grouptyping:%d" % g)
        for member in (alice, carol):
            ev = member.wait_events(lambda e: e.get("type") == "typing" and e.get("group") == g)
            self.assertEqual(ev[0]["user"], b)
        bob.drain(0.3)
        self.assertEqual([e for e in bob.events if e.get("type") == "typing"], [])
        # Nobody stores it: a later login hears nothing of it.
        carol.ok("logout")
        carol.ok("login:carol:secret123")
        carol.drain(0.5)
        self.assertEqual([e for e in carol.events[-5:] if e.get("type") == "typing"
                          and e.get("ts")], [])

    def test_terminal_shows_typing_once_until_it_expires(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        p = subprocess.Popen([PARLEY, "--port", str(self.server.port), "--wait-ms", "9000"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(p.kill)
        p.stdin.write(b"login:alice:secret123\n")
        p.stdin.flush()
        time.sleep(1.5)
        bob.ok("typing:%d" % a)          # shown
        time.sleep(2.5)
        bob.ok("typing:%d" % a)          # still typing: not shown again
        time.sleep(5.5)
        bob.ok("typing:%d" % a)          # expired: shown again
        out, _ = p.communicate(b"", timeout=30)
        text = out.decode("utf-8", "replace")
        self.assertEqual(text.count("bob is typing"), 2, text)


class SocialEventsTest(ParleyTest):

    def test_friend_and_member_events_reach_online_and_offline_users(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        carol, c = self.user("carol")
        carol.ok("logout")
        # Friend added: bob online sees it live, carol offline at login.
        alice.ok("addfriend:%d" % b)
        ev = bob.wait_events(is_social("friend_added"))[0]
        self.assertEqual((ev["by"], ev.get("by_name"), ev["to"]), (a, "alice", b))
        alice.ok("addfriend:%d" % c)
        # Member joined and left: the group's other members.
        g = alice.ok("creategroup:team:")["id"]
        bob.ok("addgroup:%d" % g)
        ev = alice.wait_events(is_social("member_joined"))[0]
        self.assertEqual((ev["by"], ev["group"], ev.get("group_name")), (b, g, "team"))
        carol_client = self.client()
        carol_client.ok("login:carol:secret123")
        ev = carol_client.wait_events(is_social("friend_added"))[0]
        self.assertEqual(ev["by"], a)
        carol_client.ok("addgroup:%d" % g)
        carol_client.ok("logout")
        bob.ok("quitgroup:%d" % g)
        ev = alice.wait_events(is_social("member_left"))[0]
        self.assertEqual(ev["by"], b)
        carol_client.ok("login:carol:secret123")
        ev = carol_client.wait_events(is_social("member_left"))[0]
        self.assertEqual((ev["by"], ev["group"]), (b, g))
        # Removed as a friend.
        alice.ok("delfriend:%d" % b)
        ev = bob.wait_events(is_social("friend_removed"))[0]
        self.assertEqual(ev["by"], a)
        # History keeps texts and events apart; an event cannot be recalled.
        h = alice.ok("grouphistory:%d" % g)
        self.assertEqual(h["messages"], [])
        self.assertEqual([e["kind"] for e in h["events"]],
                         ["member_joined", "member_joined", "member_left"])
        self.assertEqual(bob.cmd("recall:%d" % h["events"][0]["msgid"])["code"], "FORBIDDEN")


class PeopleClusterTest(unittest.TestCase):
    """The cluster path: Redis carries own copies, read, typing and social
    events between gateways; presence counts sessions on every gateway;
    read cursors and unread counts live in MariaDB."""

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.down)
        self.cluster.up()

    def client(self, port):
        c = Client(port)
        self.addCleanup(c.kill)
        return c

    def test_devices_read_typing_and_events_across_gateways(self):
        g1, g2 = self.cluster.gateway_port(1), self.cluster.gateway_port(2)
        alice = self.client(g1)
        a = alice.ok("register:alice:secret123")["id"]
        alice.ok("login:alice:secret123")
        bob1 = self.client(g1)
        b = bob1.ok("register:bob:secret123")["id"]
        alice.ok("addfriend:%d" % b)
        bob1.ok("login:bob:secret123")
        ev = bob1.wait_events(is_social("friend_added"))[0]  # caught up at login
        self.assertEqual(ev["by"], a)
        alice.wait_events(lambda e: e.get("type") == "presence" and e["online"])
        # Bob's second and third sessions, on the other gateway and on the
        # same one: nobody hears "online" again.
        bob2 = self.client(g2)
        bob2.ok("login:bob:secret123")
        bob3 = self.client(g1)
        bob3.ok("login:bob:secret123")
        # An own send reaches both other sessions, across gateways.
        r = bob1.ok("chat:%d:sent from session 1" % a)
        for other in (bob2, bob3):
            m = other.wait_events(is_msg("sent from session 1"))[0]
            self.assertEqual((m["from"], m["msgid"]), (b, r["msgid"]))
        alice.wait_events(is_msg("sent from session 1"))
        bob1.drain(0.5)
        self.assertEqual([e for e in bob1.messages() if e["from"] == b], [])
        alice.drain(0.5)
        self.assertEqual(len([e for e in alice.events if e.get("type") == "presence"]), 1,
                         "a second session repeated online")
        # Read and typing cross gateways too.
        alice.ok("read:%d:%d" % (r["conv"], r["seq"]))
        ev = bob2.wait_events(lambda e: e.get("type") == "read")[0]
        self.assertEqual((ev["user"], ev["seq"]), (a, r["seq"]))
        alice.ok("typing:%d" % b)
        bob2.wait_events(lambda e: e.get("type") == "typing" and e["user"] == a)
        # Unread counts at login come from MariaDB.
        bob2.ok("logout")
        alice.ok("chat:%d:one" % b)
        alice.ok("chat:%d:two" % b)
        bob2.ok("login:bob:secret123")
        login = [e for e in bob2.all if e.get("cmd") == "login"][-1]
        self.assertEqual([(u["peer"], u["count"]) for u in login["unread"]], [(a, 3)],
                         "friend_added and the two texts")


if __name__ == "__main__":
    unittest.main()
