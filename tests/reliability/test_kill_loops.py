"""Kill loops through the real command line (`python train.py`): SIGTERM and kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.workflow_runs import REPO, read_metrics

BASE = ("model=tiny", "experiment=tiny", "logger=csv", "algo.group_size=2", "algo.max_new_tokens=4",
        "data.batch_size=1", "trainer.enable_progress_bar=false")


def _command(run_dir, cache, *overrides):
    return [sys.executable, str(REPO / "train.py"), *BASE, f"model.cache_dir={cache}", f"hydra.run.dir={run_dir}",
            *overrides]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


@pytest.mark.slow  # two processes of the tiny model: ~40 s, more on a busy machine
def test_sigterm_exits_143_with_the_resume_command_and_the_resume_keeps_history(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    sigterm = ("+callbacks.sigterm._target_=tests.reliability.faults.SigtermAtStep", "+callbacks.sigterm.step=1")
    cut = subprocess.run(_command(run_dir, tiny_dir.parent, "trainer.max_steps=10", *sigterm), cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert cut.returncode == 143, cut.stderr[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"ckpt_path={last}" in cut.stderr + cut.stdout
    steps_done = torch.load(last, weights_only=True)["global_step"]
    resumed = subprocess.run(_command(run_dir, tiny_dir.parent, f"trainer.max_steps={steps_done + 1}",
                                      f"ckpt_path={last}"), cwd=REPO, env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(read_metrics(run_dir / "metrics.csv")) == list(range(steps_done + 1))
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.slow  # four processes, three killed at random moments: ~1-2 min
def test_kill_9_at_random_moments_always_leaves_a_loadable_checkpoint(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    every_step = ("callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.save_top_k=1", "trainer.max_steps=40")
    rng = random.Random(15)
    for _ in range(3):
        resume = (f"ckpt_path={last}",) if last.is_file() else ()
        process = subprocess.Popen(_command(run_dir, tiny_dir.parent, *every_step, *resume), cwd=REPO, env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not last.is_file() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 3.0))  # somewhere in a step, maybe inside a checkpoint write
        process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoint = torch.load(last, weights_only=True)  # never half a file
        assert checkpoint["global_step"] >= 1
    finished = subprocess.run(_command(run_dir, tiny_dir.parent, "callbacks.checkpoint.every_n_train_steps=1",
                                       "callbacks.checkpoint.save_top_k=1",
                                       f"trainer.max_steps={checkpoint['global_step'] + 1}", f"ckpt_path={last}"),
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert torch.load(last, weights_only=True)["global_step"] == checkpoint["global_step"] + 1
    assert not list(last.parent.glob(".*.tmp"))  # orphans of the killed writes were removed at start
