"""experiments/shapeworld/aggregate.py: the ablation report from runs in parts, paired against BiCoT."""

import importlib.util
import json
from pathlib import Path

import pytest

from t2ir1.shapeworld.prompts import CATEGORIES

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "shapeworld" / "aggregate.py"


def _aggregate():
    spec = importlib.util.spec_from_file_location("shapeworld_aggregate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(root: Path, arm: str, seed: int, before: float, after: float, rewards=tuple(0.5 + 0.01 * i for i in range(12))) -> None:
    folder = root / f"{arm}_s{seed}" / "heldout"
    folder.mkdir(parents=True)
    table = lambda value: {**{c: value for c in CATEGORIES}, "overall": value}  # noqa: E731
    summary = {"num_prompts": 240, "seed": seed, "before": table(before), "after": table(after), "rewards": list(rewards)}
    (folder / "heldout_accuracy.json").write_text(json.dumps(summary))


def test_report_pairs_by_seed_across_parts_and_states_significance(tmp_path):
    first, second = tmp_path / "part1", tmp_path / "part2"
    seed_effect = {0: 0.20, 1: 0.30, 2: 0.25, 3: 0.35, 4: 0.28}
    for seed, start in seed_effect.items():
        part = first if seed < 3 else second
        _write(part, "bicot", seed, start, start + 0.10)
        # semantic only: 3 points below BiCoT on every seed, give or take one point
        _write(part, "semantic", seed, start, start + 0.07 + (0.01 if seed % 2 else -0.01))
        # token only (CoT): the same as BiCoT up to noise that averages out
        _write(part, "token_cot", seed, start, start + 0.10 + (0.02 if seed % 2 else -0.02))
    _write(second, "token", 0, 0.15, 0.20)  # one seed only: no interval, one pair
    payload = _aggregate().main([str(first), str(second), "--out", str(tmp_path / "report")])

    bicot = payload["arms"]["BiCoT (both)"]["overall"]
    assert sorted(bicot) == [0, 1, 2, 3, 4]
    semantic = payload["paired_vs_bicot"]["semantic only"]["overall"]
    assert semantic["seeds"] == [0, 1, 2, 3, 4]
    assert semantic["mean"] == pytest.approx(-3.2) and semantic["significant"] and semantic["high"] < 0
    token_cot = payload["paired_vs_bicot"]["token only (CoT sampled)"]["overall"]
    assert not token_cot["significant"] and token_cot["low"] < 0 < token_cot["high"]
    assert payload["paired_vs_bicot"]["token only without CoT"]["overall"]["seeds"] == [0]
    # no RL (CoT) is the bicot runs' before table: 10 points below on every seed
    assert payload["paired_vs_bicot"]["no RL (CoT)"]["overall"]["mean"] == pytest.approx(-10.0)

    text = (tmp_path / "report" / "results.md").read_text()
    assert "- semantic only: below BiCoT in " in text and "overall (paired t, 95%, 5 seeds)" in text
    assert "- token only (CoT sampled): no significant difference from BiCoT in any category" in text
    assert "- token only without CoT: one seed paired with BiCoT so far: no test yet." in text
    # one evaluation over 240 records, 40 per category, at 20-45 %: about 3 points
    assert 2.0 < payload["evaluation_se_points"] < 3.5
    assert (tmp_path / "report" / "accuracy.png").stat().st_size > 0


def test_the_same_run_in_two_parts_is_refused(tmp_path):
    _write(tmp_path / "a", "bicot", 0, 0.2, 0.3)
    _write(tmp_path / "b", "bicot", 0, 0.2, 0.3)
    with pytest.raises(SystemExit, match="bicot seed 0 is in both"):
        _aggregate().main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "report")])
