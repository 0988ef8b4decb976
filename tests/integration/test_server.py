"""parleyd as a process: one server per data directory, and a server that
cannot start leaves nothing behind."""
import os
import shutil
import socket
import subprocess
import tempfile
import unittest

from harness import PARLEYD, ParleyTest, free_port


class DataDirectoryTest(ParleyTest):
    def test_second_server_on_the_same_data_refuses_naming_the_holder(self):
        p = subprocess.run([PARLEYD, "--port", str(free_port()), "--data", self.server.data,
                            "--pwhash-cost", "min"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("in use by another parleyd (pid %d)" % self.server.proc.pid, p.stderr)
        # The first one still serves.
        c, _ = self.user("alice")
        self.assertTrue(c.ok("showfriendlist")["ok"])

    def test_a_server_that_cannot_listen_creates_nothing(self):
        parent = tempfile.mkdtemp(prefix="parley-test-")
        self.addCleanup(shutil.rmtree, parent, True)
        data = os.path.join(parent, "data")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            p = subprocess.run([PARLEYD, "--port", str(port), "--data", data], capture_output=True,
                               text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(str(port), p.stderr)
        self.assertFalse(os.path.exists(data), "a data directory was created")



class RecallForgetsTest(ParleyTest):
    def test_a_recalled_body_is_nowhere_in_the_data_directory(self):
        alice, a = self.user("alice")
        bob, b = self.user("bob")
        secret = "recall-me-7f3a9c2e-%d" % os.getpid()
        kept = "keep-me-51be0d44-%d" % os.getpid()
        msgid = alice.ok("chat:%d:%s" % (b, secret))["msgid"]
        alice.ok("chat:%d:%s" % (b, kept))
        alice.ok("recall:%d" % msgid)
        hist = alice.ok("history:%d" % b)["messages"]
        self.assertEqual([m.get("recalled", False) for m in hist], [True, False])
        self.assertEqual(hist[0]["body"], "")
        alice.close()
        bob.close()
        self.assertEqual(self.server.stop(), 0)
        found, seen_kept = [], False
        for root, _, files in os.walk(self.server.data):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
                if secret.encode() in data:
                    found.append(name)
                seen_kept = seen_kept or kept.encode() in data
        self.assertTrue(seen_kept, "the search would find a body that is there")
        self.assertEqual(found, [], "the recalled body is still in these files")

if __name__ == "__main__":
    unittest.main()
