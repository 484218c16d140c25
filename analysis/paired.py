"""Differences between methods paired by seed: the mean difference and its 95% t-interval.

Two methods' runs with the same seed, task order and budget saw the same data in the same order, so their
difference removes the seed's share of the noise; a study's Table 1 reports each method against full
finetuning this way (``bench/reproduce.py``), and ``bench/adaptive_vs_nonadaptive.py`` diff pruning against
its non-adaptive baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

PAIRING = ["seed", "order_id", "budget"]


def paired_interval(differences: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of paired differences and its 95% t-interval; NaN bounds for one pair,
    all NaN for none."""
    n = len(differences)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(differences) / n
    if n < 2:
        return mean, math.nan, math.nan
    from scipy import stats  # only here: the rest of analysis imports no scipy

    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_differences(final: pd.DataFrame, reference: str, value: str = "average") -> pd.DataFrame:
    """Each method's ``value`` minus ``reference``'s in the run with the same seed, order and budget.

    ``final`` is an :func:`analysis.tables.final_table` (one row per run). One row per method other than the
    reference, in the table's order: ``pairs`` (runs paired), ``mean``, ``low`` and ``high`` (the 95%
    t-interval over the pairs; NaN with fewer than two). A method with no run to pair has ``pairs`` 0.
    """
    base = final[final["method"] == reference].set_index(PAIRING)[value]
    rows = []
    for method in dict.fromkeys(final["method"]):
        if method == reference:
            continue
        own = final[final["method"] == method].set_index(PAIRING)[value]
        common = own.index.intersection(base.index)
        differences = [float(own[key] - base[key]) for key in common]
        mean, low, high = paired_interval(differences)
        rows.append({"method": method, "pairs": len(differences), "mean": mean, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["method", "pairs", "mean", "low", "high"])


def format_difference(mean: float, low: float, high: float) -> str:
    """``"-1.2 [-3.4, +1.0]"``, ``"-1.2 (1 seed)"`` without an interval, ``""`` without a pair."""
    if math.isnan(mean):
        return ""
    if math.isnan(low):
        return f"{mean:+.1f} (1 seed)"
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"
