"""Every experiment in conf/experiment runs one training step (lightning-hydra-template's
``experiment=glob(*)`` run), not only composes: shortened to one step of one prompt x two
samples with 4-token CoTs; the ShapeWorld experiments keep their model, data, reward and
held-out callback (on 2 held-out records)."""

from __future__ import annotations

import json
import math

import pytest
from workflow_runs import CONF, compose_train, read_metrics

from t2ir1.train import run

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# The paper presets need the four real reward members; tests/test_paper_preset_run.py runs one
# step of each on tiny random stand-ins of those members.
STEPPED_ELSEWHERE = {
    name: "tests/test_paper_preset_run.py"
    for name in ("t2i_r1", "t2i_r1_paper", "t2i_r1_80gb", "t2i_r1_40gb", "t2i_r1_1b_80gb", "t2i_r1_1b_40gb")
}
SHORT = (
    "trainer=cpu",
    "logger=csv",
    "trainer.max_steps=1",
    "trainer.accumulate_grad_batches=1",
    "algo.group_size=2",
    "algo.max_new_tokens=4",
    "data.batch_size=1",
)
SHAPEWORLD = ("callbacks.heldout.num_prompts=2", "callbacks.heldout.batch_size=2", "callbacks.heldout.grid_images=0")


def test_every_experiment_runs_a_step_somewhere():
    """A new experiment file fails here until a test runs a step of it."""
    assert set(STEPPED_ELSEWHERE) <= set(EXPERIMENTS)
    for experiment, where in STEPPED_ELSEWHERE.items():
        assert f'"{experiment}"' in (CONF.parent / where).read_text(), (experiment, where)


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e not in STEPPED_ELSEWHERE])
def test_one_step_of_each_experiment(experiment, tmp_path):
    overrides = [f"experiment={experiment}", *SHORT]
    shapeworld = experiment == "demo" or experiment.startswith("shapeworld")
    if shapeworld:
        overrides += SHAPEWORLD
    cfg = compose_train(tmp_path, *overrides)
    metrics = run(cfg)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert 0 in rows, sorted(rows)  # the one optimiser step logged its row
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["reward/total"])
    if shapeworld:
        summary = json.loads((tmp_path / "heldout" / "heldout_accuracy.json").read_text())
        assert summary["num_prompts"] == 2 and len(summary["steps"]) == 1
        # the verdict route (RewardOutput.verdicts["shapeworld/correct"]) reached the callback
        assert len(summary["train_correct"]) == 1 and 0.0 <= summary["train_correct"][0] <= 1.0
