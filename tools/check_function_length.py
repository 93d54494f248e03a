#!/usr/bin/env python3
"""check_function_length.py - no C function outside tests over the limit.

A function that does several jobs reads worse than several functions that
each do one (docs/architecture.md, "Code rules"), so a definition may run
at most LIMIT lines from its signature to its closing brace. The tree is
clang-formatted (tools/check-format), which makes definitions easy to find
without a C parser: a signature starts in column 0, its last line ends in
") {", and the body ends at the next line that is a lone "}".

EXCEPTIONS names the functions allowed to be longer, each with its reason.

Usage: tools/check_function_length.py [--limit N] [--list] [ROOT]
  --list   print every function over the limit, exceptions included
Exit status: 0 clean, 1 with one line per function over the limit.
"""
import argparse
import os
import re
import sys

LIMIT = 120
# (file, function) -> why it may be longer than LIMIT
EXCEPTIONS = {}

SKIP_DIRS = {"tests", "models", "build"}
NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def functions(path):
    """Yield (name, first line, length) of each definition in a C file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    i, n = 0, len(lines)
    in_macro = False
    while i < n:
        line = lines[i]
        if in_macro or line.startswith("#"):
            in_macro = line.rstrip().endswith("\\")
            i += 1
            continue
        if not re.match(r"[A-Za-z_]", line):
            i += 1
            continue
        start = i
        sig = line
        while not sig.rstrip().endswith(("{", ";")) and i + 1 < n and i - start < 20:
            i += 1
            sig += " " + lines[i].strip()
        i += 1
        if not sig.rstrip().endswith(") {"):
            continue
        m = NAME.search(sig)
        end = i
        while end < n and lines[end] != "}":
            end += 1
        yield (m.group(1) if m else "?"), start + 1, end - start + 1
        i = end + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=LIMIT)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("root", nargs="?", default=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))
    a = ap.parse_args()
    bad = []
    count = 0
    for dirpath, dirnames, filenames in os.walk(a.root):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and not d.startswith("build")
                             and d not in SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith((".c", ".cu")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, a.root)
            for fn, line, length in functions(path):
                count += 1
                if length <= a.limit:
                    continue
                why = EXCEPTIONS.get((rel, fn))
                if why and not a.list:
                    continue
                note = f" (allowed: {why})" if why else ""
                bad.append(f"{rel}:{line}: {fn} is {length} lines (limit {a.limit}){note}")
    for b in bad:
        print(b, file=sys.stderr)
    print(f"check_function_length: {count} functions, {len(bad)} over {a.limit} lines")
    if a.list:
        return 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
