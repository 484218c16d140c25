"""Scores beside what guessing scores: each task's chance score and noise band, as tables and figures.

Every ledger row (schema 2) carries, for its evaluated task, ``chance_score`` (the score of always answering
the majority training label, or the mean label for a regression), ``noise_band`` (two standard errors of a
guessing predictor's score on that task's test rows) and ``test_rows`` (:mod:`stream.core.metrics`). A score
less than ``noise_band`` above ``chance_score`` cannot be told apart from guessing on that test set: such a
score is *within noise* of chance, and the tables and figures here mark it.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.tables import chance_table

CHANCE_COLUMNS = ("chance_score", "noise_band", "test_rows")


def _check_columns(table: pd.DataFrame) -> None:
    missing = [c for c in CHANCE_COLUMNS if c not in table.columns or table[c].isna().all()]
    if missing:
        raise ValueError(f"The ledger has no {', '.join(missing)} (rows written before ledger schema 2). "
                         "Re-run the stream with this version of taskstream to record each task's chance score.")


def chance_overview(table: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated task of a :func:`analysis.tables.load_ledger` table, in arrival order:
    ``task``, ``chance_score`` and ``noise_band`` (as :func:`analysis.tables.chance_table` reads them),
    ``test_rows`` and ``noise_ceiling`` (chance + noise band: a score must be above it to be told apart from
    guessing)."""
    _check_columns(table)
    order = list(dict.fromkeys(table.sort_values("step")["task"]))
    chance = chance_table(table)
    chance = chance.dropna(subset=["chance_score"])
    out = chance.reindex([t for t in order if t in chance.index]).reset_index()
    out["test_rows"] = out["task"].map(table.groupby("eval_task")["test_rows"].first()).astype(int)
    out["noise_ceiling"] = out["chance_score"] + out["noise_band"]
    return out


def final_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Each method's score on every task after the last arrival, beside that task's chance score.

    One row per (run, method, task) in arrival order, with ``score``, ``chance_score``, ``noise_band``,
    ``margin`` (score - chance score) and ``within_noise`` (the margin is below the noise band: the score
    cannot be told apart from guessing on this test set).
    """
    _check_columns(table)
    last = table[table["step"] == table.groupby(["run", "method"])["step"].transform("max")]
    order = list(dict.fromkeys(table.sort_values("step")["task"]))
    out = last[["run", "method", "eval_task", "score", *CHANCE_COLUMNS]].rename(columns={"eval_task": "task"})
    methods = list(dict.fromkeys(table["method"]))  # the run's order, so colours match the other figures
    out = out.assign(position=out["task"].map(order.index), method_position=out["method"].map(methods.index))
    out = out.sort_values(["run", "method_position", "position"], kind="stable")
    out["margin"] = out["score"] - out["chance_score"]
    out["within_noise"] = out["margin"] < out["noise_band"]
    return out.drop(columns=["position", "method_position"]).reset_index(drop=True)


def plot_task_scores(scores: pd.DataFrame, *, title: str = "Final score per task, against guessing") -> Figure:
    """One panel per task: each method's final score (a bar; hatched when within noise of chance), the
    task's chance score (dashed) and the band up to chance + noise band (grey), on a full 0-100 axis (from
    below 0 when a correlation or Matthews score is negative), so a short bar is not hidden by a cut axis.
    ``scores`` is a :func:`final_scores` table (the first run's rows are drawn when it holds several)."""
    scores = scores[scores["run"] == scores["run"].iloc[0]]
    tasks = list(dict.fromkeys(scores["task"]))
    methods = list(dict.fromkeys(scores["method"]))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    fig = Figure(figsize=(2.2 + 1.0 * len(methods) * len(tasks), 4.2), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False, sharey=True)[0]
    low = min(0.0, float(scores["score"].min()) - 5.0)
    for ax, task in zip(axes, tasks):
        rows = scores[scores["task"] == task].set_index("method").reindex(methods)
        chance, band = float(rows["chance_score"].iloc[0]), float(rows["noise_band"].iloc[0])
        # Drawn over the bars (translucent), so the floor stays visible across every bar.
        ax.axhspan(chance, chance + band, color="grey", alpha=0.35, linewidth=0, zorder=3)
        ax.axhline(chance, color="black", linestyle="--", linewidth=1, zorder=4)
        for x, (method, row) in enumerate(rows.iterrows()):
            ax.bar(x, row["score"], color=colors[method], hatch="//" if row["within_noise"] else None,
                   edgecolor="black" if row["within_noise"] else colors[method], linewidth=0.6)
            ax.annotate(f"{row['score']:.1f}", (x, max(row["score"], chance + band)), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=8)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task} ({int(rows['test_rows'].iloc[0])} test rows)\nchance {chance:.1f}, noise band "
                     f"{band:.1f}", fontsize=9)
        ax.set_ylim(low, 100)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("test score (0-100)")
    handles = [Patch(facecolor="white", edgecolor="black", hatch="//"), Patch(color="grey", alpha=0.4),
               ax.get_lines()[0]]
    fig.legend(handles, ["not above chance + noise band", "chance .. chance + noise band", "chance score"],
               loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_average_against_chance(curve_table: pd.DataFrame, *,
                                title: str = "Average score over the tasks seen, against guessing") -> Figure:
    """Each method's average score over the tasks seen (lines) and the average chance score of those tasks
    (dashed; :func:`analysis.tables.curves`' ``chance_average``), on a full 0-100 axis: the average changes as
    tasks of different difficulty arrive, and the chance line changes with it."""
    if "chance_average" not in curve_table or curve_table["chance_average"].isna().any():
        raise ValueError("The curves have no chance average for some step (ledger rows written before ledger "
                         "schema 2). Re-run the stream with this version of taskstream to record each task's "
                         "chance score.")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    chance = curve_table.groupby("tasks_seen")["chance_average"].mean()
    ax.plot(chance.index, chance.to_numpy(), color="black", linestyle="--", marker="_", label="chance (mean)")
    for index, (method, rows) in enumerate(curve_table.groupby("method", sort=False)):
        rows = rows.groupby("tasks_seen")["average_score"].mean()
        ax.plot(rows.index, rows.to_numpy(), marker="o", color=f"C{index % 10}", label=method)
    ax.set_xticks(list(chance.index))
    ax.set_ylim(min(0.0, float(curve_table["average_score"].min()) - 5.0), 100)
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("average test score over the tasks seen (0-100)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig
