"""bench.levers_accuracy: a lever's cost is what switching it on loses on the dev split."""

from __future__ import annotations

from bench.levers_accuracy import compare


def _scores(**dev: float) -> dict[str, dict]:
    return {task: {"dev": value, "test": value - 3, "train_seconds": 10.0, "precision": "bf16"}
            for task, value in dev.items()}


def test_a_lever_that_lowers_the_dev_score_costs_points_and_is_flagged():
    rows = compare(_scores(sst2=89.0, mrpc=81.0), _scores(sst2=90.0, mrpc=80.5), tolerance=0.3)
    by_task = {row["task"]: row for row in rows}
    assert by_task["sst2"]["cost"] == 1.0 and not by_task["sst2"]["within"]  # without the lever: 1 point more
    assert by_task["mrpc"]["cost"] == -0.5 and by_task["mrpc"]["within"]  # the lever's run scored higher


def test_tasks_the_reference_lacks_are_left_out():
    assert [row["task"] for row in compare(_scores(sst2=89.0), _scores(sst2=89.0, stsb=85.0), 0.3)] == ["sst2"]
