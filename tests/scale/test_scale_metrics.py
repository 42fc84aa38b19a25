"""Cross-rank weighted means, the loss weights, and the scale configs (one process, no collectives)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from t2ir1.scale.fsdp import FSDP2Strategy
from t2ir1.scale.metrics import nanmean_with_count, pooled_std, weighted_means

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _two_ranks(rank_pairs):
    """Simulate an all_reduce(sum) over two ranks: rank 1's rows are added to rank 0's."""
    stacked = []

    def reduce(tensor):
        stacked.append(tensor)
        return tensor

    for pairs in rank_pairs:
        weighted_means(pairs, reduce)
    total = stacked[0] + stacked[1]
    return weighted_means(rank_pairs[0], lambda _: total)


def test_weighted_mean_of_token_means_is_the_mean_over_all_tokens():
    # rank 0: tokens [1, 2, 3] -> mean 2, 3 tokens; rank 1: tokens [10] -> mean 10, 1 token
    # all tokens: (1 + 2 + 3 + 10) / 4 = 4 (the equal-weight mean of means would be 6)
    means, weights = _two_ranks([{"x": (2.0, 3.0)}, {"x": (10.0, 1.0)}])
    assert float(means["x"]) == pytest.approx(4.0)
    assert float(weights["x"]) == 4.0


def test_zero_weight_rank_contributes_nothing_and_all_zero_is_nan():
    means, _ = _two_ranks([{"x": (float("nan"), 0.0), "y": (1.0, 0.0)}, {"x": (5.0, 2.0), "y": (2.0, 0.0)}])
    assert float(means["x"]) == 5.0
    assert math.isnan(float(means["y"]))


def test_nanmean_with_count_skips_nan_rows():
    mean, count = nanmean_with_count(torch.tensor([1.0, float("nan"), 3.0]))
    assert (float(mean), float(count)) == (2.0, 2.0)


def test_pooled_std_equals_std_of_the_union():
    a, b = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([3.0, 1.0])
    union = torch.cat([a, b])
    means, weights = _two_ranks(
        [
            {"m": (a.mean(), 3.0), "s": (a.pow(2).mean(), 3.0)},
            {"m": (b.mean(), 2.0), "s": (b.pow(2).mean(), 2.0)},
        ]
    )
    assert float(pooled_std(means["m"], means["s"], weights["m"])) == pytest.approx(
        float(union.std()), rel=1e-5
    )
    assert math.isnan(float(pooled_std(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))))


@pytest.fixture
def compose_train():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda overrides: compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()


def test_fsdp_config_builds_the_fsdp2_strategy_with_its_options(compose_train):
    cfg = compose_train(["trainer=fsdp", "trainer.strategy.activation_checkpointing=true"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDP2Strategy)
    assert strategy.sharding.param_dtype == torch.bfloat16
    assert strategy.sharding.master_dtype == torch.float32
    assert strategy.sharding.activation_checkpointing is True
    assert cfg.trainer.precision == "32-true"


def test_bad_dtype_names_the_field():
    with pytest.raises(ValueError, match="param_dtype"):
        FSDP2Strategy(param_dtype="bf16")


def test_ddp_config_and_slurm_launcher_resolve(compose_train):
    cfg = compose_train(
        ["trainer=ddp", "hydra/launcher=slurm", "trainer.num_nodes=4", "hydra.launcher.partition=gpu"]
    )
    assert cfg.trainer.strategy._target_ == "lightning.pytorch.strategies.DDPStrategy"
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    # one task per GPU, nodes from the trainer: what Lightning's SLURMEnvironment checks
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (4, 8, 8)
    assert launcher.partition == "gpu"
