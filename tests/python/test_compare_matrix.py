#!/usr/bin/env python3
"""bench/compare_matrix.py's pure parts: the GGUF header reader behind the
"tensor types" column, the medians and llama.cpp's best configuration, and
the points a --points list names. Stdlib only; no engine, no llama.cpp."""

import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import compare_matrix as cm  # noqa: E402


def gguf_bytes(kvs, tensors, data_sizes, align=32):
    """A minimal GGUF v3 file: kvs [(key, type, packed value)], tensors
    [(name, dims, type)], data_sizes (bytes of each tensor's data)."""
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, typ, val in kvs:
        out += s(key) + struct.pack("<I", typ) + val
    off = 0
    for (name, dims, typ), size in zip(tensors, data_sizes):
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", typ, off)
        off += (size + align - 1) // align * align
    out += b"\0" * ((-len(out)) % align)
    for size in data_sizes:
        out += b"\1" * size + b"\0" * ((-size) % align)
    return out


class TypeMix(unittest.TestCase):
    def write(self, data):
        f = tempfile.NamedTemporaryFile(suffix=".gguf", delete=False)
        f.write(data)
        f.close()
        self.addCleanup(os.remove, f.name)
        return f.name

    def test_bytes_per_type_with_arrays_and_strings_in_the_header(self):
        tokens = b"".join(struct.pack("<Q", len(t)) + t for t in (b"a", b"bc", b"def"))
        kvs = [("general.architecture", 8, struct.pack("<Q", 5) + b"llama"),
               ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + tokens),
               ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 3) + b"\0" * 12),
               ("llama.rope.freq_base", 6, struct.pack("<f", 1e4))]
        # Q8_0 64x2 (4 blocks of 34 bytes), F32 vector of 8, Q4_K 256x1 (144)
        tensors = [("token_embd.weight", [64, 2], 8), ("norm", [8], 0), ("w", [256, 1], 12)]
        mix = cm.gguf_type_mix(self.write(gguf_bytes(kvs, tensors, [136, 32, 144])))
        # sizes include padding to the alignment, which the data regions hold
        self.assertEqual(mix, {"Q8_0": 160, "F32": 32, "Q4_K": 160})
        self.assertEqual(cm.mix_label(mix), "Q8_0 45% Q4_K 45% F32 9%")

    def test_not_gguf(self):
        with self.assertRaises(ValueError):
            cm.gguf_type_mix(self.write(b"GGML" + b"\0" * 64))


class Aggregate(unittest.TestCase):
    def test_medians_over_rounds_and_best_config_per_test(self):
        ours = {"pp512": [100.0, 300.0, 200.0], "tg128": [10.0, 12.0]}
        llama = {("pp512", "fa0 t2"): [150.0, 160.0, 170.0],
                 ("pp512", "fa1 t2"): [100.0, 400.0, 120.0],
                 ("tg128", "fa0 t2"): [9.0, 9.5, 9.0],
                 ("tg128", "fa1 t1"): [11.0, 10.0, 12.0]}
        o, ll = cm.aggregate(ours, llama)
        self.assertEqual(o["pp512"]["median_ts"], 200.0)
        self.assertEqual(o["tg128"]["median_ts"], 11.0)
        # fa1's single 400 does not win against fa0's steady 160
        self.assertEqual(ll["pp512"]["best_config"], "fa0 t2")
        self.assertEqual(ll["pp512"]["median_ts"], 160.0)
        self.assertEqual(ll["tg128"]["best_config"], "fa1 t1")
        self.assertEqual(ll["tg128"]["median_ts"], 11.0)

    def test_failed_rounds_leave_no_entry(self):
        o, ll = cm.aggregate({"pp512": []}, {("tg128", "fa0 t1"): []})
        self.assertEqual((o, ll), ({}, {}))


class Points(unittest.TestCase):
    def parse(self, spec):
        class A:
            points, formats = spec, "Q4_0"
        return cm.parse_points(A())

    def test_kinds(self):
        p = self.parse("smollm2:q8_0,smollm2:Q4_1,gemma,synthetic:Q4_K_M,/x/y.gguf")
        self.assertEqual([x["label"] for x in p],
                         ["SmolLM2-135M Q8_0", "SmolLM2-135M Q4_1", "gemma-3-270m Q4_K_M",
                          "synthetic-1.1B Q4_K_M", "y"])
        self.assertTrue(p[0]["path"].endswith("models/derived/SmolLM2-135M-Instruct.Q8_0.gguf"))
        self.assertEqual(p[1]["path"], cm.SMOLLM2)  # Q4_1 is the original file
        self.assertEqual(p[3]["make"], ("synthetic", "q4_k_m"))
        self.assertIsNone(p[4]["make"])

    def test_bad_point(self):
        with self.assertRaises(SystemExit):
            self.parse("smollm2")


if __name__ == "__main__":
    unittest.main()
