"""Dynamic sampling on two CPU processes (gloo, FSDP2): ranks refill independently from their own
share of the stream, yet run the same number of generation rounds (every forward under FSDP2 is a
collective: a rank generating alone would hang), and every rank trains on informative groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class FilterRecorder(L.Callback):
    """Per rank and step: the trained prompts, their rewards and what dynamic sampling did."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        rollout = outputs["record"]
        stats = rollout.rollout.filtering
        row = {
            "step": trainer.global_step - 1,
            "prompts": list(dict.fromkeys(r.prompt_id for r in rollout.records)),
            "rewards": rollout.rewards.scores.float().tolist(),
            "rounds": stats.rounds,
            "generated": stats.groups_generated,
            "kept": stats.groups_kept,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def test_fsdp_ranks_refill_in_step_and_train_on_informative_groups(tmp_path):
    overrides = [
        "experiment=tiny",
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy.param_dtype=null",
        "trainer.strategy.reduce_dtype=null",
        f"hydra.run.dir={tmp_path}",
        f"paths.cache_dir={tmp_path}/cache",
        "data.source.n=48",
        "data.batch_size=2",
        "data.source.generator.colors=[white]",
        "data.source.generator.categories=[object,colors]",
        # white and black only, both achromatic: prompts without "white" score 0 on every image
        "~reward.members.color.palette",
        "+reward.members.color.palette={white:[255,255,255],black:[0,0,0]}",
        "reward.members.color.achromatic=[white,black]",
        "reward.members.color.target_fraction=1.0",
        "algo.filter_groups=true",
        "algo.group_size=2",
        "algo.max_new_tokens=4",
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
        "callbacks.checkpoint.every_n_train_steps=100",
        f"+callbacks.filter_recorder._target_={Path(__file__).stem}.FilterRecorder",
        f"+callbacks.filter_recorder.out_dir={tmp_path}/ranks",
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HYDRA_FULL_ERROR": "1",
    }
    result = subprocess.run(
        [sys.executable, "train.py", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [
        [json.loads(line) for line in (tmp_path / "ranks" / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    ]
    assert [len(rows) for rows in ranks] == [2, 2]
    for step in (0, 1):
        zero, one = ranks[0][step], ranks[1][step]
        # the same number of rounds on both ranks (collectives in step), each from its own prompts
        assert zero["rounds"] == one["rounds"]
        assert not set(zero["prompts"]) & set(one["prompts"])
        for row in (zero, one):
            assert row["kept"] == 2 and len(row["rewards"]) == 4
            pairs = [row["rewards"][i : i + 2] for i in (0, 2)]
            assert all(a != b for a, b in pairs), row  # every trained group is informative
    # the test exercises refills: some step needed more than one round
    assert max(row["rounds"] for rows in ranks for row in rows) > 1
