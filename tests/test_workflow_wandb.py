"""W&B logging: offline unless configured; the run files hold the images, tables and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from workflow_runs import REPO, TINY_OVERRIDES, compose_train, read_metrics

from t2ir1.lit.loggers import (
    find_wandb_runs,
    has_wandb_credentials,
    load_offline_run,
    multirun_group_name,
    resolve_wandb_mode,
)
from t2ir1.train import run


@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))


def test_mode_is_offline_without_an_account(no_wandb_account):
    assert not has_wandb_credentials()
    assert resolve_wandb_mode("auto") == "offline"


def test_mode_follows_credentials_and_environment(no_wandb_account, monkeypatch, tmp_path):
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert resolve_wandb_mode("auto") == "online"  # what `wandb login` leaves behind
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_wandb_mode("auto") == "offline"  # the netrc login is for another host
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode("auto") == "offline"  # the environment wins
    assert resolve_wandb_mode("disabled") == "disabled"  # an explicit mode wins over everything
    with pytest.raises(ValueError, match="logger.wandb.mode='cloud'"):
        resolve_wandb_mode("cloud")


def test_multirun_group_name_is_one_per_sweep():
    assert multirun_group_name("multirun/2026-11-23/09-30-57") == "multirun-2026-11-23-09-30-57"


def test_offline_run_files_hold_images_tables_metrics_and_config(no_wandb_account, tmp_path):
    out = tmp_path / "run"
    cfg = compose_train(out, "logger=default", "trainer.max_steps=2", "tags=[demo,tiny]", "group=ablation")
    metrics = run(cfg)
    # the run's records reach its file through W&B's service process: wait for it (public API)
    # before reading the file in this process, or its last records may still be in flight
    import wandb

    wandb.teardown()

    (run_dir,) = find_wandb_runs(out / "wandb")
    assert run_dir.name.startswith("offline-run-")
    wandb_run = load_offline_run(run_dir)
    assert wandb_run.tags == ["demo", "tiny"] and wandb_run.group == "ablation" and wandb_run.name == "test"
    assert wandb_run.config["seed"] == 0 and wandb_run.config["algo"]["group_size"] == 4  # demo: G = 4

    # scalar curves through the public route: metrics.csv, written beside W&B by the same logging
    # calls (W&B's own history lives in its private binary file, whose last record may still be
    # in flight when the run returns)
    csv_rows = read_metrics(out / "metrics.csv")
    assert sorted(csv_rows) == [0, 1]
    for key in ("train/loss", "train/kl", "reward/total", "reward/color"):
        assert key in csv_rows[0] and key in csv_rows[1], key
    assert csv_rows[1]["train/kl"] == pytest.approx(metrics["train/kl"], rel=1e-6)

    # a captioned grid per logging step, stored by W&B as a PNG in the run's media folder
    media = run_dir / "files" / "media"
    grids = sorted((media / "images" / "samples").glob("grid_*.png"))
    assert len(grids) == 2
    assert all(png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for png in grids)

    # the table: one row per sample (2 prompts x G = 4), with prompt, CoT and each member's reward
    tables = sorted((media / "table" / "samples").glob("cot_*.table.json"), key=lambda t: int(t.name.split("_")[1]))
    assert len(tables) == 2
    table = json.loads(tables[-1].read_text())
    assert {"prompt", "cot", "reward", "color"} <= set(table["columns"])
    assert len(table["data"]) == 8
    prompt_col, cot_col = table["columns"].index("prompt"), table["columns"].index("cot")
    assert all(row[prompt_col].startswith("a photo of") and isinstance(row[cot_col], str) for row in table["data"])


def test_csv_logger_runs_without_wandb_installed(tmp_path):
    # `sys.modules["wandb"] = None` makes every `import wandb` fail, as if it were not installed
    code = (
        "import sys, runpy; sys.modules['wandb'] = None; "
        f"sys.argv = ['train.py', *{list(TINY_OVERRIDES)!r}, 'logger=csv', 'trainer.max_steps=1', "
        f"'hydra.run.dir={tmp_path / 'run'}']; runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(read_metrics(tmp_path / "run" / "metrics.csv")) == [0]
    assert not (tmp_path / "run" / "wandb").exists()
