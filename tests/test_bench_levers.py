"""bench.levers_accuracy: a lever's cost is what switching it on loses on the dev split, paired by seed."""

from __future__ import annotations

import math

import pytest

from bench.levers_accuracy import compare, merged


def _scores(**dev: float) -> dict[str, dict]:
    return {task: {"dev": value, "test": value - 3, "train_seconds": 10.0} for task, value in dev.items()}


def test_a_lever_that_lowers_the_dev_score_costs_points_and_is_flagged():
    rows = compare({0: _scores(sst2=89.0, mrpc=81.0)}, {0: _scores(sst2=90.0, mrpc=80.5)}, tolerance=0.3)
    by_task = {row["task"]: row for row in rows}
    assert by_task["sst2"]["cost"] == 1.0 and not by_task["sst2"]["within"]  # without the lever: 1 point more
    assert by_task["mrpc"]["cost"] == -0.5 and by_task["mrpc"]["within"]  # the lever's run scored higher
    assert math.isnan(by_task["sst2"]["cost_sd"])  # one seed: no spread


def test_costs_are_paired_by_seed_and_averaged():
    reference = merged({0: _scores(stsb=85.0)}, {1: _scores(stsb=86.0), 2: _scores(stsb=84.0)})
    without = {0: _scores(stsb=85.6), 1: _scores(stsb=85.8), 2: _scores(stsb=84.1)}
    (row,) = compare(reference, without, tolerance=0.3)
    assert row["seeds"] == [0, 1, 2]
    assert row["costs"] == pytest.approx([0.6, -0.2, 0.1])
    assert row["cost"] == pytest.approx(0.5 / 3) and row["within"]
    assert row["dev_on"] == pytest.approx(85.0)


def test_seeds_or_tasks_one_side_lacks_are_left_out():
    rows = compare({0: _scores(sst2=89.0)}, {0: _scores(sst2=89.0, stsb=85.0), 1: _scores(sst2=80.0)}, 0.3)
    assert [(row["task"], row["seeds"]) for row in rows] == [("sst2", [0])]
