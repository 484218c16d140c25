"""Storage scaling: the fitted lines, their extrapolation and crossings, the per-task breakdown and the
figure, on synthetic ledgers with known sizes (tests/synthetic_ledgers.py) and a hand-made one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.plots import plot_storage_scaling
from analysis.scaling import (extrapolate_storage, per_task_storage, scaling_table, storage_crossings,
                              storage_fits)
from analysis.tables import curves, load_ledger
from tests.synthetic_ledgers import BACKBONE_BYTES, METHODS, write_study


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pd.DataFrame:
    return load_ledger(write_study(tmp_path_factory.mktemp("study"), failed_run=False))


def test_fits_recover_the_storage_rule(table):
    fits = storage_fits(table).set_index("method")
    assert set(fits.index) == set(METHODS)
    for label, (_, _, sharing, size, _, _) in METHODS.items():
        fit = fits.loc[label]
        # The synthetic files are size + step bytes at steps 1..3: mean size + 2.
        if sharing == "shared_backbone":
            assert (fit["shared_bytes"], fit["per_task_bytes"]) == (BACKBONE_BYTES, size + 2)
        elif sharing == "standalone":
            assert (fit["shared_bytes"], fit["per_task_bytes"]) == (0, size + 2)
        else:  # evolving: S(t) = newest file = size + t, a line of slope 1 through (0, size)
            assert fit["per_task_bytes"] == pytest.approx(1.0) and fit["shared_bytes"] == pytest.approx(size)
        measured = (fit["per_task_min"], fit["per_task_max"], fit["tasks_measured"], fit["runs"])
        assert measured == (size + 1, size + 3, 3, 4)
        assert math.isnan(fit["lower_bound_per_task"])


def test_fitted_lines_pass_through_every_measured_point_of_non_evolving_methods(table):
    fits = storage_fits(table)
    at_three = extrapolate_storage(fits, [3]).set_index("method")["bytes"]
    measured = curves(table).query("tasks_seen == 3").groupby("method")["cumulative_bytes"].mean()
    for label, spec in METHODS.items():
        if spec[2] != "evolving":
            assert at_three[label] == pytest.approx(measured[label])


def test_extrapolation_and_multiples(table):
    fits = storage_fits(table)
    lines = extrapolate_storage(fits, [0, 1000]).set_index(["method", "tasks"])
    full_size = METHODS["full"][3] + 2
    assert lines.loc[("full", 1000.0), "bytes"] == 1000 * full_size
    assert lines.loc[("full", 1000.0), "x_backbone"] == pytest.approx(1000 * full_size / BACKBONE_BYTES)
    assert lines.loc[("last_layer-k1", 0.0), "bytes"] == BACKBONE_BYTES
    with pytest.raises(ValueError, match="non-negative"):
        extrapolate_storage(fits, [-1])


def _fits(rows) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "budget": "default", "method_name": m, "sharing": s, "shared_bytes": a,
                          "per_task_bytes": b, "per_task_min": b, "per_task_max": b, "lower_bound_per_task": lb,
                          "tasks_measured": 3, "runs": 1, "backbone_bytes": 100.0} for m, s, a, b, lb in rows])


def test_crossings_are_where_the_cheaper_method_changes():
    fits = _fits([("full", "standalone", 0.0, 100.0, math.nan),
                  ("block", "shared_backbone", 100.0, 20.0, math.nan),
                  ("diff", "shared_backbone", 100.0, 1.0, 0.5),
                  ("evolving", "evolving", 130.0, 0.1, math.nan)])
    crossings = storage_crossings(fits)
    pairs = {(r.method_a, r.method_b): r for r in crossings.itertuples()}
    full_block = pairs[("full", "block")]
    assert full_block.tasks == pytest.approx(100 / 80) and full_block.first_task_b_cheaper == 2
    assert full_block.bytes == pytest.approx(125.0)
    # diff (100 + t) meets evolving (130 + 0.1 t) at t = 30 / 0.9 = 33.3: evolving is cheaper from 34 on.
    assert pairs[("diff", "evolving")].tasks == pytest.approx(30 / 0.9)
    assert pairs[("diff", "evolving")].first_task_b_cheaper == 34
    assert ("block", "diff") not in pairs and ("diff", "block") not in pairs  # same start: they never cross
    assert list(crossings["tasks"]) == sorted(crossings["tasks"])
    # full (100 t) meets evolving (130 + 0.1 t) at t = 1.3 and diff at 100/99: both at t >= 1 are listed;
    # a crossing before the first task is not.
    assert ("full", "evolving") in pairs and ("full", "diff") in pairs
    early = storage_crossings(_fits([("a", "standalone", 0.0, 100.0, math.nan),
                                     ("b", "shared_backbone", 50.0, 1.0, math.nan)]))
    assert early.empty  # they cross at t = 0.505: b is the cheaper one at every whole task count from 1


def test_scaling_table_lists_bytes_multiples_and_the_bound():
    table = scaling_table(_fits([("full", "standalone", 0.0, 100.0, math.nan),
                                 ("diff", "shared_backbone", 100.0, 1.0, 0.5)]), tasks=(10, 1000))
    assert list(table.columns) == ["method", "sharing", "shared", "per task", "S(10)", "S(1000)", "bound S(1000)",
                                   "S / bound at 1000"]
    diff = table.set_index("method").loc["diff"]
    assert diff["S(1000)"] == "1.1 KiB (11×)" and diff["bound S(1000)"] == "600 B"
    assert diff["S / bound at 1000"] == "1.83"
    assert table.set_index("method").loc["full", "bound S(1000)"] == ""


def _row(method, step, size, breakdown, tensor_bytes, sidecar, bound):
    return {"run": "r", "method": method, "step": step, "sharing": "shared_backbone", "artifact_bytes": size,
            "tensor_bytes": tensor_bytes, "sidecar_bytes": sidecar, "breakdown": breakdown,
            "lower_bound_bytes": bound, "cumulative_bytes": 0, "backbone_bytes": 100}


def test_per_task_storage_splits_the_file_and_compares_with_the_bound():
    table = pd.DataFrame([
        _row("mask", 1, 1_000, {"head": 100, "mask": 600}, 800, 200, 500.0),
        _row("mask", 2, 1_200, {"head": 100, "mask": 800}, 1_000, 200, 700.0),
        _row("probe", 1, 400, {"head": 100}, 150, 250, None),
    ])
    out = per_task_storage(table).set_index("method")
    mask = out.loc["mask"]
    assert (mask["file_bytes"], mask["head_bytes"], mask["method_bytes"], mask["header_bytes"],
            mask["sidecar_bytes"]) == (1_100, 100, 700, 100, 200)
    assert mask["lower_bound_bytes"] == 600 and mask["file_vs_bound"] == pytest.approx(1_100 / 600)
    assert np.isnan(out.loc["probe", "lower_bound_bytes"]) and out.loc["probe", "method_bytes"] == 0


def test_scaling_figure_draws_lines_bounds_points_and_crossings(table):
    fits = storage_fits(table)
    fig = plot_storage_scaling(fits, curves(table), max_tasks=500, marks=(100,))
    ax = fig.axes[0]
    labels = fig.legends[0].get_texts()  # outside the axes, clear of the lines
    assert {t.get_text() for t in labels} >= set(METHODS) | {"lines cross", "measured"}
    assert ax.get_xscale() == ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("t=1") for t in texts)  # full finetuning's crossings just after the first task
    assert any(t.split()[-1] == "500×" for t in texts)  # full at 500 tasks (end labels name their line)


def test_end_labels_keep_their_order_and_move_as_little_as_their_neighbours_allow():
    from analysis.plots import _spread

    assert _spread(np.array([0.0, 0.01, 0.02, 1.0, 1.0]), 0.1) == pytest.approx([-0.09, 0.01, 0.11, 0.95, 1.05])
    assert _spread(np.array([3.0, 1.0, 2.0]), 0.5).tolist() == [3.0, 1.0, 2.0]  # far apart: untouched
