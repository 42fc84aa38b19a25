"""PromptDataModule: batches of records, deterministic holdout, DDP sharding, Hydra configs."""

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.data import _update_dataloader
from omegaconf import OmegaConf
from torch.utils.data import DistributedSampler

from t2ir1.data.compositional import CompositionalPromptGenerator, sample_prompts
from t2ir1.data.datamodule import PromptDataModule
from t2ir1.data.records import PromptRecord

REPO = Path(__file__).parents[2]
SOURCE = functools.partial(sample_prompts, CompositionalPromptGenerator(), 23, 0)


def _datamodule(**kwargs) -> PromptDataModule:
    datamodule = PromptDataModule(source=SOURCE, **kwargs)
    datamodule.setup("fit")
    return datamodule


def test_batches_are_lists_of_records():
    datamodule = _datamodule(batch_size=4, shuffle=False)
    batches = list(datamodule.train_dataloader())
    # 23 prompts in batches of 4: five full batches and one of 3.
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 3]
    assert all(isinstance(b, list) and all(isinstance(r, PromptRecord) for r in b) for b in batches)
    assert [r.prompt_id for b in batches for r in b] == [r.prompt_id for r in SOURCE()]
    assert [len(b) for b in _datamodule(batch_size=4, drop_last=True).train_dataloader()] == [4] * 5


def test_shuffle_is_seeded():
    def order(seed):
        return [r.prompt_id for b in _datamodule(batch_size=5, seed=seed).train_dataloader() for r in b]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(r.prompt_id for r in SOURCE())


def test_holdout_is_disjoint_and_deterministic():
    datamodule = _datamodule(holdout=5, seed=3)
    train_ids = {r.prompt_id for r in datamodule.train_set}
    val_ids = [r.prompt_id for b in datamodule.val_dataloader() for r in b]
    assert len(val_ids) == 5 and len(train_ids) == 18
    assert train_ids.isdisjoint(val_ids)
    assert train_ids | set(val_ids) == {r.prompt_id for r in SOURCE()}
    assert val_ids == [r.prompt_id for b in _datamodule(holdout=5, seed=3).val_dataloader() for r in b]
    assert val_ids != [r.prompt_id for b in _datamodule(holdout=5, seed=4).val_dataloader() for r in b]


def test_no_holdout_means_no_validation_loader():
    assert _datamodule().val_dataloader() == []


def test_ranks_see_disjoint_prompts_under_distributed_sampler():
    # What Lightning does under DDP: rebuild the loader around a DistributedSampler per rank.
    datamodule = _datamodule(batch_size=3)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(datamodule.train_set, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = _update_dataloader(datamodule.train_dataloader(), sampler)
        seen.append([r.prompt_id for batch in loader for r in batch])
    # 23 prompts over 2 ranks: 12 each, the sampler pads rank 1 with one repeat of the first index.
    assert len(seen[0]) == len(seen[1]) == 12
    assert len(set(seen[0]) | set(seen[1])) == 23
    assert len(set(seen[0]) & set(seen[1])) <= 1


class _Recorder(L.LightningModule):
    """Records the prompt ids it is fed; one dummy parameter so an optimiser exists."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.train_ids, self.val_ids = [], []

    def training_step(self, batch, batch_idx):
        self.train_ids.extend(r.prompt_id for r in batch)
        return (self.weight - 1.0) ** 2

    def validation_step(self, batch, batch_idx):
        self.val_ids.extend(r.prompt_id for r in batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("holdout", [0, 4])
def test_lightning_fit_consumes_every_training_prompt(holdout):
    model = _Recorder()
    datamodule = PromptDataModule(source=SOURCE, batch_size=2, holdout=holdout)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    assert sorted(model.train_ids) == sorted(r.prompt_id for r in datamodule.train_set)
    assert len(model.train_ids) == 23 - holdout
    assert sorted(model.val_ids) == sorted(r.prompt_id for r in datamodule.val_set)


def test_state_dict_warns_on_different_data(caplog):
    state = _datamodule(holdout=2).state_dict()
    assert set(state) == {"seed", "holdout", "fingerprint"} and state["fingerprint"]
    same = _datamodule(holdout=2)
    with caplog.at_level("WARNING"):
        same.load_state_dict(state)
    assert "different data" not in caplog.text
    other = PromptDataModule(
        source=functools.partial(sample_prompts, CompositionalPromptGenerator(), 23, 1), holdout=2
    )
    other.setup("fit")
    with caplog.at_level("WARNING"):
        other.load_state_dict(state)
    assert "different data" in caplog.text and "fingerprint" in caplog.text


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="_partial_: true"):
        PromptDataModule(source=SOURCE())
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        PromptDataModule(source=SOURCE, batch_size=0)
    with pytest.raises(ValueError, match="leaves no training prompts"):
        _datamodule(holdout=23)
    with pytest.raises(RuntimeError, match="setup"):
        PromptDataModule(source=SOURCE).train_dataloader()


def _instantiate_data_config(name: str, **overrides) -> PromptDataModule:
    """Instantiate conf/data/<name>.yaml under a root with a run seed, as the composed train config has it."""
    root = OmegaConf.create({"seed": 7, "data": OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(root, f"data.{key}", value)
    return instantiate(root.data)


def test_compositional_config_instantiates(monkeypatch):
    datamodule = _instantiate_data_config("compositional", **{"source.n": 100, "holdout": 10})
    assert isinstance(datamodule, PromptDataModule) and datamodule.seed == 7
    datamodule.setup("fit")
    assert len(datamodule.train_set) == 90 and len(datamodule.val_set) == 10
    # The config's generator and seed give the same prompts as the code defaults with seed 7.
    expected = CompositionalPromptGenerator().sample(100, seed=7)
    assert sorted(r.prompt_id for r in datamodule.train_set.records + datamodule.val_set.records) == sorted(
        r.prompt_id for r in expected
    )
    assert {r.prompt for r in datamodule.val_set} <= {r.prompt for r in expected}


def test_t2i_r1_config_instantiates(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("T2IR1_SHARED", raising=False)
    datamodule = _instantiate_data_config("t2i_r1")
    assert datamodule.batch_size == 1 and datamodule.holdout == 0
    if not (REPO / ".." / "shared" / "data" / "t2i-r1" / "geneval_and_t2i_data_final.jsonl").is_file():
        pytest.skip("T2I-R1 training file not present")
    datamodule.setup("fit")
    assert len(datamodule.train_set) == 7223
    # T2IR1_SHARED moves the data folder; a missing file names the override to fix it.
    monkeypatch.setenv("T2IR1_SHARED", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"data\.source\.path="):
        _instantiate_data_config("t2i_r1").setup("fit")
