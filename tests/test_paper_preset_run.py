"""One optimiser step of each T2I-R1 preset with tiny stand-ins of every model, through `t2ir1.train.run`.

Only the sizes change (model=tiny, tiny reward members, trainer=cpu, one step of small groups):
the presets' recipe and bug switches (gdino quirks, sampled ORM readout, HPS fp16 autocast, the
original prompt, CoT top-k 50, linear schedule, per-rank normaliser) run as configured.
"""

from __future__ import annotations

import dataclasses

import pytest
from workflow_runs import compose_train, read_metrics

from t2ir1.algos.settings import GRPOSettings
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
    orm = convert(build_tiny_llava_next_checkpoint(folder), folder / "orm", vision_num_heads=2)
    return [
        f"reward.members.hps.checkpoint={hps['checkpoint']}",
        f"reward.members.hps.arch={hps['arch']}",
        f"reward.members.hps.model_config_path={hps['model_config_path']}",
        f"reward.members.git.model_path={build_tiny_git(folder)}",
        f"reward.members.gdino.model_path={build_tiny_gdino(folder)}",
        f"reward.members.orm.model_path={orm}",
        # the tiny random judge ranks yes / no anywhere in its 400-token vocabulary
        "reward.members.orm.sample_top_k=0",
    ]


def _pending_keys() -> list[str]:
    """Preset keys whose GRPOSettings field has not landed yet (algo.token_normalizer: issue 13)."""
    fields = {f.name for f in dataclasses.fields(GRPOSettings)}
    return [f"~algo.{key}" for key in ("token_normalizer",) if key not in fields]


# The memory presets (t2i_r1 + FSDP2, activation checkpointing, LoRA, offload) keep their
# strategy, on one CPU process.
MEMORY_PRESETS = ("t2i_r1_80gb", "t2i_r1_40gb", "t2i_r1_1b_80gb", "t2i_r1_1b_40gb")


@pytest.mark.parametrize("experiment", ["t2i_r1_paper", "t2i_r1", *MEMORY_PRESETS])
def test_one_step_of_each_preset_on_tiny_stand_ins(experiment, tiny_members, tmp_path, monkeypatch):
    monkeypatch.setenv("T2IR1_CACHE", str(tmp_path / "cache"))
    trainer = ["trainer.devices=1", "trainer.accelerator=cpu"] if experiment in MEMORY_PRESETS else ["trainer=cpu"]
    cfg = compose_train(
        tmp_path,
        f"experiment={experiment}",
        "model=tiny",
        *trainer,
        "data=compositional",
        "logger=csv",
        "trainer.max_steps=1",
        "trainer.accumulate_grad_batches=1",
        "algo.group_size=2",
        "algo.max_new_tokens=4",
        "data.batch_size=1",
        *_pending_keys(),
        *tiny_members,
    )
    assert cfg.algo.text_top_k == 50 and cfg.lr_scheduler._target_.endswith("get_linear_schedule_with_warmup")
    metrics = run(cfg)
    rows = read_metrics(tmp_path / "metrics.csv")
    logged = {key for row in rows.values() for key in row}
    assert {"reward/hps", "reward/git", "reward/gdino", "reward/orm", "reward/total", "train/loss"} <= logged
    for member in ("hps", "git", "gdino", "orm"):
        assert f"reward/{member}" in metrics
    assert 0.0 <= metrics["reward/gdino"] <= 1.0 and 0.0 <= metrics["reward/orm"] <= 1.0
