"""``benchmarks/demo_step.py`` on a few steps: both versions train and the ratio is printed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("demo_step", ROOT / "benchmarks" / "demo_step.py")
_demo_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_demo_step)
BASELINE = _demo_step.BASELINE


def test_demo_step_times_the_current_tree_against_the_pre_engine_commit():
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BASELINE}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"commit {BASELINE} is not in this checkout (a shallow clone or an export)")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo_step.py"), "--steps", "4", "--warmup", "1", "--rounds", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = dict(re.findall(r"^\| (baseline \w+|current) +\| +([\d.]+) \| +3 \|$", result.stdout, re.M))
    assert set(rows) == {f"baseline {BASELINE}", "current"}, result.stdout
    ratio = float(re.search(r"current vs the last commit before the engine: ([\d.]+)x", result.stdout).group(1))
    assert ratio == pytest.approx(float(rows[f"baseline {BASELINE}"]) / float(rows["current"]), abs=0.01)
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "t2ir1-demo-step-" not in worktrees  # the temporary baseline checkout is removed


def test_demo_step_times_the_demo_with_and_without_overrides():
    """``--overrides``: the same tree run twice, once with the overrides; a bad override fails the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(ROOT / "benchmarks" / "demo_step.py"), "--steps", "4", "--warmup", "1", "--rounds", "1"]
    result = subprocess.run(
        [*command, "--overrides", "algo.filter_groups=true", "algo.max_gen_rounds=1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = dict(re.findall(r"^\| (demo|demo \+ overrides) +\| ([\d.]+) s \| 3 steps \|$", result.stdout, re.M))
    assert set(rows) == {"demo", "demo + overrides"}, result.stdout
    ratio = float(re.search(r"with the overrides a step takes ([\d.]+)x the demo's", result.stdout).group(1))
    assert ratio == pytest.approx(float(rows["demo + overrides"]) / float(rows["demo"]), abs=0.01)
    bad = subprocess.run([*command, "--overrides", "algo.no_such_key=1"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)  # fmt: skip
    assert bad.returncode != 0 and "no_such_key" in bad.stderr
