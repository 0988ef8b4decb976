"""A send answered with send_ok survives a crash of parleyd.

parleyd is killed with SIGKILL, at a random moment, while a sender has
sixteen sends in flight; then it is started again on the same data
directory, and again killed, many times. Afterwards the recipients log in:
every message that got its send_ok is delivered to them exactly once, the
conversation's seqs have no gap and no repeat, and history agrees. (A send
whose reply the crash swallowed may or may not be stored; if it is, it is
delivered once like any other.)"""

import os
import random
import shutil
import signal
import socket
import tempfile
import time
import unittest

from harness import (F_GROUP_JOIN, F_SEND_DIRECT, F_SEND_GROUP, S_DONE, S_GROUP_CREATE_OK,
                     S_HISTORY_OK, S_LOGIN_OK, S_MESSAGE, S_REGISTER_OK, S_SEND_OK, Closed, Peer,
                     Server, expect_ok, frame_id, message_of, one, pb)

ROUNDS = 30
IN_FLIGHT = 16
LIMITS_OFF = ("--msg-rate", "0", "--req-rate", "0")


class CrashDuringSendsTest(unittest.TestCase):

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="parley-durability-")
        self.addCleanup(shutil.rmtree, self.data, True)
        self.server = None
        self.addCleanup(self._stop)

    def _stop(self):
        # SIGTERM for the last one: it must exit 0, and no round may have
        # left a sanitizer report in the (shared) log.
        if self.server:
            self.server.cleanup()

    def start(self, port=None):
        self.server = Server(data=self.data, extra=LIMITS_OFF)
        if port:
            self.server.port = port  # clients come back to the same address
        return self.server.start()

    def login(self, name):
        p = Peer(self.server.port, timeout=20)
        expect_ok(p.login(name), S_LOGIN_OK, "login " + name)
        return p

    def storm(self, rnd, round_no, to, group, acked):
        """Sends from alice until parleyd dies; files every send_ok'd body."""
        p = self.login("alice")
        pending = {}  # request id -> body
        sent = 0
        # Killed after a random number of sends: the storm stays a few
        # hundred messages a round, however fast the build.
        kill_after = rnd.randint(50, 400)
        killed = False
        try:
            while True:
                while len(pending) < IN_FLIGHT:
                    text = "r%02d-%05d" % (round_no, sent)
                    if sent % 4 == 3:
                        rid = p.send_req(F_SEND_GROUP, pb((1, group), (2, text)))
                    else:
                        rid = p.send_req(F_SEND_DIRECT, pb((1, to), (2, text)))
                    pending[rid] = text
                    sent += 1
                if not killed and sent >= kill_after:
                    # The moment the process dies, sends are in every state:
                    # unsent, in the kernel, queued, being stored, answered.
                    os.kill(self.server.proc.pid, signal.SIGKILL)
                    killed = True
                f = p.recv(timeout=10)
                if f is None:
                    break
                rid = frame_id(f)
                if rid in pending:
                    text = pending.pop(rid)
                    if S_SEND_OK in f:
                        acked.append(text)
                    else:
                        self.fail("send %s refused: %r" % (text, f))
        except (Closed, ConnectionError, socket.timeout):
            pass
        finally:
            p.close()
            self.server.proc.wait()
            self.server.stop()
        self.assertTrue(killed, "the server went away by itself")
        return sent

    def catch_up(self, name):
        """Everything pushed to `name` at login, acked as it comes."""
        p = self.login(name)
        got = []
        quiet_until = time.monotonic() + 3
        while time.monotonic() < quiet_until:
            try:
                f = p.recv(timeout=0.5)
            except socket.timeout:
                continue
            if f is None:
                if p.is_closed:
                    break
                continue
            if S_MESSAGE in f:
                m = message_of(f[S_MESSAGE][0])
                got.append(m)
                p.ack(m["conv"], m["seq"])
                quiet_until = time.monotonic() + 3
        for f in p.pushes:
            if S_MESSAGE in f:
                got.append(message_of(f[S_MESSAGE][0]))
        return p, got

    def test_sigkill_during_send_storm_loses_no_send_ok(self):
        rnd = random.Random(1807)
        self.start()
        port = self.server.port
        admin = Peer(port)
        for name in ("alice", "bob", "carol"):
            expect_ok(admin.register(name), S_REGISTER_OK, "register " + name)
        alice, bob, carol = (self.login(n) for n in ("alice", "bob", "carol"))
        g = one(expect_ok(alice.group_create("crashers"), S_GROUP_CREATE_OK, "group"), 1)
        for q in (bob, carol):
            expect_ok(q.call(F_GROUP_JOIN, pb((1, g))), S_DONE, "join")
        bob_id = bob.user_id
        for q in (admin, alice, bob, carol):
            q.close()
        self.server.stop()

        acked, sent = [], 0
        for r in range(ROUNDS):
            self.start(port)
            sent += self.storm(rnd, r, bob_id, g, acked)
        self.assertGreater(len(acked), ROUNDS * 10, "too few sends were answered to mean much")

        self.start(port)
        want_direct = [t for t in acked if int(t.split("-")[1]) % 4 != 3]
        want_group = [t for t in acked if int(t.split("-")[1]) % 4 == 3]
        bob_p, bob_got = self.catch_up("bob")
        carol_p, carol_got = self.catch_up("carol")

        def bodies(msgs, group):
            return [m["body"].decode() for m in msgs
                    if bool(m["group"]) == group and not m["kind"]]  # texts, not events

        for who, got, want, group in (("bob", bob_got, want_direct, False),
                                      ("bob", bob_got, want_group, True),
                                      ("carol", carol_got, want_group, True)):
            seen = bodies(got, group)
            dups = sorted({b for b in seen if seen.count(b) > 1})
            self.assertEqual(dups, [], "%s got these twice" % who)
            missing = sorted(set(want) - set(seen))
            self.assertEqual(missing, [], "%s never got these send_ok'd messages (%d of %d)" %
                             (who, len(missing), len(want)))
            # Seqs of each conversation: gap-free, each once, from 1 (or,
            # for carol, from her own join: bob's join event, seq 1, came
            # before her cursor).
            for conv in {m["conv"] for m in got if bool(m["group"]) == group}:
                seqs = sorted(m["seq"] for m in got if m["conv"] == conv)
                first = 2 if who == "carol" else 1
                self.assertEqual(seqs, list(range(first, first + len(seqs))),
                                 "%s: conversation %d has gaps or repeats" % (who, conv))
        # History says the same as the catch-up.
        hist, before = [], None
        while True:
            h = expect_ok(bob_p.history(group=g, limit=500, before=before), S_HISTORY_OK,
                          "history")
            page = [message_of(m) for m in h.get(1, [])]
            if not page:
                break
            hist = page + hist
            before = page[0]["seq"]
            if before <= 1:
                break
        self.assertEqual(sorted(m["body"].decode() for m in hist if not m["kind"]),
                         sorted(bodies(bob_got, True)))
        print("\n  %d SIGKILLs: %d sends, %d answered, %d stored in the group" %
              (ROUNDS, sent, len(acked), len(hist)), end=" ")
        bob_p.close()
        carol_p.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
