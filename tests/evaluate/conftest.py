"""Fixtures of the evaluation tests: tiny judges built once, and the eval config composed like the CLI does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="session")
def judges(tmp_path_factory) -> dict[str, str]:
    """Folders of a tiny CLIP, BLIP VQA, GroundingDINO and Mask2Former (saved with save_pretrained)."""
    from tiny_judges import build_tiny_blip, build_tiny_clip, build_tiny_mask2former

    from t2ir1.testing.tiny_rewards import build_tiny_gdino

    folder = tmp_path_factory.mktemp("judges")
    return {
        "clip": str(build_tiny_clip(folder)),
        "blip": str(build_tiny_blip(folder)),
        "gdino": str(build_tiny_gdino(folder)),
        "mask2former": str(build_tiny_mask2former(folder)),
    }


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> str:
    """paths.cache_dir of the tiny Janus policy (built once per session by model=tiny)."""
    return str(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture()
def eval_cfg(model_cache):
    """``eval_cfg(*overrides)`` -> the composed eval config, with a tiny, fast generation setup."""

    def make(*overrides: str):
        base = [
            "model=tiny",
            f"paths.cache_dir={model_cache}",
            "device=cpu",
            "generation.max_new_tokens=6",
            "generation.batch_size=4",
        ]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="eval", overrides=[*base, *overrides])

    return make
