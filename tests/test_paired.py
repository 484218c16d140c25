"""analysis.paired: differences from a reference method, paired by seed, with a 95% t-interval."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.paired import format_difference, paired_differences, paired_interval


def test_the_interval_is_the_t_interval_of_the_mean_difference():
    mean, low, high = paired_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 df) x sd 1 / sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert math.isnan(paired_interval([1.5])[1]) and paired_interval([1.5])[0] == 1.5
    assert all(math.isnan(v) for v in paired_interval([]))


def _final(rows):
    return pd.DataFrame([{"method": m, "seed": s, "order_id": "given", "budget": "default", "average": a}
                         for m, s, a in rows])


def test_methods_are_paired_with_the_reference_run_of_the_same_seed():
    final = _final([("full", 0, 80.0), ("full", 1, 82.0), ("full", 2, 81.0),
                    ("adapters", 0, 79.0), ("adapters", 1, 81.0), ("adapters", 2, 80.0),
                    ("lora", 1, 84.0), ("lora", 7, 60.0)])
    out = paired_differences(final, "full").set_index("method")
    assert list(out.index) == ["adapters", "lora"]
    assert out.loc["adapters", "pairs"] == 3
    assert out.loc["adapters", ["mean", "low", "high"]].tolist() == pytest.approx([-1.0, -1.0, -1.0])
    assert out.loc["lora", "pairs"] == 1 and out.loc["lora", "mean"] == 2.0  # seed 7 has no full run


def test_the_difference_reads_as_mean_and_interval():
    assert format_difference(-1.23, -3.4, 0.96) == "-1.2 [-3.4, +1.0]"
    assert format_difference(2.0, math.nan, math.nan) == "+2.0 (1 seed)"
    assert format_difference(math.nan, math.nan, math.nan) == ""
