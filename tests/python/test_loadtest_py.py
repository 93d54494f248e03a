#!/usr/bin/env python3
"""Tests of the Python side of loadtest: loadtest/gen_trace.py (determinism,
format, clip bounds, the committed traces) and loadtest/plot.py (on a small
synthetic result directory). Standard library unittest only.

    tests/python/test_loadtest_py.py [trace|plot|all]   (default all)

ctest runs `trace` and `plot` as two entries (test_loadtest_py_trace,
test_loadtest_py_plot). `plot` exits 77 (ctest's skip) when no Python with
matplotlib is found (this interpreter, or /usr/bin/python3 from Debian's
python3-matplotlib).
"""
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("ENGINE_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GEN = os.path.join(SRC, "loadtest", "gen_trace.py")
PLOT = os.path.join(SRC, "loadtest", "plot.py")
TRACES = os.path.join(SRC, "loadtest", "traces")

ALLOWED = {"t", "prompt", "prompt_len", "max_tokens", "max_length", "min_tokens", "min_length",
           "temperature", "top_k", "top_p", "seed", "ignore_eos", "stop", "id"}


def gen(*args):
    r = subprocess.run([sys.executable, GEN, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"gen_trace.py {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def parse(text):
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            out.append(json.loads(line))
        except ValueError as e:
            raise AssertionError(f"line {i + 1} is not JSON: {e}: {line[:80]}")
    return out


def check_request(tc, r):
    tc.assertIsInstance(r, dict)
    tc.assertLessEqual(set(r), ALLOWED, f"unknown keys in {r}")
    tc.assertIn("t", r)
    tc.assertIsInstance(r["t"], (int, float))
    tc.assertGreaterEqual(r["t"], 0)
    tc.assertEqual(("prompt" in r) + ("prompt_len" in r), 1, f"exactly one of prompt/prompt_len: {r}")
    if "prompt" in r:
        tc.assertIsInstance(r["prompt"], str)
        tc.assertTrue(r["prompt"].strip())
    else:
        tc.assertIsInstance(r["prompt_len"], int)
        tc.assertGreater(r["prompt_len"], 0)
    tc.assertFalse("max_tokens" in r and "max_length" in r)
    tc.assertFalse("min_tokens" in r and "min_length" in r)
    mx = r.get("max_tokens", r.get("max_length"))
    tc.assertIsInstance(mx, int)
    tc.assertGreater(mx, 0)
    mn = r.get("min_tokens", r.get("min_length"))
    if mn is not None:
        tc.assertLessEqual(mn, mx)
    if "temperature" in r:
        tc.assertGreaterEqual(r["temperature"], 0)
    if "top_p" in r:
        tc.assertTrue(0 < r["top_p"] <= 1)


class TraceTest(unittest.TestCase):
    def test_deterministic(self):
        for w in ("chat", "shared-prefix", "long-prompt", "lab11"):
            a = gen(w, "--seed", "7", "--rate", "3") if w != "lab11" else gen(w, "--seed", "7")
            b = gen(w, "--seed", "7", "--rate", "3") if w != "lab11" else gen(w, "--seed", "7")
            self.assertEqual(a, b, w)
        self.assertNotEqual(gen("chat", "--seed", "1", "-n", "20"), gen("chat", "--seed", "2", "-n", "20"))
        self.assertNotEqual(gen("chat", "--seed", "1", "-n", "5", "--text"),
                            gen("chat", "--seed", "2", "-n", "5", "--text"))

    def test_rate_does_not_change_requests(self):
        a = parse(gen("chat", "--seed", "3", "-n", "50", "--rate", "1"))
        b = parse(gen("chat", "--seed", "3", "-n", "50", "--rate", "8", "--burstiness", "0.5"))
        strip = lambda rs: [{k: v for k, v in r.items() if k != "t"} for r in rs]
        self.assertEqual(strip(a), strip(b))
        self.assertNotEqual([r["t"] for r in a], [r["t"] for r in b])

    def test_chat_format_and_clip(self):
        rs = parse(gen("chat", "-n", "500", "--seed", "5", "--rate", "4"))
        self.assertEqual(len(rs), 500)
        for r in rs:
            check_request(self, r)
            self.assertTrue(8 <= r["prompt_len"] <= 1024)
            self.assertTrue(8 <= r["max_tokens"] <= 512)
            self.assertEqual(r["temperature"], 0)
            self.assertIs(r["ignore_eos"], True)
        ts = [r["t"] for r in rs]
        self.assertEqual(ts[0], 0)
        self.assertEqual(ts, sorted(ts))
        # mean gap ~ 1/4 s (Poisson, 499 gaps: within 20%)
        self.assertAlmostEqual(ts[-1] / 499, 0.25, delta=0.05)
        # lognormal medians near the defaults (150, 120)
        med = lambda v: sorted(v)[len(v) // 2]
        self.assertTrue(120 <= med([r["prompt_len"] for r in rs]) <= 185)
        self.assertTrue(95 <= med([r["max_tokens"] for r in rs]) <= 150)

    def test_chat_flags(self):
        rs = parse(gen("chat", "-n", "100", "--prompt-median", "50", "--prompt-min", "40",
                       "--prompt-max", "60", "--output-min", "10", "--output-max", "10"))
        for r in rs:
            self.assertTrue(40 <= r["prompt_len"] <= 60)
            self.assertEqual(r["max_tokens"], 10)
            self.assertEqual(r["t"], 0)  # default rate: inf
        rs = parse(gen("chat", "-n", "10", "--text"))
        for r in rs:
            check_request(self, r)
            self.assertIn("prompt", r)

    def test_other_workloads(self):
        rs = parse(gen("shared-prefix", "-n", "30", "--rate", "2"))
        first = rs[0]["prompt"].split("\n\n")[0]
        self.assertGreater(len(first.split()), 200)  # the ~300-token system prompt
        for r in rs:
            check_request(self, r)
            self.assertTrue(r["prompt"].startswith(first))
            self.assertTrue(16 <= r["max_tokens"] <= 256)
        self.assertGreater(len({r["prompt"] for r in rs}), 10)
        for r in parse(gen("long-prompt", "-n", "30")):
            check_request(self, r)
            self.assertTrue(1000 <= r["prompt_len"] <= 3000)
            self.assertTrue(8 <= r["max_tokens"] <= 64)
        rs = parse(gen("lab11"))
        self.assertEqual(len(rs), 11)
        for r in rs:
            check_request(self, r)
            self.assertIn("min_length", r)
            self.assertIn("max_length", r)
        self.assertLess(rs[-1]["t"], 2.0)
        self.assertGreater(len({r["temperature"] for r in rs}), 3)

    def test_bad_arguments(self):
        for args in (["chat", "-n", "0"], ["chat", "--rate", "-1"], ["chat", "--rate", "x"],
                     ["chat", "--prompt-min", "10", "--prompt-max", "5"], ["lab11", "-n", "5"],
                     ["nope"]):
            r = subprocess.run([sys.executable, GEN, *args], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0, args)

    def test_committed_traces(self):
        """Every committed trace parses, and regenerates byte for byte from its header line."""
        names = sorted(f for f in os.listdir(TRACES) if f.endswith(".jsonl"))
        self.assertTrue({"chat.jsonl", "shared-prefix.jsonl", "long-prompt.jsonl", "lab11.jsonl"} <= set(names))
        for name in names:
            with open(os.path.join(TRACES, name), encoding="utf-8") as f:
                text = f.read()
            rs = parse(text)
            self.assertTrue(rs, name)
            for r in rs:
                check_request(self, r)
            head = text.splitlines()[0]
            self.assertTrue(head.startswith("# loadtest/gen_trace.py "), name)
            args = head[len("# loadtest/gen_trace.py "):].split()
            self.assertEqual(gen(*args), text, f"{name} does not match its generator command")


def make_fixture(d, n=40, seed=1, scale=1.0, with_server=True):
    """A small synthetic loadtest --out directory."""
    rng = random.Random(seed)
    os.makedirs(d, exist_ok=True)
    resp, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(4.0)
        out_toks = rng.randint(1, 40)
        ttft = rng.lognormvariate(math.log(80 * scale), 0.5)
        itl = [rng.lognormvariate(math.log(20 * scale), 0.3) for _ in range(out_toks - 1)]
        err = "HTTP 429" if i == 7 else None
        resp.append({"index": i, "id": str(i), "t_sched": t, "t_send": t + 0.001,
                     "ttft_ms": None if err else ttft,
                     "tpot_ms": (sum(itl) / len(itl)) if itl and not err else None,
                     "e2e_ms": None if err else ttft + sum(itl), "itl_ms": [] if err else itl,
                     "input_tokens": rng.randint(8, 200), "output_tokens": 0 if err else out_toks,
                     "finish_reason": None if err else "length", "error": err, "text": "x" * out_toks})
    end = max(r["t_send"] + (r["e2e_ms"] or 0) / 1000 for r in resp)
    timeline, cum = [], 0
    steps = int(end / 0.1) + 2
    for k in range(steps):
        ts = k * 0.1
        cum = sum(r["output_tokens"] for r in resp if r["e2e_ms"] and r["t_send"] + r["e2e_ms"] / 1000 <= ts)
        inflight = sum(1 for r in resp if r["t_send"] <= ts and r["e2e_ms"]
                       and r["t_send"] + r["e2e_ms"] / 1000 > ts)
        s = {"t": round(ts, 3), "in_flight": inflight, "completed": 0, "failed": 0, "output_tokens": cum}
        if with_server:
            s.update({"running": min(inflight, 16), "waiting": max(0, inflight - 16), "swapped": 0,
                      "kv_blocks_used": inflight * 3})
        timeline.append(s)
    with open(os.path.join(d, "responses.json"), "w") as f:
        json.dump(resp, f)
    with open(os.path.join(d, "timeline.json"), "w") as f:
        json.dump(timeline, f)
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"requests_sent": n, "requests_ok": n - 1, "requests_failed": 1}, f)


def matplotlib_python():
    for py in (sys.executable, "/usr/bin/python3"):
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            return py
    return None


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PlotTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.py = matplotlib_python()
        if not cls.py:
            raise unittest.SkipTest("matplotlib not available (apt-get install python3-matplotlib)")

    def run_plot(self, *args):
        r = subprocess.run([self.py, PLOT, *args], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.split()

    def assert_png(self, p):
        self.assertTrue(os.path.exists(p), p)
        with open(p, "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)
        self.assertGreater(os.path.getsize(p), 5000, p)

    def test_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            make_fixture(a, seed=1)
            make_fixture(b, seed=2, scale=2.0, with_server=False)
            out = os.path.join(tmp, "png")
            paths = self.run_plot("runs", f"fast={a}", b, "-o", out, "--prefix", "fx", "--slo", "ttft=200,tpot=50")
            self.assertEqual([os.path.basename(p) for p in paths],
                             ["fx-latency-cdf.png", "fx-throughput.png", "fx-queue.png"])
            for p in paths:
                self.assert_png(p)
            # without a timeline, throughput comes from responses.json
            os.remove(os.path.join(b, "timeline.json"))
            for p in self.run_plot("runs", b, "-o", out, "--prefix", "nt"):
                self.assert_png(p)

    def test_sweep(self):
        with tempfile.TemporaryDirectory() as tmp:
            sw = {"slo": {"ttft_ms": 2000, "tpot_ms": 100},
                  "series": [{"label": "ours", "points": [{"rate": r, "ttft_p99_ms": 100 * r * r,
                                                           "tpot_p50_ms": 20 + 10 * r} for r in (1, 2, 4, 8)]},
                             {"label": "llama.cpp", "points": [{"rate": r, "ttft_p99_ms": 400 * r * r,
                                                                "tpot_p50_ms": 40 + 30 * r} for r in (1, 2, 4)]}],
                  "capacity": {"ours": 4.5, "llama.cpp": 2.0}}
            p = os.path.join(tmp, "sweep.json")
            with open(p, "w") as f:
                json.dump(sw, f)
            out = self.run_plot("sweep", p, "-o", tmp, "--name", "s.png")
            self.assertEqual(out, [os.path.join(tmp, "s.png")])
            self.assert_png(out[0])

    def test_errors(self):
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([self.py, PLOT, "runs", os.path.join(tmp, "missing")], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            os.makedirs(os.path.join(tmp, "empty"))
            r = subprocess.run([self.py, PLOT, "runs", os.path.join(tmp, "empty")], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("responses.json", r.stderr)


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    classes = {"trace": [TraceTest], "plot": [PlotTest], "all": [TraceTest, PlotTest]}.get(which)
    if classes is None:
        sys.exit(f"usage: {sys.argv[0]} [trace|plot|all]")
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in classes)
    res = unittest.TextTestRunner(verbosity=2).run(suite)
    if not res.wasSuccessful():
        return 1
    if which == "plot" and res.skipped:
        print("SKIP: matplotlib not available")
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main())
