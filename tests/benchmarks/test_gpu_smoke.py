"""``benchmarks/gpu_smoke.py --dry-run``: two steps of the paper preset on the tiny model, phases reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_smoke_dry_run_trains_two_steps_and_reports_every_phase(tmp_path):
    out = tmp_path / "smoke.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    for phase in ("rollout", "reward", "ref_logprobs", "update", "backward", "optimizer", "step"):
        for step in (0, 1):
            assert f"| {step} | timing/{phase} |" in report, (phase, step)
    assert "| 1 | perf/images_per_s |" in report
