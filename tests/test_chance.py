"""analysis.chance: scores beside each task's chance score, with the within-noise marks."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.chance import chance_overview, final_scores, plot_average_against_chance, plot_task_scores
from analysis.tables import curves

# Two methods, two arrivals: sst2 (chance 50.9, band 3.4), then stsb (chance 0, band 5.2).
CHANCE = {"sst2": (50.9, 3.4, 872), "stsb": (0.0, 5.2, 1500)}
SCORES = {  # (method, step, eval_task) -> score
    ("full", 1, "sst2"): 87.0, ("full", 2, "sst2"): 87.0, ("full", 2, "stsb"): 83.0,
    ("probe", 1, "sst2"): 53.0, ("probe", 2, "sst2"): 53.0, ("probe", 2, "stsb"): 6.0,
}


def ledger_table(with_chance: bool = True, methods: tuple[str, ...] = ("full", "probe")) -> pd.DataFrame:
    rows = []
    for (method, step, eval_task), score in sorted(SCORES.items(), key=lambda item: methods.index(item[0][0])):
        row = {"run": "r", "method": method, "step": step, "task": ("sst2", "stsb")[step - 1],
               "eval_task": eval_task, "score": score, "cumulative_bytes": 100 * step, "artifact_bytes": 100}
        if with_chance:
            row.update(zip(("chance_score", "noise_band", "test_rows"), CHANCE[eval_task]))
        rows.append(row)
    return pd.DataFrame(rows)


def test_chance_overview_one_row_per_task_in_arrival_order():
    table = chance_overview(ledger_table())
    assert table["task"].tolist() == ["sst2", "stsb"]
    assert table["test_rows"].tolist() == [872, 1500]
    assert table["noise_ceiling"].tolist() == pytest.approx([54.3, 5.2])


def test_final_scores_mark_what_is_within_noise():
    scores = final_scores(ledger_table()).set_index(["method", "task"])
    assert scores.loc[("full", "sst2"), "margin"] == pytest.approx(36.1)
    assert not scores.loc[("full", "stsb"), "within_noise"]
    assert scores.loc[("probe", "sst2"), "within_noise"]  # 2.1 above chance, band 3.4
    assert not scores.loc[("probe", "stsb"), "within_noise"]  # 6.0 above chance, band 5.2
    assert len(scores) == 4  # only the last step's rows
    assert list(dict.fromkeys(final_scores(ledger_table(methods=("probe", "full")))["method"])) == ["probe", "full"]


def test_the_average_chance_line_follows_the_tasks_seen():
    table = ledger_table()
    fig = plot_average_against_chance(curves(table))
    chance = next(line for line in fig.axes[0].get_lines() if line.get_label() == "chance (mean)")
    assert list(chance.get_xdata()) == [1, 2]
    assert list(chance.get_ydata()) == pytest.approx([50.9, 25.45])


def test_a_ledger_without_chance_scores_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="schema 2.*Re-run"):
        final_scores(ledger_table(with_chance=False))
    with pytest.raises(ValueError, match="schema 2.*Re-run"):
        plot_average_against_chance(curves(ledger_table(with_chance=False)))


def test_a_task_without_a_chance_score_is_left_out_of_the_overview():
    table = ledger_table()
    table.loc[table["eval_task"] == "stsb", ["chance_score", "noise_band", "test_rows"]] = float("nan")
    assert chance_overview(table)["task"].tolist() == ["sst2"]


def test_figures_draw_the_chance_line_and_band():
    table = ledger_table()
    fig = plot_task_scores(final_scores(table))
    first = fig.axes[0]
    assert any(math.isclose(line.get_ydata()[0], 50.9) for line in first.get_lines())
    assert first.get_ylim() == (0.0, 100.0)
    hatched = [patch for ax in fig.axes for patch in ax.patches if patch.get_hatch()]
    assert len(hatched) == 1  # probe on sst2
    fig = plot_average_against_chance(curves(table))
    assert fig.axes[0].get_ylim()[0] == 0.0
