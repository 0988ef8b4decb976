"""parley-bench as a user of `make bench` relies on it: it fails loudly when a
message is lost, passes a server that loses nothing, and reports figures in
its JSON. Run against parley-floor (which can be told to drop pushes), a
real parleyd, and with --mqtt against mosquitto (make bench's second reference)
and against a fake broker that sends what no broker should."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

from harness import ParleyTest, free_port, wait_port

BUILD = os.path.join(os.path.dirname(__file__), "../../build")
BENCH = os.environ.get("PARLEY_BENCH", os.path.join(BUILD, "parley-bench"))
FLOOR = os.environ.get("PARLEY_FLOOR", os.path.join(BUILD, "parley-floor"))


def run_bench(port, *args, timeout=120):
    """Runs parley-bench; returns (exit code, stdout + stderr, JSON result)."""
    tmp = tempfile.mkdtemp(prefix="parley-bench-test-")
    try:
        out = os.path.join(tmp, "r.json")
        p = subprocess.run([BENCH] + list(args) + ["--port", str(port), "--quiet",
                                                   "--json", out],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        text = (p.stdout + p.stderr).decode("utf-8", "replace")
        result = None
        if os.path.exists(out):
            with open(out) as f:
                result = json.load(f)
        return p.returncode, text, result["results"] if result else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Floor:
    def __init__(self, *extra):
        self.proc = subprocess.Popen([FLOOR, "--port", "0", "--threads", "2"] + list(extra),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline().decode()
        m = re.search(r"ready on [0-9.]+:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError("parley-floor did not start: %r" % line)
        self.port = int(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class BenchAgainstFloorTest(unittest.TestCase):
    def floor(self, *extra):
        f = Floor(*extra)
        self.addCleanup(f.stop)
        return f

    def test_a_lost_push_fails_the_run(self):
        f = self.floor("--drop", "300")
        for args in (["direct", "--conns", "100", "--rate", "3000"],
                     ["direct", "--conns", "100", "--inflight", "4"],
                     ["group", "--conns", "100", "--group-size", "10", "--inflight", "2"]):
            rc, text, result = run_bench(f.port, *args, "--duration", "1", "--warmup", "0.5",
                                         "--straggle", "2")
            self.assertEqual(rc, 1, text)
            self.assertIn("LOST", text)
            self.assertGreater(result["lost"], 0, result)

    def test_the_floor_refuses_a_second_session(self):
        """The floor keeps one session per user: --devices fails at login, and
        says why, rather than measuring a relay that drops own copies."""
        f = self.floor()
        rc, text, _ = run_bench(f.port, "direct", "--conns", "20", "--devices", "2",
                                "--duration", "1", "--warmup", "0", "--straggle", "1")
        self.assertEqual(rc, 1, text)
        self.assertIn("one session per user", text)

    def test_a_relay_that_loses_nothing_passes(self):
        f = self.floor()
        rc, text, result = run_bench(f.port, "direct", "--conns", "200", "--rate", "4000",
                                     "--duration", "1.5", "--warmup", "0.5")
        self.assertEqual(rc, 0, text)
        self.assertEqual(result["lost"], 0, result)
        # The offered rate is what arrives: pacing neither stalls nor bursts past it.
        self.assertGreater(result["delivered_per_s"], 4000 * 0.8, result)
        self.assertLess(result["delivered_per_s"], 4000 * 1.2, result)
        self.assertGreater(result["latency_ms"]["p50"], 0, result)


def mosquitto_binary():
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, "mosquitto")
        if os.access(p, os.X_OK):
            return p
    return None


class Mosquitto:
    """mosquitto on a free loopback port, as bench/run.sh starts it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="parley-mosquitto-")
        self.port = free_port()
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_inflight_messages 64\nmax_queued_messages 10000\n"
                    "log_dest stderr\nlog_type error\n" % self.port)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, proc=self.proc)
        except RuntimeError:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class FakeBroker:
    """Accepts MQTT connections and answers CONNECT and SUBSCRIBE properly, then
    sends `hostile` (bytes) to each connection, once subscribed."""

    def __init__(self, hostile):
        self.hostile = hostile
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        try:
            while True:
                data = c.recv(4096)
                if not data:
                    return
                buf += data
                while len(buf) >= 2:
                    # Only the bench talks to it: one-byte remaining lengths.
                    n = 2 + buf[1]
                    if len(buf) < n:
                        break
                    kind, body, buf = buf[0] >> 4, buf[2:n], buf[n:]
                    if kind == 1:  # CONNECT
                        c.sendall(b"\x20\x02\x00\x00")
                    elif kind == 8:  # SUBSCRIBE: SUBACK, granted QoS 1; then the hostile bytes
                        c.sendall(b"\x90\x03" + body[:2] + b"\x01" + self.hostile)
        except OSError:
            return

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@unittest.skipIf(mosquitto_binary() is None, "mosquitto is not installed (make deps installs it)")
class BenchAgainstMosquittoTest(unittest.TestCase):
    def test_every_message_is_delivered_and_acknowledged(self):
        m = Mosquitto()
        self.addCleanup(m.stop)
        rc, text, result = run_bench(m.port, "direct", "--mqtt", "--conns", "20", "--size", "190",
                                     "--rate", "300", "--duration", "1", "--warmup", "0.5",
                                     "--server-pid", str(m.proc.pid))
        self.assertEqual(rc, 0, text)
        self.assertGreater(result["sent"], 200, result)
        # Every PUBLISH got its PUBACK and reached its receiver, once.
        self.assertEqual(result["answered"], result["sent"], result)
        self.assertEqual(result["delivered"], result["sent"], result)
        self.assertEqual((result["lost"], result["out_of_order"], result["unexpected"]), (0, 0, 0),
                         result)
        self.assertGreater(result["server_cpu_s"], 0, result)


class BenchAgainstHostileBrokerTest(unittest.TestCase):
    def test_a_broker_that_breaks_the_protocol_fails_the_run_cleanly(self):
        cases = [
            (b"\x30\xff\xff\xff\xff\x01", "malformed remaining length"),  # a fifth length byte
            (b"\x30\xff\xff\xff\x7f", "over 64 KiB"),  # 256 MiB announced
            (b"\x32\x05\x00\x40abc", "malformed PUBLISH"),  # a topic longer than the packet
            (b"\x32\x04\x00\x00\x00\x00", "malformed PUBLISH"),  # packet id 0
            (b"\xf0\x00", "unexpected MQTT packet"),  # type 15
        ]
        for hostile, why in cases:
            with self.subTest(why=why, hostile=hostile):
                b = FakeBroker(hostile)
                try:
                    rc, text, _ = run_bench(b.port, "direct", "--mqtt", "--conns", "2",
                                            "--inflight", "1", "--duration", "1", "--warmup",
                                            "0", "--straggle", "1", timeout=60)
                finally:
                    b.stop()
                self.assertEqual(rc, 1, text)
                self.assertIn(why, text)


class BenchAgainstParleyTest(ParleyTest):
    # Hundreds of synthetic users on one address, each far faster than a
    # person: the per-address and rate limits are off (make bench raises them).
    server_extra = ("--max-conns-per-ip", "0", "--reg-rate", "0", "--auth-queue-per-ip", "0",
                    "--auth-queue", "0", "--msg-rate", "0", "--req-rate", "0")

    def test_direct_and_group_lose_nothing(self):
        for args in (["direct", "--conns", "200", "--inflight", "4"],
                     ["direct", "--conns", "200", "--rate", "2000"],
                     ["group", "--conns", "100", "--group-size", "10", "--inflight", "2"]):
            rc, text, result = run_bench(self.server.port, *args, "--duration", "1.5",
                                         "--warmup", "0.5")
            self.assertEqual(rc, 0, text)
            self.assertEqual((result["lost"], result["out_of_order"]), (0, 0), result)
            self.assertGreater(result["delivered"], 0, result)

    def test_a_second_session_gets_every_own_send_once(self):
        """make bench's direct-devices2 rows (issue 16): each user's second
        session gets every message the user sent (an own copy) and every one
        it received, exactly once; delivered stays the first sessions'."""
        for args in (["direct", "--conns", "100", "--inflight", "4"],
                     ["direct", "--conns", "100", "--rate", "1000"],
                     ["group", "--conns", "40", "--group-size", "10", "--inflight", "2"],
                     # only the senders have a second session: own copies alone
                     ["group", "--conns", "40", "--group-size", "2", "--inflight", "2",
                      "--devices-for", "senders"]):
            rc, text, result = run_bench(self.server.port, *args, "--devices", "2", "--duration",
                                         "1.5", "--warmup", "0.5")
            self.assertEqual(rc, 0, text)
            self.assertEqual((result["lost"], result["own_lost"], result["device_lost"],
                              result["out_of_order"], result["unexpected"]), (0, 0, 0, 0, 0),
                             result)
            self.assertGreater(result["own_delivered"], 0, result)
            self.assertEqual(result["own_delivered"], result["own_expected"], result)
            self.assertEqual(result["device_delivered"], result["device_expected"], result)
            self.assertEqual(result["own_expected"], result["answered"], result)
            self.assertGreater(result["own_latency_ms"]["p50"], 0, result)

    def test_idle_reports_the_servers_memory(self):
        rc, text, result = run_bench(self.server.port, "idle", "--conns", "300", "--settle", "1",
                                     "--server-pid", str(self.server.proc.pid))
        self.assertEqual(rc, 0, text)
        self.assertGreater(result["bytes_per_conn"], 0, result)

    def test_file_reports_both_directions(self):
        """make bench's file-25mib row, smaller: an upload and a download
        whose SHA-256 matches, each with its throughput."""
        rc, text, result = run_bench(self.server.port, "file", "--file-mib", "3", "--threads",
                                     "2", "--pwhash-cost", "min")
        self.assertEqual(rc, 0, text)
        self.assertGreater(result["upload_mb_per_s"], 0, result)
        self.assertGreater(result["download_mb_per_s"], 0, result)


if __name__ == "__main__":
    unittest.main()
