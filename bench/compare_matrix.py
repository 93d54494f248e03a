#!/usr/bin/env python3
"""Ours vs llama.cpp over a matrix of models x formats: one table of pp and tg t/s.

    bench/compare_llamacpp.sh --matrix RESULTS_DIR [options]     (or this file directly)

Points (--points, comma-separated; default: every SmolLM2 format of --formats,
then gemma, synthetic:q4_0, synthetic:q4_k_m):
  smollm2:TYPE       models/derived/SmolLM2-135M-Instruct.TYPE.gguf, made once from
                     the Q4_1 file with `llama-quantize --allow-requantize IN OUT TYPE`
                     (Q4_1 itself is the original file)
  gemma              models/gemma-3-270m-q4_k_m.gguf (tools/fetch-model --gemma)
  synthetic:TYPE     models/derived/synthetic-llama-1b.TYPE.gguf, made once by
                     tools/make_synthetic_model.py (TYPE q4_0, q4_k_m, q8_0, f16)
  PATH.gguf          any other GGUF file
Made files are cached; a different llama.cpp may make different files, so
delete models/derived/ after updating it.

For every point, --runs rounds; in each round both engines run once, in
alternating order (ours first in even rounds, llama.cpp first in odd ones):
  ours       build/infer-bench -m F -p P -n N -r REPS -t T --json --membw-passes 0
  llama.cpp  llama-bench -m F -p P -n N -r REPS -t 1,2 -fa 0,1 -o json
A round's value is the median of that run's repetitions; a point's value is
the median over its rounds. For llama.cpp that is computed for each
(flash attention, threads) configuration and the best configuration is
reported, per test, with its name. The memory read probe runs once, first.

Counts: --runs rounds (default 5), --ours-reps / --llama-reps repetitions
per run (default 3); --smoke sets -p 64 -n 16, 2 rounds of 1 repetition.

Writes RESULTS_DIR/raw/<point>/r<i>.{ours,llama}.{json,err} (every run's
output), RESULTS_DIR/machine.json (CPU, probe, llama.cpp build),
RESULTS_DIR/summary.json and RESULTS_DIR/table.md; prints the table.
A run that fails is recorded (its stderr kept) and shown as "fail"; the
matrix goes on. Exit status 0 when every run succeeded, 1 otherwise, 2 bad
arguments.
"""

import argparse
import json
import mmap
import os
import platform
import shlex
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2 = os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = os.path.join(REPO, "models", "gemma-3-270m-q4_k_m.gguf")
DERIVED = os.path.join(REPO, "models", "derived")
DEFAULT_FORMATS = ("Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q2_K,Q3_K_M,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K,"
                   "IQ4_NL,IQ4_XS,F16,BF16")
DEFAULT_EXTRA = "gemma,synthetic:q4_0,synthetic:q4_k_m"

# ggml_type ids (ggml.h) -> names, for the "mix" column
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
              9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
              15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
              20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
              26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0",
              35: "TQ2_0", 39: "MXFP4"}


def log(msg):
    print(f"compare-matrix: {msg}", file=sys.stderr, flush=True)


# ---- GGUF header: bytes per tensor type ----

def gguf_type_mix(path):
    """{type name: bytes} of the tensors of a GGUF file (header only)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 0

        def take(fmt):
            nonlocal pos
            v = struct.unpack_from("<" + fmt, m, pos)
            pos += struct.calcsize("<" + fmt)
            return v[0]

        def string():
            nonlocal pos
            n = take("Q")
            s = m[pos:pos + n]
            pos += n
            return s.decode("utf-8", "replace")

        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                  11: "q", 12: "d"}

        def value(t):
            if t in scalar:
                return take(scalar[t])
            if t == 8:
                return string()
            if t == 9:
                sub, n = take("I"), take("Q")
                if sub in scalar:
                    nonlocal pos
                    pos += n * struct.calcsize(scalar[sub])
                    return None
                for _ in range(n):
                    value(sub)
                return None
            raise ValueError(f"{path}: unknown GGUF value type {t}")

        if m[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        pos = 4
        take("I")
        n_tensors, n_kv = take("Q"), take("Q")
        align = 32
        for _ in range(n_kv):
            key = string()
            v = value(take("I"))
            if key == "general.alignment" and isinstance(v, int):
                align = v
        infos = []
        for _ in range(n_tensors):
            string()
            n_dims = take("I")
            pos += 8 * n_dims
            typ = take("I")
            infos.append((take("Q"), typ))  # (offset, type)
        data_start = (pos + align - 1) // align * align
        size = len(m)
    infos.sort()
    mix = {}
    for i, (off, typ) in enumerate(infos):
        end = infos[i + 1][0] if i + 1 < len(infos) else size - data_start
        name = GGML_TYPES.get(typ, f"type{typ}")
        mix[name] = mix.get(name, 0) + end - off
    return mix


def mix_label(mix):
    total = sum(mix.values()) or 1
    parts = sorted(mix.items(), key=lambda kv: -kv[1])
    return " ".join(f"{k} {100 * v / total:.0f}%" for k, v in parts if 100 * v / total >= 1)


# ---- points and their files ----

def parse_points(a):
    spec = a.points or ",".join([f"smollm2:{t}" for t in a.formats.split(",") if t]
                                + [DEFAULT_EXTRA])
    points = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            continue
        kind, _, arg = tok.partition(":")
        if kind == "smollm2" and arg:
            path = SMOLLM2 if arg.upper() == "Q4_1" else os.path.join(
                DERIVED, f"SmolLM2-135M-Instruct.{arg.upper()}.gguf")
            points.append({"label": f"SmolLM2-135M {arg.upper()}", "model": "SmolLM2-135M",
                           "format": arg.upper(), "path": path, "make": ("quantize", arg.upper())})
        elif kind == "gemma" and not arg:
            points.append({"label": "gemma-3-270m Q4_K_M", "model": "gemma-3-270m",
                           "format": "Q4_K_M", "path": GEMMA, "make": None})
        elif kind == "synthetic" and arg:
            points.append({"label": f"synthetic-1.1B {arg.upper()}", "model": "synthetic-1.1B",
                           "format": arg.upper(), "make": ("synthetic", arg.lower()),
                           "path": os.path.join(DERIVED, f"synthetic-llama-1b.{arg.lower()}.gguf")})
        elif tok.endswith(".gguf"):
            base = os.path.basename(tok)[:-5]
            points.append({"label": base, "model": base, "format": "-",
                           "path": os.path.abspath(tok), "make": None})
        else:
            sys.exit(f"compare-matrix: bad point '{tok}' (smollm2:TYPE, gemma, "
                     "synthetic:TYPE or a .gguf path)")
    return points


def gguf_python(a):
    """A command prefix for a python that can import gguf and numpy, or None."""
    cands = [a.gguf_python] if a.gguf_python else []
    cands += [os.environ.get("REF_PYTHON"), os.path.join(REPO, ".venv-ref/bin/python"),
              "/work/refenv/bin/python", "/opt/refenv/bin/python", sys.executable]
    gguf_py = os.path.join(os.path.dirname(a.llama_bin), "src", "llama.cpp", "gguf-py")
    for py in filter(None, cands):
        for extra in ({}, {"PYTHONPATH": gguf_py}):
            env = dict(os.environ, **extra)
            try:
                ok = subprocess.run([py, "-c", "import gguf, numpy"], env=env,
                                    capture_output=True).returncode == 0
            except OSError:
                ok = False
            if ok:
                return py, env
    return None


def make_file(p, a, log_dir):
    """Make p's file when missing; returns None or an error string."""
    if os.path.exists(p["path"]):
        return None
    if not p["make"]:
        return f"{p['path']} is missing"
    os.makedirs(DERIVED, exist_ok=True)
    tmp = f"{p['path']}.partial.{os.getpid()}"
    kind, arg = p["make"]
    if kind == "quantize":
        cmd, env = [os.path.join(a.llama_bin, "llama-quantize"), "--allow-requantize", SMOLLM2,
                    tmp, arg], None
    else:
        found = gguf_python(a)
        if not found:
            return "no python with gguf and numpy (--gguf-python)"
        cmd = [found[0], os.path.join(REPO, "tools", "make_synthetic_model.py"), "--type", arg,
               "-o", tmp]
        env = found[1]
    log(f"making {p['path']}: {shlex.join(cmd)}")
    with open(os.path.join(log_dir, "make.log"), "w") as lf:
        try:
            rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env).returncode
        except OSError as e:
            return f"cannot run {cmd[0]}: {e}"
    if rc != 0 or not os.path.exists(tmp):
        if os.path.exists(tmp):
            os.remove(tmp)
        return f"making the file failed (exit {rc}; see {log_dir}/make.log)"
    os.replace(tmp, p["path"])
    return None


# ---- runs ----

def run_cmd(cmd, out_path, err_path, timeout):
    """Runs cmd with stdout/stderr to files; returns the exit code (124: timeout)."""
    with open(out_path, "w") as out, open(err_path, "w") as err:
        err.write(f"$ {shlex.join(cmd)}\n")
        err.flush()
        try:
            return subprocess.run(cmd, stdout=out, stderr=err, timeout=timeout,
                                  cwd=REPO).returncode
        except subprocess.TimeoutExpired:
            err.write(f"timed out after {timeout} s\n")
            return 124
        except OSError as e:
            err.write(f"cannot run {cmd[0]}: {e}\n")
            return 127


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def test_name(rec):
    return f"pp{rec['n_prompt']}" if rec.get("n_prompt") else f"tg{rec['n_gen']}"


def run_ours(p, a, base):
    cmd = [a.bench, "-m", p["path"], "-p", str(a.n_prompt), "-n", str(a.n_gen), "-r",
           str(a.ours_reps), "-t", str(a.threads), "--json", "--membw-passes", "0"]
    cmd += shlex.split(a.ours_args)
    rc = run_cmd(cmd, base + ".ours.json", base + ".ours.err", a.timeout)
    data = load_json(base + ".ours.json") if rc == 0 else None
    if not isinstance(data, list):
        return None
    return {r["test"]: statistics.median(r.get("samples_ts") or [r["median_ts"]]) for r in data}


def run_llama(p, a, base):
    cmd = [os.path.join(a.llama_bin, "llama-bench"), "-m", p["path"], "-p", str(a.n_prompt),
           "-n", str(a.n_gen), "-r", str(a.llama_reps), "-t", a.llama_threads, "-fa", a.llama_fa,
           "-o", "json"] + shlex.split(a.llama_args)
    rc = run_cmd(cmd, base + ".llama.json", base + ".llama.err", a.timeout)
    data = load_json(base + ".llama.json") if rc == 0 else None
    if not isinstance(data, list):
        return None
    out = {}
    for r in data:
        cfg = f"fa{int(r.get('flash_attn', -1))} t{r.get('n_threads')}"
        out[(test_name(r), cfg)] = statistics.median(r.get("samples_ts") or [r["avg_ts"]])
    return out


def last_line(path):
    """The last non-empty line of a run's stderr: why it failed."""
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "?"
    return lines[-1][:300] if lines else "?"


def run_point(p, a, raw_dir):
    """All rounds of one point -> its summary dict."""
    d = os.path.join(raw_dir, p["label"].replace(" ", "_"))
    os.makedirs(d, exist_ok=True)
    res = dict(p, ours={}, llama={}, errors=[], failed=[], reasons={})
    res.pop("make")
    err = make_file(p, a, d)
    if err:
        res["errors"].append(err)
        res["failed"] = sorted(a.engines)
        res["reasons"] = {"file": err}
        log(f"{p['label']}: {err}")
        return res
    res["size_mib"] = os.path.getsize(p["path"]) / 2**20
    try:
        res["mix"] = mix_label(gguf_type_mix(p["path"]))
    except (OSError, ValueError, struct.error) as e:
        res["mix"] = f"? ({e})"
    ours, llama = {}, {}
    for i in range(a.runs):
        base = os.path.join(d, f"r{i}")
        for engine in (("ours", "llama") if i % 2 == 0 else ("llama", "ours")):
            if engine not in a.engines:
                continue
            log(f"{p['label']}: round {i + 1}/{a.runs}: {engine}")
            got = run_ours(p, a, base) if engine == "ours" else run_llama(p, a, base)
            if got is None:
                res["errors"].append(f"round {i}: {engine} failed (see {base}.{engine}.err)")
                if engine not in res["failed"]:
                    res["failed"].append(engine)
                    res["reasons"][engine] = last_line(f"{base}.{engine}.err")
                continue
            for k, v in got.items():
                (ours if engine == "ours" else llama).setdefault(k, []).append(v)
    res["ours"], res["llama"] = aggregate(ours, llama)
    return res


def aggregate(ours, llama):
    """Per-round values -> summaries. ours: {test: [round values]}; llama:
    {(test, config): [round values]}. A value is the median over rounds; for
    llama.cpp, per test, that of the configuration whose median is best."""
    o = {t: {"median_ts": statistics.median(v), "rounds_ts": v} for t, v in ours.items() if v}
    per_cfg = {}
    for (t, cfg), v in llama.items():
        if v:
            per_cfg.setdefault(t, {})[cfg] = {"median_ts": statistics.median(v), "rounds_ts": v}
    ll = {}
    for t, cfgs in per_cfg.items():
        best = max(cfgs, key=lambda c: cfgs[c]["median_ts"])
        ll[t] = {"median_ts": cfgs[best]["median_ts"], "best_config": best, "configs": cfgs}
    return o, ll


# ---- machine, table, main ----

def machine_info(a, results):
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
            "kernel": platform.release(), "loadavg_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f
                                if ln.startswith("model name")), "?")
    except OSError:
        info["cpu"] = "?"
    git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    info["ours_commit"] = git.stdout.strip() or "?"
    if "ours" in a.engines:
        rc = run_cmd([a.bench, "--membw", "--json", "-t", str(a.threads)],
                     os.path.join(results, "membw.json"), os.path.join(results, "membw.err"),
                     a.timeout)
        info["membw"] = load_json(os.path.join(results, "membw.json")) if rc == 0 else None
    return info


def fmt(x, spec):
    return format(x, spec) if x is not None else "-"


def table_md(points, info, a):
    pp, tg = f"pp{a.n_prompt}", f"tg{a.n_gen}"
    mb = info.get("membw") or {}
    lines = [f"CPU: {info.get('cpu')}, {info.get('nproc')} cores; ours {info.get('ours_commit')}"
             f" (-t {a.threads}), llama.cpp {info.get('llama_build', '?')} (best of -fa "
             f"{a.llama_fa} x -t {a.llama_threads}); {a.runs} rounds x {a.ours_reps} / "
             f"{a.llama_reps} repetitions (ours / llama.cpp); median t/s; memory read probe "
             f"{fmt(mb.get('mem_read_gbps'), '.1f')} GB/s; load average "
             f"{info['loadavg_start'][0]:.2f} at the start, {info['loadavg_end'][0]:.2f} at the "
             "end.", "",
             f"| model | format | tensor types (bytes) | MiB | {pp} ours | {pp} llama.cpp | ratio "
             f"| {tg} ours | {tg} llama.cpp | ratio | llama.cpp best ({pp} / {tg}) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in points:
        cells = [p["model"], p["format"], p.get("mix", "-"), fmt(p.get("size_mib"), ".1f")]
        best = []
        for t in (pp, tg):
            o = p["ours"].get(t, {}).get("median_ts")
            ll = p["llama"].get(t, {}).get("median_ts")
            cells += [fmt(o, ".1f") if o or "ours" not in p["failed"] else "fail",
                      fmt(ll, ".1f") if ll or "llama" not in p["failed"] else "fail",
                      f"{o / ll:.2f}" if o and ll else "-"]
            best.append(p["llama"].get(t, {}).get("best_config", "-"))
        cells.append(" / ".join(best))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {p['label']}, {who}: {why}" for p in points
             for who, why in sorted(p.get("reasons", {}).items())]
    if notes:
        lines += ["", "Failures (the last line of the run's stderr):", ""] + notes
    return "\n".join(lines) + "\n"


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="compare_llamacpp.sh --matrix", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="directory for raw JSON, summary.json and table.md")
    ap.add_argument("--points", help="comma-separated points (default: --formats, then "
                    f"{DEFAULT_EXTRA})")
    ap.add_argument("--formats", default=DEFAULT_FORMATS,
                    help=f"SmolLM2 formats when --points is not given (default {DEFAULT_FORMATS})")
    ap.add_argument("-p", dest="n_prompt", type=int, default=512)
    ap.add_argument("-n", dest="n_gen", type=int, default=128)
    ap.add_argument("-t", dest="threads", type=int, default=2, help="our threads (default 2)")
    ap.add_argument("--runs", type=int, default=5, help="rounds per point (default 5)")
    ap.add_argument("--ours-reps", type=int, default=3,
                    help="infer-bench -r per round (default 3)")
    ap.add_argument("--llama-reps", type=int, default=3,
                    help="llama-bench -r per round and configuration (default 3)")
    ap.add_argument("--llama-threads", default="1,2", help="llama-bench -t list (default 1,2)")
    ap.add_argument("--llama-fa", default="0,1", help="llama-bench -fa list (default 0,1)")
    ap.add_argument("--llama-bin", default=os.environ.get(
        "LLAMA_CPP_BIN", os.path.join(REPO, ".llama-cpp", "bin")),
        help="directory of llama-bench and llama-quantize (default $LLAMA_CPP_BIN, else "
             ".llama-cpp/bin)")
    ap.add_argument("--llama-args", default="", help="extra llama-bench arguments")
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "infer-bench"))
    ap.add_argument("--ours-args", default="", help="extra infer-bench arguments")
    ap.add_argument("--engines", default="ours,llama", help="ours,llama (default both)")
    ap.add_argument("--gguf-python", help="python with gguf + numpy for the synthetic model")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run (default 900)")
    ap.add_argument("--smoke", action="store_true",
                    help="a check of the plumbing, not a measurement: -p 64 -n 16, 2 rounds, "
                         "1 repetition each")
    ap.add_argument("--make-only", action="store_true",
                    help="make the missing files and list every point's file and tensor types; "
                         "no runs")
    a = ap.parse_args(argv)
    if a.make_only:
        a.engines = set()
    if a.smoke:
        a.n_prompt, a.n_gen, a.runs, a.ours_reps, a.llama_reps = 64, 16, 2, 1, 1
    a.engines = set(a.engines.split(",")) if not a.make_only else set()
    if not a.make_only and (not a.engines or not a.engines <= {"ours", "llama"}):
        ap.error("--engines: ours, llama or both")
    if min(a.runs, a.ours_reps, a.llama_reps, a.threads) < 1 or min(a.n_prompt, a.n_gen) < 0:
        ap.error("--runs, --ours-reps, --llama-reps and -t must be >= 1")
    for tool in ["llama-bench"] if "llama" in a.engines else []:
        if not os.access(os.path.join(a.llama_bin, tool), os.X_OK):
            ap.error(f"{a.llama_bin}/{tool} is missing (--llama-bin DIR)")
    if "ours" in a.engines and not os.access(a.bench, os.X_OK):
        ap.error(f"{a.bench} is missing (build it, or --engines llama)")
    return a


def make_only(points, a, raw):
    """--make-only: make what is missing, list file, size and tensor types."""
    rc = 0
    for p in points:
        d = os.path.join(raw, p["label"].replace(" ", "_"))
        os.makedirs(d, exist_ok=True)
        err = make_file(p, a, d)
        if err:
            print(f"{p['label']}: {err}", flush=True)
            rc = 1
            continue
        mix = mix_label(gguf_type_mix(p["path"]))
        print(f"{p['label']}: {p['path']}, {os.path.getsize(p['path']) / 2**20:.1f} MiB, {mix}",
              flush=True)
    return rc


def main(argv):
    a = parse_args(argv)
    results = os.path.abspath(a.results)
    raw = os.path.join(results, "raw")
    os.makedirs(raw, exist_ok=True)
    points = parse_points(a)
    if a.make_only:
        return make_only(points, a, raw)
    info = machine_info(a, results)
    log(f"{len(points)} points x {a.runs} rounds; results in {results}")
    done = []
    for p in points:
        done.append(run_point(p, a, raw))
        recs = load_json(os.path.join(raw, p["label"].replace(" ", "_"), "r0.llama.json"))
        if isinstance(recs, list) and recs and "llama_build" not in info:
            info["llama_build"] = recs[0].get("build_commit", "?")
            info["llama_cpu_info"] = recs[0].get("cpu_info")
            info["llama_backends"] = recs[0].get("backends")
    info["loadavg_end"] = os.getloadavg()
    with open(os.path.join(results, "machine.json"), "w") as f:
        json.dump(info, f, indent=1)
    with open(os.path.join(results, "summary.json"), "w") as f:
        json.dump({"machine": info, "args": {k: (sorted(v) if isinstance(v, set) else v)
                                             for k, v in vars(a).items()},
                   "points": done}, f, indent=1)
    md = table_md(done, info, a)
    with open(os.path.join(results, "table.md"), "w") as f:
        f.write(md)
    print(md, end="")
    failed = [e for p in done for e in p["errors"]]
    for e in failed:
        log(f"error: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
