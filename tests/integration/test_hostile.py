"""Hostile clients (issue 13, "one client must never hurt another").

Each test attacks one real parleyd (embedded SQLite, the default argon2id
cost) while a well-behaved pair of users on 127.0.0.1 keeps chatting in a
background thread (harness.ChatPair): every reply and push the pair waits for
must arrive within 1 s, and every send must succeed. Flooders bind their
sockets to other loopback addresses (127.0.0.2, ...), so per-address limits
hit them only; users a test merely needs are registered from setup-only
addresses (127.0.1.N) so that the registration rate never limits the setup.

The limits and their defaults are in docs/security.md and `parleyd --help`:
every limit hit is answered with Error{BUSY, retry_after_ms > 0}; connection
caps and deadlines close the connection.

PARLEY_HOSTILE_COST=min runs the suite at the cheapest argon2id cost, to see
the other checks apart from the cost of hashing (not for CI).
"""
import collections
import os
import signal
import socket
import struct
import sys
import threading
import time
import unittest

from harness import (BAD_REQUEST, BUSY, CONFLICT, FORBIDDEN, NOT_FOUND, S_DONE, S_FRIEND_LIST_OK,
                     S_GROUP_CREATE_OK, S_HELLO_OK, S_HISTORY_OK, S_LOGIN_OK, S_MESSAGE, S_PONG,
                     S_PRESENCE, S_REGISTER_OK, S_SEND_OK, S_BYE, TOO_LARGE, UNAUTHENTICATED,
                     UNAVAILABLE, UNSUPPORTED, F_ACK, F_FRIEND_LIST, F_GROUP_DELETE, F_HELLO,
                     F_HISTORY, F_LOGIN, F_LOGOUT, F_PING, F_RECALL, F_REG, F_RESUME,
                     F_SEND_DIRECT, F_SEND_GROUP, F_FRIEND_ADD, F_GROUP_CREATE, F_GROUP_JOIN,
                     ChatPair, Closed, Peer, RawConn, Server, body, describe, error, expect_ok,
                     frame, frame_id, message_of, one, pb, pb_decode, pb_field, request)

PASSWORD = "secret123"


def hello_frame(req_id=1):
    return request(F_HELLO, pb((1, 1), (2, "hostile-test")), req_id)


def is_busy(f):
    e = error(f)
    return e is not None and e.code == BUSY


class HostileTest(unittest.TestCase):
    """A fresh parleyd at the default argon2id cost for each test, and the
    chatting pair (self.pair) started before the test body runs."""

    server_extra = ()
    pwhash_cost = os.environ.get("PARLEY_HOSTILE_COST", "interactive")
    with_pair = True

    def setUp(self):
        self.server = Server(extra=self.server_extra, pwhash_cost=self.pwhash_cost)
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.addCleanup(self._dump_logs_on_failure)
        self._setup_addr = 0
        self.pair = None
        if self.with_pair:
            self.pair = ChatPair(self.server.port)
            self.addCleanup(self.pair.stop)
            self.pair.start()

    def _dump_logs_on_failure(self):
        outcome = getattr(self, "_outcome", None)
        errors = getattr(outcome, "errors", None) or []
        if any(exc for _, exc in errors):
            if self.pair:
                print("\n" + self.pair.summary(), file=sys.stderr)
            print("---- parleyd log (tail) ----\n" + self.server.logs()[-4000:], file=sys.stderr)

    def check_pair(self):
        """The pair was never hurt by what the test did; prints its figures."""
        summary = self.pair.check(self)
        print("\n  " + summary, file=sys.stderr, end=" ")

    def peer(self, source=None, hello=True, timeout=10, port=None):
        p = Peer(port or self.server.port, source=source, hello=hello, timeout=timeout)
        self.addCleanup(p.close)
        return p

    def setup_addr(self):
        """A loopback address used for nothing else in this test."""
        self._setup_addr += 1
        return "127.0.1.%d" % self._setup_addr

    def new_user(self, name, password=PASSWORD, login=True, source=None):
        """Registers `name` (from a setup-only address) and logs it in on the
        returned Peer unless login is False: (peer, user id)."""
        p = self.peer(source or self.setup_addr(), timeout=30)
        uid = one(expect_ok(p.register(name, password), S_REGISTER_OK, "register " + name), 1)
        if login:
            expect_ok(p.login(name, password), S_LOGIN_OK, "login " + name)
        return p, uid

    def assert_rate(self, ok, burst, per_s, elapsed, what):
        """`ok` successes in `elapsed` seconds stay within a token bucket of
        `burst` refilled at `per_s` (plus a little slack for timing)."""
        bound = burst + per_s * elapsed + max(3, 0.1 * burst)
        self.assertLessEqual(ok, bound, "%s: %d accepted in %.1fs, a bucket of %d at %g/s allows "
                             "%.0f" % (what, ok, elapsed, burst, per_s, bound))


def pipeline(peer, frames, window=50, timeout=30):
    """Sends request frames ({id: bytes}) `window` at a time (under the 64 a
    connection may have in flight) and collects the replies: ({id: frame},
    closed, seconds). Stops early if the server closes the connection."""
    replies = {}
    ids = list(frames)
    t0 = time.monotonic()
    try:
        for i in range(0, len(ids), window):
            chunk = ids[i:i + window]
            peer.send_raw(b"".join(frames[r] for r in chunk))
            for r in chunk:
                replies[r] = peer.wait_reply(r, timeout)
    except (Closed, BrokenPipeError, ConnectionResetError):
        return replies, True, time.monotonic() - t0
    return replies, False, time.monotonic() - t0


class RegistrationFloodTest(HostileTest):
    def test_registration_flood_is_throttled_and_hurts_nobody(self):
        """40 connections x 50 `reg` frames at the default argon2id cost, from
        four addresses: each flooder gets RegisterOk (within the per-address
        rate), BUSY with a retry-after, or is disconnected; meanwhile the pair
        chats and an uninvolved user registers and logs in within 1 s."""
        addrs = ["127.0.0.%d" % i for i in range(2, 6)]
        lock = threading.Lock()
        ok_by_addr = collections.Counter()
        outcome = collections.Counter()
        wrong = []

        def flood(c):
            src = addrs[c % len(addrs)]
            try:
                conn = RawConn(self.server.port, src, timeout=60)
            except OSError as e:
                with lock:
                    wrong.append("connection %d from %s: %r" % (c, src, e))
                return
            try:
                conn.send(hello_frame(1) + b"".join(
                    request(F_REG, pb((1, "fl%d-%d" % (c, i)), (2, PASSWORD)), 100 + i)
                    for i in range(50)))
                answered = 0
                while answered < 50:
                    try:
                        f = conn.recv_frame(timeout=60)
                    except (ConnectionResetError, BrokenPipeError):
                        f = None
                    if f is None:
                        with lock:
                            outcome["unanswered, connection closed"] += 50 - answered
                        return
                    if frame_id(f) == 1:
                        continue
                    answered += 1
                    e = error(f)
                    with lock:
                        if S_REGISTER_OK in f:
                            outcome["RegisterOk"] += 1
                            ok_by_addr[src] += 1
                        elif e and e.code == BUSY and e.retry_after_ms > 0:
                            outcome["BUSY"] += 1
                        elif e and e.code == UNAVAILABLE:
                            # dropped unrun when its deadline passed
                            outcome["UNAVAILABLE"] += 1
                        else:
                            wrong.append("connection %d: %s" % (c, describe(f)))
            except socket.timeout:
                with lock:
                    wrong.append("connection %d: no reply within 60 s (%d answered)" %
                                 (c, answered))
            finally:
                conn.close()

        # What one registration costs here, before the flood: the hash at
        # the default cost, on this machine, now.
        probe = self.peer(timeout=30)
        t1 = time.monotonic()
        expect_ok(probe.register("probe"), S_REGISTER_OK, "a registration before the flood")
        one_hash = time.monotonic() - t1
        t0 = time.monotonic()
        threads = [threading.Thread(target=flood, args=(c,)) for c in range(40)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        # An uninvolved newcomer, from the pair's address, while the flood runs.
        newcomer = self.peer(timeout=30)
        t1 = time.monotonic()
        f = newcomer.register("newcomer")
        reg_s = time.monotonic() - t1
        expect_ok(f, S_REGISTER_OK, "the newcomer's registration")
        t1 = time.monotonic()
        f = newcomer.login("newcomer")
        login_s = time.monotonic() - t1
        expect_ok(f, S_LOGIN_OK, "the newcomer's login")
        for t in threads:
            t.join(timeout=90)
        elapsed = time.monotonic() - t0
        self.check_pair()
        self.assertEqual(wrong, [], "flooders got answers other than RegisterOk/BUSY/UNAVAILABLE")
        # The auth queue serves addresses in turn: ahead of the newcomer at
        # most one hash per flooding address and the ones under way, however
        # many each flooder queued. 1 s, or that many hashes on a slow machine.
        bound = max(1.0, (len(addrs) + 3) * one_hash)
        self.assertLess(reg_s, bound, "the newcomer's registration waited behind the flood "
                        "(one hash: %.2fs)" % one_hash)
        self.assertLess(login_s, bound, "the newcomer's login waited behind the flood "
                        "(one hash: %.2fs)" % one_hash)
        self.assertGreater(outcome["BUSY"] + outcome["UNAVAILABLE"] +
                           outcome["unanswered, connection closed"], 0,
                           "the flooder was never throttled: %r" % outcome)
        for src in addrs:
            # --reg-rate 10 per minute per address, bursts of 20
            self.assert_rate(ok_by_addr[src], 20, 10 / 60, elapsed, "registrations from " + src)
        logs = self.server.logs()
        self.assertRegex(logs, r"audit event=limit .*addr=127\.0\.0\.[2-5]\b",
                         "limit hits are audited with the source address")
        self.assertNotIn(PASSWORD, logs, "a password in the log")


    def test_work_of_closed_connections_is_dropped(self):
        """Registrations queued behind a flood by connections that then close
        are never done: their names are still free afterwards."""
        busy = []
        for a in range(4):
            for _ in range(4):
                c = RawConn(self.server.port, "127.0.0.%d" % (10 + a), timeout=60)
                self.addCleanup(c.close)
                c.send(hello_frame(1) + b"".join(
                    request(F_REG, pb((1, "busy%d-%d" % (len(busy), i)), (2, PASSWORD)), 100 + i)
                    for i in range(2)))
                busy.append(c)
        gone = []
        for k in range(4):
            c = RawConn(self.server.port, "127.0.0.14")
            names = ["gone%d-%d" % (k, i) for i in range(2)]
            c.send(hello_frame(1) + b"".join(request(F_REG, pb((1, n), (2, PASSWORD)), 100 + i)
                                             for i, n in enumerate(names)))
            c.reset() if k % 2 else c.close()
            gone += names
        # Let the queue drain: every busy connection gets its two answers.
        for c in busy:
            answered = 0
            while answered < 2:
                f = c.recv_frame(timeout=60)
                self.assertIsNotNone(f, "a busy connection was closed")
                if frame_id(f) >= 100:
                    answered += 1
        p = self.peer(self.setup_addr(), timeout=30)
        for name in gone:
            expect_ok(p.register(name), S_REGISTER_OK,
                      "'%s' was registered for a connection that had closed" % name)
        self.check_pair()


class WrongPasswordFloodTest(HostileTest):
    def test_guessing_one_account_is_delayed_and_owner_unaffected(self):
        """100 wrong passwords for one account from one address: after the
        free failures the guesser gets BUSY, the delay grows with each further
        failure, and the owner logs in from 127.0.0.1 at once."""
        _, victim = self.new_user("victim", login=False)
        # One login's cost here, now (a hash at the default cost), to judge
        # the owner's login against on a loaded machine.
        probe = self.peer()
        t1 = time.monotonic()
        expect_ok(probe.login("victim"), S_LOGIN_OK, "the owner's login before the guessing")
        one_login = time.monotonic() - t1
        probe.close()
        codes = []
        guesses = ["guess-%03d" % i for i in range(100)]
        t0 = time.monotonic()
        for c in range(10):  # new connections do not help the guesser
            g = self.peer("127.0.0.2", timeout=30)
            for i in range(10):
                f = g.login("victim", guesses[c * 10 + i])
                self.assertNotIn(S_LOGIN_OK, f, "a wrong password logged in")
                e = error(f)
                codes.append((e.code, e.retry_after_ms) if e else None)
        flood_s = time.monotonic() - t0
        # The owner, from another address, right after the flood.
        owner = self.peer()
        t1 = time.monotonic()
        f = owner.login("victim")
        owner_s = time.monotonic() - t1
        expect_ok(f, S_LOGIN_OK, "the owner's login during the guessing")
        # Not locked out, and not queued behind the guesses (each refused
        # before any hashing): 1 s, or a few logins' time on a slow machine.
        self.assertLess(owner_s, max(1.0, 3 * one_login),
                        "the owner's login was held up by the guesser (one login: %.2fs)" %
                        one_login)

        unauth = sum(1 for c in codes if c and c[0] == UNAUTHENTICATED)
        busy = [c[1] for c in codes if c and c[0] == BUSY]
        others = [c for c in codes if not c or c[0] not in (UNAUTHENTICATED, BUSY)]
        self.assertEqual(others, [], "answers other than UNAUTHENTICATED/BUSY")
        # --login-fail-free 5, then a delay of 1 s: the 100 guesses took
        # flood_s seconds, so at most a few more got through.
        self.assertGreaterEqual(unauth, 5, "the first free failures are plain UNAUTHENTICATED")
        self.assertLessEqual(unauth, 5 + int(flood_s) + 1,
                             "wrong passwords checked despite the delay: %r" % codes[:20])
        self.assertTrue(busy and all(r > 0 for r in busy), "BUSY without a retry_after_ms")

        # The delay doubles with each further failure: wait it out, fail again,
        # and the next retry_after is longer.
        g = self.peer("127.0.0.2", timeout=30)
        delays = []
        for _ in range(3):
            f = g.login("victim", "still-wrong")
            e = error(f)
            self.assertIsNotNone(e, describe(f))
            if e.code == UNAUTHENTICATED:
                f = g.login("victim", "still-wrong")
                e = error(f)
            self.assertEqual(e.code, BUSY, "a guess right after a failure: %r" % e)
            delays.append(e.retry_after_ms)
            if len(delays) < 3:
                time.sleep(e.retry_after_ms / 1000 + 0.1)
        self.assertTrue(delays[0] < delays[1] < delays[2],
                        "the retry_after should grow with each failure: %r" % delays)
        self.assertGreaterEqual(delays[2], 3000, "1 s doubling per failure: %r" % delays)
        # Still: the owner from elsewhere is not locked out.
        owner2 = self.peer()
        t1 = time.monotonic()
        expect_ok(owner2.login("victim"), S_LOGIN_OK, "the owner's second login")
        self.assertLess(time.monotonic() - t1, 1.0)
        self.check_pair()
        logs = self.server.logs()
        self.assertRegex(logs, r"audit event=login_failed .*name=victim .*addr=127\.0\.0\.2\b")
        for secret in [PASSWORD, "still-wrong", "guess-0"]:
            self.assertNotIn(secret, logs, "a password in the log")
        token = owner.token.decode()
        self.assertNotIn(token, logs, "a session token in the log")

    def test_failed_logins_per_address_are_rate_limited(self):
        """40 failed logins for 40 different names from one address: past the
        --login-fail-rate burst (30) the address gets BUSY."""
        g = [self.peer("127.0.0.3", timeout=30) for _ in range(4)]
        results = [None] * 40
        t0 = time.monotonic()

        def guess(k):
            for i in range(k, 40, 4):
                results[i] = g[k].login("nobody%d" % i, "wrong-password")

        threads = [threading.Thread(target=guess, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - t0
        self.check_pair()
        codes = [error(f).code if error(f) else None for f in results]
        self.assertTrue(all(c in (UNAUTHENTICATED, BUSY) for c in codes), codes)
        failed = codes.count(UNAUTHENTICATED)
        self.assertGreater(codes.count(BUSY), 0, "40 failed logins in %.1fs, none refused" %
                           elapsed)
        self.assert_rate(failed, 30, 30 / 60, elapsed, "failed logins from 127.0.0.3")


class FloodTest(HostileTest):
    def test_request_flood_on_one_connection(self):
        """2,000 pings on one connection: past --req-rate (100/s, bursts of
        200) they get BUSY with a retry-after (or the connection is closed)."""
        p = self.peer("127.0.0.2")
        frames = {i: request(F_PING, pb((1, i)), i) for i in range(1000, 3000)}
        replies, closed, elapsed = pipeline(p, frames, window=50)
        self.check_pair()
        pongs = sum(1 for f in replies.values() if S_PONG in f)
        busy = [f for f in replies.values() if is_busy(f)]
        other = [describe(f) for f in replies.values() if S_PONG not in f and not is_busy(f)]
        self.assertEqual(other, [])
        self.assertTrue(busy or closed, "2,000 requests in %.1fs, none refused" % elapsed)
        self.assertTrue(all(error(f).retry_after_ms > 0 for f in busy))
        self.assert_rate(pongs, 200, 100, elapsed, "pings on one connection")

    def test_message_flood_by_one_user(self):
        """One user sends 1,000 messages over four connections: past
        --msg-rate (30/s per user, bursts of 60) they get BUSY; exactly the
        messages answered send_ok reach the recipient, each once."""
        _, fid = self.new_user("flooder", login=False)
        rcpt, rid = self.new_user("recipient")
        conns = []
        for _ in range(4):
            p = self.peer("127.0.0.2")
            expect_ok(p.login("flooder"), S_LOGIN_OK)
            conns.append(p)
        results = [None] * 4

        def flood(k):
            frames = {i: request(F_SEND_DIRECT, pb((1, rid), (2, "flood %d/%d" % (k, i))), i)
                      for i in range(100, 350)}
            try:
                results[k] = pipeline(conns[k], frames, window=50)
            except Exception as e:  # reported by the main thread
                results[k] = e

        t0 = time.monotonic()
        threads = [threading.Thread(target=flood, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - t0
        sent = set()
        busy, other, closed = 0, [], False
        for k, r in enumerate(results):
            self.assertIsInstance(r, tuple, "message flood connection %d: %r" % (k, r))
            replies, was_closed, _ = r
            closed |= was_closed
            for f in replies.values():
                if S_SEND_OK in f:
                    sent.add(one(body(f, S_SEND_OK), 1))
                elif is_busy(f) and error(f).retry_after_ms > 0:
                    busy += 1
                else:
                    other.append(describe(f))
        self.assertEqual(other, [])
        self.assertTrue(busy or closed, "1,000 messages in %.1fs, none refused" % elapsed)
        self.assert_rate(len(sent), 60, 30, elapsed, "messages by one user")
        # The recipient gets exactly what was accepted.
        got = collections.Counter()
        deadline = time.monotonic() + 10
        while set(got) != sent and time.monotonic() < deadline:
            try:
                f = rcpt.wait_push(lambda g: S_MESSAGE in g, timeout=deadline - time.monotonic())
            except socket.timeout:
                break
            got[message_of(f[S_MESSAGE][0])["msgid"]] += 1
        rcpt.ping()  # anything still in flight arrives before the pong
        for f in rcpt.pushes:
            if S_MESSAGE in f:
                got[message_of(f[S_MESSAGE][0])["msgid"]] += 1
        self.assertEqual(set(got), sent, "the recipient's messages are those answered send_ok")
        self.assertEqual([m for m, n in got.items() if n > 1], [])
        self.check_pair()

    def test_history_flood(self):
        """Eight connections of one user ask for 50-message history pages as
        fast as they can: each is held to --req-rate, and the pair's sends do
        not wait behind the reads."""
        flooder, _ = self.new_user("historian", login=False)
        other, oid = self.new_user("talker")
        conns = []
        for _ in range(8):
            p = self.peer("127.0.0.2")
            expect_ok(p.login("historian"), S_LOGIN_OK)
            conns.append(p)
        me = conns[0].user_id
        for i in range(50):
            expect_ok(other.send(me, "history line %d " % i + "h" * 500), S_SEND_OK)
        results = [None] * 8

        def flood(k):
            frames = {i: request(F_HISTORY, pb((1, oid), (3, 100)), i) for i in range(100, 700)}
            try:
                results[k] = pipeline(conns[k], frames, window=50)
            except Exception as e:  # reported by the main thread
                results[k] = e

        threads = [threading.Thread(target=flood, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.check_pair()
        for k, r in enumerate(results):
            self.assertIsInstance(r, tuple, "history flood connection %d: %r" % (k, r))
            replies, closed, elapsed = r
            ok = [f for f in replies.values() if S_HISTORY_OK in f]
            busy = [f for f in replies.values() if is_busy(f) and error(f).retry_after_ms > 0]
            self.assertEqual(len(ok) + len(busy), len(replies),
                             [describe(f) for f in replies.values()
                              if S_HISTORY_OK not in f and not is_busy(f)][:5])
            # (A server slower than the limit answers them all: no BUSY due.)
            self.assert_rate(len(ok), 200, 100, elapsed, "history requests on connection %d" % k)
            for f in ok[:3]:
                self.assertEqual(len(body(f, S_HISTORY_OK).get(1, [])), 50)

    def test_ack_flood(self):
        """20,000 acks for conversations and seqs that do not exist (huge
        ones too): the flooder is throttled (BUSY or disconnected), no one
        else's cursor moves, and a huge ack of one's own conversation does not
        hide later messages."""
        victim, vid = self.new_user("victim", login=False)
        talker, tid = self.new_user("talker")
        _, kid = self.new_user("acker", login=False)
        # Three messages wait for the victim, offline.
        for i in range(3):
            expect_ok(talker.send(vid, "pending %d" % i), S_SEND_OK)
        expect_ok(talker.send(kid, "to the acker"), S_SEND_OK)
        k = self.peer("127.0.0.2")
        expect_ok(k.login("acker"), S_LOGIN_OK)
        conv = k.wait_push(lambda f: S_MESSAGE in f)
        own_conv = message_of(conv[S_MESSAGE][0])["conv"]
        # Within the request burst: every small conversation id, seq 2^64-1.
        for c in range(1, 120):
            k.ack(c, (1 << 64) - 1)
        expect_ok(k.ping(), S_PONG)
        # The flood: bogus and huge acks, then a ping, all in a few writes.
        rnd = 0x9E3779B97F4A7C15
        chunks = []
        for j in range(20):
            parts = []
            for i in range(1000):
                rnd = (rnd * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
                parts.append(frame(pb_field(1, 0) + pb_field(F_ACK, pb((1, rnd), (2, rnd >> 3)))))
            chunks.append(b"".join(parts))
        frames_seen, closed = [], False
        try:
            for ch in chunks:
                k.send_raw(ch)
            k.send_raw(request(F_PING, pb((1, 5)), 77))
            while True:
                f = k.recv(timeout=10)
                if f is None:
                    closed = True
                    break
                frames_seen.append(f)
                if frame_id(f) == 77:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        except socket.timeout:
            self.fail("no answer to a ping after the ack flood, and the connection is open")
        busy = [f for f in frames_seen if is_busy(f)]
        self.assertTrue(busy or closed, "20,000 acks and no BUSY nor disconnection: %r" %
                        [describe(f) for f in frames_seen[:5]])
        self.assertTrue(all(error(f).retry_after_ms > 0 for f in busy))
        # No one else's cursor moved: the victim gets all three.
        expect_ok(victim.login("victim"), S_LOGIN_OK)
        got = set()
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            f = victim.wait_push(lambda g: S_MESSAGE in g, timeout=deadline - time.monotonic())
            got.add(message_of(f[S_MESSAGE][0])["body"])
        self.assertEqual(got, {b"pending 0", b"pending 1", b"pending 2"})
        # The acker's own huge ack did not hide what comes later.
        expect_ok(talker.send(kid, "after the huge ack"), S_SEND_OK)
        k2 = self.peer("127.0.0.3")
        expect_ok(k2.login("acker"), S_LOGIN_OK)
        f = k2.wait_push(lambda g: S_MESSAGE in g, timeout=5)
        m = message_of(f[S_MESSAGE][0])
        self.assertEqual((m["conv"], m["body"]), (own_conv, b"after the huge ack"))
        self.check_pair()


class SlowlorisTest(HostileTest):
    # Idle at 4 s, above the frame timeout: the dribblers must be cut by the
    # frame timeout, and the pair, on a loaded machine, not by idleness.
    server_extra = ("--frame-timeout", "2", "--idle-timeout", "4", "--hello-timeout", "3",
                    "--login-timeout", "5")

    def dribbler(self, src, greet, out, i):
        """Sends one byte per second of a 1,000-byte frame; records (seconds
        from the first byte to the close, or None if never closed in 8 s)."""
        head = pb_field(1, 9) + pb_field(F_PING, pb((1, 1)))
        data = frame(head + pb_field(99, b"p" * (1000 - 4 - len(head) - 4)))
        assert len(data) == 1000, len(data)
        try:
            c = RawConn(self.server.port, src, timeout=10)
        except OSError as e:
            out[i] = "connect: %r" % e
            return
        try:
            if greet:
                c.send(hello_frame(1))
                f = c.recv_frame(timeout=5)
                if f is None or S_HELLO_OK not in f:
                    out[i] = "no hello_ok: %s" % describe(f)
                    return
            t0 = time.monotonic()
            c.sock.setblocking(False)
            for k in range(len(data)):
                try:
                    c.sock.send(data[k:k + 1])
                except (BrokenPipeError, ConnectionResetError):
                    out[i] = time.monotonic() - t0
                    return
                except BlockingIOError:
                    pass
                stop = time.monotonic() + 1.0
                while time.monotonic() < stop:
                    try:
                        chunk = c.sock.recv(4096)
                        if not chunk:
                            out[i] = time.monotonic() - t0
                            return
                    except BlockingIOError:
                        time.sleep(0.05)
                    except ConnectionResetError:
                        out[i] = time.monotonic() - t0
                        return
                if time.monotonic() - t0 > 8:
                    out[i] = None
                    return
        finally:
            c.close()

    def test_slowloris_connections_are_closed_by_frame_timeout(self):
        """20 connections dribbling one byte per second of a 1,000-byte frame
        (half after hello, half before) are all closed within the frame
        timeout (2 s) plus the sweep's slack: the loop checks once a second
        on a clock of whole seconds, so a limit of S closes within S + 2."""
        out = [None] * 20
        threads = [threading.Thread(target=self.dribbler,
                                    args=("127.0.0.%d" % (2 + i % 3), i % 2 == 0, out, i))
                   for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        self.check_pair()
        for i, r in enumerate(out):
            self.assertIsInstance(r, float, "connection %d (%s hello): %r" %
                                  (i, "after" if i % 2 == 0 else "before", r))
            self.assertLess(r, 4.5, "connection %d closed only after %.1fs" % (i, r))

    def _pinger(self, greet, out, key, every=0.5, limit=9.0):
        """Sends complete ping frames every `every` s (so neither the frame
        nor the idle timeout applies): records when the server closed it."""
        try:
            p = Peer(self.server.port, source="127.0.0.6", hello=greet, timeout=5)
        except Exception as e:  # recorded for the main thread
            out[key] = "connect: %r" % e
            return
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < limit:
                try:
                    p.send_req(F_PING, pb((1, 1)))
                except (BrokenPipeError, ConnectionResetError):
                    out[key] = time.monotonic() - t0
                    return
                if p.closed_within(every):
                    out[key] = time.monotonic() - t0
                    return
            out[key] = None
        finally:
            p.close()

    def test_hello_and_login_deadlines(self):
        """A connection that sends whole frames but never hello is closed by
        the hello timeout (3 s); one that says hello but never logs in, by the
        login timeout (5 s); a logged-in one that keeps pinging is closed by
        neither. (Deadlines are checked in whole seconds and never early: each
        closes between its timeout and 2 s later.)"""
        out = {}
        threads = [threading.Thread(target=self._pinger, args=(False, out, "no hello")),
                   threading.Thread(target=self._pinger, args=(True, out, "no login"))]
        for t in threads:
            t.start()
        steady, _ = self.new_user("steady")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8.5:
            # Every 0.5 s: the server's clock for the idle timeout (4 s) ticks
            # in whole seconds, so a quiet second may already count as two.
            time.sleep(0.5)
            f = steady.ping()
            self.assertIn(S_PONG, f, "a logged-in client pinging every 0.5 s")
        for t in threads:
            t.join(timeout=15)
        self.check_pair()
        nh, nl = out.get("no hello"), out.get("no login")
        self.assertIsInstance(nh, float, "a hello-less connection: %r" % (nh,))
        # Never before the limit; at most two whole-second ticks after it,
        # plus slack for a loaded machine.
        self.assertTrue(2.0 <= nh <= 5.5, "hello-less connection closed after %.1fs" % nh)
        self.assertIsInstance(nl, float, "a login-less connection: %r" % (nl,))
        self.assertTrue(4.0 <= nl <= 7.5, "login-less connection closed after %.1fs" % nl)
        self.assertFalse(steady.is_closed)

    def test_logged_in_client_dribbling_a_frame_is_cut(self):
        """A logged-in client that then sends one byte every 0.5 s without
        ever finishing a frame is closed by the frame timeout; any byte does
        not reset the idle clock."""
        p, _ = self.new_user("dribbler")
        t0 = time.monotonic()
        data = b"\x00\x00\x03\xe8" + b"\x08" * 100
        closed_at = None
        for k in range(len(data)):
            try:
                p.send_raw(data[k:k + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - t0
                break
            if p.closed_within(0.5):
                closed_at = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 8:
                break
        self.check_pair()
        self.assertIsNotNone(closed_at, "a frame dribbled for 8 s was not cut")
        self.assertLess(closed_at, 4.5, "2 s frame timeout, whole-second clock")


class ConnectionChurnTest(HostileTest):
    def test_2000_connections_opened_and_dropped(self):
        """2,016 connections from eight addresses, 28 at a time per address,
        opened and dropped (half after hello_ok, half by RST): every one gets
        its hello_ok, and afterwards each address may open 64 again."""
        addrs = ["127.0.0.%d" % i for i in range(2, 10)]
        lock = threading.Lock()
        failures = []
        count = collections.Counter()

        def churn(src):
            for rnd in range(9):
                conns = []
                try:
                    for i in range(28):
                        c = RawConn(self.server.port, src, timeout=10)
                        conns.append(c)
                        c.send(hello_frame(1))
                    for i, c in enumerate(conns):
                        if i % 2 == 0:
                            f = c.recv_frame(timeout=10)
                            if f is None:
                                raise ConnectionResetError("closed at once")
                            if S_HELLO_OK not in f:
                                raise AssertionError("no hello_ok: %s" % describe(f))
                except (ConnectionResetError, BrokenPipeError):
                    # The server had not yet seen the last round's closes,
                    # and this address was over its 64: closed at once, as
                    # the cap says. Not a failure; the end checks the count.
                    with lock:
                        count["refused"] += 1
                except Exception as e:  # reported by the main thread
                    with lock:
                        failures.append("%s round %d: %r" % (src, rnd, e))
                finally:
                    for i, c in enumerate(conns):
                        if i % 4 < 2:
                            c.reset()
                        else:
                            c.close()
                    with lock:
                        count[src] += len(conns)

        threads = [threading.Thread(target=churn, args=(a,)) for a in addrs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertEqual(failures, [])
        self.assertGreaterEqual(sum(n for k, n in count.items() if k != "refused"), 2000)
        # The per-address counts went back to zero: 64 at once work again
        # (after a moment for the server to see the last closes).
        time.sleep(0.5)
        for src in addrs[:2]:
            held = [self.peer(src) for _ in range(64)]
            for p in held:
                self.assertIn(S_PONG, p.ping())
            for p in held:
                p.close()
        self.check_pair()

    def test_65th_connection_from_one_address_is_closed(self):
        """--max-conns-per-ip 64: the 65th connection from one address is
        closed at once (no hello_ok); the 64 keep working, other addresses are
        not affected, and closing one lets a new one in."""
        src = "127.0.0.20"
        held = [self.peer(src) for _ in range(64)]
        extra = RawConn(self.server.port, src, timeout=5)
        self.addCleanup(extra.close)
        t0 = time.monotonic()
        try:
            extra.send(hello_frame(1))
            f = extra.recv_frame(timeout=3)
        except (BrokenPipeError, ConnectionResetError):
            f = None
        except socket.timeout:
            self.fail("the 65th connection from %s is still open after 3 s" % src)
        self.assertIsNone(f, "the 65th connection got %s" % describe(f))
        self.assertLess(time.monotonic() - t0, 1.5, "closed at once")
        for p in held:
            self.assertIn(S_PONG, p.ping(), "one of the 64")
        self.assertIn(S_PONG, self.peer("127.0.0.21").ping(), "another address")
        held[0].close()
        deadline = time.monotonic() + 3
        while True:
            try:
                again = Peer(self.server.port, source=src, timeout=2)
                self.addCleanup(again.close)
                break
            except (AssertionError, Closed, OSError, socket.timeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertIn(S_PONG, again.ping())
        self.check_pair()


class StringsTest(HostileTest):
    def assert_bad(self, f, what):
        e = error(f)
        self.assertIsNotNone(e, "%s was accepted: %s" % (what, describe(f)))
        self.assertEqual(e.code, BAD_REQUEST, "%s: %r" % (what, e))

    def test_embedded_nul_is_refused_and_nothing_truncated_is_stored(self):
        alice, aid = self.new_user("alice")
        bob, bid = self.new_user("bob")
        # A body with a NUL: refused, and no "visible" anywhere.
        self.assert_bad(alice.send(bid, "visible\0hidden"), "body with NUL")
        self.assert_bad(alice.send(bid, b"ok \xff\xfe"), "body with invalid UTF-8")
        expect_ok(alice.send(bid, "after"), S_SEND_OK)
        f = bob.wait_push(lambda g: S_MESSAGE in g, timeout=5)
        self.assertEqual(message_of(f[S_MESSAGE][0])["body"], b"after",
                         "the refused message was delivered")
        bodies = [m["body"] for m in alice.history_messages(peer=bid)]
        self.assertEqual(bodies, [b"after"])
        # A name with a NUL: refused, and "x" was not registered.
        p = self.peer(self.setup_addr())
        self.assert_bad(p.register("x\0evil", PASSWORD), "name with NUL")
        self.assert_bad(p.register("pwnul", PASSWORD + "\0tail"), "password with NUL")
        expect_ok(p.register("x", PASSWORD), S_REGISTER_OK, "'x' is free")
        expect_ok(p.register("pwnul", PASSWORD), S_REGISTER_OK, "'pwnul' is free")
        # A password with a tail: refused; without it, it works.
        q = self.peer()
        self.assert_bad(q.login("alice", PASSWORD + "\0tail"), "password + NUL tail")
        self.assert_bad(q.login("alice\0admin", PASSWORD), "login name with NUL")
        self.assertEqual(q.user_id, 0)
        expect_ok(q.login("alice", PASSWORD), S_LOGIN_OK, "the password without the tail")
        # A token with junk after a NUL: refused; the token itself resumes.
        token = q.token
        q.close()
        r = self.peer()
        self.assert_bad(r.resume(token + b"\0junk"), "token + NUL junk")
        f = r.resume(token)
        for _ in range(30):  # the first session may still be closing
            if error(f) is None or error(f).code != CONFLICT:
                break
            time.sleep(0.1)
            f = r.resume(token)
        expect_ok(f, S_LOGIN_OK, "the token without the junk")
        # Group name and description, hello's client string.
        self.assert_bad(alice.group_create("g\0evil", "d"), "group name with NUL")
        self.assert_bad(alice.group_create("g2", "desc\0tail"), "group desc with NUL")
        expect_ok(alice.group_create("g", "d"), S_GROUP_CREATE_OK, "'g' is free")
        expect_ok(alice.group_create("g2", "d"), S_GROUP_CREATE_OK, "'g2' is free")
        h = self.peer(hello=False)
        self.assert_bad(h.call(F_HELLO, pb((1, 1), (2, "cli\0ent"))), "hello.client with NUL")
        self.check_pair()

    def test_control_and_bidi_characters_in_names(self):
        """C0, C1 and bidi controls in user and group names are refused; in
        message bodies they are text, stored exactly."""
        alice, aid = self.new_user("alice")
        bob, bid = self.new_user("bob")
        p = self.peer(self.setup_addr())
        bad = ["a\u0085b", "a\u009bb", "\u202eevil", "a\u202db", "a\u200eb", "a\u200fb",
               "a\u2066b", "a\u2069b", "a\u061cb", "a\x01b", "a\x1bb", "a\x7fb", "a\tb",
               "a\nb"]
        for name in bad:
            self.assert_bad(p.register(name, PASSWORD), "user name %r" % name)
            self.assert_bad(alice.group_create(name, "d"), "group name %r" % name)
        # Ordinary non-ASCII is fine.
        expect_ok(p.register("Zoë 李", PASSWORD), S_REGISTER_OK, "a non-ASCII name")
        expect_ok(alice.group_create("Café ✓", "d"), S_GROUP_CREATE_OK)
        text = "line1\nline2 \u202e\u0085 \x01 ok ✓"
        expect_ok(alice.send(bid, text), S_SEND_OK, "controls in a body")
        f = bob.wait_push(lambda g: S_MESSAGE in g, timeout=5)
        self.assertEqual(message_of(f[S_MESSAGE][0])["body"].decode(), text)
        self.check_pair()


class AbortedLoginTest(HostileTest):
    def test_aborted_login_leaves_no_online_presence(self):
        """hello + login in one write, then close (FIN or RST, at several
        moments): the user's friend ends up seeing the user offline."""
        friend, fid = self.new_user("friend")
        user, uid = self.new_user("user")
        expect_ok(user.friend_add(fid), S_DONE)
        user.close()
        time.sleep(0.5)
        friend.ping()
        friend.pushes.clear()

        def presence_of_user(f):
            b = body(f, S_PRESENCE)
            return b is not None and one(b, 1) == uid

        def online_in_list():
            fl = expect_ok(friend.friend_list(), S_FRIEND_LIST_OK)
            for raw in fl.get(1, []):
                u = pb_decode(raw)
                if one(u, 1) == uid:
                    return bool(one(u, 3))
            self.fail("the user is not in the friend's list")

        # Presence does work: an ordinary login and close show online, then offline.
        ok = self.peer("127.0.0.3")
        expect_ok(ok.login("user"), S_LOGIN_OK)
        try:
            friend.wait_push(lambda f: presence_of_user(f) and one(body(f, S_PRESENCE), 2),
                             timeout=5)
        except socket.timeout:
            self.fail("a login did not tell the friend 'online'")
        ok.close()
        try:
            friend.wait_push(lambda f: presence_of_user(f) and not one(body(f, S_PRESENCE), 2),
                             timeout=5)
        except socket.timeout:
            self.fail("a plain disconnect did not tell the friend 'offline'")
        friend.pushes.clear()

        login = request(F_LOGIN, pb((2, "user"), (3, PASSWORD)), 2)
        for i in range(16):
            c = RawConn(self.server.port, "127.0.0.3")
            c.send(hello_frame(1) + login)
            time.sleep([0, 0.001, 0.02, 0.06, 0.12, 0.2, 0.3, 0][i % 8])
            if i % 2:
                c.reset()
            else:
                c.close()
        time.sleep(2.5)  # what was queued has been hashed by now, or dropped
        self.assertFalse(online_in_list(), "the friend sees the user online after aborted logins")
        states = [one(body(f, S_PRESENCE), 2) for f in friend.pushes if presence_of_user(f)]
        if states:
            self.assertEqual(states[-1], 0, "the last presence event the friend got is online")
        self.assertEqual(states.count(1), states.count(0),
                         "every online event is followed by an offline one: %r" % states)
        self.check_pair()


class SessionsAndCapsTest(HostileTest):
    server_extra = ("--sessions-per-user", "3", "--max-friends", "3", "--max-groups", "2",
                    "--max-members", "3")

    def resume_on_new_conn(self, token):
        """The reply to resume{token} on a fresh connection (a CONFLICT while
        the token's old connection is still closing is retried)."""
        for _ in range(30):
            p = self.peer("127.0.0.2")
            f = p.resume(token)
            if not (error(f) and error(f).code == CONFLICT):
                return f
            p.close()
            time.sleep(0.1)
        return f

    def test_sessions_per_user_are_bounded(self):
        """--sessions-per-user 3: a fourth password login drops the least
        recently used token; the three others still resume."""
        self.new_user("many", login=False)
        tokens = []
        for i in range(4):
            p = self.peer("127.0.0.2")
            expect_ok(p.login("many"), S_LOGIN_OK)
            tokens.append(p.token)
            p.close()
            time.sleep(0.05)
        e = error(self.resume_on_new_conn(tokens[0]))
        self.assertIsNotNone(e, "the oldest of four tokens still resumes")
        self.assertEqual(e.code, UNAUTHENTICATED, repr(e))
        for t in tokens[1:]:
            expect_ok(self.resume_on_new_conn(t), S_LOGIN_OK, "one of the newest three tokens")
        self.check_pair()

    def test_logout_from_every_device(self):
        """logout{all}: the user's other sessions get bye and are closed, no
        token of theirs resumes, and the password still logs in."""
        self.new_user("everywhere", login=False)
        dropped = self.peer("127.0.0.2")
        expect_ok(dropped.login("everywhere"), S_LOGIN_OK)
        dropped_token = dropped.token
        dropped.close()
        devices = []
        for i in range(3):
            p = self.peer("127.0.0.2")
            expect_ok(p.login("everywhere"), S_LOGIN_OK)
            devices.append(p)
        expect_ok(devices[0].logout(all_devices=True), S_DONE, "logout:all")
        for p in devices[1:]:
            self.assertTrue(p.closed_within(3), "another device's session was not closed")
            self.assertTrue(any(S_BYE in f for f in p.pushes), "no bye before the close")
        self.assert_code(devices[0].call(F_FRIEND_LIST), UNAUTHENTICATED, "after logout:all")
        for t in [dropped_token] + [p.token for p in devices]:
            e = error(self.resume_on_new_conn(t))
            self.assertIsNotNone(e, "a token resumed after logout:all")
            self.assertEqual(e.code, UNAUTHENTICATED, repr(e))
        again = self.peer()
        expect_ok(again.login("everywhere"), S_LOGIN_OK, "the password after logout:all")
        self.assertRegex(self.server.logs(), r"audit event=logout_all user=\d+")
        self.check_pair()

    def assert_code(self, f, code, what):
        e = error(f)
        self.assertIsNotNone(e, "%s: accepted (%s)" % (what, describe(f)))
        self.assertEqual(e.code, code, "%s: %r" % (what, e))

    def test_friend_group_and_member_caps(self):
        """--max-friends 3, --max-groups 2, --max-members 3: the request past
        a cap is BAD_REQUEST, and nothing is added."""
        u, uid = self.new_user("popular")
        friends = [self.new_user("f%d" % i) for i in range(4)]
        for p, fid in friends[:3]:
            expect_ok(u.friend_add(fid), S_DONE)
        self.assert_code(u.friend_add(friends[3][1]), BAD_REQUEST, "a fourth friend")
        self.assert_code(friends[3][0].friend_add(uid), BAD_REQUEST,
                         "befriending a user who has the most friends")
        fl = expect_ok(u.friend_list(), S_FRIEND_LIST_OK)
        self.assertEqual(len(fl.get(1, [])), 3)
        g1 = one(expect_ok(u.group_create("g1"), S_GROUP_CREATE_OK), 1)
        one(expect_ok(u.group_create("g2"), S_GROUP_CREATE_OK), 1)
        self.assert_code(u.group_create("g3"), BAD_REQUEST, "a third group")
        other_gid = one(expect_ok(friends[0][0].group_create("theirs"), S_GROUP_CREATE_OK), 1)
        self.assert_code(u.call(F_GROUP_JOIN, pb((1, other_gid))), BAD_REQUEST,
                         "joining a third group")
        for p, _ in friends[1:3]:
            expect_ok(p.call(F_GROUP_JOIN, pb((1, g1))), S_DONE)
        self.assert_code(friends[3][0].call(F_GROUP_JOIN, pb((1, g1))), BAD_REQUEST,
                         "a fourth member")
        expect_ok(friends[3][0].group_create("g3"), S_GROUP_CREATE_OK, "'g3' was not created")
        self.check_pair()


class ProtocolAttackTest(HostileTest):
    """Protocol-state, authorisation and framing attacks: each gets the
    documented error, and the server keeps serving the pair."""

    def assert_code(self, f, code, what):
        e = error(f)
        self.assertIsNotNone(e, "%s: accepted (%s)" % (what, describe(f)))
        self.assertEqual(e.code, code, "%s: %r" % (what, e))

    def test_requests_before_hello(self):
        p = self.peer("127.0.0.2", hello=False)
        reqs = [(F_PING, pb((1, 1))), (F_REG, pb((1, "early"), (2, PASSWORD))),
                (F_LOGIN, pb((2, "pair-a"), (3, PASSWORD))), (F_RESUME, pb((1, "x" * 43))),
                (F_SEND_DIRECT, pb((1, 1), (2, "hi"))), (F_HISTORY, pb((1, 1))),
                (F_LOGOUT, b""), (F_FRIEND_LIST, b"")]
        for field, b in reqs:
            self.assert_code(p.call(field, b), BAD_REQUEST, "request %d before hello" % field)
        expect_ok(p.call(F_HELLO, pb((1, 1))), S_HELLO_OK)
        expect_ok(p.register("early"), S_REGISTER_OK, "the refused early reg stored nothing")
        self.check_pair()

    def test_second_hello(self):
        """Not documented; the stricter choice: a second hello is refused with
        BAD_REQUEST and the session (logged in) is unchanged."""
        p, uid = self.new_user("twice")
        self.assert_code(p.call(F_HELLO, pb((1, 1))), BAD_REQUEST, "a second hello")
        expect_ok(p.call(F_FRIEND_LIST), S_FRIEND_LIST_OK, "still logged in")
        self.check_pair()

    def test_login_while_logged_in(self):
        p, uid = self.new_user("first")
        _, other = self.new_user("second", login=False)
        self.assert_code(p.login("second"), CONFLICT, "login while logged in")
        self.assert_code(p.login("first"), CONFLICT, "the same login again")
        self.assert_code(p.resume(p.token), CONFLICT, "resume while logged in")
        rcpt, rid = self.new_user("third")
        expect_ok(p.send(rid, "who am I"), S_SEND_OK)
        f = rcpt.wait_push(lambda g: S_MESSAGE in g, timeout=5)
        self.assertEqual(message_of(f[S_MESSAGE][0])["from"], uid, "still the first user")
        self.check_pair()

    def test_requests_before_login(self):
        p = self.peer("127.0.0.2")
        pid_b = self.pair.peers[1].user_id
        reqs = [(F_SEND_DIRECT, pb((1, pid_b), (2, "anon"))), (F_SEND_GROUP, pb((1, 1), (2, "x"))),
                (F_HISTORY, pb((1, pid_b))), (F_FRIEND_ADD, pb((1, pid_b))),
                (F_FRIEND_LIST, b""), (F_GROUP_CREATE, pb((1, "anon"))),
                (F_GROUP_JOIN, pb((1, 1))), (F_GROUP_DELETE, pb((1, 1))),
                (F_RECALL, pb((1, 1))), (F_LOGOUT, b"")]
        for field, b in reqs:
            self.assert_code(p.call(field, b), UNAUTHENTICATED, "request %d before login" % field)
        # An ack before login gets no reply at all and changes nothing.
        p.ack(1, (1 << 64) - 1)
        f = p.ping()
        self.assertIn(S_PONG, f, "the reply after an ack before login: %s" % describe(f))
        self.check_pair()
        self.assertNotIn(b"anon", self.pair.received, "a send before login was delivered")

    def test_send_to_missing_user_and_foreign_group(self):
        alice, aid = self.new_user("alice")
        owner, _ = self.new_user("owner")
        gid = one(expect_ok(owner.group_create("private", "d"), S_GROUP_CREATE_OK), 1)
        expect_ok(owner.send_group(gid, "secret group talk"), S_SEND_OK)
        for to in (0, 999999, (1 << 64) - 1):
            self.assert_code(alice.send(to, "hello?"), NOT_FOUND, "send to user %d" % to)
        self.assert_code(alice.send_group(gid, "let me in"), FORBIDDEN, "send to a foreign group")
        f = alice.send_group(999999, "nobody")
        self.assertIn(error(f).code if error(f) else None, (NOT_FOUND, FORBIDDEN), describe(f))
        self.assert_code(alice.history(group=gid), FORBIDDEN, "history of a foreign group")
        # Both peer and group: never the foreign group's messages.
        f = alice.history(peer=self.pair.peers[0].user_id, group=gid)
        h = body(f, S_HISTORY_OK)
        if h is not None:
            self.assertNotIn(b"secret group talk",
                             [message_of(m)["body"] for m in h.get(1, [])])
        hist = [m["body"] for m in owner.history_messages(group=gid)]
        self.assertEqual(hist, [b"secret group talk"], "nothing was added to the group")
        self.check_pair()

    def test_recall_and_delete_of_what_is_not_yours(self):
        alice, aid = self.new_user("alice")
        bob, bid = self.new_user("bob")
        msgid = one(expect_ok(alice.send(bid, "mine"), S_SEND_OK), 1)
        self.assert_code(bob.call(F_RECALL, pb((1, msgid))), FORBIDDEN, "recall of another's")
        f = bob.call(F_RECALL, pb((1, 987654321)))
        self.assertIn(error(f).code if error(f) else None, (NOT_FOUND, FORBIDDEN), describe(f))
        hist = alice.history_messages(peer=bid)
        self.assertEqual([(m["body"], m["recalled"]) for m in hist], [(b"mine", 0)])
        gid = one(expect_ok(alice.group_create("alices", "d"), S_GROUP_CREATE_OK), 1)
        self.assert_code(bob.call(F_GROUP_DELETE, pb((1, gid))), FORBIDDEN,
                         "delete of another's group by a non-member")
        expect_ok(bob.call(F_GROUP_JOIN, pb((1, gid))), S_DONE)
        self.assert_code(bob.call(F_GROUP_DELETE, pb((1, gid))), FORBIDDEN,
                         "delete of another's group by a member")
        expect_ok(alice.send_group(gid, "still here"), S_SEND_OK, "the group survived")
        self.check_pair()

    def test_file_requests(self):
        """Uploads and downloads (docs/protocol.md "Files") refuse what a
        well-behaved client never sends, and store nothing of it."""
        import hashlib
        f_begin, f_chunk, f_get = 60, 61, 62
        s_begin_ok, s_chunk_ok, s_data = 60, 61, 62
        alice, aid = self.new_user("alice")
        mallory, mid = self.new_user("mallory")
        data = os.urandom(5000)
        sha = hashlib.sha256(data).digest()

        def begin(p, name="a.bin", size=len(data), digest=sha, type_="text/plain"):
            return p.call(f_begin, pb((1, name), (2, size), (3, type_), (4, digest)))

        up = one(expect_ok(begin(alice), s_begin_ok, "file_begin"), 1)
        # a chunk at the wrong offset, past the announced size, empty
        self.assert_code(alice.call(f_chunk, pb((1, up), (2, 7), (3, data[:100]))), BAD_REQUEST,
                         "chunk at a bad offset")
        self.assert_code(alice.call(f_chunk, pb((1, up), (2, 0), (3, data + b"x"))), BAD_REQUEST,
                         "chunk past the announced size")
        self.assert_code(alice.call(f_chunk, pb((1, up), (2, 0))), BAD_REQUEST, "empty chunk")
        # someone else's upload, and one that does not exist
        self.assert_code(mallory.call(f_chunk, pb((1, up), (2, 0), (3, data))), FORBIDDEN,
                         "chunk into another user's upload")
        self.assert_code(mallory.call(f_chunk, pb((1, up + 1000), (2, 0), (3, b"x"))), NOT_FOUND,
                         "chunk into no upload")
        # a huge announced size, a malformed hash, bad names and types
        self.assert_code(begin(mallory, size=(1 << 64) - 1), TOO_LARGE, "a huge file")
        self.assert_code(begin(mallory, digest=sha[:31]), BAD_REQUEST, "a 31-byte hash")
        self.assert_code(begin(mallory, size=0, digest=hashlib.sha256(b"").digest()), BAD_REQUEST,
                         "an empty file")
        for name in ("a\u202egnp.exe", "../../etc/passwd", "", "x" * 300, "a\x00b"):
            self.assert_code(begin(mallory, name=name), BAD_REQUEST, "file name %r" % name[:20])
        self.assert_code(begin(mallory, type_="text/plain; x=<script>"), BAD_REQUEST, "type")
        # a send naming content the sender never uploaded
        self.assert_code(mallory.call(F_SEND_DIRECT, pb((1, aid), (4, pb((1, sha))))), BAD_REQUEST,
                         "attach content not uploaded")
        # alice finishes and sends to the pair; mallory may not read it
        expect_ok(alice.call(f_chunk, pb((1, up), (2, 0), (3, data))), s_chunk_ok, "chunk")
        to = self.pair.peers[0].user_id
        msgid = one(expect_ok(alice.call(F_SEND_DIRECT, pb((1, to), (4, pb((1, sha))))), S_SEND_OK,
                              "send the file"), 1)
        self.assert_code(mallory.call(f_get, pb((1, msgid))), FORBIDDEN, "read a stranger's file")
        self.assert_code(alice.call(f_get, pb((1, msgid), (2, 1 << 40))), BAD_REQUEST,
                         "read past the end")
        plain = one(expect_ok(alice.send(to, "no file"), S_SEND_OK), 1)
        self.assert_code(alice.call(f_get, pb((1, plain))), NOT_FOUND, "a message without a file")
        d = expect_ok(alice.call(f_get, pb((1, msgid), (3, 1 << 31))), s_data, "file_get")
        self.assertEqual(one(d, 3, b""), data)
        # uploads held per user are bounded
        codes = []
        for i in range(20):
            f = begin(mallory, name="f%d" % i, digest=hashlib.sha256(b"%d" % i).digest(), size=10)
            codes.append(error(f).code if error(f) else 0)
        self.assertEqual(codes[:16], [0] * 16)
        self.assertEqual(set(codes[16:]), {BUSY})
        self.check_pair()

    def test_resume_with_forged_tokens(self):
        alice, aid = self.new_user("alice")
        _, bid = self.new_user("bob")
        token = alice.token
        forged = [token[:-1], token[:20], token[:1], b"", token + b"A", token[:-1] + b"\xff",
                  bytes(reversed(token)), b"A" * 43, b"A" * 4096]
        for i, t in enumerate(forged):
            p = self.peer("127.0.0.2")
            f = p.resume(t)
            e = error(f)
            self.assertIsNotNone(e, "forged token %d resumed a session" % i)
            self.assertIn(e.code, (UNAUTHENTICATED, BAD_REQUEST), "forged token %d: %r" % (i, e))
        self.check_pair()

    def test_oversized_frames(self):
        for header in (b"\x00\x01\x00\x01", b"\xff\xff\xff\xff", b"\x80\x00\x00\x00"):
            p = self.peer("127.0.0.2")
            p.send_raw(header + b"x" * 64)
            f = p.recv(timeout=5)
            self.assertIsNotNone(f, "closed without an error")
            self.assert_code(f, TOO_LARGE, "header %r" % header)
            self.assertTrue(p.closed_within(3), "still open after an oversized header")
        self.check_pair()

    def test_zero_length_and_bodiless_frames(self):
        p = self.peer("127.0.0.2", hello=False)
        p.send_raw(frame(b""))
        self.assert_code(p.recv(), BAD_REQUEST, "an empty frame before hello")
        expect_ok(p.call(F_HELLO, pb((1, 1))), S_HELLO_OK)
        # 150: under the request burst (200), so no BUSY mixes in.
        p.send_raw(frame(b"") * 150 + request(F_PING, pb((1, 3)), 42))
        errs = []
        while True:
            f = p.recv(timeout=5)
            self.assertIsNotNone(f, "closed after empty frames")
            if frame_id(f) == 42:
                break
            errs.append(error(f).code if error(f) else describe(f))
        self.assertEqual(len(errs), 150, "one answer per empty frame")
        self.assertTrue(set(errs) <= {BAD_REQUEST, UNSUPPORTED}, set(errs))
        self.assertIn(S_PONG, f)
        self.check_pair()

    def test_garbage_protobuf(self):
        p = self.peer("127.0.0.2")
        garbage = [b"\x08", b"\x08\xff", b"\x52\x05\x08", b"\x0e\x01", b"\x0f", b"\x00\x01",
                   b"\x52\xff\xff\xff\xff\x0f", b"\x5a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                   b"\x08" + b"\xff" * 10 + b"\x01", b"\xff" * 64]
        for i, g in enumerate(garbage):
            p.send_raw(frame(g) + request(F_PING, pb((1, i)), 1000 + i))
            f = p.recv(timeout=5)
            self.assertIsNotNone(f, "closed by garbage %r" % g)
            self.assert_code(f, BAD_REQUEST, "garbage %r" % g)
            self.assertEqual(frame_id(p.recv(timeout=5)), 1000 + i, "the next request is served")
        self.check_pair()

    def test_unknown_fields(self):
        p = self.peer("127.0.0.2")
        unknown = (pb_field(99, 7) + pb_field(1000, b"xyz") + pb_field(536870911, 1) +
                   b"\x9d\x06" + b"\x01\x02\x03\x04" + b"\x99\x06" + b"\x00" * 8)
        f = p.call(F_PING, pb((1, 77)) + unknown)
        self.assertEqual(one(expect_ok(f, S_PONG, "a ping with unknown inner fields"), 1), 77)
        rid = p.take_id()
        p.send_raw(frame(pb_field(1, rid) + unknown + pb_field(F_PING, pb((1, 78))) + unknown))
        f = p.wait_reply(rid)
        self.assertEqual(one(expect_ok(f, S_PONG, "unknown outer fields"), 1), 78)
        rid = p.take_id()
        p.send_raw(frame(pb_field(1, rid) + unknown))
        f = p.wait_reply(rid)
        self.assertIn(error(f).code if error(f) else None, (UNSUPPORTED, BAD_REQUEST),
                      "only unknown fields: %s" % describe(f))
        self.check_pair()

    def test_frame_with_every_oneof_set(self):
        """protobuf keeps the last member of a oneof; with ping last the
        reply is a pong (or BAD_REQUEST), and none of the others ran."""
        target, tid = self.new_user("target")
        p = self.peer("127.0.0.2")
        members = [(F_HELLO, pb((1, 1))), (F_ACK, pb((1, 1), (2, 5))),
                   (F_REG, pb((1, "oneofevil"), (2, PASSWORD))),
                   (F_LOGIN, pb((2, "target"), (3, PASSWORD))), (F_RESUME, pb((1, "t" * 43))),
                   (F_LOGOUT, b""), (F_FRIEND_ADD, pb((1, tid))), (31, pb((1, tid))),
                   (F_FRIEND_LIST, b""), (F_GROUP_CREATE, pb((1, "oneofgroup"))),
                   (F_GROUP_JOIN, pb((1, 1))), (42, pb((1, 1))), (F_GROUP_DELETE, pb((1, 1))),
                   (F_SEND_DIRECT, pb((1, tid), (2, "oneof evil"))),
                   (F_SEND_GROUP, pb((1, 1), (2, "oneof evil"))), (F_HISTORY, pb((1, tid))),
                   (F_RECALL, pb((1, 1))), (F_PING, pb((1, 4242)))]
        rid = p.take_id()
        p.send_raw(frame(pb_field(1, rid) + b"".join(pb_field(n, b) for n, b in members)))
        f = p.wait_reply(rid)
        if S_PONG in f:
            self.assertEqual(one(body(f, S_PONG), 1), 4242)
        else:
            self.assert_code(f, BAD_REQUEST, "a frame with every oneof set")
        self.assertIn(S_PONG, p.ping(), "the connection still works")
        self.assert_code(p.call(F_FRIEND_LIST), UNAUTHENTICATED, "not logged in by the login")
        q = self.peer(self.setup_addr())
        expect_ok(q.register("oneofevil"), S_REGISTER_OK, "the reg member did not run")
        target.ping()
        self.assertEqual(target.messages(), [], "the send member did not run")
        self.check_pair()

    def test_negative_and_huge_varints(self):
        p, uid = self.new_user("varint")
        top = (1 << 64) - 1
        rid = top
        p.send_raw(frame(pb_field(1, rid) + pb_field(F_PING, pb((1, -1)))))
        f = p.recv(timeout=5)
        self.assertEqual(frame_id(f), top, "a huge request id is echoed")
        self.assertEqual(one(body(f, S_PONG), 1), top)
        self.assert_code(p.send(-1, "neg"), NOT_FOUND, "send to user -1")
        pid_a = self.pair.peers[0].user_id
        for limit in (-1, 1 << 32, (1 << 32) + 5, 0xFFFFFFFF):
            f = p.history(peer=pid_a, limit=limit, before=top)
            h = body(f, S_HISTORY_OK)
            if h is None:
                self.assert_code(f, BAD_REQUEST, "history limit %d" % limit)
            else:
                self.assertLessEqual(len(h.get(1, [])), 100)
        # An 11-byte varint is malformed.
        p.send_raw(frame(b"\x08" + b"\x80" * 10 + b"\x01"))
        self.assert_code(p.recv(timeout=5), BAD_REQUEST, "an over-long varint")
        self.assertIn(S_PONG, p.ping())
        self.check_pair()

    def test_deeply_nested_unknown_groups(self):
        p = self.peer("127.0.0.2")
        depth = 30000
        nested_groups = b"\x9b\x06" * depth + b"\x9c\x06" * depth  # field 99, start/end group
        p.send_raw(frame(pb_field(1, 5) + nested_groups[:65000]))
        f = p.recv(timeout=10)
        self.assertIsNotNone(f, "the server closed (or died) on nested groups")
        self.assertIn(error(f).code if error(f) else None, (BAD_REQUEST, UNSUPPORTED),
                      describe(f))
        inner = pb_field(F_PING, pb((1, 6)) + b"\x9b\x06" * 1000 + b"\x9c\x06" * 1000)
        p.send_raw(frame(pb_field(1, 6) + inner))
        f = p.recv(timeout=10)
        self.assertIsNotNone(f, "closed on groups nested in a ping")
        self.assertTrue(S_PONG in f or (error(f) and error(f).code == BAD_REQUEST), describe(f))
        # Length-delimited unknown fields nested 8,000 deep.
        blob = b""
        for _ in range(8000):
            blob = pb_field(99, blob)
            if len(blob) > 60000:
                break
        p.send_raw(frame(pb_field(1, 7) + blob + pb_field(F_PING, pb((1, 7)))))
        f = p.recv(timeout=10)
        self.assertIsNotNone(f, "closed on nested unknown fields")
        self.assertIn(S_PONG, f, describe(f))
        self.assertIn(S_PONG, p.ping())
        self.check_pair()


class BacklogTest(HostileTest):
    # The backlog is written by four senders as fast as the store takes it,
    # so the message and request rates are lifted for this test.
    server_extra = ("--msg-rate", "0", "--req-rate", "0")

    def test_slow_reader_catches_up_a_50mb_backlog(self):
        """12,800 x 4,000-byte messages wait for a returning user, who reads at
        10 MB/s through a small receive buffer: every message arrives exactly
        once and the connection is never cut."""
        total, size = 12800, 4000
        _, rid = self.new_user("returning", login=False)
        senders = [self.new_user("sender%d" % k)[0] for k in range(4)]
        errs = []

        def fill(k):
            try:
                s = senders[k]
                frames = {}
                for i in range(k, total, 4):
                    head = "%06d " % i
                    frames[i + 1] = request(F_SEND_DIRECT, pb((1, rid), (2, head + "m" * (
                        size - len(head)))), i + 1)
                replies, closed, _ = pipeline(s, frames, window=60, timeout=60)
                bad = [describe(f) for f in replies.values() if S_SEND_OK not in f]
                if closed or bad:
                    errs.append("sender %d: closed=%s %r" % (k, closed, bad[:3]))
            except Exception as e:  # reported by the main thread
                errs.append("sender %d: %r" % (k, e))

        t0 = time.monotonic()
        threads = [threading.Thread(target=fill, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        self.assertEqual(errs, [])
        fill_s = time.monotonic() - t0

        # The reader: a 64 KiB receive buffer and recv() paced to 10 MB/s.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        sock.bind(("127.0.0.7", 0))
        sock.connect(("127.0.0.1", self.server.port))
        sock.sendall(hello_frame(1) + request(F_LOGIN, pb((2, "returning"), (3, PASSWORD)), 2))
        rate = 10e6
        buf = bytearray()
        got = collections.Counter()
        cursors = {}
        read = 0
        closed = None
        start = time.monotonic()
        deadline = start + 120
        since_ack = 0
        while sum(got.values()) < total and time.monotonic() < deadline:
            try:
                chunk = sock.recv(16384)
            except socket.timeout:
                closed = "no data for 10 s after %d messages" % len(got)
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = "closed by the server after %d messages" % len(got)
                break
            read += len(chunk)
            buf += chunk
            pos = 0
            while len(buf) - pos >= 4:
                n = struct.unpack_from(">I", buf, pos)[0]
                if len(buf) - pos < 4 + n:
                    break
                f = pb_decode(bytes(buf[pos + 4:pos + 4 + n]))
                pos += 4 + n
                if S_MESSAGE in f:
                    m = message_of(f[S_MESSAGE][0])
                    got[m["msgid"]] += 1
                    cursors[m["conv"]] = max(cursors.get(m["conv"], 0), m["seq"])
                    since_ack += 1
                elif frame_id(f) == 2 and S_LOGIN_OK not in f:
                    self.fail("login refused: %s" % describe(f))
            del buf[:pos]
            if since_ack >= 256:  # acks as a real client sends them
                sock.sendall(b"".join(frame(pb_field(1, 0) + pb_field(F_ACK, pb((1, c), (2, s))))
                                      for c, s in cursors.items()))
                since_ack = 0
            ahead = read / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        read_s = time.monotonic() - start
        print("\n  backlog: filled in %.1fs, %.1f MB read in %.1fs" % (fill_s, read / 1e6, read_s),
              file=sys.stderr, end=" ")
        self.assertIsNone(closed)
        self.assertEqual(len(got), total, "messages that arrived")
        self.assertEqual([m for m, n in got.items() if n > 1], [], "messages that arrived twice")
        self.check_pair()


class ShutdownTest(HostileTest):
    def flood_and_stop(self, per_conn, conns):
        """Sends `conns` x `per_conn` registrations (default argon2id cost)
        from `conns` addresses, SIGTERMs the server while they are queued, and
        returns (exit code, seconds to exit, {name: user id}, refused names)."""
        addrs = ["127.0.2.%d" % (i + 1) for i in range(conns)]
        socks = []
        for k, src in enumerate(addrs):
            c = RawConn(self.server.port, src, timeout=10)
            self.addCleanup(c.close)
            socks.append(c)
        names = {}
        for k, c in enumerate(socks):
            data = [hello_frame(1)]
            for i in range(per_conn):
                name = "q%d-%d" % (k, i)
                names[(k, 100 + i)] = name
                data.append(request(F_REG, pb((1, name), (2, PASSWORD)), 100 + i))
            c.send(b"".join(data))
        replies = {}
        lock = threading.Lock()

        def read(k, c):
            while True:
                try:
                    f = c.recv_frame(timeout=15)
                except (socket.timeout, ConnectionResetError, OSError):
                    return
                if f is None:
                    return
                if frame_id(f) >= 100:
                    with lock:
                        replies[(k, frame_id(f))] = f

        readers = [threading.Thread(target=read, args=(k, c)) for k, c in enumerate(socks)]
        for t in readers:
            t.start()
        time.sleep(1.0)  # the queue fills; a few hashes run
        self.check_pair()
        with lock:
            done_before = sum(1 for f in replies.values() if S_REGISTER_OK in f)
        t0 = time.monotonic()
        self.server.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.server.proc.wait(timeout=30)
        except Exception:
            rc = None
        exit_s = time.monotonic() - t0
        for t in readers:
            t.join(timeout=20)
        ok, refused, wrong = {}, [], []
        for key, name in names.items():
            f = replies.get(key)
            if f is None:
                continue
            e = error(f)
            if S_REGISTER_OK in f:
                ok[name] = one(body(f, S_REGISTER_OK), 1)
            elif e and (e.code == UNAVAILABLE or (e.code == BUSY and e.retry_after_ms > 0)):
                refused.append(name)
            else:
                wrong.append(describe(f))
        unanswered = len(names) - len(ok) - len(refused) - len(wrong)
        print("\n  shutdown: %d registered (%d before SIGTERM), %d refused, %d unanswered, "
              "exit in %.2fs" % (len(ok), done_before, len(refused), unanswered, exit_s),
              file=sys.stderr, end=" ")
        self.assertEqual(wrong, [], "answers other than RegisterOk/UNAVAILABLE/BUSY")
        # Queued work is answered UNAVAILABLE; only the few hashes running
        # when SIGTERM came may lose their reply with the connection.
        self.assertLessEqual(unanswered, 4, "registrations never answered")
        return rc, exit_s, ok, refused

    def check_consistent(self, ok, refused):
        """Restarts the server on the same data: every RegisterOk logs in with
        its id, and a sample of the refused names is free to register."""
        again = Server(data=self.server.data, pwhash_cost="interactive")
        self.addCleanup(again.cleanup)
        again.start()
        names = sorted(ok)
        errs = []

        def check(part):
            p = Peer(again.port, source="127.0.3.%d" % (part + 1), timeout=30)
            try:
                for name in names[part::4]:
                    f = p.login(name)
                    if S_LOGIN_OK not in f or p.user_id != ok[name]:
                        errs.append("%s: %s" % (name, describe(f)))
                    else:
                        p.logout()
            finally:
                p.close()

        threads = [threading.Thread(target=check, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertEqual(errs, [], "registrations answered RegisterOk that do not log in")
        p = Peer(again.port, source="127.0.3.9", timeout=30)
        self.addCleanup(p.close)
        for name in refused[::max(1, len(refused) // 10)][:10]:
            expect_ok(p.register(name), S_REGISTER_OK, "a refused registration left '%s'" % name)

    def test_sigterm_with_1000_registrations_queued(self):
        """1,000 registrations from 25 connections and addresses, at the
        default argon2id cost and limits (most are BUSY at once): SIGTERM,
        the server exits 0 within 5 s, and what was answered RegisterOk is
        there after a restart."""
        rc, exit_s, ok, refused = self.flood_and_stop(40, 25)
        self.assertEqual(rc, 0, "exit code on SIGTERM")
        self.assertLess(exit_s, 5.0, "seconds from SIGTERM to exit")
        self.check_consistent(ok, refused)


class ShutdownUnboundedQueueTest(ShutdownTest):
    # The queue bounds and the registration rate lifted, so that 1,000
    # registrations really are queued when SIGTERM comes.
    server_extra = ("--reg-rate", "0", "--auth-queue-per-conn", "0", "--auth-queue-per-ip", "0",
                    "--auth-queue", "0")

    def test_sigterm_with_1000_registrations_queued(self):
        """The same with every registration queued: the queued ones are
        answered UNAVAILABLE, the server exits 0 within 5 s, and nothing is
        half-written."""
        rc, exit_s, ok, refused = self.flood_and_stop(40, 25)
        self.assertEqual(rc, 0, "exit code on SIGTERM")
        self.assertLess(exit_s, 5.0, "seconds from SIGTERM to exit")
        self.assertGreater(len(refused), 500, "queued registrations answered UNAVAILABLE")
        self.check_consistent(ok, refused)


if __name__ == "__main__":
    unittest.main()
