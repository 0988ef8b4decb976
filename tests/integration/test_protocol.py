"""Wire-level behaviour: hello, ping, framing, and hostile input. These tests
speak raw frames because they must send what the real client never would."""
import os
import time
import unittest

from harness import ParleyTest, RawConn, frame, pb_field

BAD_REQUEST, UNAUTHENTICATED, TOO_LARGE, UNSUPPORTED, CONFLICT = 1, 2, 6, 7, 5


def hello(req_id=1, version=1):
    return frame(pb_field(1, req_id) + pb_field(10, pb_field(1, version) + pb_field(2, "test")))


def ping(req_id, nonce):
    return frame(pb_field(1, req_id) + pb_field(11, pb_field(1, nonce)))


def register(req_id, name, password):
    body = pb_field(1, name) + pb_field(2, password)
    return frame(pb_field(1, req_id) + pb_field(20, body))


def login(req_id, name, password):
    return frame(pb_field(1, req_id) + pb_field(21, pb_field(2, name) + pb_field(3, password)))


def resume(req_id, token):
    return frame(pb_field(1, req_id) + pb_field(22, pb_field(1, token)))


def logout(req_id):
    return frame(pb_field(1, req_id) + pb_field(23, b""))


def send_direct(req_id, to, body):
    return frame(pb_field(1, req_id) + pb_field(50, pb_field(1, to) + pb_field(2, body)))


def error_of(f):
    """(code, text) of a ServerFrame's error, or None."""
    if 2 not in f:
        return None
    from harness import pb_decode
    e = pb_decode(f[2][0])
    return e.get(1, [0])[0], e.get(2, [b""])[0].decode()


def recv_until(conn, pred, timeout=10):
    """Frames until pred(frame) holds; the matching frame (fails on close)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        f = conn.recv_frame(timeout=max(0.1, deadline - time.time()))
        if f is None:
            raise AssertionError("server closed the connection")
        if pred(f):
            return f
    raise AssertionError("timed out")


class RawTest(ParleyTest):
    """Raw-frame helpers on a fresh server."""
    def raw(self):
        c = RawConn(self.server.port)
        self.addCleanup(c.close)
        return c

    def greeted(self):
        c = self.raw()
        c.send(hello())
        f = c.recv_frame()
        self.assertIn(10, f, "expected hello_ok")
        return c

    def assert_serving(self):
        """A well-behaved client still gets answers."""
        c = self.greeted()
        c.send(ping(7, 4242))
        f = c.recv_frame()
        self.assertEqual(f[1][0], 7)
        self.assertIn(11, f)


class ProtocolTest(RawTest):
    def test_hello_reports_version_and_limits(self):
        c = self.raw()
        c.send(hello(req_id=5))
        f = c.recv_frame()
        self.assertEqual(f[1][0], 5, "reply echoes the request id")
        from harness import pb_decode
        ok = pb_decode(f[10][0])
        self.assertEqual(ok[1][0], 1, "protocol version")
        self.assertEqual(ok[3][0], 65536, "max frame")

    def test_unsupported_version_is_refused_and_closed(self):
        c = self.raw()
        c.send(hello(version=99))
        code, text = error_of(c.recv_frame())
        self.assertEqual(code, UNSUPPORTED)
        self.assertIn("version", text)
        self.assertTrue(c.closed())
        self.assert_serving()

    def test_request_before_hello(self):
        c = self.raw()
        c.send(ping(3, 1))
        f = c.recv_frame()
        self.assertEqual(f[1][0], 3)
        self.assertEqual(error_of(f)[0], BAD_REQUEST)

    def test_ping_pong_echoes_nonce(self):
        c = self.greeted()
        c.send(ping(9, 123456789))
        f = c.recv_frame()
        from harness import pb_decode
        self.assertEqual(f[1][0], 9)
        self.assertEqual(pb_decode(f[11][0])[1][0], 123456789)

    def test_frame_split_byte_by_byte(self):
        c = self.raw()
        data = hello(req_id=11) + ping(12, 77)
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.002)
        self.assertEqual(c.recv_frame()[1][0], 11)
        self.assertEqual(c.recv_frame()[1][0], 12)

    def test_frames_coalesced_in_one_write(self):
        c = self.raw()
        c.send(hello(1) + b"".join(ping(i, i) for i in range(2, 202)))
        ids = [c.recv_frame()[1][0] for _ in range(201)]
        self.assertEqual(ids, list(range(1, 202)))

    def test_garbage_payload_gets_error_and_connection_survives(self):
        c = self.greeted()
        c.send(frame(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
        f = c.recv_frame()
        self.assertEqual(error_of(f)[0], BAD_REQUEST)
        c.send(ping(2, 5))
        self.assertEqual(c.recv_frame()[1][0], 2)

    def test_random_bytes_do_not_hurt_others(self):
        for _ in range(20):
            c = self.raw()
            c.send(os.urandom(3000))
            c.close()
        http = self.raw()
        http.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        code, _ = error_of(http.recv_frame())
        self.assertEqual(code, TOO_LARGE)
        self.assertTrue(http.closed())
        self.assert_serving()

    def test_length_over_limit(self):
        c = self.greeted()
        c.send(b"\x00\x01\x00\x01" + b"x" * 100)  # 65537 announced
        code, text = error_of(c.recv_frame())
        self.assertEqual(code, TOO_LARGE)
        self.assertIn("65536", text)
        self.assertTrue(c.closed())
        self.assert_serving()

    def test_truncated_frame_does_not_block_others(self):
        c = self.greeted()
        c.send(b"\x00\x00\x00\x64" + b"\x08" * 10)  # 100 announced, 10 sent
        self.assert_serving()
        c.close()
        self.assert_serving()

    def test_unknown_request_type(self):
        c = self.greeted()
        c.send(frame(pb_field(1, 4) + pb_field(99, pb_field(1, 1))))
        f = c.recv_frame()
        self.assertEqual(f[1][0], 4)
        self.assertEqual(error_of(f)[0], UNSUPPORTED)

    def test_request_before_login(self):
        c = self.greeted()
        c.send(send_direct(6, 1, "hi"))
        f = c.recv_frame()
        self.assertEqual(f[1][0], 6)
        self.assertEqual(error_of(f)[0], UNAUTHENTICATED)

    def test_invalid_utf8_and_overlong_names(self):
        c = self.greeted()
        cases = [b"\xff\xfebad", b"a" * 33, "é" * 33, b"ab\xc0\xafcd", b"12345", b"a:b", b""]
        for i, name in enumerate(cases, start=10):
            c.send(register(i, name, "password1"))
            f = c.recv_frame()
            self.assertEqual(f[1][0], i)
            self.assertEqual(error_of(f)[0], BAD_REQUEST, "name %r accepted" % (name,))
        c.send(register(50, "é" * 32, "password1"))
        self.assertIn(20, c.recv_frame(), "32 characters is allowed")
        c.send(register(51, "shortpw", "12345"))
        self.assertEqual(error_of(c.recv_frame())[0], BAD_REQUEST)

    def test_sql_looking_names_are_just_names(self):
        c = self.greeted()
        c.send(register(1, "alice", "password1"))
        self.assertIn(20, c.recv_frame())
        evil = ["x'); DROP TABLE users;--", "' OR '1'='1", "bob\"; DELETE FROM messages"]
        for i, name in enumerate(evil, start=2):
            c.send(register(i, name, "password1"))
            self.assertIn(20, c.recv_frame(), name)
        c.send(register(9, "' OR '1'='1", "password1"))
        self.assertEqual(error_of(c.recv_frame())[0], CONFLICT)
        for i, name in enumerate(["alice"] + evil, start=20):
            c2 = self.greeted()
            c2.send(login(i, name, "password1"))
            f = c2.recv_frame()
            self.assertIn(21, f, "login as %r" % name)
            c2.send(login(i + 100, name, "password1"))  # already logged in
            self.assertEqual(error_of(c2.recv_frame())[0], CONFLICT)
        c3 = self.greeted()
        c3.send(login(99, "' OR '1'='1", "wrong-password"))
        self.assertEqual(error_of(c3.recv_frame())[0], UNAUTHENTICATED)


    def test_token_resumes_until_logout(self):
        """A dropped connection resumes with the token; logging out ends it."""
        from harness import pb_decode
        c = self.greeted()
        c.send(register(1, "alice", "password1"))
        self.assertIn(20, c.recv_frame())
        c.send(login(2, "alice", "password1"))
        f = c.recv_frame()
        self.assertIn(21, f)
        token = pb_decode(f[21][0])[2][0].decode()
        self.assertEqual(len(token), 43)
        c.close()
        for attempt in range(50):  # the first session may still be closing
            c2 = self.greeted()
            c2.send(resume(3, token))
            f = c2.recv_frame()
            if 21 in f or error_of(f)[0] != CONFLICT:
                break
            time.sleep(0.1)
        self.assertIn(21, f, "resume with the token: %r" % (error_of(f),))
        c2.send(logout(4))
        self.assertEqual(recv_until(c2, lambda g: g.get(1, [0])[0] == 4).get(2), None)
        c3 = self.greeted()
        c3.send(resume(5, token))
        self.assertEqual(error_of(c3.recv_frame())[0], UNAUTHENTICATED, "token ended by logout")
        c4 = self.greeted()
        c4.send(resume(6, token[:-1] + ("A" if token[-1] != "A" else "B")))
        self.assertEqual(error_of(c4.recv_frame())[0], UNAUTHENTICATED)

class IdleTimeoutTest(ParleyTest):
    server_extra = ("--idle-timeout", "2")

    def test_silent_and_truncated_clients_are_dropped(self):
        silent = RawConn(self.server.port)
        self.addCleanup(silent.close)
        truncated = RawConn(self.server.port)
        self.addCleanup(truncated.close)
        truncated.send(hello() + b"\x00\x00\x00\x64\x08")
        self.assertIn(10, truncated.recv_frame())
        self.assertTrue(silent.closed(timeout=8))
        self.assertTrue(truncated.closed(timeout=8))




class CatchUpRaceTest(RawTest):
    # Four senders pour 16,000 messages as fast as they are answered: a race
    # test, not an abuse test, so the rate limits are off.
    server_extra = ("--msg-rate", "0", "--req-rate", "0")

    def test_catch_up_does_not_repeat_live_pushes(self):
        """Users logging in while messages pour in get each message once:
        what the catch-up reads and what is pushed live meanwhile overlap,
        and the gateway sends the overlap only once."""
        from harness import pb_decode
        import threading
        senders, receivers, per_sender, burst = 4, 4, 4000, 50
        names = ["s%d" % i for i in range(senders)] + ["r%d" % i for i in range(receivers)]
        ids = {}
        for name in names:
            c = self.greeted()
            c.send(register(2, name, "secret123"))
            ids[name] = pb_decode(recv_until(c, lambda f: 20 in f)[20][0])[1][0]
        to = [ids["r%d" % i] for i in range(receivers)]
        errors, got = [], [dict() for _ in range(receivers)]

        def pour(name):
            # Bursts of 50 (under the 64 requests a connection may have in
            # flight), each answered before the next, to every receiver in turn.
            try:
                c = self.greeted()
                c.send(login(2, name, "secret123"))
                recv_until(c, lambda f: 21 in f)
                for n in range(0, per_sender, burst):
                    c.send(b"".join(send_direct(100 + n + k, to[(n + k) % receivers],
                                                "%s %d" % (name, n + k)) for k in range(burst)))
                    for _ in range(burst):
                        f = recv_until(c, lambda f: f.get(1, [0])[0] >= 100)
                        if 2 in f:
                            errors.append(error_of(f))
            except Exception as e:  # reported by the main thread
                errors.append(repr(e))

        def receive(i):
            # Each logs in at its own moment of the stream.
            try:
                time.sleep(0.1 + 0.15 * i)
                c = self.greeted()
                c.send(login(2, "r%d" % i, "secret123"))
                want = senders * per_sender // receivers
                deadline = time.time() + 60
                while len(got[i]) < want and time.time() < deadline:
                    f = c.recv_frame(timeout=10)
                    if f is None:
                        errors.append("r%d: connection closed" % i)
                        return
                    if 100 in f:
                        msgid = pb_decode(f[100][0])[1][0]
                        got[i][msgid] = got[i].get(msgid, 0) + 1
                # Nothing more trickles in after the last one either.
                c.send(ping(3, 1))
                f = recv_until(c, lambda f: 11 in f or 100 in f)
                if 100 in f:
                    errors.append("r%d: a repeat after all messages" % i)
            except Exception as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=pour, args=(n,)) for n in names[:senders]]
        threads += [threading.Thread(target=receive, args=(i,)) for i in range(receivers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for i in range(receivers):
            self.assertEqual(len(got[i]), senders * per_sender // receivers,
                             "r%d: every message arrives" % i)
            self.assertEqual(sum(n - 1 for n in got[i].values()), 0,
                             "r%d: messages that arrived twice" % i)


if __name__ == "__main__":
    unittest.main()

