"""GPU smoke of the whole platform: two training steps of ``experiment=t2i_r1_paper`` at
Janus-Pro-1B's real dimensions (random weights, ``reward=color``, ``data=compositional``,
``logger=csv``, one GPU), each phase's time and the peak GPU memory next to
``t2ir1.scale.memory``'s plan.

On a bare GPU machine, install the pure-Python packages it lacks first (hydra-core, omegaconf,
antlr4-python3-runtime, wandb ...) from wheels downloaded here: see ``benchmarks/README.md``.
``--dry-run`` runs the same script on the tiny model on CPU (a test does).

Usage: python benchmarks/gpu_smoke.py [--out gpu_smoke.md] [--dry-run] [extra Hydra overrides ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def overrides(dry: bool, out_dir: Path) -> list[str]:
    common = [
        "experiment=t2i_r1_paper",
        "reward=color",
        # the preset configures the paper's four members; the smoke scores with colour statistics only
        *(f"~reward.members.{member}" for member in ("hps", "git", "gdino", "orm")),
        "data=compositional",
        "logger=csv",
        "callbacks=default",
        "trainer.max_steps=2",
        "trainer.accumulate_grad_batches=1",
        f"paths.output_dir={out_dir}",
        "run_name=gpu-smoke",
    ]
    if dry:
        return [*common, "model=tiny", "trainer=cpu", "algo.max_new_tokens=8", "algo.group_size=2", "data.batch_size=1"]
    return [*common, "model=janus_pro_1b_random", "model.device=cuda", "trainer=gpu", "trainer.devices=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_smoke.md", help="markdown report")
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU (tests)")
    args, extra = parser.parse_known_args()
    from hydra import compose, initialize_config_dir

    from t2ir1.scale.memory import StepShape, janus_config, memory_plan
    from t2ir1.train import run

    out_dir = Path(tempfile.mkdtemp(prefix="t2ir1-smoke-"))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides(args.dry_run, out_dir), *extra])
    cuda = torch.cuda.is_available() and not args.dry_run
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - start
    metrics_files = sorted(out_dir.rglob("metrics.csv"))
    rows = list(csv.DictReader(metrics_files[-1].open())) if metrics_files else []
    lines = [f"# GPU smoke: experiment=t2i_r1_paper, {'tiny (dry run)' if args.dry_run else 'Janus-Pro-1B dims'}, 2 steps", ""]
    lines.append(f"wall time of fit (model build included): {wall:.1f} s")
    lines += ["", "| step | phase | seconds |", "|---|---|---|"]
    for row in rows:
        for key, value in row.items():
            if key.startswith(("timing/", "perf/")) and value not in ("", None):
                lines.append(f"| {row.get('step', '')} | {key} | {float(value):.3f} |")
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
        shape = StepShape(world_size=1, prompts_per_rank=int(cfg.data.batch_size), group_size=int(cfg.algo.group_size),
                          max_cot_tokens=int(cfg.algo.max_new_tokens), rewards={})  # fmt: skip
        planned = memory_plan(janus_config("janus_pro_1b"), shape)["total"] / 2**30
        lines += ["", f"peak GPU memory: {peak:.1f} GiB; t2ir1.scale.memory plan (1 GPU, no reward models): {planned:.1f} GiB"]
    report = "\n".join(lines)
    print(report)
    Path(args.out).write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
