#!/usr/bin/env python3
"""The tree's rules, each checked on the tree and shown failing on an
injected violation in a scratch copy:
- tools/check_layers.py: an upward, bare or dangling include;
- tools/check_function_length.py: a function over the length limit."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("ENGINE_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "check_layers.py")
LENGTH_TOOL = os.path.join(ROOT, "tools", "check_function_length.py")


def run(root, tool=TOOL):
    p = subprocess.run([sys.executable, tool, root], capture_output=True, text=True)
    return p.returncode, p.stderr


class CheckLayers(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        for d in ("base", "core", "paged_kv", "scheduler", "engine"):
            shutil.copytree(os.path.join(ROOT, d), os.path.join(self.tmp, d))

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def inject(self, rel, text):
        with open(os.path.join(self.tmp, rel), "a") as f:
            f.write(text)

    def test_tree_is_clean(self):
        rc, err = run(ROOT)
        self.assertEqual(rc, 0, err)

    def test_copy_is_clean(self):
        rc, err = run(self.tmp)
        self.assertEqual(rc, 0, err)

    def test_upward_include_fails(self):
        self.inject("paged_kv/paged_kv.c", '#include "engine/engine.h"\n')
        rc, err = run(self.tmp)
        self.assertEqual(rc, 1)
        self.assertIn("paged_kv/paged_kv.c", err)
        self.assertIn("layer 'paged_kv' may not use layer 'engine'", err)

    def test_core_may_not_pick_a_backend(self):
        self.inject("core/model.c", '#include "core/backend/cpu/kernels.h"\n')
        rc, err = run(self.tmp)
        self.assertEqual(rc, 1)
        self.assertIn("layer 'core' may not use layer 'core/backend/cpu'", err)

    def test_bare_include_fails(self):
        self.inject("scheduler/scheduler.c", '#include "paged_kv.h"\n')
        rc, err = run(self.tmp)
        self.assertEqual(rc, 1)
        self.assertIn("not a path from the repository root", err)

    def test_dangling_include_fails(self):
        self.inject("engine/engine.c", '#include "core/no_such_header.h"\n')
        rc, err = run(self.tmp)
        self.assertEqual(rc, 1)
        self.assertIn("no such file", err)

    def test_downward_include_passes(self):
        self.inject("engine/engine.c", '#include "paged_kv/paged_kv.h"\n')
        rc, err = run(self.tmp)
        self.assertEqual(rc, 0, err)


class CheckFunctionLength(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        os.makedirs(os.path.join(self.tmp, "engine"))

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def write(self, body_lines, name="long_one"):
        body = "".join(f"    x += {i};\n" for i in range(body_lines))
        src = (f"static int {name}(int x,\n" f"                    int y) {{\n{body}    return x + y;\n}}\n"
               "static const int table[] = {\n    1,\n};\n")
        with open(os.path.join(self.tmp, "engine", "f.c"), "w") as f:
            f.write(src)

    def test_tree_is_clean(self):
        rc, err = run(ROOT, LENGTH_TOOL)
        self.assertEqual(rc, 0, err)

    def test_long_function_fails(self):
        self.write(200)
        rc, err = run(self.tmp, LENGTH_TOOL)
        self.assertEqual(rc, 1)
        self.assertIn("engine/f.c:1: long_one is 204 lines", err)

    def test_function_at_the_limit_passes(self):
        self.write(116)  # signature (2) + body + return + brace = 120 lines
        rc, err = run(self.tmp, LENGTH_TOOL)
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    unittest.main()
