"""parley-bench as a user of `make bench` relies on it: it fails loudly when a
message is lost, passes a server that loses nothing, and reports figures in
its JSON. Run against parley-floor (which can be told to drop pushes) and a
real parleyd."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import ParleyTest

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

    def test_idle_reports_the_servers_memory(self):
        rc, text, result = run_bench(self.server.port, "idle", "--conns", "300", "--settle", "1",
                                     "--server-pid", str(self.server.proc.pid))
        self.assertEqual(rc, 0, text)
        self.assertGreater(result["bytes_per_conn"], 0, result)


if __name__ == "__main__":
    unittest.main()
