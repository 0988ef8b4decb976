"""Logs as an operator reads them: --log-format text|json, --log-file and
SIGHUP for logrotate, and the audit events in both formats with the same
keys (docs/security.md, "Audit log"; docs/deploy.md, "Logs")."""
import json
import os
import re
import signal
import tempfile
import time
import unittest

from harness import PARLEYD, Peer, S_LOGIN_OK, S_REGISTER_OK, Server, body
import subprocess

# A login name as hostile as the gateway lets through (it refuses invalid
# UTF-8 and NUL; tests/unit/test_log.c covers those at the log layer):
# quotes, a backslash, an equals sign, a newline that would forge a second
# line, control characters, a C1 control and a CJK name.
EVIL = b'e"\\ x=1\n{"level":0}\x01\x1b[2J\xc2\x85\xe5\xbc\xa0'


def wait_for(pred, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def json_events(path):
    """Every line of the file as a JSON object (failing on any that is not)."""
    out = []
    for n, line in enumerate(read(path).split(b"\n")[:-1], 1):
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise AssertionError("line %d is not JSON (%s): %r" % (n, e, line))
        if not isinstance(ev, dict):
            raise AssertionError("line %d is not an object: %r" % (n, line))
        out.append(ev)
    return out


_TEXT_FIELD = re.compile(r' ([a-z_0-9]+)=("(?:[^"\\]|\\.)*"|[^ "]+)')


def text_audits(path):
    """The audit lines of a text log as dicts of their fields, values as
    they are written (quoted values unescaped for quotes and backslashes)."""
    out = []
    for line in read(path).decode("utf-8", "replace").split("\n"):
        m = re.match(r"^\S+Z info  audit((?: [a-z_0-9]+=(?:\"(?:[^\"\\]|\\.)*\"|[^ \"]+))+)$",
                     line)
        if not m:
            continue
        fields = {}
        for k, v in _TEXT_FIELD.findall(m.group(1)):
            if v.startswith('"'):
                v = re.sub(r'\\(["\\])', r"\1", v[1:-1])
            fields[k] = v
        out.append(fields)
    return out


class LogsTest(unittest.TestCase):
    def start(self, fmt):
        self.dir = tempfile.mkdtemp(prefix="parley-logs-")
        self.path = os.path.join(self.dir, "parleyd.log")
        self.server = Server(extra=["--log-format", fmt, "--log-file", self.path])
        self.addCleanup(self.server.cleanup)
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))
        self.server.start()
        self.addCleanup(self._dump)

    def _dump(self):
        outcome = getattr(self, "_outcome", None)
        if any(exc for _, exc in (getattr(outcome, "errors", None) or [])):
            print("---- log file ----\n" + read(self.path)[-4000:].decode("utf-8", "replace"))
            print("---- stdout/stderr ----\n" + self.server.logs()[-2000:])

    def traffic(self, name):
        """A registration, a login, a wrong password by name and a login under
        a hostile name: four audit events."""
        p = Peer(self.server.port)
        self.addCleanup(p.close)
        self.assertIn(S_REGISTER_OK, p.register(name))
        self.assertTrue(body(p.login(name), S_LOGIN_OK))
        q = Peer(self.server.port)
        self.addCleanup(q.close)
        self.assertFalse(body(q.login(name, "wrong-password"), S_LOGIN_OK))
        r = Peer(self.server.port)
        self.addCleanup(r.close)
        self.assertFalse(body(r.login(EVIL, "whatever1"), S_LOGIN_OK))
        return p.user_id

    def test_json_lines_parse_and_carry_audit_fields(self):
        self.start("json")
        uid = self.traffic("alice")
        events = wait_for(lambda: [e for e in json_events(self.path) if e.get("msg") == "audit"
                                   and e.get("event") == "login_failed" and "name" in e
                                   and e["name"] != "alice"] and json_events(self.path),
                          what="the hostile login's audit event")
        # Every line: one object with the stable keys.
        for e in events:
            self.assertRegex(e.get("ts", ""), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(e.get("level"), ("debug", "info", "warn", "error"))
            self.assertIsInstance(e.get("msg"), str)
        # The forged second line did not become an event of its own.
        self.assertFalse([e for e in events if e["level"] == 0])
        audits = [e for e in events if e["msg"] == "audit"]
        reg = [e for e in audits if e["event"] == "register"]
        self.assertEqual(len(reg), 1, audits)
        self.assertEqual(reg[0]["user"], uid)  # a number, not a string
        self.assertEqual(reg[0]["name"], "alice")
        self.assertRegex(reg[0]["addr"], r"^127\.0\.0\.1")
        login = [e for e in audits if e["event"] == "login"]
        self.assertEqual([e["user"] for e in login], [uid])
        failed = [e for e in audits if e["event"] == "login_failed"]
        self.assertIn("alice", [e.get("name") for e in failed])
        evil = [e["name"] for e in failed if e.get("name") != "alice"]
        self.assertEqual(len(evil), 1, failed)
        # The name comes back exactly as sent.
        self.assertEqual(evil[0], EVIL.decode("utf-8"))

    def test_text_audit_lines_have_the_same_keys(self):
        self.start("text")
        uid = self.traffic("bob")
        audits = wait_for(lambda: (lambda a: a if len([x for x in a if x["event"] ==
                                                       "login_failed"]) >= 2 else None)(
            text_audits(self.path)), what="two login_failed lines")
        raw = read(self.path)
        # One event per line: the newline in the name is escaped, and no line
        # but the first of each event starts without a timestamp.
        for line in raw.decode("utf-8", "replace").split("\n")[:-1]:
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info |warn |error) ")
        self.assertNotIn(b"\x1b", raw)
        self.assertNotIn(b"\x01", raw)
        by = {}
        for a in audits:
            by.setdefault(a["event"], []).append(a)
        self.assertEqual(by["register"][0], {"event": "register", "user": str(uid), "name": "bob",
                                             "addr": by["register"][0]["addr"]})
        self.assertEqual(sorted(by["login"][0]), ["addr", "event", "user"])
        names = [a.get("name") for a in by["login_failed"]]
        self.assertIn("bob", names)
        evil = [n for n in names if n != "bob"][0]
        self.assertEqual(evil, 'e"\\ x=1\\n{"level":0}\\x01\\x1b[2J\\u0085\u5f20')

    def test_same_keys_in_both_formats(self):
        """Each audit event has the same set of keys in text and in JSON."""
        keys = {}
        for fmt in ("text", "json"):
            with self.subTest(fmt=fmt):
                self.start(fmt)
                self.traffic("carol")
                if fmt == "json":
                    got = wait_for(lambda: [e for e in json_events(self.path)
                                            if e.get("msg") == "audit"], what="audit events")
                    got = [{k: v for k, v in e.items() if k not in ("ts", "level", "msg")}
                           for e in got]
                else:
                    got = wait_for(lambda: text_audits(self.path), what="audit lines")
                wait_for(lambda: len([1 for e in (json_events(self.path) if fmt == "json"
                                                  else text_audits(self.path))
                                      if e.get("event") == "login_failed"]) >= 2,
                         what="both failed logins")
                got = (json_events(self.path) if fmt == "json" else text_audits(self.path))
                keys[fmt] = sorted(
                    (e["event"], tuple(sorted(k for k in e if k not in ("ts", "level", "msg"))))
                    for e in got if e.get("event"))
                self.server.cleanup()
        self.assertEqual(keys["text"], keys["json"])
        self.assertIn(("login", ("addr", "event", "user")), keys["json"])

    def test_sighup_reopens_the_file(self):
        """logrotate's way: rename the file, SIGHUP, and a new file appears
        under the old name with what follows; the renamed one keeps the past."""
        self.start("json")
        p = Peer(self.server.port)
        self.addCleanup(p.close)
        self.assertIn(S_REGISTER_OK, p.register("dave"))
        wait_for(lambda: [e for e in json_events(self.path) if e.get("event") == "register"],
                 what="the register event")
        rotated = self.path + ".1"
        os.rename(self.path, rotated)
        self.server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(self.path), what="a new log file after SIGHUP")
        self.assertTrue(body(p.login("dave"), S_LOGIN_OK))
        new = wait_for(lambda: [e for e in json_events(self.path) if e.get("event") == "login"],
                       what="the login event in the new file")
        self.assertEqual(new[0]["user"], p.user_id)
        old = json_events(rotated)
        self.assertTrue([e for e in old if e.get("event") == "register"])
        self.assertFalse([e for e in old if e.get("event") == "login"])
        self.assertEqual(oct(os.stat(self.path).st_mode & 0o777), oct(0o640))

    def test_bad_log_settings_are_refused(self):
        for args, what in (
            (["--log-format", "xml"], "--log-format"),
            (["--log-file", "/nonexistent-dir/parley/x.log"], "/nonexistent-dir/parley/x.log"),
        ):
            with tempfile.TemporaryDirectory() as d:
                r = subprocess.run([PARLEYD, "--port", "0", "--data", d] + args,
                                   capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(what, r.stderr)


if __name__ == "__main__":
    unittest.main()
