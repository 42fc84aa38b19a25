"""Held-out accuracy scoring, and BiCoT-GRPO learning on the shipped ShapeWorld checkpoint."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from workflow_runs import compose_demo

from t2ir1.data.records import PromptRecord
from t2ir1.policy.prompts import DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT
from t2ir1.shapeworld import load_policy
from t2ir1.shapeworld.callbacks import accuracy_table, format_table, heldout_accuracy, record_seed
from t2ir1.shapeworld.prompts import heldout_records

CONF = Path(__file__).resolve().parents[2] / "conf"


def rec(task_type: str) -> PromptRecord:
    return PromptRecord(f"a photo of a {task_type}", task_type, ("circle",))


def test_strict_weight_pays_for_exact_counts_like_the_heldout_metric():
    from t2ir1.shapeworld.render import render
    from t2ir1.shapeworld.reward import ShapeWorldReward
    from t2ir1.shapeworld.world import Scene, SceneObject

    record = rec("object")  # "a photo of a object": one circle asked for
    one = render(Scene((SceneObject("circle", "red", (4, 4, 20, 20)),)))
    two = render(
        Scene((SceneObject("circle", "red", (4, 4, 20, 20)), SceneObject("circle", "blue", (40, 40, 56, 56))))
    )
    lenient, strict = ShapeWorldReward(), ShapeWorldReward(strict_weight=0.5)
    # the rule: fraction of nouns detected = 1 for both images; the verdict: exact count -> 1 and 0
    assert lenient([record, record], [one, two]).scores.tolist() == [1.0, 1.0]
    # 0.5 * 1 + 0.5 * 1 = 1.0 and 0.5 * 1 + 0.5 * 0 = 0.5
    assert strict([record, record], [one, two]).scores.tolist() == [1.0, 0.5]
    assert strict.score_one(record, strict.detector.detect_one(two), (64, 64)) == 0.5
    with pytest.raises(ValueError, match="strict_weight"):
        ShapeWorldReward(strict_weight=1.5)


def test_accuracy_table_is_the_mean_over_categories():
    records = [rec("object"), rec("object"), rec("object"), rec("object"), rec("counting"), rec("counting")]
    correct = [True, True, True, False, False, True]
    table = accuracy_table(records, correct)
    # object 3/4 = 0.75, counting 1/2 = 0.5; overall = mean of categories (0.75 + 0.5) / 2 = 0.625,
    # not the image fraction 4/6
    assert table == {"object": 0.75, "counting": 0.5, "overall": 0.625}


def test_format_table_shows_before_after_and_delta_in_percent():
    text = format_table({"object": 0.25, "overall": 0.25}, {"object": 0.5, "overall": 0.5})
    assert "| object | 25.0 | 50.0 | +25.0 |" in text
    assert text.splitlines()[-1] == "| overall | 25.0 | 50.0 | +25.0 |"


def test_record_seed_depends_on_seed_and_record_only():
    assert record_seed(0, "a") == record_seed(0, "a")
    assert len({record_seed(0, "a"), record_seed(1, "a"), record_seed(0, "b")}) == 3


def test_heldout_accuracy_repeats_exactly_for_a_seed_and_changes_with_it():
    policy = load_policy()
    records = heldout_records(6)
    kwargs = {"max_new_tokens": 40, "cfg_weight": 3.0, "batch_size": 4}
    first = heldout_accuracy(policy, records, DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT, seed=0, **kwargs)
    again = heldout_accuracy(policy, records, DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT, seed=0, **kwargs)
    other = heldout_accuracy(policy, records, DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT, seed=1, **kwargs)
    assert first["cots"] == again["cots"] and first["correct"] == again["correct"]
    assert first["cots"] != other["cots"]
    assert len(first["images"]) == 6 and first["images"][0].size == (64, 64)
    assert set(first["table"]) == {
        "object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
        "overall",
    }
    bare = heldout_accuracy(policy, records, None, SYSTEM_PROMPT, seed=0, **kwargs)
    assert bare["cots"] == [None] * 6


def test_demo_experiment_composes_with_the_shapeworld_pieces(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"paths.output_dir={tmp_path}"])
    assert cfg.model._target_ == "t2ir1.shapeworld.load_policy"
    assert cfg.data.source._target_ == "t2ir1.shapeworld.prompts.training_records"
    assert "shapeworld" in cfg.reward.members
    assert cfg.callbacks.heldout.num_prompts >= 200


LEARNING_SEEDS = (1, 2, 3)
# the reward test reads the first 300 steps of each demo run (constant lr: the same random numbers
# as a 300-step run)
LEARNING_STEPS, LEARNING_WINDOW = 300, 100
# issue 17: every seed's demo gains at least this many held-out points (fixed floor)
GAIN_FLOOR = 5.0
# measured gains of the demo (CoT at temperature 0.7) on seeds 1-6 (experiments/shapeworld/README.md section 3,
# 2026-12-07, session 12: the six reference runs, LEARNING_SEEDS among them)
MEASURED_GAINS = (13.12, 11.67, 11.04, 12.19, 10.73, 9.69)


def _reward_rise(rewards: np.ndarray, window: int) -> tuple[float, float, float]:
    """Mean reward of the last ``window`` steps minus the first's, and the two windows' variances."""
    first, last = rewards[:window], rewards[-window:]
    return last.mean() - first.mean(), first.var(ddof=1), last.var(ddof=1)


def _demo_run(seed: int, out_dir: Path) -> dict:
    """The demo as ``make demo`` runs it on ``seed`` (800 steps, 960 held-out records), without its
    wall-time cap (a slow or busy machine must not cut the run short): the held-out summary."""
    from t2ir1.train import run

    cfg = compose_demo(out_dir, f"seed={seed}", "trainer.max_time=null")
    run(cfg)
    return json.loads((out_dir / "heldout" / "heldout_accuracy.json").read_text())


@pytest.mark.slow
def test_demo_raises_the_reward_and_the_heldout_accuracy_on_three_seeds(tmp_path):
    """The whole demo on seeds 1, 2 and 3 (~8-13 min each on 2 idle cores).

    Held-out accuracy (960 records, the same random numbers before and after): every seed gains at
    least ``GAIN_FLOOR`` points, and the mean gain exceeds the measured mean minus three standard
    errors of a 3-seed mean (measured 2026-12-07 with the CoT at 0.7 on seeds 1-6, one thread each:
    +13.1, +11.7, +11.0, +12.2, +10.7, +9.7, mean 11.4, sd 1.2, so the mean must exceed 9.3).

    Reward: the mean reward of steps 201-300 beats steps 1-100 on every seed, and over the three
    seeds together (Welch t over the 300 + 300 per-step means, each seed's windows pooled).
    Measured (2026-12-07, the same seeds): rises 0.039, 0.018, 0.039 (mean 0.032, sd 0.012);
    per-seed Welch t 1.91, 0.84, 1.89; pooled t 2.66 (at the CoT temperature 1.0 on 2026-12-06:
    rises 0.039, 0.019, 0.031, pooled t 2.50). One seed's t spans 0.8-1.9, so a per-seed t
    threshold would pin a seed rather than test learning. The thresholds come from the spread:
    each seed's rise must exceed the measured mean - 3 sd (0.0), and the pooled t must exceed 1.65
    (one-sided p < 0.05; measured 2.66).
    """
    gains, rises, first_vars, last_vars = [], [], [], []
    for seed in LEARNING_SEEDS:
        summary = _demo_run(seed, tmp_path / f"seed{seed}")
        assert summary["history"][-1]["step"] == 800
        gains.append(100 * (summary["after"]["overall"] - summary["before"]["overall"]))
        rise, first_var, last_var = _reward_rise(np.array(summary["rewards"][:LEARNING_STEPS]), LEARNING_WINDOW)
        rises.append(rise)
        first_vars.append(first_var)
        last_vars.append(last_var)
    assert min(gains) >= GAIN_FLOOR, gains
    measured = np.array(MEASURED_GAINS)
    assert np.mean(gains) > measured.mean() - 3 * measured.std(ddof=1) / math.sqrt(len(LEARNING_SEEDS)), gains
    assert min(rises) > 0.0, rises
    n = LEARNING_WINDOW * len(LEARNING_SEEDS)
    pooled_t = float(np.mean(rises)) / math.sqrt((np.mean(first_vars) + np.mean(last_vars)) / n)
    assert pooled_t > 1.65, (pooled_t, rises)


def test_demo_run_writes_the_heldout_tables_curve_and_history(tmp_path):
    """Three demo steps with an evaluation every step: before, steps 1 and 2, after in the history."""
    from t2ir1.train import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=demo",
                f"paths.output_dir={tmp_path}",
                "logger=csv",
                "trainer.max_steps=3",
                "trainer.enable_progress_bar=false",
                "data.batch_size=2",
                "algo.group_size=2",
                "callbacks.heldout.num_prompts=6",
                "callbacks.heldout.every_n_steps=1",
                "callbacks.heldout.grid_images=6",
                "callbacks.sample_grid.every_n_steps=2",
                "callbacks.checkpoint=null",
                "run_name=test",
            ],
        )
    run(cfg)
    out = tmp_path / "heldout"
    summary = json.loads((out / "heldout_accuracy.json").read_text())
    assert [entry["step"] for entry in summary["history"]] == [0, 1, 2, 3]
    assert summary["history"][0]["overall"] == summary["before"]["overall"]
    assert summary["history"][-1]["overall"] == summary["after"]["overall"]
    assert len(summary["rewards"]) == 3
    for name in ("heldout_before.png", "heldout_after.png", "curves.png", "heldout_accuracy.md"):
        assert (out / name).is_file(), name
    table = (out / "heldout_accuracy.md").read_text()
    assert table.splitlines()[0] == "| category | before | after | delta |"
    metrics = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "heldout/overall" in metrics


def test_heldout_history_has_one_entry_per_step_under_gradient_accumulation(tmp_path):
    """Two micro-batches end on each optimiser step; the step is evaluated once, not twice."""
    from t2ir1.train import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=demo",
                f"paths.output_dir={tmp_path}",
                "logger=csv",
                "trainer.max_steps=2",
                "trainer.accumulate_grad_batches=2",
                "trainer.enable_progress_bar=false",
                "data.batch_size=2",
                "algo.group_size=2",
                "callbacks.heldout.num_prompts=6",
                "callbacks.heldout.every_n_steps=1",
                "callbacks.heldout.grid_images=6",
                "callbacks.checkpoint=null",
                "run_name=test",
            ],
        )
    run(cfg)
    summary = json.loads((tmp_path / "heldout" / "heldout_accuracy.json").read_text())
    assert [entry["step"] for entry in summary["history"]] == [0, 1, 2]
