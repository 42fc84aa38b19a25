"""OneIG-Bench, English (OneIG-Bench/OneIG-Benchmark): alignment, text rendering, diversity.

Files (not shipped; clone OneIG-Bench/OneIG-Benchmark): ``OneIG-Bench.csv`` (category, id,
prompt_en, type, prompt_length, class: 1,120 prompts in five categories),
``scripts/alignment/Q_D/{anime,human,object}.json`` (per id, a JSON string of questions
``{"1": "Is there ...?"}`` and one of dependencies ``{"2": [1]}``, 0 = no parent) and
``scripts/text/text_content.csv`` (id, text_content: the text each Text_Rendering image must show).

Four images per prompt, tiled 2x2 (``grids/<class>/<id>.png``, the official layout, beside the
singles ``singles/<class>/<id>_<k>.png`` that the harness scores). Dimensions:

* **alignment** (Anime_Stylization, Portrait, General_Object): every question is asked of every
  tile by a VLM (official: Qwen2.5-VL-7B-Instruct), yes = 1; a question whose parent was answered
  no counts 0 (one level, the parents' raw answers); per prompt the mean over tiles of the mean
  over questions; the dimension is the mean over prompts (per class in the table too);
* **text** (Text_Rendering): the same VLM transcribes each tile; after OneIG's normalisation
  (letters, digits, spaces only), ED = mean Levenshtein distance to the reference, CR = fraction of
  exact transcriptions, WAC = matched reference words / reference words (multiset, over all
  tiles); text score = ``1 - min(100, ED) * (1 - CR) * (1 - WAC) / 100``;
* **diversity**: per prompt the mean DreamSim distance over the 6 pairs of its 4 tiles, then the
  mean over prompts. DreamSim loads from a local folder only (never a download at first use);
  when it cannot load, the dimension is reported as not computed;
* **reasoning** (LLM2CLIP similarity to reference answers) and **style** (CSD + a style encoder)
  need models that no maintained pip package loads: not computed, and said so in the table.

**Differences from the official scorer:** a "yes" is any answer whose first word is yes
(official: the exact string "Yes"); the judge may be any local transformers VLM or an
OpenAI-compatible endpoint -- other than Qwen2.5-VL-7B the numbers are on another scale;
``diversity.backend=clip`` (cosine distance of CLIP image embeddings) is offered for machines
without DreamSim weights and is *not* OneIG's diversity.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from t2ir1.evaluate.base import BenchmarkFileError, EvalItem, ImageEntry, mean
from t2ir1.evaluate.grid import GridBenchmark
from t2ir1.evaluate.provenance import describe, model_provenance
from t2ir1.evaluate.vqa import ChatYesNoJudge

log = logging.getLogger(__name__)

CSV_COLUMNS = ("category", "id", "prompt_en")
# OneIG category -> the class name of its image folder and question file.
CLASS_OF = {
    "Anime_Stylization": "anime",
    "Portrait": "human",
    "General_Object": "object",
    "Text_Rendering": "text",
    "Knowledge_Reasoning": "reasoning",
}
ALIGNMENT_CLASSES = ("anime", "human", "object")
MAX_EDIT_DISTANCE = 100  # OneIG's cap for English
NOT_COMPUTED = {
    "reasoning": "not computed: OneIG scores it with LLM2CLIP, which no maintained pip package loads",
    "style": "not computed: OneIG scores it with CSD and a style encoder, which no maintained pip package loads",
}
DREAMSIM_FILES = {
    "ensemble": (
        "dino_vitb16_pretrain.pth",
        "open_clip_vitb16_pretrain.pth.tar",
        "clip_vitb16_pretrain.pth.tar",
        "ensemble_lora",
    ),
    "dino_vitb16": ("dino_vitb16_pretrain.pth", "dino_vitb16_single_lora"),
    "open_clip_vitb32": ("open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"),
    "clip_vitb32": ("clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"),
}


# ----------------------------------------------------------------------------- files
def read_oneig_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of ``OneIG-Bench.csv`` (ids kept as strings: "000"); errors name file and line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchmarkFileError(
            f"OneIG-Bench prompt file {path} does not exist; clone OneIG-Bench/OneIG-Benchmark and pass benchmark.csv_path=<clone>/OneIG-Bench.csv"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkFileError(
                f"{path}: missing column(s) {missing}; expected at least {list(CSV_COLUMNS)}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            if row["category"] not in CLASS_OF:
                raise BenchmarkFileError(
                    f"{path}:{line}: category {row['category']!r} is not one of {sorted(CLASS_OF)}"
                )
            if not (row.get("prompt_en") or "").strip():
                raise BenchmarkFileError(f"{path}:{line}: empty prompt_en")
            rows.append({**row, "_line": str(line)})
    if not rows:
        raise BenchmarkFileError(f"{path}: no prompts")
    return rows


def _json_map(value: Any, where: str, what: str) -> dict[int, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise BenchmarkFileError(f"{where}: '{what}' is not valid JSON ({err.msg})") from err
    if not isinstance(value, dict):
        raise BenchmarkFileError(f"{where}: '{what}' must be an object keyed by question number")
    try:
        return {int(k): v for k, v in value.items()}
    except ValueError as err:
        raise BenchmarkFileError(f"{where}: '{what}' keys must be question numbers ({err})") from err


def read_question_sets(qd_dir: str | Path, class_name: str) -> dict[str, dict[str, Any]]:
    """``{id: {"questions": {n: text}, "parents": {n: (p, ...)}}}`` of ``<qd_dir>/<class>.json``."""
    path = Path(qd_dir).expanduser() / f"{class_name}.json"
    if not path.is_file():
        raise BenchmarkFileError(
            f"OneIG question file {path} does not exist; set benchmark.qd_dir=<clone>/scripts/alignment/Q_D"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BenchmarkFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    out = {}
    for key, entry in data.items():
        where = f"{path} [{key}]"
        questions = _json_map(entry.get("question"), where, "question")
        dependency = _json_map(entry.get("dependency", "{}"), where, "dependency")
        parents = {}
        for number in questions:
            raw = dependency.get(number, [0])
            raw = raw if isinstance(raw, list) else [raw]
            kept = tuple(int(p) for p in raw if int(p) != 0)
            unknown = [p for p in kept if p not in questions]
            if unknown:
                raise BenchmarkFileError(
                    f"{where}: question {number} depends on unknown question(s) {unknown}"
                )
            parents[number] = kept
        out[str(key)] = {"questions": {n: str(q) for n, q in sorted(questions.items())}, "parents": parents}
    return out


def read_text_references(path: str | Path) -> dict[str, str]:
    """``{id: reference text}`` of ``text_content.csv`` (the cell is kept raw; normalisation removes list syntax)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchmarkFileError(
            f"OneIG text file {path} does not exist; set benchmark.text_csv=<clone>/scripts/text/text_content.csv"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"id", "text_content"} <= set(reader.fieldnames or []):
            raise BenchmarkFileError(f"{path}: needs columns id and text_content")
        return {row["id"]: row["text_content"] for row in reader}


# ----------------------------------------------------------------------------- text math
_KEEP = re.compile(r"[^a-zA-Z0-9\sàâäéèêëîïôöùûüçÀÂÄÉÈÊËÎÏÔÖÙÛÜÇ]")


def normalize_text(text: str) -> str:
    """OneIG's English normalisation: keep letters (incl. French accents), digits and spaces; collapse spaces."""
    return re.sub(r"\s+", " ", _KEEP.sub("", text)).strip()


def reference_text(cell: str) -> str:
    """The reference of a ``text_content`` cell; a Python list literal joins its strings with spaces."""
    with contextlib.suppress(ValueError, SyntaxError):
        value = ast.literal_eval(cell)
        if isinstance(value, list | tuple):
            return " ".join(str(v) for v in value)
    return cell


def clean_ocr(text: str, markers: Sequence[str] = ("No text recognized", "addCriterion")) -> str:
    """Remove the judge's "nothing found" marker and known hallucinated tokens from a transcription."""
    for marker in markers:
        text = text.replace(marker, "")
    return text


def word_matches(reference: str, transcription: str) -> tuple[int, int]:
    """``(matched, reference words)``: multiset intersection of the two texts' words."""
    from collections import Counter

    ref, ocr = Counter(reference.split()), Counter(transcription.split())
    return sum((ref & ocr).values()), sum(ref.values())


def text_measures(reference: str, transcription: str) -> dict[str, float]:
    """ED, CR and word matches of one tile (both texts normalised here)."""
    from rapidfuzz.distance import Levenshtein

    ref, ocr = normalize_text(reference), normalize_text(clean_ocr(transcription))
    distance = float(Levenshtein.distance(ocr, ref))
    matched, total = word_matches(ref, ocr)
    return {"ed": distance, "cr": float(distance == 0), "matched_words": matched, "reference_words": total}


def text_score(ed: float, cr: float, wac: float, max_edit_distance: float = MAX_EDIT_DISTANCE) -> float:
    """``1 - min(max_ed, ED) * (1 - CR) * (1 - WAC) / max_ed``."""
    return 1.0 - min(max_edit_distance, ed) * (1.0 - cr) * (1.0 - wac) / max_edit_distance


def mean_pairwise_distance(embeddings: torch.Tensor) -> float:
    """Mean over the pairs i < j of ``1 - cos(e_i, e_j)`` (DreamSim's distance on its embeddings)."""
    if embeddings.shape[0] < 2:
        return float("nan")
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    cosine = unit @ unit.T  # [n, n]
    rows, cols = torch.triu_indices(len(unit), len(unit), offset=1)
    return float((1.0 - cosine[rows, cols]).mean())


# ----------------------------------------------------------------------------- diversity
@contextlib.contextmanager
def _no_downloads(owner: str, folder: Path) -> Iterator[None]:
    """Fail instead of downloading: torch.hub downloads raise, the Hugging Face hub is offline."""
    import torch.hub

    original = torch.hub.download_url_to_file
    previous = os.environ.get("HF_HUB_OFFLINE")

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError(
            f"{owner} tried to download {url}; put the file under {folder} (downloads are off)"
        )

    torch.hub.download_url_to_file = refuse
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


class DreamSimEmbedder:
    """DreamSim image embeddings from a local weights folder (the pip package ``dreamsim``).

    Args:
        weights_dir: the folder DreamSim caches its checkpoints in (``cache_dir`` of ``dreamsim()``),
            holding e.g. ``ensemble_lora/`` and the backbone ``*_pretrain.pth*`` files.
        dreamsim_type: ``ensemble`` (OneIG's default) or a single-backbone variant.
    """

    backend = "dreamsim"

    def __init__(self, weights_dir: str | None, dreamsim_type: str = "ensemble", micro_batch_size: int = 16):
        self.weights_dir = weights_dir
        self.dreamsim_type = dreamsim_type
        self.micro_batch_size = micro_batch_size
        self.model = None

    def setup(self, device: str = "cpu") -> None:
        if self.model is not None:
            return
        if not self.weights_dir:
            raise FileNotFoundError("diversity.weights_dir is not set (a local DreamSim checkpoint folder)")
        folder = Path(self.weights_dir).expanduser()
        needed = DREAMSIM_FILES.get(self.dreamsim_type)
        if needed is None:
            raise ValueError(f"dreamsim_type {self.dreamsim_type!r} is not one of {sorted(DREAMSIM_FILES)}")
        absent = [name for name in needed if not (folder / name).exists()]
        if absent:
            raise FileNotFoundError(
                f"DreamSim weights folder {folder} lacks {absent} (the unzipped DreamSim checkpoint)"
            )
        from dreamsim import dreamsim

        with _no_downloads("DreamSim", folder):
            self.model, self.preprocess = dreamsim(
                pretrained=True, device=device, cache_dir=str(folder), dreamsim_type=self.dreamsim_type
            )
        self.device = device

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pieces = []
        for start in range(0, len(images), self.micro_batch_size):
            batch = torch.cat([self.preprocess(im) for im in images[start : start + self.micro_batch_size]])
            pieces.append(self.model.embed(batch.to(self.device)).float().cpu())
        return torch.cat(pieces)

    def describe(self) -> dict[str, Any]:
        return model_provenance(self.weights_dir, kind="dreamsim", dreamsim_type=self.dreamsim_type)


class ClipEmbedder:
    """CLIP image embeddings (a stand-in for machines without DreamSim weights; not OneIG's measure)."""

    backend = "clip"

    def __init__(
        self, model_path: str, dtype: str = "auto", micro_batch_size: int = 16, local_files_only: bool = False
    ):
        from t2ir1.evaluate.judges import ClipJudge

        self.clip = ClipJudge(model_path, dtype, micro_batch_size, local_files_only)

    def setup(self, device: str = "cpu") -> None:
        self.clip.setup(device)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.clip.image_features(images)

    def describe(self) -> dict[str, Any]:
        return {**self.clip.describe(), "note": "CLIP cosine distance, not OneIG's DreamSim diversity"}


def build_embedder(
    backend: str,
    weights_dir: str | None = None,
    dreamsim_type: str = "ensemble",
    clip_model_path: str | None = None,
    local_files_only: bool = False,
):
    if backend == "dreamsim":
        return DreamSimEmbedder(weights_dir, dreamsim_type)
    if backend == "clip":
        if not clip_model_path:
            raise ValueError("diversity.backend=clip needs diversity.clip_model_path")
        return ClipEmbedder(clip_model_path, local_files_only=local_files_only)
    if backend in ("none", None):
        return None
    raise ValueError(f"diversity.backend {backend!r} is not one of dreamsim, clip, none")


# ----------------------------------------------------------------------------- benchmark
class OneIGBenchmark(GridBenchmark):
    """OneIG-Bench (EN) with a local (or endpoint) VLM judge and DreamSim diversity.

    Args:
        csv_path: ``OneIG-Bench.csv``.
        qd_dir: ``scripts/alignment/Q_D`` (``anime.json``, ``human.json``, ``object.json``).
        text_csv: ``scripts/text/text_content.csv``.
        judge: a chat judge (``LocalVlmJudge`` / ``OpenAICompatibleJudge``).
        question_template: the alignment instruction (``{question}``).
        ocr_prompt: the transcription instruction.
        diversity: ``{backend: dreamsim|clip|none, weights_dir, dreamsim_type, clip_model_path, local_files_only}``.
        categories: the OneIG categories to run (default: the five English ones).
        n_per_prompt: images per prompt (official: 4, tiled 2x2).
    """

    name = "oneig"
    categories = (
        "alignment",
        "alignment/anime",
        "alignment/human",
        "alignment/object",
        "text",
        "text/ED",
        "text/CR",
        "text/WAC",
        "diversity",
        "reasoning",
        "style",
    )
    group_by_item = True

    def __init__(
        self,
        csv_path: str,
        qd_dir: str,
        text_csv: str,
        judge: Any,
        question_template: str = "{question} Please answer 'Yes' or 'No' only.",
        ocr_prompt: str = "Transcribe all the text in the image. Reply with the text only. If there is no text, reply 'No text recognized'.",
        diversity: dict[str, Any] | None = None,
        categories: Sequence[str] | None = None,
        n_per_prompt: int = 4,
        name: str = "oneig",
    ):
        if n_per_prompt != self.grid_rows * self.grid_cols:
            raise ValueError(
                f"oneig: n_per_prompt must be {self.grid_rows * self.grid_cols} (a 2x2 grid), got {n_per_prompt}"
            )
        self.name = name
        self.csv_path, self.qd_dir, self.text_csv = csv_path, qd_dir, text_csv
        self.judge = judge
        self.yes_no = ChatYesNoJudge(judge, question_template)
        self.ocr_prompt = ocr_prompt
        settings = dict(diversity or {"backend": "dreamsim"})
        self.embedder = build_embedder(**settings)
        self.diversity_error: str | None = None
        self.selected = tuple(categories or CLASS_OF)
        unknown = [c for c in self.selected if c not in CLASS_OF]
        if unknown:
            raise ValueError(f"oneig: categories {unknown} are not among {sorted(CLASS_OF)}")
        self.n_per_prompt = n_per_prompt
        self.question_sets: dict[str, dict[str, dict[str, Any]]] = {}
        self.references: dict[str, str] = {}

    # -- items and layout
    def _load_sidecars(self) -> None:
        if not self.question_sets:
            self.question_sets = {
                c: read_question_sets(self.qd_dir, c)
                for c in ALIGNMENT_CLASSES
                if any(CLASS_OF[s] == c for s in self.selected)
            }
        if not self.references and "Text_Rendering" in self.selected:
            self.references = read_text_references(self.text_csv)

    def load_items(self) -> list[EvalItem]:
        self._load_sidecars()
        items = []
        for row in read_oneig_csv(self.csv_path):
            if row["category"] not in self.selected:
                continue
            cls = CLASS_OF[row["category"]]
            where = f"{self.csv_path}:{row['_line']}"
            if cls in ALIGNMENT_CLASSES and row["id"] not in self.question_sets[cls]:
                raise BenchmarkFileError(
                    f"{where}: {cls} prompt {row['id']} has no question set in {self.qd_dir}/{cls}.json"
                )
            if cls == "text" and row["id"] not in self.references:
                raise BenchmarkFileError(
                    f"{where}: text prompt {row['id']} has no reference in {self.text_csv}"
                )
            meta = {
                "class": cls,
                "id": row["id"],
                "type": row.get("type"),
                "prompt_length": row.get("prompt_length"),
            }
            items.append(
                EvalItem(
                    key=f"{cls}_{row['id']}",
                    prompt=row["prompt_en"].strip(),
                    category=cls,
                    index=len(items),
                    meta=meta,
                )
            )
        return items

    def image_path(self, root: Path, item: EvalItem, sample_index: int) -> Path:
        return root / "singles" / item.meta["class"] / f"{item.meta['id']}_{sample_index}.png"

    def grid_path(self, root: Path, item: EvalItem) -> Path:
        return root / "grids" / item.meta["class"] / f"{item.meta['id']}.png"

    def source_files(self) -> list[Path]:
        files = [Path(self.csv_path).expanduser()]
        files += [Path(self.qd_dir).expanduser() / f"{c}.json" for c in ALIGNMENT_CLASSES]
        return files + [Path(self.text_csv).expanduser()]

    def describe_judges(self) -> dict[str, Any]:
        out = {
            "vlm": describe(self.judge),
            "question_template": self.yes_no.question_template,
            "ocr_prompt": self.ocr_prompt,
        }
        out["diversity"] = (
            describe(self.embedder) if self.embedder is not None else "not computed (backend none)"
        )
        return out

    # -- scoring
    def setup(self, device: str = "cpu") -> None:
        self._load_sidecars()
        self.judge.setup(device)
        if self.embedder is not None and self.diversity_error is None:
            try:
                self.embedder.setup(device)
            except Exception as err:  # weights absent or not loadable offline: the dimension is not computed
                self.diversity_error = f"not computed: {self.embedder.backend} could not load ({err})"
                log.warning("oneig: diversity %s", self.diversity_error)

    def score(self, entries: Sequence[ImageEntry]) -> list[dict[str, Any]]:
        self._load_sidecars()
        rows: list[dict[str, Any]] = [{"category": e.item.category, "score": float("nan")} for e in entries]
        # alignment: every question of the item's set on every tile, in one judge call
        pairs = []
        for index, entry in enumerate(entries):
            cls = entry.item.meta["class"]
            if cls in ALIGNMENT_CLASSES:
                qset = self.question_sets[cls][entry.item.meta["id"]]
                pairs += [(index, number, text) for number, text in qset["questions"].items()]
        if pairs:
            answers = self.yes_no.answer_yes_no(
                [entries[i].image for i, _, _ in pairs], [t for _, _, t in pairs]
            )
            raw: dict[int, dict[int, float]] = defaultdict(dict)
            for (index, number, _), (value, _) in zip(pairs, answers, strict=True):
                raw[index][number] = value
            for index, answered in raw.items():
                qset = self.question_sets[entries[index].item.meta["class"]][entries[index].item.meta["id"]]
                kept = {
                    n: 0.0 if any(answered[p] == 0.0 for p in qset["parents"][n]) else v
                    for n, v in answered.items()
                }
                rows[index].update(
                    {
                        "score": sum(kept.values()) / len(kept),
                        "answers": {str(n): v for n, v in answered.items()},
                    }
                )
        # text: one transcription per tile
        text_rows = [i for i, e in enumerate(entries) if e.item.meta["class"] == "text"]
        if text_rows:
            transcripts = self.judge(
                "", [self.ocr_prompt] * len(text_rows), [entries[i].image for i in text_rows]
            )
            for index, transcript in zip(text_rows, transcripts, strict=True):
                measures = text_measures(
                    reference_text(self.references[entries[index].item.meta["id"]]), transcript
                )
                rows[index].update({**measures, "score": measures["cr"], "transcript": transcript})
        # diversity: the item's tiles together (the harness never splits an item across calls)
        if self.embedder is not None and self.diversity_error is None:
            by_item: dict[str, list[int]] = defaultdict(list)
            for index, entry in enumerate(entries):
                by_item[entry.item.key].append(index)
            for indices in by_item.values():
                value = mean_pairwise_distance(self.embedder.embed([entries[i].image for i in indices]))
                for index in indices:
                    rows[index]["diversity"] = value
        elif self.embedder is not None:
            for row in rows:
                row["diversity_error"] = self.diversity_error
        return rows

    def summarize(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        per_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            per_item[row["key"]].append(row)
        table: dict[str, dict[str, Any]] = {}
        notes: dict[str, Any] = {}
        # alignment: mean over prompts of the per-prompt tile mean
        prompt_alignment: dict[str, list[float]] = defaultdict(list)
        for tiles in per_item.values():
            if tiles[0]["category"] in ALIGNMENT_CLASSES:
                prompt_alignment[tiles[0]["category"]].append(mean([float(t["score"]) for t in tiles]))
        every = [v for c in ALIGNMENT_CLASSES for v in prompt_alignment.get(c, [])]
        if every:
            table["alignment"] = {"score": mean(every), "n": len(every)}
            for cls in ALIGNMENT_CLASSES:
                if prompt_alignment.get(cls):
                    table[f"alignment/{cls}"] = {
                        "score": mean(prompt_alignment[cls]),
                        "n": len(prompt_alignment[cls]),
                    }
        # text: ED and CR over tiles, WAC over words, then OneIG's text score
        text = [r for r in rows if r["category"] == "text" and "ed" in r]
        if text:
            ed = sum(r["ed"] for r in text) / len(text)
            cr = sum(r["cr"] for r in text) / len(text)
            total = sum(r["reference_words"] for r in text)
            wac = sum(r["matched_words"] for r in text) / total if total else float("nan")
            table["text"] = {"score": text_score(ed, cr, wac), "n": len(text)}
            table["text/ED"] = {"score": ed, "n": len(text)}
            table["text/CR"] = {"score": cr, "n": len(text)}
            table["text/WAC"] = {"score": wac, "n": len(text)}
        # diversity: one value per prompt
        diversity = [tiles[0]["diversity"] for tiles in per_item.values() if "diversity" in tiles[0]]
        if diversity and len(diversity) == len(per_item):
            table["diversity"] = {"score": mean(diversity), "n": len(diversity)}
        else:
            table["diversity"] = {"score": None, "n": 0}
            errors = [r["diversity_error"] for r in rows if r.get("diversity_error")]
            notes["diversity"] = (
                (errors[0] if errors else None)
                or self.diversity_error
                or (
                    "not computed (diversity.backend=none)"
                    if self.embedder is None
                    else "not computed for every prompt: score again with score.rescore=true"
                )
            )
        for dimension, reason in NOT_COMPUTED.items():
            table[dimension] = {"score": None, "n": 0}
            notes[dimension] = reason
        if self.embedder is not None and self.embedder.backend == "clip":
            notes["diversity backend"] = "CLIP cosine distance (not OneIG's DreamSim)"
        return {
            "categories": table,
            "overall": float("nan"),
            "overall_rule": "OneIG-Bench reports each dimension; there is no single overall",
            "notes": notes,
        }
