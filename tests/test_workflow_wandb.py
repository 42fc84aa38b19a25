"""W&B logging: offline unless configured; the run files hold the images, tables and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from workflow_runs import REPO, TINY_OVERRIDES, compose_train, read_metrics

from t2ir1.lit.loggers import (
    WandbRunFilesError,
    find_wandb_runs,
    has_wandb_credentials,
    load_wandb_run,
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

    (run_dir,) = find_wandb_runs(out / "wandb")
    assert run_dir.name.startswith("offline-run-")
    wandb_run = load_wandb_run(run_dir)
    assert run_dir.name.endswith("-" + wandb_run.run_id)  # W&B's own directory of that run
    assert wandb_run.tags == ["demo", "tiny"] and wandb_run.group == "ablation" and wandb_run.name == "test"
    assert wandb_run.config["seed"] == 0 and wandb_run.config["algo"]["group_size"] == 4  # demo: G = 4
    assert wandb_run.exit_code == 0

    # scalar curves from the run files: the values logged to W&B, the same as metrics.csv's
    csv_rows = read_metrics(out / "metrics.csv")
    assert sorted(csv_rows) == [0, 1]
    for key in ("train/loss", "train/kl", "reward/total", "reward/color"):
        assert key in csv_rows[0] and key in csv_rows[1], key
        assert [step for step, _ in wandb_run.metric(key)] == [0, 1], key
        assert [v for _, v in wandb_run.metric(key)] == pytest.approx([csv_rows[0][key], csv_rows[1][key]], rel=1e-6), key
    assert wandb_run.metric("train/kl")[-1][1] == pytest.approx(metrics["train/kl"], rel=1e-6)

    # a captioned grid per logging step, stored by W&B as a PNG in the run's media folder
    media = run_dir / "files" / "media"
    grids = wandb_run.media("samples/grid")
    assert len(grids) == 2 and all(png.parent == media / "images" / "samples" for png in grids)
    assert sorted(grids) == sorted((media / "images" / "samples").glob("grid_*.png"))
    assert all(png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for png in grids)

    # the table: one row per sample (2 prompts x G = 4), with prompt, CoT and each member's reward
    tables = wandb_run.media("samples/cot")
    assert len(tables) == 2 and all(t.is_file() and t.name.endswith(".table.json") for t in tables)
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


def test_reading_a_directory_without_run_files_names_it_and_the_fix(tmp_path):
    (tmp_path / "run-abc.wandb").write_bytes(b":W&B")  # W&B's private log alone is not read
    with pytest.raises(WandbRunFilesError, match=r"holds no t2ir1-run.json.*logger=default"):
        load_wandb_run(tmp_path)
    assert find_wandb_runs(tmp_path) == []
