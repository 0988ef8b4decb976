"""Exactly-once sends: a send carries a client_msg_id, the server stores one
message per (sender, id) and answers a repeat with the first send_ok, and
the terminal client keeps every send until it is confirmed, sending it
again after a reconnect.

The main test puts a proxy between a `parley` client and parleyd that cuts
the connection at random points around the sends (before the send frame,
inside it, right after it, after the reply was written and lost, after the
reply was delivered, during the resume) over 1,000 sends, and checks that
every one is stored once, shown once to the recipient and none reported
failed."""
import os
import random
import socket
import struct
import threading
import time
import unittest
from collections import Counter

from harness import ParleyTest, RawConn, free_port, frame, pb_decode, pb_field

FORBIDDEN, CONFLICT = 3, 5


# ---- raw frames ----

def hello(req_id=1):
    return frame(pb_field(1, req_id) + pb_field(10, pb_field(1, 1) + pb_field(2, "test")))


def login(req_id, name, password):
    return frame(pb_field(1, req_id) + pb_field(21, pb_field(2, name) + pb_field(3, password)))


def send_direct(req_id, to, body, cmid=0):
    msg = pb_field(1, to) + pb_field(2, body) + (pb_field(3, cmid) if cmid else b"")
    return frame(pb_field(1, req_id) + pb_field(50, msg))


def send_group(req_id, gid, body, cmid=0):
    msg = pb_field(1, gid) + pb_field(2, body) + (pb_field(3, cmid) if cmid else b"")
    return frame(pb_field(1, req_id) + pb_field(51, msg))


def group_quit(req_id, gid):
    return frame(pb_field(1, req_id) + pb_field(42, pb_field(1, gid)))


def history(req_id, peer=0, group=0, before=0):
    msg = (pb_field(1, peer) if peer else b"") + (pb_field(2, group) if group else b"")
    msg += pb_field(3, 100) + (pb_field(4, before) if before else b"")
    return frame(pb_field(1, req_id) + pb_field(52, msg))


def reply(conn, req_id, timeout=20):
    """The reply to req_id (pushes are skipped)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        f = conn.recv_frame(timeout=max(0.1, deadline - time.time()))
        if f is None:
            raise AssertionError("the server closed the connection")
        if f.get(1, [0])[0] == req_id:
            return f
    raise AssertionError("no reply to request %d" % req_id)


def send_ok(f):
    """(msgid, conv, seq, ts) of a send_ok, failing on an error."""
    if 2 in f:
        e = pb_decode(f[2][0])
        raise AssertionError("send failed: %r" % e)
    ok = pb_decode(f[50][0])
    return tuple(ok.get(k, [0])[0] for k in (1, 2, 3, 4))


def error_code(f):
    return pb_decode(f[2][0]).get(1, [0])[0] if 2 in f else None


class Raw:
    """A raw connection logged in as one user."""

    def __init__(self, test, name, password="secret123"):
        self.c = RawConn(test.server.port)
        test.addCleanup(self.c.close)
        self.next = 10
        self.c.send(hello())
        reply(self.c, 1)
        self.c.send(login(2, name, password))
        f = reply(self.c, 2)
        test.assertIn(21, f, "login failed: %r" % f)

    def call(self, make, *args, **kw):
        self.next += 1
        self.c.send(make(self.next, *args, **kw))
        return reply(self.c, self.next)

    def history(self, peer=0, group=0):
        """Every message of the conversation, oldest first (paged)."""
        out, before = [], 0
        while True:
            f = self.call(history, peer=peer, group=group, before=before)
            page = [pb_decode(m) for m in pb_decode(f[52][0]).get(1, [])] if 52 in f else []
            out = page + out
            if len(page) < 100:
                return out
            before = page[0][3][0]


def bodies(msgs):
    """The texts (social events, Message.kind 13, left out)."""
    return [m.get(7, [b""])[0].decode() for m in msgs if not m.get(13, [0])[0]]


# ---- the cutting proxy ----

class CuttingProxy:
    """A TCP proxy on a free loopback port in front of parleyd. It reads the
    client's frames whole and, for each send (and each resume), may cut the
    connection: before forwarding it, after part of it, right after it; for
    the reply to a send, it may drop the reply and cut, or cut right after
    delivering it. A cut closes both sides, now and then with a reset.
    refuse=True makes it close every new connection at once; force names a
    cut to make at the next chance, whatever the dice say; on_cut(mode) is
    called at each cut; rewrite_cmid, if set, replaces the client_msg_id of
    the next direct send (once)."""

    MODES = ("before", "partial", "after", "reply_lost", "reply_delivered", "resume")

    def __init__(self, target_port, seed, cut_rate=1.0):
        self.target = target_port
        self.rnd = random.Random(seed)
        self.cut_rate = cut_rate
        self.lock = threading.Lock()
        self.cuts = Counter()
        self.conns = 0
        self.refuse = False
        self.force = None
        self.on_cut = None
        self.rewrite_cmid = None
        self.pairs = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def roll(self, p):
        with self.lock:
            return self.rnd.random() < p * self.cut_rate

    def decide(self, mode, p):
        """Whether to make cut `mode` now: forced, or with probability p."""
        with self.lock:
            if self.force == mode:
                self.force = None
                return True
        return self.roll(p)

    def choice(self, seq):
        with self.lock:
            return self.rnd.choice(seq)

    def _accept(self):
        while not self.stopped:
            try:
                cs, _ = self.lsock.accept()
            except OSError:
                return
            if self.refuse:
                cs.close()
                continue
            try:
                ss = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                cs.close()
                continue
            cs.settimeout(None)
            ss.settimeout(None)
            pair = {"c": cs, "s": ss, "dead": False, "sends": set(), "lock": threading.Lock()}
            with self.lock:
                self.conns += 1
                self.pairs.append(pair)
            threading.Thread(target=self._up, args=(pair,), daemon=True).start()
            threading.Thread(target=self._down, args=(pair,), daemon=True).start()

    def cut(self, pair, mode):
        with pair["lock"]:
            if pair["dead"]:
                return
            pair["dead"] = True
        if mode:
            with self.lock:
                self.cuts[mode] += 1
            if self.on_cut:
                self.on_cut(mode)
        reset = self.roll(0.3)
        for s in (pair["c"], pair["s"]):
            # A close alone would wait for the other pump's recv to return
            # (the descriptor is in use); shutting down reading wakes it
            # without a word to the peer, so a reset still goes as one.
            try:
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def cut_all(self):
        with self.lock:
            pairs = list(self.pairs)
        for p in pairs:
            self.cut(p, None)

    def _forward(self, pair, to, data):
        with pair["lock"]:
            if pair["dead"]:
                return False
            try:
                pair[to].sendall(data)
                return True
            except OSError:
                pass
        self.cut(pair, None)
        return False

    @staticmethod
    def _frames(sock, pair):
        """Whole frames (header included) read from sock, until it ends."""
        buf = b""
        while not pair["dead"]:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 4:
                n = struct.unpack(">I", buf[:4])[0]
                if len(buf) < 4 + n:
                    break
                yield buf[:4 + n]
                buf = buf[4 + n:]

    def _up(self, pair):
        """Client to server."""
        for fr in self._frames(pair["c"], pair):
            f = pb_decode(fr[4:])
            is_send = 50 in f or 51 in f
            if 22 in f and self.decide("resume", 0.1):
                self.cut(pair, "resume")
                break
            if 50 in f and self.rewrite_cmid:
                sd = pb_decode(f[50][0])
                fr = frame(pb_field(1, f[1][0]) + pb_field(50, pb_field(1, sd[1][0]) +
                                                          pb_field(2, sd[2][0]) +
                                                          pb_field(3, self.rewrite_cmid)))
                self.rewrite_cmid = None
            if is_send:
                if self.decide("before", 0.06):
                    self.cut(pair, "before")
                    break
                if self.decide("partial", 0.04):
                    self._forward(pair, "s", fr[:self.choice(range(1, len(fr)))])
                    self.cut(pair, "partial")
                    break
                with pair["lock"]:
                    pair["sends"].add(f.get(1, [0])[0])
            if not self._forward(pair, "s", fr):
                break
            if is_send and self.decide("after", 0.06):
                self.cut(pair, "after")
                break
        self.cut(pair, None)

    def _down(self, pair):
        """Server to client."""
        for fr in self._frames(pair["s"], pair):
            f = pb_decode(fr[4:])
            with pair["lock"]:
                is_reply = f.get(1, [0])[0] in pair["sends"]
            if is_reply and self.decide("reply_lost", 0.06):
                self.cut(pair, "reply_lost")
                break
            if not self._forward(pair, "c", fr):
                break
            if is_reply and self.decide("reply_delivered", 0.03):
                self.cut(pair, "reply_delivered")
                break
        self.cut(pair, None)

    def close(self):
        self.stopped = True
        try:
            self.lsock.close()
        except OSError:
            pass
        self.cut_all()


def send_lines(client, lines):
    client.proc.stdin.write(("\n".join(lines) + "\n").encode())
    client.proc.stdin.flush()


def collect_replies(client, n, timeout):
    """The next n replies; everything else goes to client.events."""
    deadline = time.time() + timeout
    replies = []
    while len(replies) < n:
        obj = client._next(deadline)
        if obj.get("type") == "reply":
            replies.append(obj)
        else:
            client.events.append(obj)
    return replies


# ---- tests ----

class ExactlyOnceServerTest(ParleyTest):
    """What the server promises, on the wire."""
    # The race test pipelines 200 sends at once.
    server_extra = ("--msg-rate", "0", "--req-rate", "0")

    def setUp(self):
        super().setUp()
        admin = self.client()
        self.a = admin.ok("register:alice:secret123")["id"]
        self.b = admin.ok("register:bob:secret123")["id"]
        self.c = admin.ok("register:carol:secret123")["id"]
        admin.ok("login:carol:secret123")
        self.g = admin.ok("creategroup:room:")["id"]
        admin.ok("logout")
        admin.ok("login:alice:secret123")
        admin.ok("addgroup:%d" % self.g)
        admin.close()

    def test_repeat_gets_the_first_send_ok(self):
        one, two = Raw(self, "alice"), Raw(self, "alice")
        first = send_ok(one.call(send_direct, self.b, "hello once", cmid=2**64 - 5))
        # The same id again, on this connection and on another of the same
        # user: the same answer, nothing stored.
        self.assertEqual(send_ok(one.call(send_direct, self.b, "hello once", cmid=2**64 - 5)),
                         first)
        self.assertEqual(send_ok(two.call(send_direct, self.b, "hello once", cmid=2**64 - 5)),
                         first)
        # Another sender may use the same number: it is another message.
        carol = Raw(self, "carol")
        other = send_ok(carol.call(send_direct, self.b, "hello once", cmid=2**64 - 5))
        self.assertNotEqual(other[0], first[0])
        # An id reused for other text or another conversation is refused,
        # not taken for a repeat.
        f = one.call(send_direct, self.b, "something else", cmid=2**64 - 5)
        self.assertEqual(error_code(f), CONFLICT)
        self.assertIn("client_msg_id", pb_decode(f[2][0])[2][0].decode())
        self.assertEqual(error_code(one.call(send_direct, self.c, "hello once", cmid=2**64 - 5)),
                         CONFLICT)
        self.assertEqual(error_code(one.call(send_group, self.g, "hello once", cmid=2**64 - 5)),
                         CONFLICT)
        # Sends without an id are never merged (as before).
        n1 = send_ok(one.call(send_direct, self.b, "no id"))
        n2 = send_ok(one.call(send_direct, self.b, "no id"))
        self.assertNotEqual(n1[0], n2[0])
        # Group sends alike.
        g1 = send_ok(one.call(send_group, self.g, "to the room", cmid=77))
        self.assertEqual(send_ok(two.call(send_group, self.g, "to the room", cmid=77)), g1)

        bob = Raw(self, "bob")
        self.assertEqual(bodies(bob.history(peer=self.a)), ["hello once", "no id", "no id"])
        self.assertEqual(bodies(one.history(group=self.g)), ["to the room"])

    def test_repeat_after_leaving_the_group(self):
        # The first attempt was stored, then its sender left the group (on
        # another device, say): the repeat still gets the first answer, a
        # new send is refused.
        alice = Raw(self, "alice")
        first = send_ok(alice.call(send_group, self.g, "just before leaving", cmid=31337))
        self.assertNotIn(2, alice.call(group_quit, self.g))
        self.assertEqual(send_ok(alice.call(send_group, self.g, "just before leaving", cmid=31337)),
                         first)
        self.assertEqual(error_code(alice.call(send_group, self.g, "just before leaving",
                                               cmid=31338)), FORBIDDEN)
        self.assertEqual(error_code(alice.call(send_group, self.g, "other text", cmid=31337)),
                         FORBIDDEN)

    def test_repeat_after_a_restart(self):
        alice = Raw(self, "alice")
        first = send_ok(alice.call(send_direct, self.b, "before the restart", cmid=123456789))
        alice.c.close()
        self.assertEqual(self.server.stop(), 0)
        self.server.start()
        alice = Raw(self, "alice")
        self.assertEqual(
            send_ok(alice.call(send_direct, self.b, "before the restart", cmid=123456789)), first)
        self.assertEqual(bodies(alice.history(peer=self.b)), ["before the restart"])

    def test_repeats_racing_on_many_connections(self):
        # The same sends on four connections at once, pipelined: whatever
        # batch each lands in, one message per id.
        conns = [Raw(self, "alice") for _ in range(4)]
        for i, c in enumerate(conns):
            data = b"".join(send_direct(1000 + k, self.b, "race %d" % k, cmid=5000 + k)
                            for k in range(50))
            c.c.send(data)
        answers = []
        for c in conns:
            got = {}
            while len(got) < 50:
                f = c.c.recv_frame(timeout=20)
                self.assertIsNotNone(f)
                rid = f.get(1, [0])[0]
                if 1000 <= rid < 1050:
                    got[rid] = send_ok(f)
            answers.append(got)
        for got in answers[1:]:
            self.assertEqual(got, answers[0])
        self.assertEqual(sorted(bodies(conns[0].history(peer=self.b))),
                         sorted("race %d" % k for k in range(50)))


class ExactlyOnceClientTest(ParleyTest):
    """The terminal client through a proxy that cuts the connection."""
    # 1,000 sends as fast as the round trips allow, and a reconnect (a
    # resume) after each cut: the message and request rates are lifted.
    server_extra = ("--msg-rate", "0", "--req-rate", "0")

    SENDS = 1000

    def proxy(self, seed, **kw):
        p = CuttingProxy(self.server.port, seed, **kw)
        self.addCleanup(p.close)
        return p

    def setUp(self):
        super().setUp()
        admin = self.client()
        self.a = admin.ok("register:alice:secret123")["id"]
        self.b = admin.ok("register:bob:secret123")["id"]
        admin.close()
        self.bob = self.client(wait_ms=100)
        self.bob.ok("login:bob:secret123")
        self.g = self.bob.ok("creategroup:room:")["id"]

    def alice_via(self, proxy):
        alice = self.client(port=proxy.port, wait_ms=100)
        alice.ok("login:alice:secret123")
        alice.ok("addgroup:%d" % self.g)
        return alice

    def check_stored_once(self, direct, group):
        """Each body in history exactly once, and nothing else."""
        raw = Raw(self, "bob")
        self.assertEqual(Counter(bodies(raw.history(peer=self.a))), Counter(direct))
        self.assertEqual(Counter(bodies(raw.history(group=self.g))), Counter(group))

    def test_1000_sends_through_a_cutting_proxy(self):
        seed = int(os.environ.get("PARLEY_TEST_SEED", random.randrange(1 << 30)))
        proxy = self.proxy(seed, cut_rate=0.0)  # no cuts while logging in
        alice = self.alice_via(proxy)
        proxy.cut_rate = 1.0

        lines, direct, group = [], [], []
        for i in range(self.SENDS):
            body = "m%04d %s" % (i, "x" * (i % 7))
            if i % 4 == 3:
                lines.append("groupchat:%d:%s" % (self.g, body))
                group.append(body)
            else:
                lines.append("chat:%d:%s" % (self.b, body))
                direct.append(body)
        send_lines(alice, lines)
        replies = collect_replies(alice, self.SENDS, timeout=600)
        proxy.cut_rate = 0.0

        failed = [r for r in replies if not r.get("ok")]
        self.assertEqual(failed, [], "seed %d" % seed)
        self.assertEqual([r["cmd"] for r in replies],
                         ["groupchat" if i % 4 == 3 else "chat" for i in range(self.SENDS)])
        msgids = [r["msgid"] for r in replies]
        self.assertEqual(len(set(msgids)), self.SENDS, "two sends got one msgid")
        self.assertEqual(len({r["client_msg_id"] for r in replies}), self.SENDS)
        # The cuts happened, of every kind.
        print("\nseed %d: %d connections, cuts %s" % (seed, proxy.conns, dict(proxy.cuts)))
        for mode in CuttingProxy.MODES:
            self.assertGreater(proxy.cuts[mode], 0, "no cut %s (seed %d)" % (mode, seed))
        self.assertGreater(sum(1 for e in alice.events if e.get("type") == "resending"), 0)

        # Stored once each...
        self.check_stored_once(direct, group)
        # ... and shown once each to the recipient.
        deadline = time.time() + 60
        got = Counter()
        while time.time() < deadline:
            got = Counter(m["msgid"] for m in self.bob.messages() if m.get("from") == self.a)
            if len(got) >= self.SENDS:
                break
            self.bob.drain(0.5)
        self.bob.drain(1.0)
        got = Counter(m["msgid"] for m in self.bob.messages() if m.get("from") == self.a)
        self.assertEqual(set(got), set(msgids))
        self.assertEqual([k for k, n in got.items() if n != 1], [])
        shown = Counter(m["body"] for m in self.bob.messages() if m.get("from") == self.a)
        self.assertEqual(shown, Counter(direct + group))

    def test_sends_typed_while_disconnected_are_queued(self):
        proxy = self.proxy(1, cut_rate=0.0)
        alice = self.alice_via(proxy)
        alice.ok("chat:%d:first" % self.b)
        proxy.refuse = True
        proxy.cut_all()
        alice.wait_events(lambda e: e.get("type") == "disconnected")
        send_lines(alice, ["chat:%d:typed while away" % self.b, "groupchat:%d:also away" % self.g])
        q = alice.wait_events(lambda e: e.get("type") == "queued")[0]
        self.assertEqual(q["cmd"], "chat")
        self.assertEqual(q["to"], self.b)
        self.assertTrue(q["client_msg_id"].isdigit())
        alice.drain(0.5)
        self.assertFalse(any(e.get("type") == "reply" for e in alice.events))
        proxy.refuse = False
        r1, r2 = collect_replies(alice, 2, timeout=30)
        self.assertTrue(r1["ok"] and r2["ok"], (r1, r2))
        self.assertEqual(r1["client_msg_id"], q["client_msg_id"])
        self.assertTrue(any(e.get("type") == "resending" and e["count"] == 1
                            for e in alice.events))
        self.check_stored_once(["first", "typed while away"], ["also away"])
        self.bob.wait_events(lambda e: e.get("body") == "also away")
        self.assertEqual(Counter(m["body"] for m in self.bob.messages()),
                         Counter(["first", "typed while away", "also away"]))

    def test_an_id_taken_by_another_message_is_replaced(self):
        # Another process of alice's already stored a message under the id
        # this send goes out with (the proxy makes them meet): the server
        # says CONFLICT, and the client sends again under a new id.
        taken = 7 << 22
        other = Raw(self, "alice")
        first = send_ok(other.call(send_direct, self.b, "from the other device", cmid=taken))
        proxy = self.proxy(3, cut_rate=0.0)
        alice = self.alice_via(proxy)
        proxy.rewrite_cmid = taken
        r = alice.ok("chat:%d:from this one" % self.b)
        self.assertNotEqual(r["msgid"], first[0])
        self.assertNotEqual(int(r["client_msg_id"]), taken)
        self.assertIsNone(proxy.rewrite_cmid)
        self.check_stored_once(["from the other device", "from this one"], [])

    def test_reply_lost_then_the_server_restarts(self):
        proxy = self.proxy(2, cut_rate=0.0)
        alice = self.alice_via(proxy)
        # The send is stored and its reply lost; the proxy then refuses
        # while the server restarts. The client comes back to the new
        # process, resumes, sends again and gets the first send_ok.
        lost = threading.Event()

        def on_cut(mode):
            proxy.refuse = True
            lost.set()
        proxy.on_cut = on_cut
        proxy.force = "reply_lost"
        send_lines(alice, ["chat:%d:across a restart" % self.b])
        self.assertTrue(lost.wait(20))
        self.assertEqual(self.server.stop(), 0)
        self.server.start()
        proxy.on_cut = None
        proxy.refuse = False
        r = collect_replies(alice, 1, timeout=60)[0]
        self.assertTrue(r["ok"], r)
        self.check_stored_once(["across a restart"], [])
        first = Raw(self, "bob").history(peer=self.a)[0]
        self.assertEqual(first[1][0], r["msgid"])


if __name__ == "__main__":
    unittest.main()
