"""Two CPU processes (gloo) against one: DDP and FSDP2 runs of the tiny model, 2 steps each.

Each run is ``python train.py ...`` in a subprocess, exactly what a user types (Lightning
re-launches the script once per extra rank). A recorder callback writes, per rank and step,
the prompts, the loss, the rewards, the sampled tokens and, at the end, the trained weights.

What must hold, and why:
- ranks see disjoint prompts whose union is the one-process batch. Lightning always shuffles
  the training ``DistributedSampler`` (one ``randperm`` seeded with the run seed + epoch;
  rank r takes positions r, r + W, ... of it). The one-process reference therefore runs with
  ``trainer=ddp trainer.devices=1``: the same sampler with one replica walks the whole
  permutation, so its step-k batch of 2b is the union of the two ranks' step-k batches;
- per-prompt seeding: a prompt's image tokens and rewards are the same whichever rank (or
  run) samples it;
- loss: both levels are trained (semantic CoTs end at EOS, so ranks may hold different token
  counts). With ``algo.token_normalizer=global`` (the default) the token count is summed over
  ranks before the gradient is normalised, so the weights after two steps equal the
  one-process run's over ``2b`` prompts, and the logged ``train/loss`` (token-weighted over
  ranks) equals its loss (unequal counts are pinned down in-process, where they can be forced:
  tests/lit/test_module.py, accumulation split);
- checkpoints: the FSDP run writes a sharded checkpoint folder; export, ``generate.py`` and
  ``eval.py`` consolidate it into the trained weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PER_RANK_BATCH = 2

pytestmark = pytest.mark.slow


def _common(tmp: Path, cache: Path, batch_size: int, levels: str = "[semantic,token]") -> list[str]:
    return [
        "experiment=tiny",
        f"hydra.run.dir={tmp}",
        f"paths.cache_dir={cache}",
        "data.holdout=0",
        "data.source.n=32",
        f"data.batch_size={batch_size}",
        f"algo.levels={levels}",
        "algo.group_size=2",
        "algo.max_new_tokens=6",
        "trainer.max_steps=2",
        "trainer.accumulate_grad_batches=1",
        "trainer.precision=32-true",
        "trainer.enable_progress_bar=false",
        # a checkpoint after every step (a folder under FSDP)
        "callbacks.checkpoint.every_n_train_steps=1",
        "+callbacks.recorder._target_=rank_recorder.RankRecorder",
        f"+callbacks.recorder.out_dir={tmp}/ranks",
    ]


def _train(tmp: Path, cache: Path, overrides: list[str]) -> dict[int, list[dict]]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "tests" / "scale"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
        "HYDRA_FULL_ERROR": "1",
    }
    result = subprocess.run(
        [sys.executable, "train.py", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows: dict[int, list[dict]] = {}
    for path in sorted((tmp / "ranks").glob("rank*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        rows[lines[0]["rank"]] = lines
    return rows


def _steps(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "step"]


def _end(rows: list[dict]) -> dict:
    return next(r for r in rows if r["kind"] == "end")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[int, list[dict]]:
    """One process, batch 2b (one-replica DistributedSampler, see the module docstring)."""
    tmp = tmp_path_factory.mktemp("single")
    cache = tmp_path_factory.getbasetemp() / "cache"
    strategy = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"]
    return _train(tmp, cache, [*strategy, *_common(tmp, cache, 2 * PER_RANK_BATCH)])


def _two_process(tmp_path_factory, name: str, strategy_overrides: list[str]) -> dict[int, list[dict]]:
    tmp = tmp_path_factory.mktemp(name)
    cache = tmp_path_factory.getbasetemp() / "cache"
    strategy_overrides = [o.replace("{tmp}", str(tmp)) for o in strategy_overrides]
    rows = _train(tmp, cache, [*strategy_overrides, *_common(tmp, cache, PER_RANK_BATCH)])
    rows["dir"] = tmp
    return rows


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, single) -> dict[int, list[dict]]:
    # `single` first: it builds the cached tiny checkpoint both ranks then load
    return _two_process(
        tmp_path_factory, "ddp", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    )


# full precision so that the comparison is exact up to float reordering
FSDP = [
    "trainer=fsdp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.strategy.param_dtype=null",
    "trainer.strategy.reduce_dtype=null",
]
# the ShapeWorld held-out evaluation (before, at step 1, after): under FSDP every rank must take
# part in each forward's all-gathers; rank 0 alone would hang until the subprocess timeout
HELDOUT = [
    "+callbacks.heldout._target_=t2ir1.shapeworld.callbacks.HeldoutAccuracyCallback",
    "+callbacks.heldout.num_prompts=2",
    "+callbacks.heldout.batch_size=2",
    "+callbacks.heldout.max_new_tokens=4",
    "+callbacks.heldout.grid_images=0",
    "+callbacks.heldout.every_n_steps=1",
]


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory, single) -> dict[int, list[dict]]:
    rows = _two_process(tmp_path_factory, "fsdp", [*FSDP, *HELDOUT, "+callbacks.heldout.out_dir={tmp}/heldout"])
    return rows


@pytest.fixture(scope="module")
def fsdp_offload(tmp_path_factory, single) -> dict[int, list[dict]]:
    # sharded parameters, gradients and optimiser state kept in CPU memory
    return _two_process(tmp_path_factory, "fsdp_offload", [*FSDP, "trainer.strategy.cpu_offload=true"])


@pytest.fixture(params=["ddp", "fsdp", "fsdp_offload"])
def multi(request) -> dict[int, list[dict]]:
    return request.getfixturevalue(request.param)


def test_ranks_see_disjoint_prompts_whose_union_is_the_single_batch(single, multi):
    assert sorted(k for k in multi if k != "dir") == [0, 1]
    for step in range(2):
        rank_prompts = [_steps(multi[r])[step]["prompt_ids"] for r in (0, 1)]
        assert all(len(p) == PER_RANK_BATCH for p in rank_prompts)
        assert not set(rank_prompts[0]) & set(rank_prompts[1])
        # one permutation; rank 0 takes its positions 0, 2; rank 1 takes 1, 3
        single_prompts = _steps(single[0])[step]["prompt_ids"]
        assert rank_prompts[0] == single_prompts[0::2]
        assert rank_prompts[1] == single_prompts[1::2]
        assert all(row["world"] == 2 for row in (_steps(multi[0])[step], _steps(multi[1])[step]))


def _per_prompt(rows: dict[int, list[dict]], step: int, key: str, group: int = 2) -> dict[str, list]:
    """prompt id -> its G rows of ``key`` at ``step``, gathered from every rank."""
    out = {}
    for rank, rank_rows in rows.items():
        if rank == "dir":
            continue
        row = _steps(rank_rows)[step]
        for i, prompt_id in enumerate(row["prompt_ids"]):
            out[prompt_id] = row[key][i * group : (i + 1) * group]
    return out


def test_samples_do_not_depend_on_rank_or_world_size(single, multi):
    for step in range(2):
        assert _per_prompt(multi, step, "image_tokens") == _per_prompt(single, step, "image_tokens")
        multi_rewards = _per_prompt(multi, step, "rewards")
        for prompt_id, rewards in _per_prompt(single, step, "rewards").items():
            assert multi_rewards[prompt_id] == pytest.approx(rewards, abs=1e-6)


def test_two_process_loss_equals_one_process_loss(single, multi):
    for step in range(2):
        single_loss = _steps(single[0])[step]["loss"]
        # the logged loss is the cross-rank token-weighted mean, the same on every rank
        assert _steps(multi[0])[step]["logged_loss"] == pytest.approx(single_loss, rel=1e-4, abs=1e-6)
        assert _steps(multi[1])[step]["logged_loss"] == pytest.approx(single_loss, rel=1e-4, abs=1e-6)
    # the losses move between steps, so step 1 also checks that the update was the same
    assert _steps(single[0])[1]["loss"] != _steps(single[0])[0]["loss"]


def test_weights_after_two_steps_equal_one_process(single, multi):
    expected = _end(single[0])["checksum"]
    for rank in (0, 1):
        got = _end(multi[rank])["checksum"]
        assert got.keys() == expected.keys()
        for name, (total, squares) in expected.items():
            assert got[name][0] == pytest.approx(total, rel=1e-4, abs=1e-4), name
            assert got[name][1] == pytest.approx(squares, rel=1e-4, abs=1e-4), name


def test_only_trained_parts_have_optimiser_state_and_rank_zero_writes_grids(multi):
    for rank in (0, 1):
        end = _end(multi[rank])
        optimised = sorted(name.removeprefix("policy.") for name in end["optimised"])
        assert optimised == sorted(end["trained"])
        assert all(".language_model." in n or n.startswith("model.lm_head.") for n in optimised)
        assert not any(part in n for n in optimised for part in ("vqmodel", "vision_model", "generation_"))
    assert _end(multi[0])["grids_written"] == 2
    assert _end(multi[1])["grids_written"] == 0


def test_strategies_are_the_configured_ones(ddp, fsdp):
    assert _end(ddp[0])["strategy"] == "DDPStrategy"
    assert _end(fsdp[0])["strategy"] == "FSDP2Strategy"


def test_policy_and_module_agree_on_the_device(multi):
    # under cpu_offload the sharded weights live in CPU memory, yet the policy computes (and
    # places its inputs) where the module runs
    for rank in (0, 1):
        assert _end(multi[rank])["policy_device"] == _end(multi[rank])["module_device"]


def test_fsdp_heldout_evaluation_runs_on_every_rank_and_rank_zero_reports(fsdp):
    summary = json.loads((fsdp["dir"] / "heldout" / "heldout_accuracy.json").read_text())
    # before, after step 1, after the last step
    assert [row["step"] for row in summary["history"]] == [0, 1, 2]


def _exported_checksum(state: dict) -> dict[str, list[float]]:
    return {f"model.{k}": [float(v.double().sum()), float(v.double().pow(2).sum())] for k, v in state.items()}


def _assert_trained_weights(got: dict, expected: dict) -> None:
    for name, (total, squares) in expected.items():
        assert got[name][0] == pytest.approx(total, rel=1e-5, abs=1e-5), name
        assert got[name][1] == pytest.approx(squares, rel=1e-5, abs=1e-5), name


def test_fsdp_checkpoint_folder_exports_and_loads_in_generate_and_eval(fsdp, tmp_path):
    """The sharded folder a 2-process FSDP run writes is consolidated (weights only) by export,
    generate.py's and eval.py's ``ckpt_path=``; the weights are the trained ones."""
    from omegaconf import OmegaConf
    from transformers import JanusForConditionalGeneration

    from t2ir1.evaluate.harness import output_dir
    from t2ir1.export import export_checkpoint, policy_state_from_checkpoint
    from t2ir1.generate import load_policy

    folder = fsdp["dir"] / "checkpoints" / "last.ckpt"
    assert folder.is_dir() and any(folder.glob("*.distcp")), "trainer=fsdp should write a sharded folder"
    trained = _end(fsdp[0])["checksum"]

    _assert_trained_weights(_exported_checksum(policy_state_from_checkpoint(folder)), trained)
    out = export_checkpoint(folder, tmp_path / "exported")
    exported = JanusForConditionalGeneration.from_pretrained(out)
    _assert_trained_weights(_exported_checksum(exported.state_dict()), trained)

    cfg = OmegaConf.load(fsdp["dir"] / ".hydra" / "config.yaml")  # the run's model (and paths)
    cfg.ckpt_path, cfg.device = str(folder), "cpu"
    policy = load_policy(cfg)  # generate.py ckpt_path=
    _assert_trained_weights(_exported_checksum(policy.model.state_dict()), trained)
    # eval.py ckpt_path=: its own output folder, never the base model's cached images
    eval_cfg = OmegaConf.create({"out_root": str(tmp_path), "use_cot": True, "model": {"name_or_path": "tiny"}})
    base_dir = output_dir(eval_cfg, "shapeworld")
    eval_cfg.ckpt_path = str(folder)
    assert output_dir(eval_cfg, "shapeworld") != base_dir


def test_fsdp_resumes_exactly_from_its_sharded_checkpoint_which_holds_no_reference(tmp_path_factory, fsdp):
    """Resume the 2-process FSDP run from its step-1 folder: step 1 and the final weights equal
    the uninterrupted run's, though the folder holds no frozen-reference tensors (the resumed
    run rebuilds the reference from the base weights)."""
    import shutil

    from t2ir1.export import _MetadataUnpickler

    saved = next((fsdp["dir"] / "checkpoints").glob("*step=1.ckpt"))
    with open(saved / ".metadata", "rb") as stream:
        keys = list(_MetadataUnpickler(stream).load().state_dict_metadata)
    assert any(k.startswith("state_dict.policy.") for k in keys)
    assert not any(k.startswith("state_dict.reference.") for k in keys)

    tmp = tmp_path_factory.mktemp("fsdp_resumed")
    step1 = tmp / "step1.ckpt"  # a path without '=' (Hydra override grammar)
    shutil.copytree(saved, step1)
    cache = tmp_path_factory.getbasetemp() / "cache"
    resumed = _train(tmp, cache, [*FSDP, *_common(tmp, cache, PER_RANK_BATCH), f"ckpt_path={step1}"])
    for rank in (0, 1):
        (step,) = _steps(resumed[rank])
        assert step["step"] == 1 and step["prompt_ids"] == _steps(fsdp[rank])[1]["prompt_ids"]
        assert step["loss"] == pytest.approx(_steps(fsdp[rank])[1]["loss"], rel=1e-5, abs=1e-7)
        _assert_trained_weights(_end(resumed[rank])["checksum"], _end(fsdp[rank])["checksum"])
