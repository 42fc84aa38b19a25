"""Benchmark harnesses: GenEval, T2I-CompBench, WISE, DPG-Bench, GenEval++, Imagine-Bench, OneIG-Bench,
ShapeWorld-Bench (``python eval.py benchmark=...``)."""

from __future__ import annotations

from typing import Any


def run(cfg: Any) -> dict[str, Any]:
    """Evaluate as configured (see :func:`t2ir1.evaluate.harness.run`)."""
    from t2ir1.evaluate.harness import run as _run

    return _run(cfg)
