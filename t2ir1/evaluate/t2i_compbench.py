"""T2I-CompBench (Huang et al., 2023): attribute binding, relations and complex prompts.

Prompts: one text file per category (``color_val.txt``, ``shape_val.txt``, ...: one prompt
per line, first tab-separated field). Images: ``<out>/<category>/samples/{prompt}_{n:06d}.png``
with ``n`` counting images across the category's prompts (prompt ``i``, sample ``j``:
``n = i * n_per_prompt + j``), the official naming; 10 images per prompt.

Scores per image:

* **color / shape / texture** (BLIP-VQA): for each noun phrase ``p`` the question ``"{p}?"``;
  the image scores the product over phrases of ``P(yes) / (P(yes) + P(no))``;
* **spatial** (detector + position rule): obj1 and obj2 of "<obj1> <relation> <obj2>" are
  detected; with both, ``0.25 * conf1 + 0.25 * conf2 + position / 2`` (REFERENCE §3 position
  rule on the most confident boxes, pixels); with one, ``0.25 * conf``; below 0.5 -> 0;
* **non_spatial** (CLIPScore): cosine of CLIP image and prompt embeddings;
* **complex** (3-in-1): mean of the attribute (BLIP-VQA), spatial and action (CLIPScore)
  scores; with the official ``complex_val_spatial.txt`` / ``complex_val_action.txt`` lists
  given, spatial-only prompts average attribute and spatial, action-only ones attribute and
  action, as the official script does.

**Differences from the official scorer:** noun phrases and objects come from rules for the
templated prompts instead of spaCy (``phrase_parser: spacy`` restores it when installed);
the spatial detector is GroundingDINO (transformers) prompted with the two nouns instead of
UniDet, so ``conf`` is a phrase logit (typically 0.3-0.6, UniDet's are higher): spatial
scores are lower in absolute terms, and rankings are what transfers; the complex action
part keeps adjectives (the official one drops them with spaCy's tagger); by default the
position rule scores ``above`` / ``on top of`` (the official rule has no branch for them,
``reference_quirks: true`` restores that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t2ir1.evaluate.base import Benchmark, BenchmarkFileError, EvalItem, ImageEntry
from t2ir1.evaluate.judges import BlipVqaJudge, ClipJudge, GroundingDetector
from t2ir1.evaluate.phrases import SPATIAL_LOCALITIES, PhraseParser, clean_prompt, spatial_triple
from t2ir1.rewards.compositional import position_score

CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")
# Official prompt file of each category.
DEFAULT_FILES = {
    "color": "color_val.txt",
    "shape": "shape_val.txt",
    "texture": "texture_val.txt",
    "spatial": "spatial_val.txt",
    "non_spatial": "non_spatial_val.txt",
    "complex": "complex_val.txt",
}
ATTRIBUTE = ("color", "shape", "texture")


def read_prompt_lines(path: Path) -> list[str]:
    """Prompts of a T2I-CompBench text file: first tab-separated field of each non-blank line."""
    if not path.is_file():
        raise BenchmarkFileError(
            f"T2I-CompBench prompt file {path} does not exist: clone Karine-Huang/T2I-CompBench and pass "
            "benchmark.prompts_dir=<clone>/examples/dataset"
        )
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        prompt = line.split("\t")[0].strip()
        if not prompt:
            raise BenchmarkFileError(f"{path}:{number}: the first tab-separated field is empty")
        if "/" in prompt:
            raise BenchmarkFileError(
                f"{path}:{number}: prompt {prompt!r} contains '/', which cannot be in an image file name"
            )
        prompts.append(prompt)
    if not prompts:
        raise BenchmarkFileError(f"{path}: no prompts")
    return prompts


class T2ICompBenchBenchmark(Benchmark):
    """T2I-CompBench with BLIP-VQA, GroundingDINO + the position rule, and CLIPScore.

    Args:
        prompts_dir: folder of the category files (the official ``examples/dataset``).
        categories: the categories to run (any of ``color shape texture spatial non_spatial complex``).
        files: category -> file name inside ``prompts_dir``.
        complex_spatial_file, complex_action_file: the official sub-lists of complex prompts
            (file names in ``prompts_dir``; null = use the three-part mean for every prompt).
        n_per_prompt: images per prompt (official: 10).
        blip, clip, detector: kwargs of the judges (BLIP VQA base; CLIP ViT-B/32; GroundingDINO).
        phrase_parser: ``rules`` or ``spacy``.
        iou_threshold, near_threshold: position rule constants (pixels; official 0.1 and 150).
        detected_weight: credit per detected object times its confidence (official 0.25).
        min_spatial_score: spatial scores below this become 0 (official 0.5).
        reference_quirks: the official position rule's missing ``above`` / ``on top of`` branches.
    """

    name = "t2i_compbench"
    categories = CATEGORIES

    def __init__(
        self,
        prompts_dir: str,
        categories: Sequence[str] = CATEGORIES,
        files: dict[str, str] | None = None,
        complex_spatial_file: str | None = None,
        complex_action_file: str | None = None,
        n_per_prompt: int = 10,
        blip: dict | None = None,
        clip: dict | None = None,
        detector: dict | None = None,
        phrase_parser: str = "rules",
        iou_threshold: float = 0.1,
        near_threshold: float = 150.0,
        detected_weight: float = 0.25,
        min_spatial_score: float = 0.5,
        reference_quirks: bool = False,
        name: str = "t2i_compbench",
    ):
        unknown = sorted(set(categories) - set(CATEGORIES))
        if unknown:
            raise ValueError(
                f"t2i_compbench: unknown categories {unknown}; choose from {', '.join(CATEGORIES)}"
            )
        self.name = name
        self.prompts_dir = Path(prompts_dir).expanduser()
        self.selected = tuple(categories)
        self.files = {**DEFAULT_FILES, **(files or {})}
        self.complex_spatial_file = complex_spatial_file
        self.complex_action_file = complex_action_file
        self.n_per_prompt = n_per_prompt
        self.parser = PhraseParser(phrase_parser)
        self.iou_threshold = iou_threshold
        self.near_threshold = near_threshold
        self.detected_weight = detected_weight
        self.min_spatial_score = min_spatial_score
        self.reference_quirks = reference_quirks
        needs = set(self.selected)
        self.blip = BlipVqaJudge(**(blip or {})) if needs & {*ATTRIBUTE, "complex"} else None
        self.clip = ClipJudge(**(clip or {})) if needs & {"non_spatial", "complex"} else None
        self.detector = GroundingDetector(**(detector or {})) if needs & {"spatial", "complex"} else None

    def _complex_parts(self) -> tuple[set[str] | None, set[str] | None]:
        def load(name: str | None) -> set[str] | None:
            if name is None:
                return None
            return {clean_prompt(p).lower() for p in read_prompt_lines(self.prompts_dir / name)}

        return load(self.complex_spatial_file), load(self.complex_action_file)

    def load_items(self) -> list[EvalItem]:
        if not self.prompts_dir.is_dir():
            raise BenchmarkFileError(
                f"benchmark.prompts_dir={self.prompts_dir} is not a folder: point it at T2I-CompBench's examples/dataset"
            )
        spatial_set, action_set = self._complex_parts() if "complex" in self.selected else (None, None)
        items = []
        for category in self.selected:
            for index, prompt in enumerate(read_prompt_lines(self.prompts_dir / self.files[category])):
                meta: dict[str, Any] = {}
                if category == "complex":
                    text = clean_prompt(prompt).lower()
                    parts = ["attribute", "spatial", "action"]
                    if spatial_set is not None and action_set is not None:
                        if text in spatial_set:
                            parts = ["attribute", "spatial"]
                        elif text in action_set:
                            parts = ["attribute", "action"]
                    meta["parts"] = parts
                items.append(
                    EvalItem(
                        key=f"{category}/{index:05d}",
                        prompt=prompt,
                        category=category,
                        index=index,
                        meta=meta,
                    )
                )
        return items

    def image_path(self, root: Path, item: EvalItem, sample_index: int) -> Path:
        number = item.index * self.n_per_prompt + sample_index
        return root / item.category / "samples" / f"{item.prompt}_{number:06d}.png"

    def source_files(self) -> list[Path]:
        names = [self.files[c] for c in self.selected]
        names += [n for n in (self.complex_spatial_file, self.complex_action_file) if n]
        return [self.prompts_dir / n for n in names]

    def describe_judges(self) -> dict[str, Any]:
        from t2ir1.evaluate.provenance import describe

        judges = {"blip": self.blip, "clip": self.clip, "detector": self.detector}
        return {k: describe(v) for k, v in judges.items() if v is not None}

    def setup(self, device: str = "cpu") -> None:
        for judge in (self.blip, self.clip, self.detector):
            if judge is not None:
                judge.setup(device)

    # ------------------------------------------------------------------ parts
    def attribute_scores(self, entries: Sequence[ImageEntry]) -> list[tuple[float, dict[str, float]]]:
        """Per image: product over noun phrases of the yes-probability, and the per-phrase values."""
        images, questions, owner, phrases = [], [], [], []
        for row, entry in enumerate(entries):
            for phrase in self.parser.noun_phrases(entry.item.prompt):
                images.append(entry.image)
                questions.append(f"{phrase}?")
                owner.append(row)
                phrases.append(phrase)
        probabilities = self.blip.yes_probability(images, questions).tolist() if questions else []
        out: list[tuple[float, dict[str, float]]] = [(1.0, {}) for _ in entries]
        for row, phrase, p in zip(owner, phrases, probabilities, strict=True):
            product, detail = out[row]
            detail[phrase] = round(p, 6)
            out[row] = (product * p, detail)
        return out

    def spatial_scores(self, entries: Sequence[ImageEntry]) -> list[tuple[float, dict[str, Any]]]:
        """Per image: the T2I-CompBench spatial score and what it was computed from."""
        triples = [spatial_triple(e.item.prompt, SPATIAL_LOCALITIES) for e in entries]
        detections = self.detector.detect(
            [[t[0], t[2]] if t else [] for t in triples], [e.image for e in entries]
        )
        out = []
        for triple, found in zip(triples, detections, strict=True):
            if triple is None:
                out.append((0.0, {"relation": None}))
                continue
            obj1, locality, obj2 = triple
            best1 = next((d for d in found if d.label == obj1), None)  # most confident first
            best2 = next((d for d in found if d.label == obj2), None)
            score = 0.0
            if best1 is not None:
                score += self.detected_weight * best1.score
            if best2 is not None:
                score += self.detected_weight * best2.score
            if best1 is not None and best2 is not None:
                score += (
                    position_score(
                        best1.box,
                        best2.box,
                        locality,
                        self.iou_threshold,
                        self.near_threshold,
                        self.reference_quirks,
                    )
                    / 2
                )
            if score < self.min_spatial_score:
                score = 0.0
            out.append(
                (score, {"relation": [obj1, locality, obj2], "found": [best1 is not None, best2 is not None]})
            )
        return out

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{"category": e.item.category} for e in entries]
        attribute_rows = [i for i, e in enumerate(entries) if e.item.category in (*ATTRIBUTE, "complex")]
        spatial_rows = [
            i
            for i, e in enumerate(entries)
            if e.item.category == "spatial" or "spatial" in e.item.meta.get("parts", ())
        ]
        action_rows = [
            i
            for i, e in enumerate(entries)
            if e.item.category == "non_spatial" or "action" in e.item.meta.get("parts", ())
        ]
        if attribute_rows:
            for i, (value, detail) in zip(
                attribute_rows, self.attribute_scores([entries[i] for i in attribute_rows]), strict=True
            ):
                rows[i].update(attribute=value, phrases=detail)
        if spatial_rows:
            for i, (value, detail) in zip(
                spatial_rows, self.spatial_scores([entries[i] for i in spatial_rows]), strict=True
            ):
                rows[i].update(spatial=value, **detail)
        if action_rows:
            values = self.clip.cosine(
                [entries[i].image for i in action_rows],
                [clean_prompt(entries[i].item.prompt) for i in action_rows],
            )
            for i, value in zip(action_rows, values.tolist(), strict=True):
                rows[i]["action"] = value
        for entry, row in zip(entries, rows, strict=True):
            category = entry.item.category
            if category in ATTRIBUTE:
                row["score"] = row["attribute"]
            elif category == "spatial":
                row["score"] = row["spatial"]
            elif category == "non_spatial":
                row["score"] = row["action"]
            else:
                parts = [row[p] for p in entry.item.meta["parts"]]
                row["score"] = sum(parts) / len(parts)
            if math.isnan(row["score"]):
                raise RuntimeError(f"t2i_compbench: NaN score for {entry.path}")
        return rows

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        summary = super().summarize(rows)
        summary["overall_rule"] = "mean over categories (the official benchmark reports categories only)"
        return summary
