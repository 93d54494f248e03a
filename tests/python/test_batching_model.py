#!/usr/bin/env python3
"""Tests of bench/batching_report.py's `model` arithmetic (what continuous
batching can buy over static batching and one request at a time for given
per-step costs) on small workloads whose answers can be counted by hand.
Standard library unittest only.

    tests/python/test_batching_model.py
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("ENGINE_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
REPORT = os.path.join(SRC, "bench", "batching_report.py")


def run_model(outs, *args):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for o in outs:
            f.write(json.dumps({"prompt": "x", "max_tokens": o, "ignore_eos": True}) + "\n")
        path = f.name
    try:
        r = subprocess.run([sys.executable, REPORT, "model", "--prompts", path, *args],
                           capture_output=True, text=True)
    finally:
        os.unlink(path)
    return r


def ratios(text):
    m = re.search(r"continuous / static ([0-9.]+)x, continuous / one at a time ([0-9.]+)x", text)
    if not m:
        raise AssertionError(f"no ratios in: {text}")
    return float(m.group(1)), float(m.group(2))


class Model(unittest.TestCase):
    def test_cost_per_row_buys_nothing(self):
        # T(R) = R ms: every schedule does the same row work
        r = run_model([1, 2, 3, 4], "--batch", "2", "--step-ms", "1:1,2:2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(ratios(r.stdout), (1.0, 1.0))

    def test_cost_per_step(self):
        # T(R) = 1 ms whatever R: static runs 2 + 4 = 6 steps, continuous
        # 10 / 2 = 5, one at a time 10
        r = run_model([1, 2, 3, 4], "--batch", "2", "--step-ms", "1:1,2:1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("decode steps: static 6, continuous 5, one at a time 10", r.stdout)
        self.assertEqual(ratios(r.stdout), (1.2, 2.0))

    def test_attention_moves_ratios_toward_one(self):
        # 5 s of continuous work plus 5 s of attention in each schedule
        r = run_model([1, 2, 3, 4], "--batch", "2", "--step-ms", "1:1000,2:1000", "--kv-gb", "10",
                      "--kv-gbps", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(ratios(r.stdout), (1.1, 1.5))

    def test_bad_step_costs(self):
        r = run_model([1], "--step-ms", "1:x")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ROWS:MS", r.stderr)


if __name__ == "__main__":
    unittest.main()
