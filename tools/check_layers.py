#!/usr/bin/env python3
"""check_layers.py - fail on an include that points up a layer.

The C sources are layered (docs/architecture.md): each folder below may
include headers only from the folders its row names (and its own). Includes
are path-qualified from the repository root ("paged_kv/paged_kv.h"), so the
layer of a header is the folder its path starts with. A bare or unknown
quoted include is an error too: it would hide which layer it reaches into.

Usage: tools/check_layers.py [ROOT]    (default: the repository this file is in)
Exit status: 0 clean, 1 with one line per violation on stderr.
"""
import os
import re
import sys

# layer -> the layers it may include (besides itself). Longest prefix wins:
# core/backend/backend.h (the ops interface) belongs to core, while the
# backends that implement it (core/backend/cpu, core/backend/cuda) sit above
# core, and nothing but the programs and tests picks one.
ALLOWED = {
    "base": [],
    "proto": [],
    "core": ["base"],
    "core/backend/cpu": ["core", "base"],
    "core/backend/cuda": ["core", "base"],
    "paged_kv": ["core", "base"],
    "scheduler": ["paged_kv", "core", "base"],
    "engine": ["scheduler", "paged_kv", "core", "base"],
    "rpc": ["proto", "base"],
    "http": ["base"],
    "server": ["engine", "scheduler", "paged_kv", "core", "base", "rpc", "proto", "http"],
    "clients": ["rpc", "proto", "base"],
    "loadtest": ["clients", "rpc", "proto", "base"],
}
# Folders that sit on top of everything: programs, benchmarks, tests.
TOP = ["apps", "bench", "tests"]
LAYERS = sorted(list(ALLOWED) + TOP, key=len, reverse=True)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(path):
    for layer in LAYERS:
        if path == layer or path.startswith(layer + "/"):
            return layer
    return None


def check_file(root, rel, errors):
    src = layer_of(rel)
    if src is None:
        return
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            target = m.group(1)
            dst = layer_of(target)
            where = f"{rel}:{lineno}: #include \"{target}\""
            if dst is None:
                errors.append(f"{where}: not a path from the repository root into a layer")
            elif not os.path.exists(os.path.join(root, target)) and dst != "proto":
                errors.append(f"{where}: no such file")
            elif src in TOP or dst == src or dst in ALLOWED[src]:
                continue
            else:
                errors.append(f"{where}: layer '{src}' may not use layer '{dst}' "
                              f"(allowed: {', '.join(ALLOWED[src]) or 'none'})")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))
    errors = []
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and not d.startswith("build") and d != "models"]
        for name in filenames:
            if name.endswith((".c", ".h", ".cu", ".cuh")):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                check_file(root, rel, errors)
                n += 1
    for e in sorted(errors):
        print(e, file=sys.stderr)
    print(f"check_layers: {n} files, {len(errors)} violations")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
