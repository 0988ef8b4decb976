"""200 clients exchanging 20,000 direct and group messages at once: every
message reaches every recipient session exactly once, in seq order per
conversation."""
import queue
import random
import time
import unittest
from collections import defaultdict

from harness import ParleyTest

USERS = 200
GROUP_SIZE = 10
DIRECT_PER_USER = 50
GROUP_PER_USER = 50


class LoadTest(ParleyTest):
    # 200 users on one address, each sending as fast as it can: a load test,
    # not an abuse test, so the per-address and rate limits are off.
    server_extra = ("--max-conns-per-ip", "0", "--reg-rate", "0", "--auth-queue-per-ip", "0",
                    "--auth-queue", "0", "--msg-rate", "0", "--req-rate", "0")

    def test_200_clients_20000_messages(self):
        rnd = random.Random(42)
        admin = self.client()
        ids = [admin.ok("register:u%03d:secret123" % i)["id"] for i in range(USERS)]
        clients = [self.client(wait_ms=100) for _ in range(USERS)]
        for i, c in enumerate(clients):
            c.send_line("login:u%03d:secret123" % i)
        for c in clients:
            self.assertTrue(c.cmd_reply_pending_ok())

        groups = []  # (group id, member indexes)
        for start in range(0, USERS, GROUP_SIZE):
            members = list(range(start, start + GROUP_SIZE))
            gid = clients[members[0]].ok("creategroup:load%d:" % start)["id"]
            for m in members[1:]:
                clients[m].send_line("addgroup:%d" % gid)
            for m in members[1:]:
                self.assertTrue(clients[m].cmd_reply_pending_ok())
            groups.append((gid, members))
        group_of = {m: g for g in groups for m in g[1]}

        # Everyone sends at once: each client gets its whole script in one
        # write and runs it line by line.
        plans = []
        for i, c in enumerate(clients):
            plan = []
            for k in range(DIRECT_PER_USER + GROUP_PER_USER):
                if k % 2 == 0:
                    j = rnd.randrange(USERS - 1)
                    j = j + 1 if j >= i else j
                    plan.append(("d", j, "d %d->%d #%d" % (i, j, k)))
                else:
                    plan.append(("g", group_of[i][0], "g %d #%d" % (i, k)))
            plans.append(plan)
            c.send_lines(["chat:%d:%s" % (ids[t], body) if kind == "d" else
                          "groupchat:%d:%s" % (t, body) for kind, t, body in plan])

        expected = defaultdict(set)  # client index -> msgids it must receive
        for i, c in enumerate(clients):
            replies = c.collect_replies(len(plans[i]), timeout=300)
            for (kind, target, _), r in zip(plans[i], replies):
                self.assertTrue(r["ok"], r)
                if kind == "d":
                    expected[target].add(r["msgid"])
                else:
                    for m in group_of[i][1]:
                        if m != i:
                            expected[m].add(r["msgid"])
        total = sum(len(v) for v in expected.values())
        self.assertEqual(total, USERS * DIRECT_PER_USER + USERS * GROUP_PER_USER * (GROUP_SIZE - 1))

        deadline = time.time() + 300
        for i, c in enumerate(clients):
            c.collect_messages(len(expected[i]), deadline)
        extra = time.time() + 1.0  # then anything extra, duplicates included
        for i, c in enumerate(clients):
            c.collect_messages(None, extra)
            got = [e for e in c.events if e.get("type") == "message"]
            ids_got = [m["msgid"] for m in got]
            self.assertEqual(len(ids_got), len(set(ids_got)), "client %d saw a duplicate" % i)
            self.assertEqual(set(ids_got), expected[i], "client %d: lost or stray messages" % i)
            last = {}
            for m in got:
                conv = m["conv"]
                self.assertGreater(m["seq"], last.get(conv, 0),
                                   "client %d: conversation %d out of order" % (i, conv))
                last[conv] = m["seq"]


# Small helpers on the harness client for driving many clients at once.
def _send_lines(self, lines):
    self.proc.stdin.write(("\n".join(lines) + "\n").encode())
    self.proc.stdin.flush()


def _collect_replies(self, n, timeout):
    deadline = time.time() + timeout
    replies = []
    self.nmsgs = getattr(self, "nmsgs", 0)
    while len(replies) < n:
        obj = self._next(deadline)
        if obj.get("type") == "reply":
            replies.append(obj)
        else:
            self.events.append(obj)
            self.nmsgs += obj.get("type") == "message"
    return replies


def _cmd_reply_pending_ok(self):
    return _collect_replies(self, 1, 60)[0].get("ok", False)


def _collect_messages(self, want, deadline):
    while True:
        if want is not None and self.nmsgs >= want:
            return
        try:
            obj = self._next(deadline) if time.time() < deadline else self.lines.get_nowait()
            if obj is None:
                return
            self.events.append(obj)
            self.nmsgs += obj.get("type") == "message"
        except (TimeoutError, queue.Empty):
            if want is None:
                return
            raise AssertionError("waited for %d messages, got %d" % (want, self.nmsgs))


from harness import Client  # noqa: E402

Client.send_lines = _send_lines
Client.collect_replies = _collect_replies
Client.cmd_reply_pending_ok = _cmd_reply_pending_ok
Client.collect_messages = _collect_messages

if __name__ == "__main__":
    unittest.main()
