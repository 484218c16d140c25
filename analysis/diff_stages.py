"""Diff pruning's training stages as its artifact sidecars record them, as tables and figures.

Diff pruning (:mod:`methods.diff_pruning`) writes into each artifact's ``meta["l0_stage"]``:

- ``expected_density_trace``: ``[[step, expected density(, scheduled density)], ...]`` during the L0 stage,
  where the expected density is sum_i P(z_i != 0) / N (what the L0 penalty pulls down), from step 0 on, and
  the scheduled density is what the density controller held it to (absent with a fixed penalty);
- ``projection``: what the magnitude projection saw: a histogram of log10 |diff| over the nonzero entries
  (``log10_range`` [low, high] split into ``len(counts)`` equal bins), the number of exact ``zeros``, the
  ``threshold`` (the smallest kept magnitude) and how many entries were ``kept``;

and ``meta["gated_params"]`` (N) and ``meta["l0_stage"]["density"]`` (the nonzero fraction before the
projection). Read from the files alone, like every other table here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.tables import DEFAULT_BUDGET, human_bytes


def _sidecars(table: pd.DataFrame) -> Iterator[tuple[dict, dict]]:
    """(step record, sidecar) for every artifact of the table whose sidecar holds an ``l0_stage``."""
    steps = table.drop_duplicates(["run", "method", "step"])
    for record in steps.to_dict("records"):
        path = (Path(record["run"]) / record["artifact_path"]).with_suffix(".json")
        if not path.exists():
            continue
        sidecar = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(sidecar.get("meta", {}).get("l0_stage"), dict):
            yield record, sidecar


def _key(record: dict) -> dict:
    return {"run": record["run"], "method": record["method"], "budget": record.get("budget", DEFAULT_BUDGET),
            "task": record["task"], "step": record["step"]}


def density_traces(table: pd.DataFrame) -> pd.DataFrame:
    """Expected density during the L0 stage: one row per (run, method, arriving task, L0 step).

    Columns: ``run``, ``method``, ``budget``, ``task``, ``step`` (the arrival), ``l0_step``,
    ``expected_density``, ``scheduled_density`` (the controller's schedule; NaN with a fixed penalty),
    ``target_density`` (the method's projection target, from its config), and the
    stage's outcome: ``best_step`` (the L0 step whose state model selection kept) and ``stage1_density``
    (that state's nonzero fraction under the evaluation gates). Artifacts of variants without gates
    (non-adaptive) have no trace and contribute nothing.
    """
    rows = []
    for record, sidecar in _sidecars(table):
        target = sidecar.get("config", {}).get("target_density", math.nan)
        stage = sidecar["meta"]["l0_stage"]
        for l0_step, density, *scheduled in stage.get("expected_density_trace", []):
            rows.append({**_key(record), "l0_step": int(l0_step), "expected_density": float(density),
                         "scheduled_density": float(scheduled[0]) if scheduled else math.nan,
                         "target_density": target, "best_step": int(stage["best_step"]),
                         "stage1_density": float(stage["density"])})
    columns = ["run", "method", "budget", "task", "step", "l0_step", "expected_density", "scheduled_density",
               "target_density", "best_step", "stage1_density"]
    return pd.DataFrame(rows, columns=columns)


def projection_histograms(table: pd.DataFrame) -> pd.DataFrame:
    """What each artifact's magnitude projection saw: one row per (run, method, arriving task).

    Columns: the key columns, ``gated`` (N), ``zeros`` (exact zeros of the diff), ``kept``, ``threshold``,
    ``stage1_density`` (nonzero fraction before projection), ``edges`` (bin edges of |diff|, not log10)
    and ``counts`` (entries per bin).
    """
    rows = []
    for record, sidecar in _sidecars(table):
        meta = sidecar["meta"]
        projection = meta["l0_stage"].get("projection")
        if not projection:
            continue
        low_high = projection["log10_range"]
        counts = np.asarray(projection["counts"], dtype=float)
        edges = np.logspace(low_high[0], low_high[1], counts.size + 1) if low_high else np.zeros(0)
        rows.append({**_key(record), "gated": int(meta["gated_params"]), "zeros": int(projection["zeros"]),
                     "kept": int(projection["kept"]), "threshold": float(projection["threshold"]),
                     "stage1_density": float(meta["l0_stage"]["density"]), "edges": edges, "counts": counts})
    columns = ["run", "method", "budget", "task", "step", "gated", "zeros", "kept", "threshold", "stage1_density",
               "edges", "counts"]
    return pd.DataFrame(rows, columns=columns)


def plot_density_traces(traces: pd.DataFrame, *,
                        title: str = "The L0 penalty at work: expected density during stage 1") -> Figure:
    """Expected density sum P(z != 0) / N against the L0-stage step, one line per (method, task), on a
    log scale; a cross at the state the stage kept (its best dev score) marks that state's actual nonzero
    fraction under the evaluation gates; each method's projection target is a dashed line."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for index, ((method, task), rows) in enumerate(traces.groupby(["method", "task"], sort=False)):
        color = f"C{index % 10}"
        line = rows.groupby("l0_step", sort=True)["expected_density"].mean()  # over runs
        ax.plot(line.index, line.to_numpy(), marker="o", markersize=3, color=color, label=f"{method} ({task})")
        kept = rows.drop_duplicates("run")
        ax.scatter(kept["best_step"], kept["stage1_density"], marker="X", s=70, color=color, edgecolors="black",
                   linewidths=0.5, zorder=3)
    for target in traces["target_density"].dropna().unique():
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"projection target {100 * target:g}%", (0, target), textcoords="offset points",
                    xytext=(2, 4), fontsize=8, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("L0-stage step")
    ax.set_ylabel("expected density  Σ P(z≠0) / N (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="X", linestyle="", color="grey", markeredgecolor="black", markersize=8))
    labels.append("kept state: nonzero fraction under the evaluation gates")
    ax.legend(handles, labels, fontsize=8)
    return fig


def plot_projection(histograms: pd.DataFrame, method: str, *, title: str | None = None) -> Figure:
    """One panel per arriving task of ``method``: the histogram of |diff| over the nonzero entries before
    the projection (log-log), the threshold (the k-th largest magnitude) as a vertical line, kept bins
    in colour and dropped ones in grey; the exact zeros, which a log axis cannot show, in the legend."""
    rows = histograms[histograms["method"] == method]
    if rows.empty:
        raise ValueError(f"plot_projection: no projection recorded for method {method!r}")
    rows = rows.drop_duplicates("task")  # the first run's, when several runs are in the table
    fig = Figure(figsize=(5.2 * len(rows) + 0.6, 4.2), layout="constrained")
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, row in zip(axes, rows.itertuples()):
        edges, counts = row.edges, row.counts
        kept_bin = edges[:-1] >= row.threshold
        straddles = (edges[:-1] < row.threshold) & (edges[1:] > row.threshold)
        colors = np.where(kept_bin, "C3", np.where(straddles, "C1", "lightgrey"))
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=colors, edgecolor="white",
               linewidth=0.3)
        ax.axvline(row.threshold, color="black", linewidth=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        nonzero = row.gated - row.zeros
        ax.set_title(f"{row.task}: {nonzero:,} nonzero of {row.gated:,} ({100 * nonzero / row.gated:.1f}%)",
                     fontsize=9)
        ax.set_xlabel("|diff| after stage 1 (log scale)")
        ax.set_ylabel("entries per bin (log scale)")
        ax.grid(True, which="major", alpha=0.3)
        handles = [Patch(color="C3"), Patch(color="C1"), Patch(color="lightgrey"), Line2D([], [], color="black")]
        labels = [f"kept: the {row.kept:,} largest ({100 * row.kept / row.gated:.2g}%)", "bin holding the threshold",
                  f"dropped (and {row.zeros:,} exact zeros, {100 * row.zeros / row.gated:.0f}%)",
                  f"threshold |diff| = {row.threshold:.2g}"]
        ax.legend(handles, labels, fontsize=7, loc="upper left")
    fig.suptitle(title or f"{method}: the magnitude projection keeps one global top-k of |diff|", fontsize=10)
    return fig


def stage_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per diff-pruning artifact, stage by stage: the dev score after stage 1 (the L0 stage's best
    state) and after stage 3 (fixed-mask finetuning), the test score of the model rebuilt from the file,
    the density before and after the projection, and the file's size against its lower bound."""
    rows = []
    for record, sidecar in _sidecars(table):
        meta, stage = sidecar["meta"], sidecar["meta"]["l0_stage"]
        own = table[(table["run"] == record["run"]) & (table["method"] == record["method"])
                    & (table["step"] == record["step"]) & (table["eval_task"] == record["task"])]
        bound = record.get("lower_bound_bytes")
        rows.append({"method": record["method"], "task": record["task"],
                     "stage-1 dev": stage["best_dev_score"],
                     "stage-3 dev": (meta.get("finetune_stage") or {}).get("best_dev_score", math.nan),
                     "test": float(own["score"].iloc[0]) if len(own) else math.nan,
                     "stage-1 expected density": stage.get("expected_density", math.nan),
                     "stage-1 density": stage["density"], "closed tensors": len(stage.get("closed_tensors", [])),
                     "kept nonzeros": meta["nonzeros"], "density": meta["density"],
                     "file": human_bytes(record["artifact_bytes"]),
                     "file / bound": record["artifact_bytes"] / bound if bound else math.nan})
    return pd.DataFrame(rows)
