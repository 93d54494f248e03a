#!/usr/bin/env python3
"""tools/check_layers.py: passes on the tree, fails on an injected upward,
bare or dangling include (each in a scratch copy of the layer folders)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("ENGINE_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "check_layers.py")


def run(root):
    p = subprocess.run([sys.executable, TOOL, root], capture_output=True, text=True)
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


if __name__ == "__main__":
    unittest.main()
