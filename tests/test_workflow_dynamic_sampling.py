"""Dynamic sampling through train.py's path: a run preempted and resumed draws the same refill
prompts, and logs the same numbers, as a run never interrupted."""

from __future__ import annotations

import math
import os
import signal

import lightning as L
import pytest
from omegaconf import OmegaConf
from workflow_runs import compose_train, read_metrics

from t2ir1.train import run

MAX_STEPS = 4
STOP_AT = 2

# The colour reward with white and black only, both achromatic: "a photo of a white cow" scores the
# white fraction of each image (differs between samples), "a photo of a car" scores 0 for every image
# (a zero-std group, dropped and refilled).
FILTERED = (
    "algo.filter_groups=true",
    "algo.group_size=2",
    "~reward.members.color.palette",
    "+reward.members.color.palette={white:[255,255,255],black:[0,0,0]}",
    "reward.members.color.achromatic=[white,black]",
    "reward.members.color.target_fraction=1.0",
    "data.source.n=40",
    "data.source.generator.colors=[white]",
    "data.source.generator.categories=[object,colors]",
)


class SigtermAtStep(L.Callback):
    """Sends this process a real SIGTERM once ``step`` optimiser steps are done."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class TrainedPrompts(L.Callback):
    """Appends the prompt ids each optimiser step trained on (refills included) to ``path``."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        ids = list(dict.fromkeys(r.prompt_id for r in outputs["record"].records))
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{trainer.global_step} {' '.join(ids)}\n")


def _compose(tmp_path, tiny_dir, name, *extra):
    cfg = compose_train(tmp_path / name, *FILTERED, f"trainer.max_steps={MAX_STEPS}", "logger=csv",
                        "callbacks.checkpoint.every_n_train_steps=100", f"paths.cache_dir={tmp_path}/cache", *extra)
    OmegaConf.set_struct(cfg, False)
    cfg.model.cache_dir = str(tiny_dir.parent)  # the session's tiny checkpoint (no write to ~/.cache)
    cfg.callbacks.trained = {"_target_": f"{__name__}.TrainedPrompts", "path": str(tmp_path / f"{name}.txt")}
    return cfg


@pytest.mark.slow  # three short training runs of the tiny model with refills: ~1 min on a busy machine
def test_resumed_run_draws_the_same_refills_as_an_uninterrupted_one(tmp_path, tiny_dir):
    run(_compose(tmp_path, tiny_dir, "full"))
    full = read_metrics(tmp_path / "full" / "metrics.csv")
    assert sorted(full) == [0, 1, 2, 3]
    # refills happened before the cut (so the resumed loader must draw them again) and after it
    assert full[0]["filter/rounds"] + full[1]["filter/rounds"] > 2
    assert full[2]["filter/rounds"] + full[3]["filter/rounds"] > 2

    cut_cfg = _compose(tmp_path, tiny_dir, "cut")
    cut_cfg.callbacks.sigterm = {"_target_": f"{__name__}.SigtermAtStep", "step": STOP_AT}
    with pytest.raises(SystemExit):
        run(cut_cfg)
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert last.is_file()

    run(_compose(tmp_path, tiny_dir, "resumed", f"ckpt_path={last}"))
    resumed = read_metrics(tmp_path / "resumed" / "metrics.csv")
    assert sorted(resumed) == [2, 3]

    # the same prompts, refills included, step by step
    trained = (tmp_path / "full.txt").read_text().splitlines()
    assert (tmp_path / "cut.txt").read_text().splitlines() + (tmp_path / "resumed.txt").read_text().splitlines() == trained
    cut = read_metrics(tmp_path / "cut" / "metrics.csv")
    keys = ("train/loss", "reward/total", "adv/std", "filter/groups_generated", "filter/groups_kept", "filter/rounds")
    for step, source in ((0, cut), (1, cut), (2, resumed), (3, resumed)):
        for key in keys:
            assert math.isclose(source[step][key], full[step][key], rel_tol=1e-5, abs_tol=1e-7), (step, key)
        # every step trained on B = 2 informative groups
        assert full[step]["filter/groups_kept"] == 2.0 and full[step]["adv/zero_std_frac"] == 0.0
