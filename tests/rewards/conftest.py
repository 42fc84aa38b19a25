"""Shared fixtures for reward tests: prompt records and small deterministic images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2ir1.data.records import NumeracyItem, PromptRecord, SpatialInfo


@pytest.fixture
def records() -> list[PromptRecord]:
    """Five records covering the task types the members branch on."""
    return [
        PromptRecord(prompt="a red cat", task_type="color", nouns=("cat",), attr_nouns=("red cat",)),
        PromptRecord(
            prompt="a cat left of a dog",
            task_type="spatial",
            nouns=("cat", "dog"),
            spatial_info=SpatialInfo("cat", "dog", "left of"),
        ),
        PromptRecord(
            prompt="two dogs", task_type="numeracy", nouns=("dog",), numeracy_info=(NumeracyItem("dog", 2),)
        ),
        PromptRecord(prompt="a blue dog and a cat", task_type="object", nouns=("dog", "cat")),
        PromptRecord(prompt="something abstract", task_type="non"),
    ]


@pytest.fixture
def images() -> list[Image.Image]:
    """Five random RGB images of different sizes (the members must handle mixed sizes)."""
    generator = np.random.default_rng(0)
    sizes = [(40, 40), (48, 32), (32, 48), (40, 40), (36, 44)]
    return [Image.fromarray(generator.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
