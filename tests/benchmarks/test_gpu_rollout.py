"""``benchmarks/gpu_rollout.py`` runs end to end (``--dry-run``: tiny sizes on CPU) without importing
what a bare GPU machine lacks (Hydra, OmegaConf, W&B), so that it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# run the benchmark as a script, then report which packages a bare GPU machine lacks it imported
GUARD = """
import json, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
absent = {"hydra", "omegaconf", "wandb", "litserve"}
print("IMPORTED:" + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & absent)))
"""


def test_gpu_benchmark_dry_run_writes_its_table_without_hydra(tmp_path):
    out = tmp_path / "table.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", GUARD, str(ROOT / "benchmarks" / "gpu_rollout.py"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IMPORTED:[]" in result.stdout, result.stdout[-500:]
    rows = json.loads(out.with_suffix(".json").read_text())
    assert {r["method"] for r in rows} == {"engine", "transformers generate", "original structure"}
    assert all(r["images_per_s"] > 0 and r["roofline_images_per_s"] > r["images_per_s"] for r in rows)
    table = out.read_text()
    assert "| tiny | 4 | engine |" in table and "target >= 50%" in table and "target >= 5x" in table
