"""Sweeps: a Hydra multirun gives each job its own directory and W&B run, all in one group;
a failing job neither stops the others nor leaves its W&B run open; Optuna optimises a metric."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from workflow_runs import REPO, TINY_OVERRIDES, read_metrics

from t2ir1.lit.loggers import find_wandb_runs, load_wandb_run


def offline_env(tmp_path) -> dict[str, str]:
    """No W&B account and no network: auto mode must resolve to offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "no-netrc"), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    return env


def train(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train.py"), "-m", *TINY_OVERRIDES, "trainer.max_steps=2", *overrides]
    return subprocess.run(command, cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)


def exit_code(run_dir) -> int | None:
    """The exit code the W&B run was finished with (None: never finished)."""
    return load_wandb_run(run_dir).exit_code


@pytest.mark.slow  # a sweep of two training jobs in a subprocess: ~15 s
def test_multirun_jobs_have_own_dirs_and_one_wandb_group(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = train(tmp_path, "reward.weights.color=0.5,1.0", "logger=default", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for job, weight in (("0", 0.5), ("1", 1.0)):
        metrics = read_metrics(sweep_dir / job / "metrics.csv")
        # the swept weight reached the reward: weighted = weight * raw (hand check: 0.5 * r, 1.0 * r)
        for row in metrics.values():
            assert row["reward/color_weighted"] == pytest.approx(weight * row["reward/color"], rel=1e-6)
        (run_dir,) = find_wandb_runs(sweep_dir / job / "wandb")
        runs[job] = load_wandb_run(run_dir)
        assert runs[job].config["reward"]["weights"]["color"] == weight
        assert exit_code(run_dir) == 0
    assert runs["0"].run_id != runs["1"].run_id
    assert runs["0"].group == runs["1"].group != ""
    assert {runs["0"].name, runs["1"].name} == {"train-0", "train-1"}


@pytest.mark.slow  # a sweep of two training jobs in a subprocess: ~15 s
def test_failed_job_does_not_stop_the_sweep_and_its_wandb_run_is_finished(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # job 0: a negative Adam epsilon fails inside fit (AdamW rejects it), after W&B has started
    # (a negative learning rate no longer gets that far: the config check rejects it before the run)
    result = train(tmp_path, "+optimizer.eps=-1.0,1e-8", "logger=default", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode != 0, "Hydra should report the failed job"
    assert "Invalid epsilon value" in result.stderr
    assert sorted(read_metrics(sweep_dir / "1" / "metrics.csv")) == [0, 1], "job 1 did not run after job 0 failed"
    (failed_run,) = find_wandb_runs(sweep_dir / "0" / "wandb")
    (ok_run,) = find_wandb_runs(sweep_dir / "1" / "wandb")
    assert exit_code(failed_run) == 1
    assert exit_code(ok_run) == 0
    assert load_wandb_run(failed_run).run_id != load_wandb_run(ok_run).run_id


@pytest.mark.slow  # an Optuna study of two trials in a subprocess: ~10 s
def test_optuna_sweeper_optimises_the_named_metric(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = train(
        tmp_path,
        "sweep=optuna",
        "logger=csv",
        "hydra.sweeper.n_trials=2",
        "reward.weights.color=interval(0.5,1.0)",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert "reward.weights.color" in best and "best_value" in best
    # the best value is the larger final reward/total of the two trials
    finals = [read_metrics(sweep_dir / job / "metrics.csv")[1]["reward/total"] for job in ("0", "1")]
    assert yaml.safe_load(best)["best_value"] == pytest.approx(max(finals), rel=1e-6)
