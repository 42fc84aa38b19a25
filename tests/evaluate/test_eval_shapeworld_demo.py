"""``eval.py benchmark=shapeworld`` and the demo's held-out callback measure the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from t2ir1.evaluate import run
from t2ir1.evaluate.harness import build_benchmark
from t2ir1.generate import load_policy
from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt
from t2ir1.policy.run_card import recorded_settings
from t2ir1.shapeworld.callbacks import heldout_accuracy
from t2ir1.shapeworld.prompts import heldout_records

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_heldout_callback_and_eval_shapeworld_give_the_same_table(tmp_path):
    """Same records, per-record seeds and settings: the same images, so the same table."""
    n = 12
    overrides = ["model=shapeworld", "benchmark=shapeworld", "device=cpu", f"limit={n}", "seed=3"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[*overrides, f"out_dir={tmp_path / 'eval'}"])
    summary = run(cfg)
    _, generation, _ = build_benchmark(cfg.benchmark)
    # the CoT temperature comes from the shipped checkpoint's run card: the demo's (0.7)
    sampled = recorded_settings(tmp_path / "eval")
    assert sampled["text_temperature"] == 0.7
    result = heldout_accuracy(
        load_policy(cfg),
        heldout_records(n),
        load_reasoning_prompt("default"),
        SYSTEM_PROMPT,
        seed=3,
        max_new_tokens=generation["max_new_tokens"],
        cfg_weight=generation["cfg_weight"],
        text_temperature=sampled["text_temperature"],
        batch_size=5,  # the harness batches by generation.batch_size: batching must not matter
    )
    assert summary["n_images"] == n
    assert result["table"]["overall"] == pytest.approx(summary["overall"])
    for category, row in summary["categories"].items():
        assert result["table"][category] == pytest.approx(row["score"]), category
    # and the ShapeWorld checkpoint is not at chance: some images are right, some wrong
    assert 0 < sum(result["correct"]) < n
