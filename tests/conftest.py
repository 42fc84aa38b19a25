"""Shared fixtures: one tiny Janus checkpoint per test session, built offline and loaded
through the same code path as a hub checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def test_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("t2ir1-cache")


@pytest.fixture(autouse=True)
def _cache_outside_home(test_cache, monkeypatch):
    """No test writes into ~/.cache/t2ir1: ``paths.cache_dir`` reads ``T2IR1_CACHE`` (one
    folder per session, so cached artefacts are still shared between tests)."""
    if "T2IR1_CACHE" not in os.environ:
        monkeypatch.setenv("T2IR1_CACHE", str(test_cache))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("tiny-janus"), TinyJanusSpec())


@pytest.fixture()
def tiny_policy(tiny_dir):
    from t2ir1.policy.janus import JanusPolicy

    return JanusPolicy.from_pretrained(tiny_dir, local_files_only=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside the checkout")
    return SHARED
