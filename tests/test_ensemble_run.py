"""A BiCoT-GRPO run with the paper's four-member ensemble, every member a tiny random
variant of its real architecture, end to end through `t2ir1.train.run` (offline)."""

from __future__ import annotations

import pytest
from workflow_runs import compose_train, read_metrics

from t2ir1.rewards.convert_orm import convert
from t2ir1.testing.tiny_rewards import (
    build_tiny_gdino,
    build_tiny_git,
    build_tiny_hps,
    build_tiny_llava_next_checkpoint,
)
from t2ir1.train import run


@pytest.fixture(scope="module")
def tiny_members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    hps = build_tiny_hps(folder / "hps")
    return [
        f"reward.members.hps.checkpoint={hps['checkpoint']}",
        f"reward.members.hps.arch={hps['arch']}",
        f"reward.members.hps.model_config_path={hps['model_config_path']}",
        f"reward.members.git.model_path={build_tiny_git(folder)}",
        f"reward.members.gdino.model_path={build_tiny_gdino(folder)}",
        f"reward.members.orm.model_path={convert(build_tiny_llava_next_checkpoint(folder), folder / 'orm', vision_num_heads=2)}",
    ]


def test_grpo_with_the_paper_ensemble_logs_every_member(tiny_members, tmp_path, monkeypatch):
    monkeypatch.setenv("T2IR1_CACHE", str(tmp_path / "cache"))
    cfg = compose_train(
        tmp_path,
        "reward=ensemble",
        "data=compositional",
        "logger=csv",
        "trainer.max_steps=2",
        "algo.group_size=2",
        "algo.max_new_tokens=4",
        "data.batch_size=1",
        "reward.weights.orm=0.5",
        *tiny_members,
    )
    metrics = run(cfg)
    for member in ("hps", "git", "gdino", "orm"):
        assert f"reward/{member}" in metrics and f"reward/{member}_weighted" in metrics
    rows = read_metrics(tmp_path / "metrics.csv")
    logged = {key for row in rows.values() for key in row}
    assert {"reward/hps", "reward/git", "reward/gdino", "reward/orm", "reward/total", "train/loss"} <= logged
    # the ensemble's total is the weighted sum of its members (orm weighted 0.5)
    last = rows[max(rows)]
    expected = last["reward/hps"] + last["reward/git"] + last["reward/gdino"] + 0.5 * last["reward/orm"]
    assert last["reward/total"] == pytest.approx(expected, abs=1e-5)
    assert last["reward/orm_weighted"] == pytest.approx(0.5 * last["reward/orm"], abs=1e-6)
