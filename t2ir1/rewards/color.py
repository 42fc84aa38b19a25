"""A cheap, real reward from decoded pixels: do the prompt's colour words show up?

For each colour word of the prompt (a basic vocabulary with RGB prototypes), every
pixel is assigned to its nearest prototype (Euclidean in RGB); the colour's
fraction ``f`` of the image gives ``min(1, f / target_fraction)``; the score is the
mean over the prompt's colour words. Prompts without colour words fall back to
*colourfulness*: the fraction of pixels whose nearest prototype is chromatic (not
in ``achromatic``), normalised the same way, so that a blank, gray or black image
scores 0 and a colourful one 1.

No model: it needs no weights and runs in the offline demo (``make demo``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import RewardOutput

# Basic colour vocabulary (CSS/X11 prototypes); the YAML repeats it so runs can change it.
DEFAULT_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "orange": (255, 165, 0),
    "yellow": (255, 255, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "pink": (255, 192, 203),
    "brown": (139, 69, 19),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
}
DEFAULT_ACHROMATIC = ("black", "white", "gray", "grey")


class ColorAgreementReward:
    """Colour-word agreement of decoded images; scores ``[B]`` in ``[0, 1]``.

    Args:
        palette: colour name -> RGB prototype (0..255). Names sharing a prototype
            (``gray``/``grey``) count as the same colour.
        target_fraction: image fraction at which a colour scores 1.
        achromatic: names excluded from the colourfulness fallback.
        analysis_size: images are resized (nearest neighbour, keeps pure colours) to
            ``analysis_size x analysis_size`` so the whole batch is one tensor op.
        name: the member name in logs.
    """

    def __init__(
        self,
        palette: Mapping[str, Sequence[int]] | None = None,
        target_fraction: float = 0.2,
        achromatic: Sequence[str] = DEFAULT_ACHROMATIC,
        analysis_size: int = 64,
        name: str = "color",
    ) -> None:
        palette = dict(DEFAULT_PALETTE if palette is None else palette)
        if not palette:
            raise ValueError("ColorAgreementReward: palette is empty; give at least one name -> [r, g, b]")
        for colour, rgb in palette.items():
            if len(rgb) != 3 or not all(0 <= int(v) <= 255 for v in rgb):
                raise ValueError(
                    f"ColorAgreementReward: palette[{colour!r}] = {rgb!r}; expected [r, g, b] in 0..255"
                )
        if not 0 < target_fraction <= 1:
            raise ValueError(
                f"ColorAgreementReward: target_fraction must be in (0, 1], got {target_fraction}"
            )
        self.name = name
        self.target_fraction = float(target_fraction)
        self.analysis_size = int(analysis_size)
        # one prototype per distinct RGB; names map onto prototype indices
        prototypes: list[tuple[int, int, int]] = []
        self._name_to_index: dict[str, int] = {}
        for colour, rgb in palette.items():
            key = tuple(int(v) for v in rgb)
            if key not in prototypes:
                prototypes.append(key)
            self._name_to_index[colour.lower()] = prototypes.index(key)
        self._prototypes = torch.tensor(prototypes, dtype=torch.float32)  # [K, 3]
        achromatic_indices = {
            self._name_to_index[c.lower()] for c in achromatic if c.lower() in self._name_to_index
        }
        self._chromatic = torch.tensor([i not in achromatic_indices for i in range(len(prototypes))])  # [K]
        words = sorted(self._name_to_index, key=len, reverse=True)
        self._pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
        self.device = torch.device("cpu")

    def setup(self, device: torch.device | str = "cpu") -> None:
        """No weights to load; remembers where to compute."""
        self.device = torch.device(device)

    def colour_indices(self, prompt: str) -> list[int]:
        """Distinct prototype indices of the colour words in ``prompt`` (in order of appearance)."""
        indices: list[int] = []
        for match in self._pattern.finditer(prompt):
            index = self._name_to_index[match.group(1).lower()]
            if index not in indices:
                indices.append(index)
        return indices

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """float32 ``[B, N, 3]`` RGB values of each image resized (nearest) to ``analysis_size`` squared."""
        size = (self.analysis_size, self.analysis_size)
        buffer = np.empty((len(images), *size, 3), dtype=np.uint8)  # [B, A, A, 3]
        for index, image in enumerate(images):
            small = image.resize(size, Image.Resampling.NEAREST)
            buffer[index] = np.asarray(small if small.mode == "RGB" else small.convert("RGB"))
        return torch.from_numpy(buffer).to(self.device, torch.float32).flatten(1, 2)  # [B, N, 3]

    def nearest_prototype(self, pixels: torch.Tensor) -> torch.Tensor:
        """Index ``[B, N]`` of the nearest prototype (Euclidean) of each pixel ``[B, N, 3]``.

        ``argmin |p - c|^2 = argmax (p . c - |c|^2 / 2)``: one ``[B*N, 3] @ [3, K]``
        product. With integer pixels and prototypes every term is exact in float32
        (at most 3 * 255^2 < 2^24), so ties resolve to the first prototype, as argmin does.
        """
        prototypes = self._prototypes.to(self.device)  # [K, 3]
        closeness = pixels @ prototypes.T - (prototypes * prototypes).sum(dim=1) / 2  # [B, N, K]
        return closeness.argmax(dim=-1)  # [B, N]

    @torch.inference_mode()
    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i].prompt``; returns ``[B]`` float32 on CPU."""
        if len(records) != len(images):
            raise ValueError(f"{self.name}: {len(records)} records but {len(images)} images")
        if not records:
            return RewardOutput(self.name, torch.zeros(0), {"colour_words": torch.zeros(0)})
        pixels = self._pixels(images)  # [B, N, 3]
        batch, num_pixels = pixels.shape[:2]
        num_prototypes = len(self._prototypes)
        nearest = self.nearest_prototype(pixels)  # [B, N]
        # per-image histogram of nearest prototypes: one bincount over (image, prototype) pairs
        offsets = torch.arange(batch, device=self.device)[:, None] * num_prototypes  # [B, 1]
        counts = torch.bincount((nearest + offsets).flatten(), minlength=batch * num_prototypes)  # [B*K]
        fractions = counts.view(batch, num_prototypes).float() / num_pixels  # [B, K]
        per_colour = (fractions / self.target_fraction).clamp(max=1.0)  # [B, K]

        wanted = torch.zeros_like(fractions, dtype=torch.bool)  # [B, K]
        for row, record in enumerate(records):
            wanted[row, self.colour_indices(record.prompt)] = True
        has_words = wanted.any(dim=1)  # [B]
        agreement = (per_colour * wanted).sum(dim=1) / wanted.sum(dim=1).clamp(min=1)  # [B]
        chromatic = fractions[:, self._chromatic.to(self.device)].sum(dim=1)  # [B]
        colourfulness = (chromatic / self.target_fraction).clamp(max=1.0)  # [B]
        scores = torch.where(has_words, agreement, colourfulness)
        return RewardOutput(
            self.name,
            scores.float().cpu(),
            {"colour_words": wanted.sum(dim=1).cpu(), "chromatic_fraction": chromatic.float().cpu()},
        )
