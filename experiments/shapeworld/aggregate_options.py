"""Aggregate the algorithm-option runs of ``run_options.sh`` (issue 20 point 6) into one table.

``python experiments/shapeworld/aggregate_options.py RUNS_DIR [--out experiments/shapeworld]``

``RUNS_DIR`` holds ``{arm}_s{seed}`` folders (arm: base, filter, lora). Raw weights: the
held-out callback's ``after`` table (``heldout/heldout_accuracy.json``); EMA weights (base arm):
``eval.py benchmark=shapeworld seed=<seed> use_ema=true`` in ``heldout_ema/results.json``, the same
960 records with the same per-record seeds. Every arm of a seed starts from the same checkpoint
and is evaluated on the same random numbers, so differences are paired by seed. Writes
``options_results.md`` and ``options_results.json`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from t2ir1.evaluate.stats import mean_ci
from t2ir1.shapeworld.prompts import CATEGORIES

COLUMNS = (*CATEGORIES, "overall")
# (label, arm folder, table): the comparisons of issue 20 point 6
ROWS = (
    ("before RL (shipped checkpoint)", "base", "before"),
    ("base: full fine-tuning, raw weights", "base", "after"),
    ("base: EMA of the weights (decay 0.99)", "base", "ema"),
    ("filter_groups=true", "filter", "after"),
    ("LoRA r 16 (alpha 32, lr 1e-3)", "lora", "after"),
)
PAIRS = (
    ("EMA - raw", ("base", "ema"), ("base", "after")),
    ("filter_groups - base", ("filter", "after"), ("base", "after")),
    ("LoRA - full", ("lora", "after"), ("base", "after")),
)


def load(runs_dir: Path) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
    """``{(arm, table): {seed: {category: accuracy}}}`` of every finished run."""
    tables: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for folder in sorted(runs_dir.glob("*_s*")):
        arm, seed = folder.name.rsplit("_s", 1)
        summary_path = folder / "heldout" / "heldout_accuracy.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        if "after" not in summary:
            continue
        for table in ("before", "after"):
            tables.setdefault((arm, table), {})[int(seed)] = summary[table]
        ema_path = folder / "heldout_ema" / "results.json"
        if ema_path.is_file():
            result = json.loads(ema_path.read_text())
            if result.get("seed", int(seed)) != int(seed):
                raise ValueError(f"{ema_path}: evaluated with seed {result.get('seed')}, the run's is {seed}")
            ema = {name: entry["score"] for name, entry in result["categories"].items()}
            tables.setdefault((arm, "ema"), {})[int(seed)] = {**ema, "overall": result["overall"]}
    return tables


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean over seeds and its standard error (NaN for one seed)."""
    interval = mean_ci(values)
    return interval.mean, interval.se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    tables = load(args.runs_dir)
    lines = [
        "| arm | seeds | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    result: dict[str, dict] = {"arms": {}, "paired": {}}
    for label, arm, table in ROWS:
        runs = tables.get((arm, table), {})
        if not runs:
            continue
        cells, stats = [], {}
        for column in COLUMNS:
            mean, se = mean_se([100 * runs[s][column] for s in sorted(runs)])
            stats[column] = {"mean": mean, "se": se}
            cells.append(f"{mean:.1f} ± {se:.1f}")
        result["arms"][label] = {"seeds": sorted(runs), "per_seed": runs, **stats}
        lines.append(f"| {label} | {','.join(map(str, sorted(runs)))} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference (same seed) | seeds | overall, points | t (seeds - 1 d.f.) | position |", "|---|---|---|---|---|"]
    for label, left, right in PAIRS:
        seeds = sorted(set(tables.get(left, {})) & set(tables.get(right, {})))
        if not seeds:
            continue
        diffs = [100 * (tables[left][s]["overall"] - tables[right][s]["overall"]) for s in seeds]
        pos = [100 * (tables[left][s]["position"] - tables[right][s]["position"]) for s in seeds]
        mean, se = mean_se(diffs)
        pmean, pse = mean_se(pos)
        t = mean / se if se and se > 0 else float("nan")
        result["paired"][label] = {"seeds": seeds, "overall": diffs, "mean": mean, "se": se, "t": t, "position": pos}
        lines.append(f"| {label} | {','.join(map(str, seeds))} | {mean:+.1f} ± {se:.1f} | {t:.2f} | {pmean:+.1f} ± {pse:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "options_results.md").write_text(text)
    (args.out / "options_results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
