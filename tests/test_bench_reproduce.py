"""bench/reproduce.py --tables-only: Table 1 redrawn from the committed reproduction's files alone."""

from __future__ import annotations

import json
import shutil

import pytest

from bench.reproduce import main
from tests.conftest import REPO

COMMITTED = REPO / "bench" / "results" / "reproduction"


def test_table1_is_redrawn_from_the_files_with_the_paired_difference_and_the_chance_row(tmp_path):
    out = tmp_path / "reproduction"
    shutil.copytree(COMMITTED, out)
    (out / "table1.md").unlink()
    result = main(["--tables-only", "--out", str(out)])
    methods = [record["method"] for record in result["methods"]]
    assert "full" in methods and "chance (majority class)" not in methods
    assert all(record["delta_vs_full"]["pairs"] == 1 for record in result["methods"] if record["method"] != "full")
    text = (out / "table1.md").read_text()
    assert "Δ vs full [95% CI]" in text and "(1 seed)" in text and "| chance (majority class) |" in text
    assert json.loads((out / "table1.json").read_text())["seeds"] == [0]
    assert "## Goals" in text and "| last-layer tuning clearly below full finetuning |" in text
    assert "not judged (one seed)" in text and len(result["goals"]) == 5
    assert "| full ≥ diff_pruning | +0.0 |" in text and len(result["ordering"]) == 5


def test_goals_are_judged_on_the_paired_difference():
    import pandas as pd

    from bench.reproduce import goal_records

    averages = {"full": [80.0, 81.0, 82.0], "diff_pruning": [79.6, 80.7, 81.5], "adapters": [78.0, 79.1, 80.2],
                "last_layer-k1": [70.0, 72.0, 71.0], "diff_pruning_nonadaptive": [79.0, 81.0, 80.9]}
    final = pd.DataFrame([{"method": m, "seed": seed, "order_id": "given", "budget": "default", "average": value}
                          for m, values in averages.items() for seed, value in enumerate(values)])
    goals = {r["method"]: r for r in goal_records(final)}
    assert set(goals) == {"diff_pruning", "adapters", "last_layer-k1", "diff_pruning_nonadaptive"}  # no masking run
    assert goals["diff_pruning"]["mean"] == pytest.approx(-0.4) and goals["diff_pruning"]["met"] is True
    assert goals["adapters"]["mean"] == pytest.approx(-1.9) and goals["adapters"]["met"] is False
    assert goals["last_layer-k1"]["high"] < 0 and goals["last_layer-k1"]["met"] is True
    # 79.0-79.6, 81.0-80.7, 80.9-81.5: below on average, but the interval spans zero.
    assert goals["diff_pruning_nonadaptive"]["reference"] == "diff_pruning"
    assert goals["diff_pruning_nonadaptive"]["low"] < 0 < goals["diff_pruning_nonadaptive"]["high"]
    assert goals["diff_pruning_nonadaptive"]["met"] is False
    one_seed = goal_records(final[final["seed"] == 0])
    assert {r["method"]: r["met"] for r in one_seed}["last_layer-k1"] is None


def test_the_budget_sentence_names_per_task_lengths_and_no_unused_base_length():
    from bench.reproduce import budget_sentence
    from stream.engine.study import StudySpec

    selection = StudySpec.from_file(REPO / "bench" / "studies" / "reproduction_lr.toml")
    text = budget_sentence(selection.runs[0].config.to_dict())
    assert text.startswith("all training rows, each task's own length of batch 32, length 128, dev 500 rows")
    assert "2 epochs" not in text
    assert "(per task: cola: max_steps = 400; sst2: epochs = 1; mrpc: max_steps = 400;" in text
    committed = json.loads((COMMITTED / "study.json").read_text())["runs"][0]["config"]
    assert "2 epochs of batch 32" in budget_sentence(committed) and "per task" not in budget_sentence(committed)


def test_the_papers_ordering_is_checked_pair_by_pair():
    import pandas as pd

    from bench.reproduce import ordering_records

    averages = {"full": [80.0, 81.0], "adapters": [79.0, 80.5], "diff_pruning_unstructured": [79.5, 81.0],
                "last_layer-k1": [70.0, 71.0], "masking": [85.0, 86.0]}
    final = pd.DataFrame([{"method": m, "seed": seed, "order_id": "given", "budget": "default", "average": value}
                          for m, values in averages.items() for seed, value in enumerate(values)])
    records = ordering_records(final)
    assert [(r["higher"], r["lower"]) for r in records] == [
        ("full", "adapters"), ("adapters", "diff_pruning_unstructured"), ("diff_pruning_unstructured", "last_layer-k1")]
    assert [r["paper"] for r in records] == [0.2, 1.0, 11.2]
    assert [r["mean"] for r in records] == pytest.approx([0.75, -0.5, 9.75])
    assert [r["same_order"] for r in records] == [True, False, True]
