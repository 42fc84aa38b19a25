"""Markdown tables: one run's per-category scores, and several runs side by side."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def results_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per category (score, images), then the overall line; CoT use in the title."""
    cot = "with semantic CoT" if summary.get("use_cot") else "without semantic CoT"
    lines = [
        f"**{summary.get('benchmark', '?')}** -- {summary.get('run', '?')} ({cot}, seed {summary.get('seed', '?')})",
        "",
        "| category | score | images |",
        "|---|---|---|",
    ]
    for name, entry in summary["categories"].items():
        lines.append(f"| {name} | {_fmt(entry['score'])} | {entry['n']} |")
    lines.append(f"| **overall** | **{_fmt(summary.get('overall'))}** | {summary.get('n_images', '')} |")
    notes = [summary["overall_rule"]] if summary.get("overall_rule") else []
    notes += [f"{k}: {v}" for k, v in summary.get("notes", {}).items()]
    if notes:
        lines += ["", "; ".join(notes)]
    return "\n".join(lines)


def load_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise FileNotFoundError(
            f"compare: {path} does not exist; pass run folders written by `python eval.py` (they hold results.json)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def compare_table(run_dirs: Sequence[Path], allow_mismatch: bool = False) -> str:
    """Markdown: one row per run, one column per category (union, first run's order), then overall.

    Runs scored by different judges, benchmark files or scoring settings are refused (unless
    ``allow_mismatch``); different generation protocols are warned about loudly and listed under
    the table (:func:`t2ir1.evaluate.provenance.check_comparable`).
    """
    from t2ir1.evaluate.provenance import check_comparable

    runs = [load_results(Path(d)) for d in run_dirs]
    benchmarks = sorted({r.get("benchmark", "?") for r in runs})
    if len(benchmarks) > 1:
        raise ValueError(
            f"compare: the runs are of different benchmarks {benchmarks}; compare one benchmark at a time"
        )
    columns: list[str] = []
    for result in runs:
        columns += [c for c in result["categories"] if c not in columns]
    header = "| run | CoT | " + " | ".join(columns) + " | overall |"
    lines = [f"**{benchmarks[0]}**", "", header, "|" + "---|" * (len(columns) + 3)]
    for directory, result in zip(run_dirs, runs, strict=True):
        cells = [_fmt(result["categories"].get(c, {}).get("score")) for c in columns]
        cot = "yes" if result.get("use_cot") else "no"
        lines.append(
            f"| {result.get('run', Path(directory).name)} | {cot} | "
            + " | ".join(cells)
            + f" | {_fmt(result.get('overall'))} |"
        )
    names = [str(result.get("run", Path(d).name)) for d, result in zip(run_dirs, runs, strict=True)]
    warnings = check_comparable(runs, names, allow_mismatch=allow_mismatch)
    if warnings:
        lines += ["", "**WARNING: these runs are not directly comparable**", ""]
        lines += [f"- {line}" for line in warnings]
    return "\n".join(lines)
