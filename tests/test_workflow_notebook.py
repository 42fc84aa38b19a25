"""notebooks/analyze_run.ipynb executes on a tiny run's output (W&B offline and CSV)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient
from workflow_runs import REPO, compose_demo, compose_train

from t2ir1.train import run


@pytest.mark.slow  # a 2-step training run + a kernel start: ~30 s
@pytest.mark.parametrize("prefer_wandb", [True, False])
def test_notebook_runs_on_a_tiny_run(tmp_path, monkeypatch, prefer_wandb):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    out = tmp_path / "run"
    run(compose_train(out, "logger=default", "trainer.max_steps=2"))
    monkeypatch.setenv("T2IR1_RUN_DIR", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(REPO / "notebooks" / "analyze_run.ipynb", as_version=4)
    notebook.cells[1].source = notebook.cells[1].source.replace("PREFER_WANDB = True", f"PREFER_WANDB = {prefer_wandb}")
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert ("W&B offline run" if prefer_wandb else "metrics.csv") in text
    assert (out / "analysis_curves.png").is_file() and (out / "analysis_grids.png").is_file()


@pytest.mark.slow  # a 2-step ShapeWorld demo run + a kernel start: ~40 s
def test_notebook_draws_a_demo_run_over_the_reference_curves(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = compose_demo(
        out,
        "trainer.max_steps=2",
        "data.batch_size=2",
        "algo.group_size=2",
        "callbacks.heldout.num_prompts=6",
        "callbacks.heldout.grid_images=0",
    )
    run(cfg)
    monkeypatch.setenv("T2IR1_RUN_DIR", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(REPO / "notebooks" / "analyze_run.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "settings differ from the reference's: group_size 2 vs 8" in text
    assert "mean reward per step at step" in text and "held-out accuracy, overall (%) at step 2" in text
    assert (out / "analysis_reference.png").is_file()
