"""Nothing is lost: keyed generation/evaluation folders, metric history, crash and preemption checkpoints."""

from __future__ import annotations

import csv
import json
import logging
import os

import pytest
import torch
from hydra import compose, initialize_config_dir

from t2ir1.evaluate import run as evaluate
from t2ir1.generate import GENERATIONS_JSONL
from t2ir1.generate import run as generate
from t2ir1.output_keys import RUN_JSON, OutputMismatchError, weights_identity
from t2ir1.train import run as train
from tests.workflow_runs import CONF, compose_train, read_metrics


def _generate_cfg(out_dir, tiny_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("generate", overrides=[f"out_dir={out_dir}", "generation.max_new_tokens=4", "n_per_prompt=1",
                                              "grid.enabled=false", "device=cpu", f"model.cache_dir={tiny_dir.parent}",
                                              *overrides])


def _rows(out_dir):
    return [json.loads(line) for line in (out_dir / GENERATIONS_JSONL).read_text().splitlines()]


# ----------------------------------------------------------------------------- generate.py
def test_another_prompt_list_in_the_same_folder_keeps_earlier_images(tmp_path, tiny_dir):
    out = tmp_path / "gen"
    first = generate(_generate_cfg(out, tiny_dir, "prompts=[a red cube,two blue balls]"))
    before = {row["prompt"]: (out / row["path"]).read_bytes() for row in first}
    second = generate(_generate_cfg(out, tiny_dir, "prompts=[a green cup,a red cube]"))
    # "a red cube" is the same work (same key, same seed): reused, not generated again
    assert [row["prompt_index"] for row in second] == [0, 1]
    assert second[1]["path"] == first[0]["path"]
    assert len(_rows(out)) == 3
    # every row ever written still points at the image of its own prompt, unchanged
    for row in _rows(out):
        if row["prompt"] in before:
            assert (out / row["path"]).read_bytes() == before[row["prompt"]]
    assert len({row["path"] for row in _rows(out)}) == 3


@pytest.mark.parametrize(
    ("override", "difference"),
    [
        ("seed=1", "seed: 0 then, 1 now"),
        # null = the model's run card (or the paper's default): the key records the setting as asked
        ("generation.cfg_weight=2", "sampling.cfg_weight: None then, 2 now"),
        ("generation.image_temperature=0.5", "sampling.image_temperature: None then, 0.5 now"),
        ("use_cot=false", "use_cot: True then, False now"),
        ("generation.reasoning_prompt='Describe {} briefly.'", "reasoning_prompt:"),
    ],
)
def test_a_rerun_with_other_settings_is_refused_and_the_folder_untouched(tmp_path, tiny_dir, override, difference):
    out = tmp_path / "gen"
    generate(_generate_cfg(out, tiny_dir, "prompts=a red cube"))
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OutputMismatchError) as info:
        generate(_generate_cfg(out, tiny_dir, "prompts=a red cube", override))
    assert difference in str(info.value) and "Pass another out_dir" in str(info.value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot


def test_speed_knobs_do_not_change_the_key(tmp_path, tiny_dir):
    out = tmp_path / "gen"
    generate(_generate_cfg(out, tiny_dir, "prompts=a red cube"))
    rows = generate(_generate_cfg(out, tiny_dir, "prompts=a red cube", "generation.batch_size=2",
                                  "generation.decode_micro_batch_size=1"))
    assert len(rows) == 1 and len(_rows(out)) == 1  # resumed: nothing generated again


def test_a_folder_of_unknown_provenance_is_not_reused(tmp_path, tiny_dir):
    out = tmp_path / "gen"
    out.mkdir()
    (out / GENERATIONS_JSONL).write_text('{"prompt": "a red cube", "sample": 0, "path": "images/0.png"}\n')
    with pytest.raises(OutputMismatchError, match=f"already holds {GENERATIONS_JSONL} but no {RUN_JSON}"):
        generate(_generate_cfg(out, tiny_dir, "prompts=a red cube"))


def test_weights_identity_follows_the_files(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"a")
    node = {"_target_": "t2ir1.policy.janus.JanusPolicy.from_pretrained", "name_or_path": str(tmp_path)}
    before = weights_identity(node, str(ckpt))
    ckpt.write_bytes(b"bb")  # a newer last.ckpt at the same path
    after = weights_identity(node, str(ckpt))
    assert before["checkpoint"]["size"] == 1 and after["checkpoint"]["size"] == 2
    assert before != after


# ----------------------------------------------------------------------------- eval.py
def _eval_cfg(tiny_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=["benchmark=shapeworld", "model=tiny", f"model.cache_dir={tiny_dir.parent}",
                                          "limit=1", "benchmark.n_per_prompt=1", "generation.max_new_tokens=4",
                                          "device=cpu", *overrides])


def test_eval_folders_are_keyed_by_the_settings(tmp_path, tiny_dir):
    root = tmp_path / "eval"
    first = evaluate(_eval_cfg(tiny_dir, f"out_root={root}"))
    second = evaluate(_eval_cfg(tiny_dir, f"out_root={root}", "seed=1"))
    folders = sorted(p.name for p in (root / "shapeworld").iterdir())
    # one folder per settings key: "<model>-cot-<key>"
    assert folders == sorted(f"{s['model']}-cot-{s['settings_key'][:8]}" for s in (first, second))
    assert first["settings_key"] != second["settings_key"]
    for summary in (first, second):
        manifest = json.loads((root / "shapeworld" / summary["run"] / RUN_JSON).read_text())
        assert manifest["key"] == summary["settings_key"] and manifest["settings"]["seed"] == summary["seed"]


def test_eval_refuses_to_score_old_images_under_new_settings(tmp_path, tiny_dir):
    out = tmp_path / "run"
    evaluate(_eval_cfg(tiny_dir, f"out_dir={out}"))
    results = (out / "results.json").read_text()
    # the benchmark's own generation settings win over the top-level ones (ShapeWorld samples at CFG 1)
    with pytest.raises(OutputMismatchError, match="sampling.cfg_weight: 1.0 then, 2 now"):
        evaluate(_eval_cfg(tiny_dir, f"out_dir={out}", "benchmark.generation.cfg_weight=2"))
    # scoring only (generate=false) is refused too: results.json would report settings the images lack
    with pytest.raises(OutputMismatchError):
        evaluate(_eval_cfg(tiny_dir, f"out_dir={out}", "generate=false", "seed=3"))
    assert (out / "results.json").read_text() == results


# ----------------------------------------------------------------------------- training
def _train_cfg(run_dir, tiny_dir, *overrides):
    return compose_train(run_dir, "logger=csv", f"model.cache_dir={tiny_dir.parent}", "algo.group_size=2",
                         "algo.max_new_tokens=4", "data.batch_size=1", *overrides)


def _csv_rows(path, steps) -> list[dict[str, str]]:
    """The non-empty cells of the rows of ``steps``, as the file holds them."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(handle) if int(row["step"]) in steps]


def test_resuming_into_the_same_folder_keeps_the_metric_history(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    train(_train_cfg(run_dir, tiny_dir, "trainer.max_steps=1"))
    assert sorted(read_metrics(run_dir / "metrics.csv")) == [0]
    earlier_rows = _csv_rows(run_dir / "metrics.csv", (0,))
    train(_train_cfg(run_dir, tiny_dir, "trainer.max_steps=2", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"))
    assert sorted(read_metrics(run_dir / "metrics.csv")) == [0, 1]  # Lightning's own writer would leave [1]
    # the earlier rows come back exactly as written (compared as text: NaN metrics are kept too)
    assert _csv_rows(run_dir / "metrics.csv", (0,)) == earlier_rows


@pytest.mark.parametrize("error", ["oom", "value"])
def test_a_crash_in_the_reward_saves_last_ckpt_and_the_run_resumes(tmp_path, tiny_dir, error):
    run_dir = tmp_path / "run"
    orphan = run_dir / "checkpoints" / ".last.ckpt.k2j3h4.tmp"  # left by a write killed with -9
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a checkpoint")
    failing = ("reward.members.color._target_=tests.reliability.faults.FailingColorReward",
               "+reward.members.color.fail_on_call=2", f"+reward.members.color.error={error}")
    expected = torch.OutOfMemoryError if error == "oom" else ValueError
    with pytest.raises(expected, match="planted"):
        train(_train_cfg(run_dir, tiny_dir, "trainer.max_steps=3", *failing))
    assert not orphan.exists()
    last = run_dir / "checkpoints" / "last.ckpt"
    # one step finished before the second reward call raised
    assert torch.load(last, weights_only=True)["global_step"] == 1
    train(_train_cfg(run_dir, tiny_dir, "trainer.max_steps=2", f"ckpt_path={last}"))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert sorted(read_metrics(run_dir / "metrics.csv")) == [0, 1]  # steps labelled as an uninterrupted run's


def test_preemption_exits_non_zero_and_says_how_to_resume(tmp_path, tiny_dir, caplog):
    run_dir = tmp_path / "run"
    sigterm = ("+callbacks.sigterm._target_=tests.reliability.faults.SigtermAtStep", "+callbacks.sigterm.step=1")
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as info:
        train(_train_cfg(run_dir, tiny_dir, "trainer.max_steps=4", *sigterm))
    assert info.value.code == 143
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] in (1, 2)  # the batch in flight finishes
    assert f"ckpt_path={last}" in caplog.text and "exiting with status 143" in caplog.text
    assert os.environ.get("T2IR1_PREEMPTED") is None  # nothing leaks into the environment


def test_a_failure_before_the_resumed_checkpoint_loads_leaves_last_ckpt_alone(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    train(_train_cfg(run_dir, tiny_dir, "trainer.max_steps=1"))
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    # every prompt is longer than one token: the data fails to load, before the checkpoint is restored
    with pytest.raises(ValueError, match="data.max_prompt_tokens=1"):
        train(_train_cfg(run_dir, tiny_dir, "trainer.max_steps=2", "data.max_prompt_tokens=1", f"ckpt_path={last}"))
    assert last.read_bytes() == before
