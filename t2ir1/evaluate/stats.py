"""Seed-level statistics for reports: a mean with its t confidence interval, and paired differences.

A training run is one draw of a noisy process, so an arm's figure is the mean over seeds and
its uncertainty comes from the spread between seeds (Student's t with ``n - 1`` degrees of
freedom). Two arms run with the same seeds are compared seed by seed: the same seed gives both
the same held-out records and the same evaluation draws (common random numbers), so the
paired difference cancels what the seeds share and is the fair test (a paired t-test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values, its standard error and its two-sided ``level`` t interval."""

    mean: float
    se: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def format(self, digits: int = 1) -> str:
        """``"31.1 [25.6, 36.6]"`` (the interval is omitted below two values)."""
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class PairedDifference(Interval):
    """``mean(a - b)`` over paired values with its interval, the t statistic and two-sided p-value."""

    t: float = math.nan
    p: float = math.nan

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (equivalently ``p < 1 - level``)."""
        return self.n >= 2 and self.p < 1 - self.level

    def format(self, digits: int = 1) -> str:
        """``"+3.9 [+1.2, +6.6], p 0.02"``; a trailing ``*`` marks a significant difference."""
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (1 pair)"
        mark = " *" if self.significant else ""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}], p {format_p(self.p)}{mark}"


def format_p(p: float) -> str:
    """Two significant digits, three near 5% (0.0497 reads "0.0497", not "0.05"); "< 0.001" below that."""
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3g}" if 0.01 <= p < 0.1 else f"{p:.2g}"


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` with a Student-t interval (``n - 1`` d.f.); NaN bounds for one value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    if not 0 < level < 1:
        raise ValueError(f"mean_ci: level={level} must be in (0, 1)")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, math.nan, 1, level)
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * se
    return Interval(mean, se, mean - half, mean + half, int(x.size), level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDifference:
    """``a - b`` pair by pair (same seed): mean, t interval, paired t statistic and two-sided p.

    Identical pairs (zero spread) give ``t = 0, p = 1`` when the mean difference is 0, else an
    infinite t and ``p = 0``.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: {x.size} values against {y.size}; pairs need equal lengths")
    base = mean_ci(x - y, level)
    if base.n < 2:
        return PairedDifference(base.mean, base.se, base.low, base.high, base.n, level)
    if base.se == 0:
        t = 0.0 if base.mean == 0 else math.copysign(math.inf, base.mean)
        p = 1.0 if base.mean == 0 else 0.0
    else:
        t = base.mean / base.se
        p = float(2 * stats.t.sf(abs(t), base.n - 1))
    return PairedDifference(base.mean, base.se, base.low, base.high, base.n, level, t=t, p=p)


def binomial_se(accuracy: float, records: int) -> float:
    """Standard error of one evaluation's accuracy over ``records`` independent images."""
    if records < 1:
        raise ValueError(f"binomial_se: records={records} must be >= 1")
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / records)
