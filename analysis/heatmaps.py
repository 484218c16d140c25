"""Heatmap figures: accuracy matrices R[t, i] with backward transfer and forgetting, and where task
pieces land in the backbone (see :mod:`analysis.placement`). Each function takes tables, returns a Figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from analysis.placement import KINDS, layer_order
from analysis.tables import DEFAULT_BUDGET, mean_position_matrix, transfer_table


def evolving_configurations(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, budget) pairs whose shared state changes across tasks (``Sharing.EVOLVING``)."""
    rows = table[table["sharing"] == "evolving"]
    if "budget" not in rows:
        rows = rows.assign(budget=DEFAULT_BUDGET)
    return list(dict.fromkeys(zip(rows["method"], rows["budget"])))


def _annotate(ax, values: np.ndarray, fmt, norm_values: np.ndarray) -> None:
    """Write each finite cell's value, white on dark cells and black on light ones."""
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(col, row, fmt(value), ha="center", va="center", fontsize=8,
                    color="white" if norm_values[row, col] < 0.55 else "black")


def _pm(values: pd.Series) -> str:
    mean, sd = values.mean(), values.std(ddof=1)
    return f"{mean:+.1f}" + ("" if math.isnan(sd) else f" ± {sd:.1f}")


def plot_accuracy_matrices(table: pd.DataFrame, configurations: list[tuple[str, str]] | None = None, *,
                           title: str = "Accuracy matrix R[t, i]: score on the i-th task after t arrivals") -> Figure:
    """One heatmap per configuration of R[t, i] by arrival position, averaged over its runs, titled with
    backward transfer and forgetting (mean ± sd over runs). Default: the evolving configurations.

    When all of a configuration's runs share one task order, the axes name the tasks.
    """
    if "budget" not in table:
        table = table.assign(budget=DEFAULT_BUDGET)
    configurations = configurations if configurations is not None else evolving_configurations(table)
    if not configurations:
        raise ValueError("plot_accuracy_matrices: no configurations to plot (no evolving method in the table; "
                         "pass configurations= to plot others)")
    transfer = transfer_table(table)
    matrices = {key: mean_position_matrix(table, *key) for key in configurations}
    low = min(np.nanmin(m.to_numpy()) for m in matrices.values())
    high = max(np.nanmax(m.to_numpy()) for m in matrices.values())
    columns = min(3, len(configurations))
    rows_count = math.ceil(len(configurations) / columns)
    fig = Figure(figsize=(4.2 * columns + 1.0, 3.9 * rows_count + 0.4), layout="constrained")
    axes = fig.subplots(rows_count, columns, squeeze=False)
    cmap = colormaps["viridis"].with_extremes(bad="#f2f2f2")
    image = None
    for ax, key in zip(axes.flat, configurations):
        matrix = matrices[key].to_numpy(dtype=float)
        image = ax.imshow(matrix, cmap=cmap, vmin=low, vmax=high)
        _annotate(ax, matrix, lambda v: f"{v:.1f}", (matrix - low) / max(high - low, 1e-9))
        runs = table[(table["method"] == key[0]) & (table["budget"] == key[1])]
        steps = range(1, matrix.shape[0] + 1)
        order_names = runs.drop_duplicates(["run", "step"]).sort_values("step")
        single_order = order_names.groupby("step")["task"].nunique().max() == 1
        names = list(order_names.drop_duplicates("step")["task"]) if single_order else [f"#{i}" for i in steps]
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_yticks(range(len(names)), [f"after {t}" for t in steps], fontsize=8)
        ax.set_xlabel("evaluated task" + ("" if single_order else " (arrival position)"), fontsize=8)
        stats = transfer[(transfer["method"] == key[0]) & (transfer["budget"] == key[1])]
        label = key[0] if key[1] == DEFAULT_BUDGET else f"{key[0]} [{key[1]}]"
        ax.set_title(f"{label} (n={runs['run'].nunique()})\nBWT {_pm(stats['backward_transfer'])}, "
                     f"forgetting {_pm(stats['forgetting'])}", fontsize=9)
    for ax in list(axes.flat)[len(configurations):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="score")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_placement(summary: pd.DataFrame, method: str, budget: str | None = None, *,
                   title: str | None = None, vmax: float | None = None) -> Figure:
    """Where one configuration's task pieces land: per task, the fraction of each (layer, kind of weight)
    changed, from :func:`analysis.placement.placement_summary`. Grey cells: not covered by the method.

    ``vmax`` (in percent) fixes the top of the colour scale, so that figures of several configurations
    share one scale and their colours compare; default: this configuration's largest cell."""
    rows = summary[summary["method"] == method]
    if budget is not None:
        rows = rows[rows["budget"] == budget]
    if rows.empty:
        raise ValueError(f"plot_placement: no placement recorded for method {method!r}")
    tasks = list(dict.fromkeys(rows["task"]))
    layers = layer_order(rows["layer"])
    kinds = [k for k in KINDS if k in set(rows["kind"])] + sorted(set(rows["kind"]) - set(KINDS))
    high = vmax if vmax is not None else 100.0 * float(rows["fraction"].max()) or 1.0
    columns = min(3, len(tasks))
    rows_count = math.ceil(len(tasks) / columns)
    fig = Figure(figsize=(0.5 * len(kinds) * columns + 1.8, 0.42 * len(layers) * rows_count + 1.4),
                 layout="constrained")
    axes = fig.subplots(rows_count, columns, squeeze=False)
    cmap = colormaps["magma_r"].with_extremes(bad="#e6e6e6")
    image = None
    for ax, task in zip(axes.flat, tasks):
        cells = rows[rows["task"] == task]
        percent = 100.0 * (cells.pivot_table(index="layer", columns="kind", values="fraction", aggfunc="mean")
                           .reindex(index=layers, columns=kinds).to_numpy(dtype=float))
        image = ax.imshow(percent, cmap=cmap, vmin=0.0, vmax=high, aspect="auto")
        _annotate(ax, percent, lambda v: f"{v:.2g}", 1.0 - percent / high)
        overall = cells["changed"].sum() / cells["total"].sum()
        ax.set_title(f"{task}: {100 * overall:.2g}% of covered weights", fontsize=9)
        ax.set_xticks(range(len(kinds)), kinds, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [f"block {l}" if l.isdigit() else l for l in layers], fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="% of the weights changed")
    label = method if budget in (None, DEFAULT_BUDGET) else f"{method} [{budget}]"
    fig.suptitle(title or f"Where {label}'s task pieces land: % of each kind of weight changed, per layer",
                 fontsize=10)
    return fig
