#!/usr/bin/env python3
"""Tests of bench/soak.py's report logic on synthetic samples, without a
server or protobuf: duration parsing, the warm-up rule, outcome
classification and counting, RSS growth after warm-up, idle-vs-final
comparison, metrics parsing and the PASS/FAIL verdict. Standard library
unittest only.

    tests/python/test_soak.py
"""
import importlib.util
import os
import unittest

SRC = os.environ.get("ENGINE_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("soak", os.path.join(SRC, "bench", "soak.py"))
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

IDLE_METRICS = {g: 0.0 for g in soak.IDLE_GAUGES}
ALIVE = {"server process alive": (True, "pid 1")}


def checks_of(results=(("http unary /generate", soak.OK, "200", ""),), rss=None,
              idle=(10, 17), final=(10, 17), metrics=None, alive=None, probes=None):
    if rss is None:
        rss = soak.rss_growth([(0, 1000, 0, 0), (10, 1010, 0, 0)], 5)
    cmp = soak.back_to_idle({"fds": idle[0], "threads": idle[1]},
                            {"fds": final[0], "threads": final[1]})
    return soak.build_checks(soak.tally(results), rss, cmp,
                             IDLE_METRICS if metrics is None else metrics,
                             ALIVE if alive is None else alive, probes or {})


def failed(checks):
    return [c["name"] for c in checks if not c["ok"]]


class Duration(unittest.TestCase):
    def test_units(self):
        self.assertEqual(soak.parse_duration("90s"), 90)
        self.assertEqual(soak.parse_duration("10m"), 600)
        self.assertEqual(soak.parse_duration("1h"), 3600)
        self.assertEqual(soak.parse_duration("45"), 45)
        self.assertEqual(soak.parse_duration("1.5m"), 90)

    def test_rejects_nonsense(self):
        for bad in ("", "0s", "-5s", "10d", "abc", "5 m s"):
            with self.assertRaises(ValueError, msg=bad):
                soak.parse_duration(bad)

    def test_warmup_is_a_tenth_capped_at_a_minute(self):
        self.assertEqual(soak.warmup_seconds(90), 9)
        self.assertEqual(soak.warmup_seconds(600), 60)
        self.assertEqual(soak.warmup_seconds(3600), 60)


class Outcomes(unittest.TestCase):
    def test_classify(self):
        ok, exp = {"200"}, {"429"}
        self.assertEqual(soak.classify("200", ok, exp), soak.OK)
        self.assertEqual(soak.classify("429", ok, exp), soak.EXPECTED)
        self.assertEqual(soak.classify("500", ok, exp), soak.UNEXPECTED)
        self.assertEqual(soak.classify("CLOSED", ok, exp), soak.UNEXPECTED)
        self.assertEqual(soak.classify(soak.TIMEOUT_CODE, ok, exp), soak.NO_ANSWER)

    def test_bad_input_accepted_is_unexpected(self):
        # a 200 for input that must be refused is a failure, not a success
        self.assertEqual(soak.classify("200", (), {"400"}), soak.UNEXPECTED)

    def test_nul_judgement(self):
        j = soak.judge_nul
        self.assertEqual(j("k", "400", None, 5, {"400"}, {"429"})[1], soak.EXPECTED)
        self.assertEqual(j("k", "429", None, 5, {"400"}, {"429"})[1], soak.EXPECTED)
        self.assertEqual(j("k", "200", 12, 5, {"400"}, {"429"})[1], soak.OK)
        truncated = j("k", "200", 5, 5, {"400"}, {"429"})
        self.assertEqual(truncated[1:3], (soak.UNEXPECTED, "NUL_TRUNCATED"))

    def test_tally_counts_per_kind_and_code(self):
        t = soak.tally([("a", soak.OK, "200", ""), ("a", soak.EXPECTED, "429", ""),
                        ("a", soak.OK, "200", ""), ("b", soak.NO_ANSWER, "TIMEOUT", "")])
        self.assertEqual(t["a"]["outcomes"][soak.OK], 2)
        self.assertEqual(t["a"]["codes"], {"200": 2, "429": 1})
        self.assertEqual(soak.totals(t), {soak.OK: 2, soak.EXPECTED: 1, soak.UNEXPECTED: 0,
                                          soak.NO_ANSWER: 1})
        self.assertIn("all", soak.format_table(t))


class Rss(unittest.TestCase):
    def test_base_is_first_sample_after_warmup(self):
        samples = [(0, 500, 0, 0), (4, 900, 0, 0), (5, 1000, 0, 0), (7, 1040, 0, 0),
                   (9, 1020, 0, 0)]
        r = soak.rss_growth(samples, 5)
        self.assertEqual((r["base_kb"], r["max_kb"], r["final_kb"]), (1000, 1040, 1020))
        self.assertAlmostEqual(r["max_growth"], 0.04)
        self.assertAlmostEqual(r["final_growth"], 0.02)

    def test_out_of_order_samples_are_sorted(self):
        r = soak.rss_growth([(6, 1100, 0, 0), (5, 1000, 0, 0)], 5)
        self.assertEqual((r["base_kb"], r["final_kb"]), (1000, 1100))

    def test_anon_and_file_split(self):
        r = soak.rss_growth([(5, 1000, 0, 0, 600, 400), (6, 1030, 0, 0, 640, 390)], 5)
        self.assertEqual((r["anon_growth_kb"], r["file_growth_kb"]), (40, -10))

    def test_none_without_late_samples(self):
        self.assertIsNone(soak.rss_growth([(1, 1000, 0, 0)], 5))
        c = soak.build_checks(soak.tally([("k", soak.OK, "200", "")]), None, {}, IDLE_METRICS,
                              ALIVE, {})
        self.assertEqual(failed(c), ["RSS growth < 5% after warm-up"])

    def test_growth_that_stays_fails_a_transient_peak_does_not(self):
        under = soak.rss_growth([(5, 1000, 0, 0), (6, 1049, 0, 0)], 5)
        stays = soak.rss_growth([(5, 1000, 0, 0), (6, 1020, 0, 0), (7, 1050, 0, 0)], 5)
        peak = soak.rss_growth([(5, 1000, 0, 0), (6, 1200, 0, 0), (7, 1010, 0, 0)], 5)
        self.assertEqual(failed(checks_of(rss=under)), [])
        self.assertEqual(failed(checks_of(rss=stays)), ["RSS growth < 5% after warm-up"])
        self.assertEqual(failed(checks_of(rss=peak)), [])
        self.assertAlmostEqual(peak["max_growth"], 0.2)


class Verdict(unittest.TestCase):
    def test_clean_run_passes(self):
        c = checks_of()
        self.assertEqual(failed(c), [])
        self.assertEqual(soak.verdict(c), "PASS")

    def test_no_checks_or_no_requests_fail(self):
        self.assertEqual(soak.verdict([]), "FAIL")
        self.assertEqual(failed(checks_of(results=())), ["load ran"])

    def test_idle_comparison(self):
        cmp = soak.back_to_idle({"fds": 10, "threads": 17}, {"fds": 9, "threads": 19})
        self.assertEqual(cmp, {"fds": (10, 9, True), "threads": (17, 19, False)})
        self.assertEqual(failed(checks_of(final=(12, 17))), ["fds back to idle"])
        self.assertEqual(soak.back_to_idle({"fds": 3}, {})["fds"][2], False)

    def test_each_failure_fails(self):
        self.assertEqual(failed(checks_of(results=[("k", soak.UNEXPECTED, "500", "")])),
                         ["requests answered as expected"])
        self.assertEqual(failed(checks_of(results=[("k", soak.NO_ANSWER, "TIMEOUT", "")])),
                         ["requests answered as expected"])
        m = dict(IDLE_METRICS)
        m['infer_kv_blocks_used{tier="cpu"}'] = 3
        self.assertEqual(failed(checks_of(metrics=m)),
                         ['infer_kv_blocks_used{tier="cpu"} = 0 after settle'])
        self.assertEqual(len(failed(checks_of(metrics={}))), len(soak.IDLE_GAUGES))
        self.assertEqual(failed(checks_of(alive={"server process alive": (False, "")})),
                         ["server process alive"])
        self.assertEqual(failed(checks_of(probes={"p": (False, "held")})), ["p"])

    def test_expected_errors_do_not_fail(self):
        res = [("k", soak.EXPECTED, "RESOURCE_EXHAUSTED", ""),
               ("k", soak.EXPECTED, "DEADLINE_EXCEEDED", "")]
        self.assertEqual(failed(checks_of(results=res)), [])


class Metrics(unittest.TestCase):
    def test_parse(self):
        m = soak.parse_metrics('# HELP x y\n# TYPE x gauge\ninfer_kv_blocks_used{tier="device"} 4\n'
                               "infer_active_calls 0\nbroken line\n")
        self.assertEqual(m, {'infer_kv_blocks_used{tier="device"}': 4.0,
                             "infer_active_calls": 0.0})


if __name__ == "__main__":
    unittest.main()
