#!/usr/bin/env python3
"""Helpers and report of bench/serving.sh (the serving benchmark).

  serving_report.py idle [--seconds 2] [--threshold 5]
      Per-process CPU use over a short window (from /proc); prints processes
      above the threshold (% of one core) and exits 1 if there are any.
  serving_report.py slo-check CASE_DIR --ttft MS --tpot MS
      Median over the reps (CASE_DIR/rep*/summary.json) of p99 TTFT and
      median TPOT; exit 0 when both are under the SLO and no request failed,
      1 otherwise. Prints one line.
  serving_report.py report RESULTS --md FILE [--img DIR] [--doc docs/benchmarks.md]
      Reads the tree bench/serving.sh wrote and writes the markdown fragment
      (FILE) and the PNGs (DIR); with --doc also replaces the text between
      <!-- serving:begin --> and <!-- serving:end --> in that file.

RESULTS layout (written by bench/serving.sh):

  meta.json                         machine, versions, the command, SLO
  <part>/<case>/case.json           label, server, config, workload description
  <part>/<case>/rep<k>/             build/loadtest --out dir (summary.json,
                                    responses.json, timeline.json) plus
                                    metrics_before.txt / metrics_after.txt
                                    (GET /metrics), other_pct (CPU share other
                                    processes took during the run), cmd.txt

Every figure in the tables is the median over the reps of that case.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "loadtest"))

BEGIN, END = "<!-- serving:begin -->", "<!-- serving:end -->"


# ---------------------------------------------------------------- idle
def proc_times():
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            comm = s[s.index("(") + 1:s.rindex(")")]
            fields = s[s.rindex(")") + 2:].split()
            out[int(p)] = (comm, int(fields[11]) + int(fields[12]))
        except (OSError, ValueError, IndexError):
            pass
    return out


def cmd_idle(args):
    hz = os.sysconf("SC_CLK_TCK")
    a = proc_times()
    time.sleep(args.seconds)
    b = proc_times()
    me = {os.getpid(), os.getppid()}
    busy = []
    for pid, (comm, t) in b.items():
        if pid in me or pid not in a:
            continue
        pct = 100.0 * (t - a[pid][1]) / hz / args.seconds
        if pct > args.threshold:
            busy.append((pct, pid, comm))
    for pct, pid, comm in sorted(busy, reverse=True):
        print(f"{pct:5.0f}%  pid {pid}  {comm}")
    return 1 if busy else 0


# ---------------------------------------------------------------- reading
def load_json(p, default=None):
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        return default


def reps_of(case_dir):
    return sorted(d for d in glob.glob(os.path.join(case_dir, "rep*")) if os.path.isfile(os.path.join(d, "summary.json")))


def get(summary, path):
    v = summary
    for k in path.split("."):
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v


def median_of(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def metrics_file(p):
    vals = {}
    try:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                m = re.match(r"^([A-Za-z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)", line)
                if m:
                    try:
                        vals[m.group(1)] = float(m.group(2))
                    except ValueError:
                        pass
    except OSError:
        pass
    return vals


def metric_delta(rep, name):
    a = metrics_file(os.path.join(rep, "metrics_before.txt"))
    b = metrics_file(os.path.join(rep, "metrics_after.txt"))
    if name not in b:
        return None
    return b[name] - a.get(name, 0.0)


def metric_value(rep, name):
    return metrics_file(os.path.join(rep, "metrics_after.txt")).get(name)


def other_pct(rep):
    try:
        with open(os.path.join(rep, "other_pct")) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


FIELDS = {
    "ok": "requests_ok", "failed": "requests_failed", "sent": "requests_sent",
    "rps": "request_rps", "out_tps": "output_tps", "in_tps": "input_tps", "dur": "duration_s",
    "ttft50": "ttft_ms.p50", "ttft90": "ttft_ms.p90", "ttft99": "ttft_ms.p99",
    "tpot50": "tpot_ms.p50", "tpot99": "tpot_ms.p99", "itl50": "itl_ms.p50", "itl99": "itl_ms.p99",
    "e2e50": "e2e_ms.p50", "e2e99": "e2e_ms.p99", "good": "goodput_fraction", "goodrps": "goodput_rps",
}


def case_stats(case_dir):
    reps = reps_of(case_dir)
    sums = [load_json(os.path.join(r, "summary.json"), {}) for r in reps]
    st = {"n_reps": len(reps), "reps": reps}
    for k, path in FIELDS.items():
        st[k] = median_of([get(s, path) for s in sums])
    st["failed_max"] = max([get(s, "requests_failed") or 0 for s in sums], default=None)
    st["other"] = max([x for x in (other_pct(r) for r in reps) if x is not None], default=None)
    st["pre_swap"] = median_of([metric_delta(r, 'infer_preemptions_total{mode="swap"}') for r in reps])
    st["pre_rec"] = median_of([metric_delta(r, 'infer_preemptions_total{mode="recompute"}') for r in reps])
    st["swap_ins"] = median_of([metric_delta(r, "infer_swap_ins_total") for r in reps])
    st["steps"] = median_of([metric_delta(r, "infer_engine_steps_total") for r in reps])
    st["kv_peak"] = median_of([metric_value(r, "infer_kv_peak_blocks_used") for r in reps])
    st["kv_total"] = median_of([metric_value(r, 'infer_kv_blocks_total{tier="device"}') for r in reps])
    st["command"] = get(sums[0], "command_line") if sums else None
    if reps:
        try:
            with open(os.path.join(reps[0], "cmd.txt")) as f:
                st["command"] = f.read().strip()
        except OSError:
            pass
    if st["command"]:  # ports and result paths change from run to run
        st["command"] = re.sub(r"(--url \S+?://127\.0\.0\.1:)\d+", r"\1PORT", st["command"])
        st["command"] = re.sub(r"--out \S+", "--out DIR", st["command"])
    return st


def slo_pass(st, ttft, tpot):
    if not st["n_reps"]:
        return False
    if st["failed"] is None or st["failed"] > 0:
        return False
    return (st["ttft99"] is not None and st["ttft99"] < ttft and
            (st["tpot50"] is None or st["tpot50"] < tpot))


def cmd_slo_check(args):
    st = case_stats(args.case_dir)
    ok = slo_pass(st, args.ttft, args.tpot)
    print(f"{args.case_dir}: reps {st['n_reps']}, p99 TTFT {fmt(st['ttft99'])} ms, median TPOT "
          f"{fmt(st['tpot50'])} ms, failed {fmt(st['failed'])}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


# ---------------------------------------------------------------- formatting
def fmt(v, nd=None):
    if v is None:
        return "–"
    if isinstance(v, float) and v != v:
        return "–"
    if nd is None:
        a = abs(v)
        nd = 0 if a >= 100 else 1 if a >= 10 else 2
    return f"{v:.{nd}f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


LAT_HEADER = ["ok/sent", "req/s", "out tok/s", "TTFT p50 / p99 ms", "TPOT p50 / p99 ms",
              "ITL p50 / p99 ms", "E2E p50 / p99 s", "other %"]


def lat_cells(st):
    e50 = st["e2e50"] / 1000 if st["e2e50"] is not None else None
    e99 = st["e2e99"] / 1000 if st["e2e99"] is not None else None
    return [f"{fmt(st['ok'], 0)}/{fmt(st['sent'], 0)}", fmt(st["rps"], 2), fmt(st["out_tps"], 0),
            f"{fmt(st['ttft50'])} / {fmt(st['ttft99'])}", f"{fmt(st['tpot50'])} / {fmt(st['tpot99'])}",
            f"{fmt(st['itl50'])} / {fmt(st['itl99'])}", f"{fmt(e50)} / {fmt(e99)}", fmt(st["other"], 0)]


def cases_of(part_dir):
    out = []
    for d in sorted(glob.glob(os.path.join(part_dir, "*"))):
        meta = load_json(os.path.join(d, "case.json"))
        if meta is not None:
            out.append((meta.get("order", 0), d, meta))
    return [(d, m) for _, d, m in sorted(out, key=lambda x: (x[0], x[1]))]


def median_rep(st):
    """The rep whose output tok/s is the median one (for plots)."""
    reps = st["reps"]
    if not reps:
        return None
    vals = sorted((get(load_json(os.path.join(r, "summary.json"), {}), "output_tps") or 0, r) for r in reps)
    return vals[(len(vals) - 1) // 2][1]


def plot_cases(pl, cases, img, prefix, slo=None):
    runs = []
    for d, meta, st in cases:
        r = median_rep(st)
        if r:
            runs.append(f"{meta['label']}={r}")
    if not runs or pl is None:
        return []
    return pl.plot_runs(runs, img, prefix=prefix, slo=slo)


def img_links(paths, md_dir, title):
    if not paths:
        return ""
    rel = [os.path.relpath(p, md_dir) for p in paths]
    return "\n" + "\n".join(f"![{title}: {os.path.basename(p)}]({p})" for p in rel) + "\n"


def capacity(points, ttft, tpot):
    """points: sorted [(rate, st)]. Returns (interpolated, highest_pass, note)."""
    last = None
    for rate, st in points:
        if slo_pass(st, ttft, tpot):
            last = (rate, st)
            continue
        if last is None:
            return None, None, f"fails the SLO already at {rate:g} req/s (the lowest rate swept)"
        r1, s1 = last
        if st["failed"] is None or st["failed"] > 0 or st["ttft99"] is None:
            return r1, r1, f"requests failed at {rate:g} req/s; capacity taken as the last passing point"
        cross = []
        for key, lim in (("ttft99", ttft), ("tpot50", tpot)):
            a1, a2 = s1[key], st[key]
            if a2 is None or a2 < lim:
                continue
            if a1 is None or a2 <= a1:
                cross.append(rate)
            else:
                cross.append(r1 + (lim - a1) * (rate - r1) / (a2 - a1))
        c = min(cross) if cross else rate
        c = max(r1, min(rate, c))
        return c, r1, f"interpolated between {r1:g} (pass) and {rate:g} req/s (fail)"
    if last is None:
        return None, None, "no points"
    return None, last[0], f"passes at every rate swept (up to {last[0]:g} req/s): capacity ≥ {last[0]:g}"


def cmd_report(args):
    res = args.results
    meta = load_json(os.path.join(res, "meta.json"), {})
    md_dir = os.path.dirname(os.path.abspath(args.md))
    img = args.img or os.path.join(res, "img")
    os.makedirs(img, exist_ok=True)
    try:
        import plot as pl
        pl.plot_runs  # noqa
        pl.plt = pl._import_matplotlib()
    except SystemExit as e:
        print(f"warning: no plots: {e}", file=sys.stderr)
        pl = None
    slo = meta.get("slo", {"ttft_ms": 2000, "tpot_ms": 100})
    ttft, tpot = slo["ttft_ms"], slo["tpot_ms"]
    L = []
    L.append(f"Generated by `{meta.get('command', 'bench/serving.sh')}` on {meta.get('date', '?')}; "
             f"engine commit `{meta.get('commit', '?')}`.")
    L.append("")
    L.append(f"**Machine:** {meta.get('cpu', '?')}, {meta.get('nproc', '?')} CPUs; "
             f"servers use {meta.get('threads', '?')} threads; model `{meta.get('model', '?')}`. "
             f"Every figure is the median over {meta.get('reps', '?')} reps; \"other %\" is the most CPU "
             f"(share of all cores) that processes other than the server and build/loadtest took during "
             f"any rep of that row.")
    if meta.get("quick"):
        L.append("")
        L.append("**This is a `--quick` smoke run: few requests, one rep. Not figures to quote.**")
    if meta.get("idle_warnings"):
        L.append("")
        L.append("**Warning: the machine was not idle:** " + "; ".join(meta["idle_warnings"]))
    L.append("")

    parts = [p for p in ("a", "b", "c", "d") if os.path.isdir(os.path.join(res, p))]
    for part in parts:
        pdir = os.path.join(res, part)
        cases = [(d, m, case_stats(d)) for d, m in cases_of(pdir)]
        if part in ("a", "b", "c"):
            title = {"a": "Continuous vs static batching", "b": "Preemption under memory pressure: swap vs recompute",
                     "c": "KV block size and step token budget"}[part]
            L.append(f"### {title}")
            L.append("")
            groups = {}
            for d, m, st in cases:
                groups.setdefault(m.get("workload", ""), []).append((d, m, st))
            for wl, gc in groups.items():
                L.append(f"Workload: {wl}" if wl else "")
                L.append("")
                extra_h, extra = [], (lambda st: [])
                if part == "b":
                    extra_h = ["preemptions swap / recompute", "swap-ins"]
                    extra = lambda st: [f"{fmt(st['pre_swap'], 0)} / {fmt(st['pre_rec'], 0)}", fmt(st["swap_ins"], 0)]
                elif part == "c":
                    extra_h = ["engine steps", "KV peak / total blocks"]
                    extra = lambda st: [fmt(st["steps"], 0), f"{fmt(st['kv_peak'], 0)} / {fmt(st['kv_total'], 0)}"]
                elif part == "a":
                    extra_h = ["engine steps"]
                    extra = lambda st: [fmt(st["steps"], 0)]
                rows = [[f"{m['label']}"] + lat_cells(st) + extra(st) for d, m, st in gc]
                L.append(table(["case"] + LAT_HEADER + extra_h, rows))
                L.append("")
                L.append("Server settings and load generator command (rep 1) per case:")
                L.append("")
                for d, m, st in gc:
                    L.append(f"- {m['label']}: `{m.get('config_summary', '')}` — `{st['command']}`")
                L.append("")
                slug = "pressure" if part == "b" else os.path.basename(gc[0][0]).rsplit("-", 1)[0]
                if part != "c":
                    paths = plot_cases(pl, gc, img, f"{part}-{slug}", slo={"ttft_ms": ttft, "tpot_ms": tpot}
                                       if part == "d" else None)
                    L.append(img_links(paths, md_dir, title))
        else:
            L.append("### Ours vs llama.cpp's llama-server: request-rate sweep")
            L.append("")
            L.append(meta.get("d_note", ""))
            L.append("")
            series, caps, rows, sweep = {}, {}, [], {"slo": slo, "series": [], "capacity": {}}
            for d, m, st in cases:
                series.setdefault(m["server"], []).append((m["rate"], st, m))
            for server, pts in series.items():
                pts.sort(key=lambda x: x[0])
                for rate, st, m in pts:
                    ok = slo_pass(st, ttft, tpot)
                    rows.append([server, f"{rate:g}"] + lat_cells(st) + [fmt(st["good"], 2), "pass" if ok else "FAIL"])
                c, hp, note = capacity([(r, s) for r, s, _ in pts], ttft, tpot)
                caps[server] = (c, hp, note)
                sweep["series"].append({"label": server, "points": [
                    {"rate": r, "ttft_p99_ms": s["ttft99"], "tpot_p50_ms": s["tpot50"]} for r, s, _ in pts]})
                if c:
                    sweep["capacity"][server] = c
            L.append(table(["server", "offered req/s"] + LAT_HEADER + ["goodput frac", f"SLO"], rows))
            L.append("")
            L.append(f"SLO: p99 TTFT < {ttft:g} ms and median TPOT < {tpot:g} ms, and no failed request. "
                     "Capacity under SLO: linear interpolation between the highest passing rate and the next "
                     "(failing) one, on whichever metric crosses its limit first; the highest passing point "
                     "is given as well.")
            L.append("")
            crows = []
            for server, (c, hp, note) in caps.items():
                crows.append([server, fmt(c, 2) if c else "–", f"{hp:g}" if hp else "–", note])
            L.append(table(["server", "capacity (interpolated) req/s", "highest passing rate", "how"], crows))
            L.append("")
            o, l = caps.get("ours"), caps.get("llama.cpp")
            if o and l:
                if o[0] and l[0]:
                    L.append(f"**Capacity ratio ours / llama.cpp: {o[0] / l[0]:.2f}** (interpolated); "
                             f"highest passing points: {fmt(o[1] / l[1], 2) if o[1] and l[1] else '–'}.")
                elif o[1] and l[1]:
                    L.append(f"**Capacity ratio ours / llama.cpp (highest passing points): {o[1] / l[1]:.2f}** "
                             "(at least one server passed every rate swept: a lower bound for that one).")
                elif (o[0] or o[1]) and not l[1]:
                    # llama.cpp failed already at the lowest rate swept: its
                    # capacity is below that rate, so the ratio has a lower bound
                    r_min = min(r for r, _, _ in series["llama.cpp"])
                    ours_c = o[0] or o[1]
                    L.append(f"**Capacity ratio ours / llama.cpp: more than {ours_c / r_min:.1f}** "
                             f"(lower bound): llama-server fails the SLO already at {r_min:g} req/s, the "
                             f"lowest rate swept, so its capacity is below {r_min:g} req/s; ours is "
                             f"{fmt(ours_c, 2)} req/s"
                             + (" (passes every rate swept)." if not o[0] else " (interpolated)."))
                else:
                    L.append("Capacity ratio: not defined (a server failed at the lowest rate swept).")
            elif o and not l:
                L.append(f"**llama.cpp's llama-server was not measured:** {meta.get('llama_missing', 'not available')}")
            L.append("")
            for server, pts in series.items():
                L.append(f"- {server}: `{pts[0][2].get('config_summary', '')}` — e.g. `{pts[0][1]['command']}`")
            L.append("")
            if pl is not None and sweep["series"]:
                p = pl.plot_sweep(sweep, os.path.join(img, "d-sweep.png"))
                L.append(img_links([p], md_dir, "rate sweep"))
                # CDFs at the highest rate both servers ran
                common = None
                for server, pts in series.items():
                    rs = {r for r, _, _ in pts}
                    common = rs if common is None else common & rs
                if common:
                    r = max(common)
                    sel = [(d, dict(m, label=f"{m['server']} @ {r:g} req/s"), st)
                           for d, m, st in cases if m["rate"] == r]
                    paths = plot_cases(pl, sel, img, "d-rate", slo={"ttft_ms": ttft, "tpot_ms": tpot})
                    L.append(img_links(paths, md_dir, f"at {r:g} req/s"))
            with open(os.path.join(res, "sweep.json"), "w") as f:
                json.dump(sweep, f, indent=1)
    text = "\n".join(L).rstrip() + "\n"
    text = re.sub(r"\n{3,}", "\n\n", text)
    with open(args.md, "w", encoding="utf-8") as f:
        f.write(text)
    print(args.md)
    if args.doc:
        with open(args.doc, encoding="utf-8") as f:
            doc = f.read()
        if BEGIN not in doc or END not in doc or doc.index(BEGIN) > doc.index(END):
            sys.exit(f"error: {args.doc} has no {BEGIN} ... {END} block")
        a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        # links in the doc are relative to the doc's directory
        doc_dir = os.path.dirname(os.path.abspath(args.doc))
        if os.path.abspath(doc_dir) != md_dir:
            text = re.sub(r"\]\(([^)]+\.png)\)",
                          lambda m: "](" + os.path.relpath(os.path.join(md_dir, m.group(1)), doc_dir) + ")", text)
        doc = doc[:a] + "\n" + text + doc[b:]
        with open(args.doc, "w", encoding="utf-8") as f:
            f.write(doc)
        print(f"updated {args.doc}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--seconds", type=float, default=2.0)
    i.add_argument("--threshold", type=float, default=5.0)
    c = sub.add_parser("slo-check")
    c.add_argument("case_dir")
    c.add_argument("--ttft", type=float, required=True)
    c.add_argument("--tpot", type=float, required=True)
    r = sub.add_parser("report")
    r.add_argument("results")
    r.add_argument("--md", required=True)
    r.add_argument("--img")
    r.add_argument("--doc")
    args = ap.parse_args()
    return {"idle": cmd_idle, "slo-check": cmd_slo_check, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
