#!/usr/bin/env python3
"""Plots of build/loadtest results (PNG, matplotlib with the Agg backend).

    loadtest/plot.py runs [LABEL=]DIR [[LABEL=]DIR ...] [-o OUTDIR] [--prefix P]
                          [--window S] [--slo ttft=MS,tpot=MS]
    loadtest/plot.py sweep SWEEP.json [-o OUTDIR] [--name sweep.png]

`runs` reads the --out directories of one or more loadtest runs
(responses.json, timeline.json; summary.json when present) and writes, each
run overlaid with its label (default: the directory's name):

  P-latency-cdf.png   CDFs of TTFT, TPOT, inter-token latency and end-to-end
                      latency (successful requests; ITL pools every gap of
                      every request); SLO thresholds dashed when given
  P-throughput.png    output tokens/s over time: the cumulative output_tokens
                      series of timeline.json differenced over a sliding
                      window of --window seconds (default 2); without a
                      timeline, rebuilt from the per-token times in
                      responses.json
  P-queue.png         queue depth over time: requests in flight (client side)
                      and, when the timeline has them, the server's running
                      and waiting sequences

(P is --prefix, default "loadtest".)

`sweep` draws p99 TTFT and median TPOT against the offered request rate for
each server of a rate sweep, with the SLO thresholds as horizontal lines,
into one PNG. SWEEP.json:

  {"slo": {"ttft_ms": 2000, "tpot_ms": 100},
   "series": [{"label": "ours",
               "points": [{"rate": 1.0, "ttft_p99_ms": 120.5, "tpot_p50_ms": 30.1}, ...]},
              ...],
   "capacity": {"ours": 3.4, ...}}          (optional: marked on the x axis)

matplotlib comes from Debian (python3-matplotlib). It is not part of the
serving install: the first plot asked for installs it (tools/install-deps
--plot, as root or through sudo). When the interpreter running this file
lacks it (a pyenv or venv python), the script re-runs itself with
/usr/bin/python3 if that one has it.
"""
import argparse
import json
import math
import os
import subprocess
import sys


def _import_matplotlib():
    try:
        import matplotlib
    except ImportError:
        sys_py = "/usr/bin/python3"
        deps = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "install-deps")
        if (__name__ == "__main__" and os.path.exists(deps) and os.path.exists(sys_py)
                and subprocess.run([sys_py, "-c", "import matplotlib"],
                                   capture_output=True).returncode != 0):
            print("plot: matplotlib is needed for plots; installing it (tools/install-deps --plot)",
                  file=sys.stderr)
            subprocess.run([deps, "--plot"])
        if (__name__ == "__main__" and os.path.realpath(sys.executable) != os.path.realpath(sys_py)
                and os.path.exists(sys_py) and not os.environ.get("LOADTEST_PLOT_REEXEC")):
            ok = subprocess.run([sys_py, "-c", "import matplotlib"], capture_output=True).returncode == 0
            if ok:
                os.environ["LOADTEST_PLOT_REEXEC"] = "1"
                os.execv(sys_py, [sys_py, os.path.abspath(__file__)] + sys.argv[1:])
        sys.exit("error: matplotlib is not installed (tools/install-deps --plot, or "
                 "apt-get install -y python3-matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


plt = None

METRICS = [("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "inter-token latency"),
           ("e2e_ms", "end-to-end latency")]


def load_run(spec):
    """spec: DIR or LABEL=DIR -> dict(label, dir, responses, timeline, summary)."""
    label, d = (spec.split("=", 1) if "=" in spec and not os.path.isdir(spec) else (None, spec))
    d = d.rstrip("/")
    if not os.path.isdir(d):
        sys.exit(f"error: {d}: not a directory")
    run = {"label": label or os.path.basename(d) or d, "dir": d}
    for name, default in (("responses", None), ("timeline", []), ("summary", {})):
        p = os.path.join(d, name + ".json")
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                run[name] = json.load(f)
        elif default is None:
            sys.exit(f"error: {p} is missing")
        else:
            run[name] = default
    return run


def ok_responses(run):
    return [r for r in run["responses"] if not r.get("error")]


def metric_values(run, key):
    vals = []
    for r in ok_responses(run):
        v = r.get(key)
        if key == "itl_ms":
            vals.extend(x for x in (v or []) if x is not None)
        elif v is not None:
            vals.append(v)
    return sorted(vals)


def parse_slo(text):
    slo = {}
    if not text:
        return slo
    for part in text.split(","):
        k, _, v = part.partition("=")
        k = k.strip()
        if k not in ("ttft", "tpot") or not v:
            sys.exit(f"error: --slo: expected ttft=MS,tpot=MS, got {text!r}")
        slo[k + "_ms"] = float(v)
    return slo


def plot_cdfs(runs, path, slo=None):
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, title) in zip(axes.flat, METRICS):
        drawn = False
        for run in runs:
            v = metric_values(run, key)
            if not v:
                continue
            n = len(v)
            ys = [(i + 1) / n for i in range(n)]
            ax.step(v, ys, where="post", label=f"{run['label']} (n={n})")
            drawn = True
        if slo and slo.get(key):
            ax.axvline(slo[key], color="red", linestyle="--", linewidth=1, label=f"SLO {slo[key]:g} ms")
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests" if key != "itl_ms" else "fraction of gaps")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        if drawn:
            lo = min(min(metric_values(r, key) or [1]) for r in runs)
            hi = max(max(metric_values(r, key) or [1]) for r in runs)
            if lo > 0 and hi / lo > 50:
                ax.set_xscale("log")
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Latency CDFs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def token_times(run):
    """Cumulative output tokens over time, from responses.json when there is no timeline."""
    events = []
    for r in ok_responses(run):
        t0 = r.get("t_send")
        if t0 is None or r.get("ttft_ms") is None:
            continue
        t = t0 + r["ttft_ms"] / 1000.0
        events.append(t)
        for g in r.get("itl_ms") or []:
            t += g / 1000.0
            events.append(t)
    events.sort()
    return [(t, i + 1) for i, t in enumerate(events)]


def rate_series(points, window):
    """points: [(t, cumulative)] sorted by t -> [(t, rate over the window ending at t)]."""
    out, j = [], 0
    for i, (t, c) in enumerate(points):
        while j < i and points[j][0] < t - window:
            j += 1
        if t - points[j][0] > 0 and i > j:
            out.append((t, (c - points[j][1]) / (t - points[j][0])))
        elif i == 0:
            out.append((t, 0.0))
    return out


def plot_throughput(runs, path, window):
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for run in runs:
        tl = run["timeline"]
        if tl and any("output_tokens" in s for s in tl):
            pts = [(s["t"], s["output_tokens"]) for s in tl if s.get("output_tokens") is not None]
            src = "timeline"
        else:
            pts = token_times(run)
            src = "responses"
        pts.sort()
        series = rate_series(pts, window)
        if series:
            ax.plot([p[0] for p in series], [p[1] for p in series],
                    label=f"{run['label']}" + (" (from responses)" if src == "responses" else ""))
    ax.set_xlabel("time since start of run (s)")
    ax.set_ylabel(f"output tokens/s ({window:g} s window)")
    ax.set_title("Output throughput over time")
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    if runs:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_queue(runs, path):
    fig, ax = plt.subplots(figsize=(10, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_line = False
    for k, run in enumerate(runs):
        c = colors[k % len(colors)]
        tl = run["timeline"]
        ts = [s["t"] for s in tl]
        for key, style, name in (("in_flight", "-", "in flight"), ("running", "--", "server running"),
                                 ("waiting", ":", "server waiting"), ("swapped", "-.", "server swapped")):
            if not any(s.get(key) is not None for s in tl):
                continue
            if key == "swapped" and not any(s.get(key) for s in tl):
                continue
            xs = [t for t, s in zip(ts, tl) if s.get(key) is not None]
            ys = [s[key] for s in tl if s.get(key) is not None]
            ax.step(xs, ys, where="post", linestyle=style, color=c, label=f"{run['label']}: {name}")
            any_line = True
    ax.set_xlabel("time since start of run (s)")
    ax.set_ylabel("requests / sequences")
    ax.set_title("Queue depth over time")
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    if any_line:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no timeline", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_runs(specs, outdir, prefix="loadtest", window=2.0, slo=None):
    global plt
    if plt is None:
        plt = _import_matplotlib()
    runs = [load_run(s) if isinstance(s, str) else s for s in specs]
    os.makedirs(outdir, exist_ok=True)
    paths = [os.path.join(outdir, f"{prefix}-{n}.png") for n in ("latency-cdf", "throughput", "queue")]
    plot_cdfs(runs, paths[0], slo)
    plot_throughput(runs, paths[1], window)
    plot_queue(runs, paths[2])
    return paths


def plot_sweep(sweep, path):
    global plt
    if plt is None:
        plt = _import_matplotlib()
    slo = sweep.get("slo", {})
    cap = sweep.get("capacity") or {}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, title, slo_key in ((axes[0], "ttft_p99_ms", "p99 TTFT", "ttft_ms"),
                                    (axes[1], "tpot_p50_ms", "median TPOT", "tpot_ms")):
        allv = []
        for k, s in enumerate(sweep["series"]):
            pts = sorted((p["rate"], p[key]) for p in s["points"] if p.get(key) is not None)
            if not pts:
                continue
            allv += [v for _, v in pts]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colors[k % len(colors)],
                    label=s["label"])
            c = cap.get(s["label"])
            if c:
                ax.axvline(c, color=colors[k % len(colors)], linestyle=":", linewidth=1,
                           label=f"{s['label']} capacity {c:.2f} req/s")
        if slo.get(slo_key):
            ax.axhline(slo[slo_key], color="red", linestyle="--", linewidth=1.2,
                       label=f"SLO {slo[slo_key]:g} ms")
            allv.append(slo[slo_key])
        pos = [v for v in allv if v > 0]
        if pos and max(pos) / min(pos) > 30:
            ax.set_yscale("log")
        ax.set_xlabel("offered request rate (req/s)")
        ax.set_ylabel(f"{title} (ms)")
        ax.set_title(f"{title} vs request rate")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="Plots of build/loadtest results (see the head of this file).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("runs", help="latency CDFs, throughput and queue depth of one or more runs")
    r.add_argument("dirs", nargs="+", metavar="[LABEL=]DIR")
    r.add_argument("-o", "--outdir", default=".")
    r.add_argument("--prefix", default="loadtest")
    r.add_argument("--window", type=float, default=2.0, help="seconds (throughput)")
    r.add_argument("--slo", help="ttft=MS,tpot=MS: dashed lines on the CDFs")
    s = sub.add_parser("sweep", help="p99 TTFT and median TPOT vs request rate")
    s.add_argument("sweep_json")
    s.add_argument("-o", "--outdir", default=".")
    s.add_argument("--name", default="sweep.png")
    args = ap.parse_args(argv)
    global plt
    plt = _import_matplotlib()
    if args.cmd == "runs":
        if args.window <= 0:
            ap.error("--window must be > 0")
        for p in plot_runs(args.dirs, args.outdir, args.prefix, args.window, parse_slo(args.slo)):
            print(p)
    else:
        with open(args.sweep_json, encoding="utf-8") as f:
            sweep = json.load(f)
        os.makedirs(args.outdir, exist_ok=True)
        print(plot_sweep(sweep, os.path.join(args.outdir, args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
