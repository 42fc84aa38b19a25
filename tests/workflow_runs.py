"""Helpers of the workflow tests: compose the real config tree and read a run's metrics."""

from __future__ import annotations

import csv
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# The demo experiment on the tiny model, shortened: two prompts x four samples, 8-token CoTs.
TINY_OVERRIDES = (
    "model=tiny",
    "experiment=tiny",
    "algo.max_new_tokens=8",
    "trainer.enable_progress_bar=false",
)


def compose_train(output_dir: Path, *overrides: str) -> DictConfig:
    """``conf/train.yaml`` composed as ``python train.py`` would, writing to ``output_dir``.

    The ``hydra:`` interpolations (output directory, job name) are replaced, since the
    compose API has no running Hydra job.
    """
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[*TINY_OVERRIDES, f"paths.output_dir={output_dir}", "run_name=test", *overrides],
        )


def compose_demo(output_dir: Path, *overrides: str) -> DictConfig:
    """``python train.py experiment=demo`` (the ShapeWorld demo) writing ``metrics.csv`` to
    ``output_dir``, without progress bar or checkpoints; ``overrides`` shrink or change it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=demo",
                f"paths.output_dir={output_dir}",
                "logger=csv",
                "trainer.enable_progress_bar=false",
                "callbacks.checkpoint=null",
                "run_name=test",
                *overrides,
            ],
        )


def read_metrics(csv_path: Path) -> dict[int, dict[str, float]]:
    """``metrics.csv`` as ``{step: {metric: value}}`` (empty cells left out)."""
    rows: dict[int, dict[str, float]] = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            step = int(row["step"])
            rows.setdefault(step, {}).update({k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"})
    return rows
