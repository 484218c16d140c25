"""Figures from tidy tables: each function takes a table and returns a matplotlib Figure.

Uses the non-interactive Agg backend through ``matplotlib.figure.Figure`` directly, so plotting works on
machines without a display and never touches global pyplot state.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis.tables import human_bytes

_MARKERS = "osD^v<>pPX*h"


def _style(methods: list[str]) -> dict[str, dict]:
    return {m: {"marker": _MARKERS[i % len(_MARKERS)], "color": f"C{i % 10}"} for i, m in enumerate(methods)}


def _bytes_axis(ax, axis: str = "y") -> None:
    formatter = FuncFormatter(lambda v, _: human_bytes(v) if v > 0 else "0")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(formatter)


def plot_storage(curve_table: pd.DataFrame, *, title: str = "Cumulative storage as tasks arrive") -> Figure:
    """Cumulative bytes vs tasks seen, log scale, one line per method, the backbone as a reference line."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(curve_table["method"]))
    style = _style(methods)
    for method in methods:
        rows = curve_table[curve_table["method"] == method].sort_values("tasks_seen")
        ax.plot(rows["tasks_seen"], rows["cumulative_bytes"], label=method, **style[method])
    backbone = curve_table["backbone_bytes"].iloc[0]
    ax.axhline(backbone, color="grey", linestyle="--", linewidth=1)
    ax.annotate(f"backbone ({human_bytes(backbone)})", (1, backbone), textcoords="offset points",
                xytext=(2, 4), fontsize=8, color="grey")
    ax.set_yscale("log")
    _bytes_axis(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("cumulative storage (bytes on disk)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_average_score(curve_table: pd.DataFrame, *, title: str = "Average score over the tasks seen") -> Figure:
    """Average task score (0-100) over the tasks seen so far vs tasks seen, one line per method."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(curve_table["method"]))
    style = _style(methods)
    for method in methods:
        rows = curve_table[curve_table["method"] == method].sort_values("tasks_seen")
        ax.plot(rows["tasks_seen"], rows["average_score"], label=method, **style[method])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("average score over tasks seen")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_score_vs_storage(final: pd.DataFrame, *, title: str = "Final score vs total storage") -> Figure:
    """Each method's final average score against its total storage (log x): up and left is better."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(final["method"]))
    style = _style(methods)
    for method in methods:
        rows = final[final["method"] == method]
        ax.scatter(rows["total_bytes"], rows["average"], s=60, label=method, marker=style[method]["marker"],
                   color=style[method]["color"])
        for row in rows.itertuples():
            ax.annotate(method, (row.total_bytes, row.average), textcoords="offset points", xytext=(5, 5),
                        fontsize=8)
    ax.set_xscale("log")
    _bytes_axis(ax, "x")
    ax.set_xlabel("total storage after the last task (bytes on disk)")
    ax.set_ylabel("final average score")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save a figure as PNG (150 dpi) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
