"""Checkpoints and resume: a run preempted by SIGTERM and resumed matches one never interrupted."""

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


class SigtermAtStep(L.Callback):
    """Sends this process a real SIGTERM once ``step`` optimiser steps are done."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow  # three short training runs: ~25 s alone, over a minute on a busy machine
def test_preempted_and_resumed_run_matches_uninterrupted(tmp_path):
    # checkpoints only from the preemption handler (periodic every 100 steps never fires)
    common = (f"trainer.max_steps={MAX_STEPS}", "logger=csv", "callbacks.checkpoint.every_n_train_steps=100")

    full_cfg = compose_train(tmp_path / "full", *common)
    run(full_cfg)
    full = read_metrics(tmp_path / "full" / "metrics.csv")
    assert sorted(full) == [0, 1, 2, 3]

    cut_cfg = compose_train(tmp_path / "cut", *common)
    OmegaConf.set_struct(cut_cfg, False)
    cut_cfg.callbacks.sigterm = {"_target_": f"{__name__}.SigtermAtStep", "step": STOP_AT}
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException after the batch in flight
        run(cut_cfg)
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert last.is_file(), "SIGTERM did not leave a last.ckpt"
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")], "a temporary checkpoint was left behind"
    # the frozen reference is rebuilt from the base weights on resume, never stored
    import torch

    saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("policy.") for k in saved)
    assert not any(k.startswith("reference.") for k in saved)
    cut = read_metrics(tmp_path / "cut" / "metrics.csv")
    assert sorted(cut) == [0, 1], "training went on past the SIGTERM step"

    resumed_cfg = compose_train(tmp_path / "resumed", *common, f"ckpt_path={last}")
    run(resumed_cfg)
    resumed = read_metrics(tmp_path / "resumed" / "metrics.csv")
    assert sorted(resumed) == [2, 3], "the resumed run did not start at the saved step"

    # same weights, optimiser state, data position and sampling seeds => same numbers (CPU, float32)
    for step, source in ((0, cut), (1, cut), (2, resumed), (3, resumed)):
        for key in ("train/loss", "train/kl", "reward/total", "adv/std"):
            assert math.isclose(source[step][key], full[step][key], rel_tol=1e-5, abs_tol=1e-7), (
                step,
                key,
                source[step][key],
                full[step][key],
            )
    # the sampled prompts, CoTs and rewards after the resume are the uninterrupted run's
    for grid_step in (STOP_AT + 1, MAX_STEPS):
        name = f"samples/step_{grid_step:06d}.jsonl"
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "full" / name).read_text()
    # ... and the run moves between steps (new prompts, drifting policy), so the match above is not trivial
    assert (tmp_path / "full" / "samples/step_000003.jsonl").read_text() != (
        tmp_path / "full" / "samples/step_000004.jsonl"
    ).read_text()
    assert full[3]["train/kl"] != full[2]["train/kl"]


def test_missing_ckpt_path_is_a_clear_error(tmp_path):
    cfg = compose_train(tmp_path / "run", "logger=csv", f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*nope.ckpt: no such checkpoint"):
        run(cfg)
