"""The terminal client in a real terminal: `parley` run inside tmux against a
real parleyd, typed at with send-keys and read back with capture-pane. What
a person at the keyboard would notice: it survives its terminal closing,
keeps a half-typed line, takes non-ASCII text under LANG=C, never shows or
keeps a password, Ctrl-C clears the line. Also the script mode's exit code
and --version."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import PARLEY, ParleyTest

TMUX = shutil.which("tmux")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, tmux, reaps it).
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@unittest.skipUnless(TMUX, "tmux is not installed (scripts/install-deps.sh installs it)")
class TuiTest(ParleyTest):
    def setUp(self):
        super().setUp()
        self.sock = "parley-tui-%d-%d" % (os.getpid(), id(self))
        self.home = tempfile.mkdtemp(prefix="parley-tui-home-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.addCleanup(self.tmux_quiet, "kill-server")
        self.pids = []
        self.addCleanup(self.kill_leftovers)
        self.n = 0
        # One session that stays, so that the tmux server does not exit
        # (and race the next new-session) whenever a client's session ends.
        self.tmux("new-session", "-d", "-s", "keep", "sleep", "3600")

    # ---- tmux ----

    def tmux(self, *args):
        p = subprocess.run([TMUX, "-L", self.sock, "-f", "/dev/null"] + list(args),
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise AssertionError("tmux %s: %s" % (" ".join(args), p.stderr))
        return p.stdout

    def tmux_quiet(self, *args):
        subprocess.run([TMUX, "-L", self.sock, "-f", "/dev/null"] + list(args),
                       capture_output=True, timeout=30)

    def start(self, *extra, lang="C", wait=True):
        """A parley in a new tmux window (its own session); returns its name
        and the client's pid. wait: until it shows its banner."""
        self.n += 1
        name = "w%d" % self.n
        # No leak check at exit here: LeakSanitizer stops the world with a
        # helper process of its own, which a terminal's SIGHUP can take down,
        # leaving the client spinning for ever (seen). Leaks of the client
        # are checked by every other client test.
        asan = os.environ.get("ASAN_OPTIONS", "")
        cmd = ["env", "HOME=" + self.home, "LANG=" + lang, "LC_ALL=", "TERM=screen",
               "ASAN_OPTIONS=" + (asan + ":" if asan else "") + "detect_leaks=0",
               PARLEY, "--port", str(self.server.port)] + list(extra)
        self.tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", *cmd)
        pid = int(self.tmux("display-message", "-p", "-t", name, "#{pane_pid}").strip())
        self.pids.append(pid)
        if wait:
            self.wait_screen(name, "type help for the commands")
        return name, pid

    def kill_leftovers(self):
        """Whatever client of this test is still running, even after a
        failure: it must not outlive the test."""
        for pid in self.pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def screen(self, name):
        return self.tmux("capture-pane", "-p", "-J", "-t", name)

    def wait_screen(self, name, pattern, timeout=20):
        deadline = time.time() + timeout
        while True:
            text = self.screen(name)
            if re.search(pattern, text):
                return text
            if time.time() > deadline:
                raise AssertionError("waited for %r on the screen:\n%s" % (pattern, text))
            time.sleep(0.05)

    def keys(self, name, *keys):
        self.tmux("send-keys", "-t", name, *keys)

    def type(self, name, text):
        self.tmux("send-keys", "-t", name, "-l", text)

    def login(self, name, user):
        self.type(name, "login:%s:secret123" % user)
        self.keys(name, "Enter")
        self.wait_screen(name, r"(?m)^%s> " % user)

    def wait_gone(self, pid, timeout=10):
        deadline = time.time() + timeout
        while pid_alive(pid):
            if time.time() > deadline:
                stacks = ""
                if shutil.which("gdb"):
                    stacks = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex",
                                             "thread apply all bt"], capture_output=True,
                                            text=True, timeout=60).stdout
                raise AssertionError("parley (pid %d) still running %ss after SIGHUP:\n%s" %
                                     (pid, timeout, stacks))
            time.sleep(0.01)

    # ---- tests ----

    def test_survives_sighup_of_its_terminal(self):
        """Closing the terminal (tmux kills the pane: SIGHUP) ends the client
        cleanly every time, whatever it was doing; never a hang. 100 tries
        (PARLEY_TUI_HUP_TRIES), five clients at a time."""
        sender, _ = self.user("sender")
        alice = self.client()
        alice_id = alice.ok("register:alice:secret123")["id"]
        tries = int(os.environ.get("PARLEY_TUI_HUP_TRIES", "100"))
        batch = 5
        t0 = time.time()
        for first in range(0, tries, batch):
            clients = [self.start(wait=False) for _ in range(first, min(first + batch, tries))]
            for name, _ in clients:
                self.wait_screen(name, "type help for the commands")
            for k, (name, _) in enumerate(clients):
                if (first + k) % 4 == 1:
                    # Logged in, a half-typed line, a message arriving.
                    self.login(name, "alice")
                    self.type(name, "half typed %d" % (first + k))
                    sender.send_line("chat:%d:hi %d" % (alice_id, first + k))
            for k, (name, pid) in enumerate(clients):
                if (first + k) % 2 == 0:
                    self.tmux("kill-session", "-t", name)  # SIGHUP from the terminal
                else:
                    os.kill(pid, signal.SIGHUP)  # the terminal stays a moment
            for name, pid in clients:
                self.wait_gone(pid)
                self.tmux_quiet("kill-session", "-t", name)
        print("%d SIGHUP cycles in %.1f s" % (tries, time.time() - t0))

    def test_half_typed_line_survives_an_incoming_message(self):
        bob, bob_id = self.user("bob")
        alice = self.client()
        alice_id = alice.ok("register:alice:secret123")["id"]
        name, _ = self.start()
        self.login(name, "alice")
        self.type(name, "chat:%d:half a thou" % bob_id)
        self.wait_screen(name, "half a thou")
        bob.ok("chat:%d:an interruption" % alice_id)
        text = self.wait_screen(name, "an interruption")
        # The message is above, the line below it, as typed.
        self.assertRegex(text, r"an interruption[^\n]*\n(.*\n)*alice> chat:%d:half a thou" % bob_id)
        self.type(name, "ght")
        self.keys(name, "Enter")
        bob.wait_events(lambda e: e.get("type") == "message" and
                        e.get("body") == "half a thought")
        # The own send, as a conversation line with its mark; bob is named
        # (his message came with his name).
        self.wait_screen(name, r"\[\d\d:\d\d\] you -> bob: half a thought  \u2713 #msg \d+")

    def test_typing_and_read_marks_keep_the_half_typed_line(self):
        """Typing a chat line tells its target; bob typing back shows once,
        above the line being edited, which stays as typed. What the terminal
        shows is read (bob hears of it), and bob's read shows as a mark."""
        bob, bob_id = self.user("bob")
        alice = self.client()
        alice_id = alice.ok("register:alice:secret123")["id"]
        name, _ = self.start()
        self.login(name, "alice")
        self.type(name, "chat:%d:half a thou" % bob_id)
        ev = bob.wait_events(lambda e: e.get("type") == "typing")[0]
        self.assertEqual((ev["user"], ev.get("user_name")), (alice_id, "alice"))
        bob.ok("typing:%d" % alice_id)
        text = self.wait_screen(name, "bob is typing")
        self.assertRegex(text, r"bob is typing[^\n]*\n(.*\n)*alice> chat:%d:half a thou" % bob_id)
        r = bob.ok("chat:%d:are you writing" % alice_id)
        self.wait_screen(name, "are you writing")
        ev = bob.wait_events(lambda e: e.get("type") == "read")[0]
        self.assertEqual((ev["user"], ev["seq"]), (alice_id, r["seq"]))
        self.type(name, "ght")
        self.keys(name, "Enter")
        m = bob.wait_events(lambda e: e.get("type") == "message" and
                            e.get("body") == "half a thought")[0]
        bob.ok("read:%d:%d" % (m["conv"], m["seq"]))
        self.wait_screen(name, "bob read your messages")

    def test_non_ascii_under_lang_c(self):
        """LANG=C: the text still arrives byte for byte."""
        bob, bob_id = self.user("bob")
        alice = self.client()
        alice.ok("register:alice:secret123")
        name, _ = self.start(lang="C")
        self.login(name, "alice")
        text = "h\u00e9llo \u4f60\u597d \U0001f389"
        self.type(name, "chat:%d:%s" % (bob_id, text))
        self.keys(name, "Enter")
        got = bob.wait_events(lambda e: e.get("type") == "message")
        self.assertEqual(got[0]["body"], text)
        self.assertIn(text, self.screen(name))

    def test_password_prompt_never_echoes_nor_keeps_it(self):
        alice = self.client()
        alice.ok("register:alice:pw-s3cret-42")
        name, _ = self.start()
        self.type(name, "login:alice")
        self.keys(name, "Enter")
        self.wait_screen(name, "password: $|password: \n")
        self.type(name, "pw-s3cret-42")
        self.keys(name, "Enter")
        text = self.wait_screen(name, "logged in as alice")
        self.assertNotIn("pw-s3cret-42", text)
        # Typed in full, it is kept in the history without the password.
        self.type(name, "logout")
        self.keys(name, "Enter")
        self.wait_screen(name, "logged out")
        self.type(name, "login:alice:pw-s3cret-42")
        self.keys(name, "Enter")
        self.wait_screen(name, r"(?m)^alice> ")
        # Up arrow brings back the line without its password.
        self.keys(name, "Up")
        time.sleep(0.3)
        self.assertNotIn("pw-s3cret-42", self.screen(name).split("alice> ")[-1])
        self.keys(name, "C-c")
        self.type(name, "quit")
        self.keys(name, "Enter")
        path = os.path.join(self.home, ".parley", "history")
        deadline = time.time() + 10
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.05)
        with open(path) as f:
            hist = f.read()
        self.assertNotIn("pw-s3cret-42", hist)
        self.assertIn("login:alice\n", hist)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_register_asks_for_the_password_twice(self):
        name, _ = self.start()
        self.type(name, "register:frank")
        self.keys(name, "Enter")
        self.wait_screen(name, "password: ")
        self.type(name, "first-try-1")
        self.keys(name, "Enter")
        self.wait_screen(name, "the same again: ")
        self.type(name, "first-try-2")
        self.keys(name, "Enter")
        self.wait_screen(name, "the two passwords differ")
        self.type(name, "register:frank")
        self.keys(name, "Enter")
        self.wait_screen(name, "(?s)differ.*password: ")
        for _ in range(2):
            self.type(name, "frank-pw-9")
            self.keys(name, "Enter")
            time.sleep(0.2)
        text = self.wait_screen(name, "registered, your id is")
        self.assertNotIn("first-try", text)
        self.assertNotIn("frank-pw-9", text)
        c = self.client()
        c.ok("login:frank:frank-pw-9")

    def test_history_is_kept_across_runs(self):
        name, pid = self.start()
        self.type(name, "help")
        self.keys(name, "Enter")
        self.wait_screen(name, "commands")
        self.type(name, "quit")
        self.keys(name, "Enter")
        self.wait_gone(pid)
        name, _ = self.start()
        self.keys(name, "Up", "Up")
        self.wait_screen(name, r"parley> help")
        # Ctrl-R finds it, and one Enter runs it.
        self.keys(name, "C-c")
        self.type(name, "nosuchcommand")
        self.keys(name, "Enter")  # unknown command: an error, and a history line
        self.wait_screen(name, "unknown command")
        self.keys(name, "C-r")
        self.type(name, "hel")
        self.keys(name, "Enter")
        text = self.wait_screen(name, r"(?s)unknown command.*commands \(a TEXT")
        self.assertEqual(text.count("commands (a TEXT"), 1)

    def test_ctrl_c_clears_the_line_and_twice_quits(self):
        name, pid = self.start()
        self.type(name, "something half typed")
        self.wait_screen(name, "something half typed")
        self.keys(name, "C-c")
        deadline = time.time() + 10
        while "something half typed" in self.screen(name):
            self.assertLess(time.time(), deadline, "Ctrl-C did not clear the line")
            time.sleep(0.05)
        self.assertTrue(pid_alive(pid), "one Ctrl-C must not quit")
        self.type(name, "whoami")
        self.keys(name, "Enter")
        self.wait_screen(name, "not logged in, connected to")
        self.keys(name, "C-c")
        self.wait_screen(name, "Ctrl-C again to quit")
        self.keys(name, "C-c")
        self.wait_gone(pid)

    def test_tab_completes_commands_and_names(self):
        bob, bob_id = self.user("bob")
        alice = self.client()
        alice_id = alice.ok("register:alice:secret123")["id"]
        alice.ok("login:alice:secret123")
        alice.ok("addfriend:%d" % bob_id)
        alice.close()
        name, _ = self.start()
        self.login(name, "alice")  # learns bob's name from the friend list
        self.type(name, "cha")
        self.keys(name, "Tab")
        self.type(name, "bo")
        self.keys(name, "Tab")
        self.wait_screen(name, "alice> chat:%d:" % bob_id)
        self.type(name, "completed")
        self.keys(name, "Enter")
        got = bob.wait_events(lambda e: e.get("type") == "message")
        self.assertEqual((got[0]["from"], got[0]["body"]), (alice_id, "completed"))

    def test_offline_prompt_and_pending_send(self):
        bob, bob_id = self.user("bob")
        bob.close()
        alice = self.client()
        alice.ok("register:alice:secret123")
        alice.close()
        name, pid = self.start()
        self.login(name, "alice")
        self.server.stop()
        self.wait_screen(name, r"reconnecting \(next try in \d+ s\)")
        self.wait_screen(name, r"(?m)^alice \(offline\)> ")
        self.type(name, "chat:%d:while away" % bob_id)
        self.keys(name, "Enter")
        self.wait_screen(name, r"you -> [^\n]*while away  \(pending")
        self.server.start()  # same data, same port
        self.wait_screen(name, r"while away  \u2713 #msg", timeout=30)
        self.wait_screen(name, r"(?m)^alice> ")
        self.assertTrue(pid_alive(pid))


class ScriptModeTest(ParleyTest):
    def run_client(self, lines, *args):
        p = subprocess.run([PARLEY, "--port", str(self.server.port), "--wait-ms", "0"] +
                           list(args), input=lines, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def test_exit_code_says_whether_a_command_failed(self):
        rc, out, err = self.run_client("register:carol:secret123\nlogin:carol:secret123\n")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = self.run_client("login:carol:wrong-password\nhelp\n")
        self.assertEqual(rc, 1, out + err)
        rc, out, err = self.run_client("login:carol:secret123\nnosuchcommand\n", "--json")
        self.assertEqual(rc, 1, out + err)
        self.assertIn('"ok":false', out)

    def test_whoami(self):
        c = self.client()
        r = c.ok("whoami")
        self.assertNotIn("name", r)
        self.assertTrue(r["connected"])
        uid = c.ok("register:dave:secret123")["id"]
        c.ok("login:dave:secret123")
        r = c.ok("whoami")
        self.assertEqual((r["id"], r["name"]), (uid, "dave"))

    def test_reconnect_for_gives_up_in_time(self):
        c = self.client(extra=["--reconnect-for", "2"])
        uid = c.ok("register:erin:secret123")["id"]
        c.ok("login:erin:secret123")
        self.server.stop()
        t0 = time.time()
        r = c.cmd("chat:%d:into the void" % uid, timeout=60)
        self.assertFalse(r["ok"])
        self.assertEqual(r["code"], "UNAVAILABLE")
        self.assertLess(time.time() - t0, 30)
        c.proc.wait(timeout=30)
        self.assertEqual(c.proc.returncode, 1)

    def test_version(self):
        p = subprocess.run([PARLEY, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^parley \d+\.\d+\.\d+\n$")


if __name__ == "__main__":
    unittest.main()
