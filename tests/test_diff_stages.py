"""Diff pruning's stage records: what the method writes into its sidecar (the L0 stage's expected-density
trace, the projection's magnitude histogram, the placement) and the tables and figures read from it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.diff_stages import (density_traces, plot_density_traces, plot_projection, projection_histograms,
                                  stage_table)
from analysis.placement import load_placement
from analysis.tables import load_ledger
from methods.diff_pruning import TRACE_POINTS, magnitude_histogram
from stream.core.scenario import Budget
from stream.engine.config import MethodSpec, RunConfig
from stream.engine.runner import run_stream

# 64 rows / batch 16 x 4 epochs = 16 steps: 16 L0 steps (every step traced), then 16 fixed-mask steps.
BUDGET = Budget(max_train_examples=64, epochs=4, batch_size=16, max_eval_examples=16, max_dev_examples=16)


@pytest.fixture(scope="module")
def table(tmp_path_factory, tiny_model_dir, glue_dir):
    torch.set_num_threads(1)
    config = RunConfig(tasks=("stsb", "sst2"), backbone=str(tiny_model_dir), data_dir=str(glue_dir), budget=BUDGET,
                       device="cpu", methods=(
                           MethodSpec(name="diff_pruning", options=(("learning_rate", 1e-3), ("target_density", 0.05)),
                                      label="diff_pruning"),
                           MethodSpec(name="diff_pruning_nonadaptive", options=(("target_density", 0.05),),
                                      label="nonadaptive")))
    run_dir = tmp_path_factory.mktemp("run")
    run_stream(config, run_dir, progress=False)
    return load_ledger(run_dir)


def test_magnitude_histogram_counts_every_entry_and_names_the_threshold():
    effective = torch.tensor([0.0, 1e-3, -1e-2, 0.0, 5e-1, 2e-5, -3e-1, 0.0])
    positions = torch.tensor([4, 6])  # the two largest magnitudes
    record = magnitude_histogram(effective, positions, bins=8)
    assert record["zeros"] == 3 and record["kept"] == 2 and record["threshold"] == pytest.approx(0.3)
    assert sum(record["counts"]) == 5 and len(record["counts"]) == 8
    low, high = record["log10_range"]
    assert low <= math.log10(2e-5) and high >= math.log10(0.5) and high - low < 5
    empty = magnitude_histogram(torch.zeros(4), torch.tensor([0]))
    assert empty["log10_range"] is None and empty["counts"] == [] and empty["threshold"] == 0.0


def test_trace_starts_at_the_initial_gates_and_follows_every_step(table):
    traces = density_traces(table)
    assert set(traces["method"]) == {"diff_pruning"}  # the non-adaptive variant has no gates to trace
    for _, rows in traces.groupby("task"):
        assert rows["l0_step"].tolist() == list(range(17))  # step 0, then the 16 L0 steps (<= TRACE_POINTS)
        # Structured: a weight's gate times its tensor's gate, both opening at log-alpha 5.
        assert rows["expected_density"].iloc[0] == pytest.approx((1 / (1 + math.exp(-5.0))) ** 2, abs=1e-6)
        assert rows["target_density"].unique().tolist() == [0.05]
        # Selection only among states after the density schedule reached the target (70% of the stage).
        assert 11 <= rows["best_step"].iloc[0] <= 16 and 0 < rows["stage1_density"].iloc[0] <= 1
        assert rows["scheduled_density"].iloc[0] == 1.0 and rows["scheduled_density"].iloc[-1] == 0.05
        # The open fraction under the evaluation gates: all open at step 0, a fraction in (0, 1] after.
        assert rows["open_fraction"].iloc[0] == 1.0 and rows["open_fraction"].between(0, 1).all()
    assert TRACE_POINTS >= 17


def test_projection_histograms_match_the_artifacts(table):
    histograms = projection_histograms(table)
    assert len(histograms) == 4  # two methods x two tasks, the non-adaptive one included
    for row in histograms.itertuples():
        assert row.counts.sum() + row.zeros == row.gated
        assert row.kept == round(0.05 * row.gated) and len(row.edges) == len(row.counts) + 1
        assert row.edges[0] <= row.threshold <= row.edges[-1]
    stages = stage_table(table)
    assert stages["kept nonzeros"].tolist() == histograms["kept"].tolist()
    assert np.isfinite(stages["test"]).all() and (stages["file / bound"] > 1).all()


def test_placement_lists_every_backbone_tensor_with_the_kept_nonzeros(table):
    placement = load_placement(table)
    per_artifact = placement.groupby(["method", "task"])
    kept = projection_histograms(table).set_index(["method", "task"])["kept"]
    assert per_artifact["changed"].sum().sort_index().tolist() == kept.sort_index().tolist()
    assert per_artifact["param"].nunique().nunique() == 1  # every artifact lists the same tensors


def test_figures(table):
    fig = plot_density_traces(density_traces(table))
    # Per task: expected density, open gates, schedule; plus the target line.
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].get_lines()) == 2 * 3 + 1
    assert "log scale" in fig.axes[0].get_ylabel()
    assert len(fig.axes[0].collections) == 2  # the kept state of each task
    fig = plot_projection(projection_histograms(table), "diff_pruning")
    assert len(fig.axes) == 2  # one panel per task
    with pytest.raises(ValueError, match="no projection recorded"):
        plot_projection(projection_histograms(table), "full")
