"""Figures from tidy tables: each function takes a table and returns a matplotlib Figure.

Uses the non-interactive Agg backend through ``matplotlib.figure.Figure`` directly, so plotting works on
machines without a display and never touches global pyplot state.

Single runs: :func:`plot_storage`, :func:`plot_average_score`, :func:`plot_score_vs_storage`. Across runs
(seeds and task orders as replicates of each (method, budget) configuration): :func:`plot_score_bands`,
:func:`plot_storage_bands`, :func:`plot_pareto`, :func:`plot_order_sensitivity`. Storage extrapolated to many
tasks (:mod:`analysis.scaling`): :func:`plot_storage_scaling`. Every configuration keeps
one look in every figure: a colour per method, a shade and marker per variant of its own setting, a
line style per budget (:func:`configuration_styles`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from analysis.scaling import extrapolate_storage, multiple, storage_crossings
from analysis.tables import CONFIGURATION, DEFAULT_BUDGET, aggregate, human_bytes, pareto_mask

FIGURE_DPI = 150
_MARKERS = "osD^v<>pPX*h"
_LINESTYLES = ["-", "--", ":", "-."]


def _style(methods: list[str]) -> dict[str, dict]:
    return {m: {"marker": _MARKERS[i % len(_MARKERS)], "color": f"C{i % 10}"} for i, m in enumerate(methods)}


def _bytes_axis(ax, axis: str = "y") -> None:
    """Human byte labels; on a log axis at powers of two (64 MiB, 128 MiB: round in binary units), so
    even a narrow range gets a few labelled ticks."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    if (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log":
        low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
        octaves = math.log2(high / low) if low > 0 and high > low else 1.0
        # Narrow ranges get 1x and 1.5x ticks per octave; wide ones a power of two every few octaves (at
        # most about 4 labels across, 6 up), so the labels never run into each other (call this after
        # setting the axis limits).
        if octaves <= 2.5:
            target.set_major_locator(LogLocator(base=2, subs=(1.0, 1.5), numticks=10))
        else:
            step = max(1, math.ceil(octaves / (6 if axis == "y" else 4)))
            target.set_major_locator(LogLocator(base=2 ** step, subs=(1.0,), numticks=20))
        target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v) if v > 0 else "0"))


_CHANCE_STYLE = {"color": "dimgrey", "linestyle": "-.", "linewidth": 1.2}


def _chance_handle(level: float) -> tuple[Line2D, str]:
    """A legend entry for the chance line, saying "n/a" when the ledger does not record chance scores."""
    text = "n/a, the ledger predates chance scores" if math.isnan(level) else f"{level:.1f}"
    return Line2D([], [], **_CHANCE_STYLE), f"chance, always the majority class: {text}"


def _chance_level(ax, level: float) -> tuple[Line2D, str]:
    """A horizontal line at the average chance score ``level`` (none when nan); returns its legend entry."""
    if not math.isnan(level):
        ax.axhline(level, zorder=0, **_CHANCE_STYLE)
    return _chance_handle(level)


def _chance_curve(ax, curve_table: pd.DataFrame) -> tuple[Line2D, str]:
    """The average chance score over the tasks seen after each arrival (mean over runs), as a line; its
    legend entry says the level after the last arrival."""
    chance = curve_table.groupby("tasks_seen")["chance_average"].agg(
        lambda v: v.mean() if v.notna().all() else np.nan) if "chance_average" in curve_table else pd.Series()
    if chance.empty or chance.isna().any():
        return _chance_handle(float("nan"))
    ax.plot(chance.index, chance.to_numpy(), zorder=0, **_CHANCE_STYLE)
    return _chance_handle(float(chance.iloc[-1]))


def _final_chance(final: pd.DataFrame) -> float:
    """The mean ``chance_average`` of a final table's rows; nan when any row lacks it."""
    chance = final["chance_average"] if "chance_average" in final else pd.Series(np.nan, index=final.index)
    return float(chance.mean()) if chance.notna().all() and len(chance) else float("nan")


def _legend_with(ax, extra: list[tuple[Line2D, str]], **kwargs) -> None:
    """The axes' legend plus ``extra`` entries, outside the axes below them, so it never covers a line,
    a point or the chance line."""
    handles, labels = ax.get_legend_handles_labels()
    ax.figure.legend(handles + [h for h, _ in extra], labels + [t for _, t in extra],
                     **{"loc": "outside lower center", "ncols": 2, **kwargs})


def _per_task_bars(ax, methods: list[str], sizes: list[float], colors: list) -> None:
    """Horizontal bars of each method's bytes per task file (log x), the value written right of each bar's
    end, so methods whose cumulative storage is nearly equal (the backbone dominates) stay apart."""
    positions = np.arange(len(methods))
    ax.barh(positions, sizes, color=colors, height=0.6)
    for y, size in zip(positions, sizes):
        ax.annotate(human_bytes(size), (size, y), textcoords="offset points", xytext=(4, 0), va="center",
                    fontsize=7, annotation_clip=False)
    ax.set_yticks(positions, methods, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    low, high = min(sizes), max(sizes)
    ax.set_xlim(low / 3, high * 5)  # room for the value labels right of the longest bar
    _bytes_axis(ax, "x")
    ax.set_xlabel("bytes per task file (log scale)")
    ax.set_title("each task's file", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(True, axis="x", which="major", alpha=0.3)


def plot_storage(curve_table: pd.DataFrame, *, title: str = "Cumulative storage as tasks arrive") -> Figure:
    """Left: cumulative bytes vs tasks seen (log scale), one line per method, the backbone as a dashed
    reference line named in the legend. Right: each method's bytes per task file, which separates
    shared-backbone methods whose cumulative lines nearly coincide."""
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax, bars = fig.subplots(1, 2, width_ratios=[1.6, 1])
    methods = list(dict.fromkeys(curve_table["method"]))
    style = _style(methods)
    for method in methods:
        rows = curve_table[curve_table["method"] == method].sort_values("tasks_seen")
        ax.plot(rows["tasks_seen"], rows["cumulative_bytes"], label=method, **style[method])
    backbone = curve_table["backbone_bytes"].iloc[0]
    ax.axhline(backbone, color="grey", linestyle="--", linewidth=1, label=f"backbone ({human_bytes(backbone)})")
    ax.set_yscale("log")
    _bytes_axis(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("cumulative storage (bytes on disk, log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=3)
    sizes = [float(curve_table.loc[curve_table["method"] == m, "artifact_bytes"].mean()) for m in methods]
    _per_task_bars(bars, methods, sizes, [style[m]["color"] for m in methods])
    return fig


def plot_average_score(curve_table: pd.DataFrame, *, title: str = "Average score over the tasks seen") -> Figure:
    """Average task score (0-100) over the tasks seen so far vs tasks seen, one line per method, and what
    always answering the majority class averages on the same tasks (dash-dot; "n/a" in the legend when
    the ledger does not record it)."""
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(curve_table["method"]))
    style = _style(methods)
    for method in methods:
        rows = curve_table[curve_table["method"] == method].sort_values("tasks_seen")
        ax.plot(rows["tasks_seen"], rows["average_score"], label=method, **style[method])
    chance = _chance_curve(ax, curve_table)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("average score over tasks seen")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend_with(ax, [chance], fontsize=8)
    return fig


def plot_score_vs_storage(final: pd.DataFrame, *, title: str = "Final score vs storage") -> Figure:
    """Each method's final average score against its total storage (left) and its bytes per task file
    (right; both log x): up and left is better. The right panel tells apart shared-backbone methods whose
    totals the backbone makes nearly equal. The dash-dot line is the average chance score."""
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    methods = list(dict.fromkeys(final["method"]))
    style = _style(methods)
    level = _final_chance(final)
    for ax, column, label in ((axes[0], "total_bytes", "total storage after the last task"),
                              (axes[1], "bytes_per_task", "bytes per task file")):
        for method in methods:
            rows = final[final["method"] == method]
            ax.scatter(rows[column], rows["average"], s=60, label=method, marker=style[method]["marker"],
                       color=style[method]["color"], zorder=3)
        entry = _chance_level(ax, level)
        ax.set_xscale("log")
        low, high = ax.get_xlim()
        ax.set_xlim(low / 1.5, high * 1.5)
        _bytes_axis(ax, "x")
        ax.set_xlabel(f"{label} (bytes on disk, log scale)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("final average score")
    axes[0].set_title("total", fontsize=9)
    axes[1].set_title("per task file (apart from the shared backbone)", fontsize=9)
    handles, labels = axes[1].get_legend_handles_labels()
    # Outside the axes, so it never covers a point or the chance line.
    fig.legend([*handles, entry[0]], [*labels, entry[1]], fontsize=8, loc="outside lower center",
               ncols=min(3, len(methods) + 1))
    fig.suptitle(title, fontsize=10)
    return fig


def _shade(color: str, amount: float) -> tuple[float, float, float]:
    """Mix ``color`` with white (amount < 0) or black (amount > 0)."""
    rgb = np.array(to_rgb(color))
    target = np.zeros(3) if amount > 0 else np.ones(3)
    return tuple(rgb + (target - rgb) * abs(amount))


def _with_configuration(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``budget`` and ``method_name`` present (single runs may lack them)."""
    frame = frame.copy()
    if "budget" not in frame:
        frame["budget"] = DEFAULT_BUDGET
    if "method_name" not in frame:
        frame["method_name"] = frame["method"]
    if "setting" not in frame:
        frame["setting"] = ""
    return frame


def configuration_styles(frame: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """Plot style per (method, budget): ``color``, ``marker``, ``linestyle``, ``label``, ``family``.

    Colour by method name (``last_layer``), shade and marker by variant (``k=1`` lighter than ``k=2``),
    line style by budget; the label adds the budget when there are several.
    """
    frame = _with_configuration(frame)
    keys = frame[["method", "budget", "method_name"]].drop_duplicates()
    families = list(dict.fromkeys(keys["method_name"]))
    budgets = list(dict.fromkeys(keys["budget"]))
    styles = {}
    for family_index, family in enumerate(families):
        variants = list(dict.fromkeys(keys.loc[keys["method_name"] == family, "method"]))
        shades = np.linspace(-0.35, 0.3, len(variants)) if len(variants) > 1 else [0.0]
        for variant_index, (variant, shade) in enumerate(zip(variants, shades)):
            for budget in keys.loc[keys["method"] == variant, "budget"]:
                label = variant if len(budgets) == 1 else f"{variant} [{budget}]"
                styles[(variant, budget)] = {
                    "color": _shade(f"C{family_index % 10}", float(shade)),
                    "marker": _MARKERS[variant_index % len(_MARKERS)],
                    "linestyle": _LINESTYLES[budgets.index(budget) % len(_LINESTYLES)],
                    "label": label, "family": family, "family_color": f"C{family_index % 10}"}
    return styles


def _rows(frame: pd.DataFrame, key: tuple[str, str]) -> pd.DataFrame:
    return frame[(frame["method"] == key[0]) & (frame["budget"] == key[1])]


def _dodge(count: int, width: float = 0.18) -> np.ndarray:
    """Horizontal offsets that spread ``count`` series' points around an integer x."""
    return np.linspace(-width, width, count) if count > 1 else np.zeros(1)


def _spread(values: np.ndarray, gap: float) -> np.ndarray:
    """Label positions near ``values`` with neighbours at least ``gap`` apart, keeping their order: values
    closer than ``gap`` form a group spaced ``gap`` apart and centred on the group's mean, groups merging
    until none overlap (so a label moves as little as its neighbours allow, up or down)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    groups = [[i] for i in order]  # runs of indices into values, in increasing order

    def layout(group: list[int]) -> np.ndarray:
        return values[group].mean() + gap * (np.arange(len(group)) - (len(group) - 1) / 2)

    merged = True
    while merged:
        merged = False
        for k in range(len(groups) - 1):
            if layout(groups[k + 1])[0] - layout(groups[k])[-1] < gap - 1e-12:
                groups[k:k + 2] = [groups[k] + groups[k + 1]]
                merged = True
                break
    placed = np.empty_like(values)
    for group in groups:
        placed[group] = layout(group)
    return placed


def _label_ends(ax, ends: list[tuple[float, float, str, str]], reference: float, fontsize: int) -> list:
    """Label line ends ``(x, y, text, colour)`` on a log y axis just right of each end, moved apart where
    they would overlap, and widen the y limits to keep every label inside the axes; returns the labels."""
    logs = np.log10([end[1] for end in ends] + [reference])
    placed = _spread(logs[:-1], 0.035 * (logs.max() - logs.min()))
    labels = [ax.annotate(text, (x, 10 ** y), textcoords="offset points", xytext=(5, -3), fontsize=fontsize,
                          color=color, annotation_clip=False)
              for y, (x, _, text, color) in zip(placed, ends)]
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, 10 ** (placed.min() - 0.01)), max(high, 10 ** (placed.max() + 0.01)))
    return labels


def _room_right(ax, labels: list, x_end: float) -> None:
    """Widen a linear x axis so labels drawn right of ``x_end`` (a fixed offset in points from it) end
    inside the axes, clear of a secondary axis's tick labels on the right."""
    fig = ax.get_figure()
    fig.draw_without_rendering()  # lays the figure out, so the extents below are the drawn ones
    axes_width = ax.get_window_extent().width
    widest = max(label.get_window_extent().width for label in labels) + 10 * fig.dpi / 72
    share = min(0.6, widest / axes_width)  # the axes' share the labels need, beyond the line ends
    left = ax.get_xlim()[0]
    ax.set_xlim(left, (x_end - left * share) / (1 - share))


def plot_score_bands(curve_table: pd.DataFrame, *,
                     title: str = "Average score over the tasks seen (mean ± sd over seeds and orders)") -> Figure:
    """Average score vs tasks seen: the mean over each configuration's runs, a ±1 sd band, and every run
    as a faint point (runs of one configuration are seeds and task orders)."""
    curve_table = _with_configuration(curve_table)
    stats = aggregate(curve_table, ["average_score"], by=[*CONFIGURATION, "tasks_seen"])
    styles = configuration_styles(curve_table)
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    for offset, (key, style) in zip(_dodge(len(styles)), styles.items()):
        rows = _rows(stats, key).sort_values("tasks_seen")
        mean, sd = rows["average_score"].to_numpy(), rows["average_score_std"].fillna(0).to_numpy()
        ax.fill_between(rows["tasks_seen"], mean - sd, mean + sd, color=style["color"], alpha=0.15, linewidth=0)
        ax.plot(rows["tasks_seen"], mean, color=style["color"], marker=style["marker"],
                linestyle=style["linestyle"], label=f"{style['label']} (n={int(rows['n'].max())})")
        points = _rows(curve_table, key)
        ax.scatter(points["tasks_seen"] + offset, points["average_score"], s=12, color=style["color"],
                   marker=style["marker"], alpha=0.45, linewidths=0)
    chance = _chance_curve(ax, curve_table)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("average score over the tasks seen")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend_with(ax, [chance], fontsize=8)
    return fig


def _backbone_axis(ax, backbone: float, axis: str) -> None:
    """A second axis in multiples of the backbone's size (the papers' "x backbone" / total params)."""
    functions = (lambda b: np.asarray(b, dtype=float) / backbone, lambda m: np.asarray(m, dtype=float) * backbone)
    if axis == "y":
        second = ax.secondary_yaxis("right", functions=functions)
        second.set_ylabel("× backbone size")
        target = second.yaxis
    else:
        second = ax.secondary_xaxis("top", functions=functions)
        second.set_xlabel("× backbone size", fontsize=9)
        target = second.xaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))


def plot_storage_bands(curve_table: pd.DataFrame, *,
                       title: str = "Cumulative storage as tasks arrive (mean over seeds and orders)") -> Figure:
    """Left: cumulative bytes vs tasks seen (log scale) per configuration, the backbone's size as a
    reference line, and the multiple of the backbone on the right axis. Right: each configuration's mean
    bytes per task file, which separates shared-backbone methods whose cumulative lines nearly coincide."""
    curve_table = _with_configuration(curve_table)
    stats = aggregate(curve_table, ["cumulative_bytes"], by=[*CONFIGURATION, "tasks_seen"])
    styles = configuration_styles(curve_table)
    backbone = float(curve_table["backbone_bytes"].iloc[0])
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    ax, bars = fig.subplots(1, 2, width_ratios=[1.5, 1])
    ends = []  # (tasks seen, bytes, label, colour) of each line's last point, labelled with its multiple
    for key, style in styles.items():
        rows = _rows(stats, key).sort_values("tasks_seen")
        mean, sd = rows["cumulative_bytes"].to_numpy(), rows["cumulative_bytes_std"].fillna(0).to_numpy()
        ax.fill_between(rows["tasks_seen"], mean - sd, mean + sd, color=style["color"], alpha=0.15, linewidth=0)
        ax.plot(rows["tasks_seen"], mean, color=style["color"], marker=style["marker"],
                linestyle=style["linestyle"], label=style["label"])
        ends.append((rows["tasks_seen"].iloc[-1], mean[-1], style["label"], style["color"]))
    # Only across the data, so the end labels to the right of the lines never sit on it.
    seen = curve_table["tasks_seen"]
    ax.plot([seen.min(), seen.max()], [backbone, backbone], color="grey", linestyle="--", linewidth=1,
            label=f"backbone ({human_bytes(backbone)})")
    ax.set_yscale("log")
    # Each end label names its line: lines of the shared-backbone methods end close together.
    labels = _label_ends(ax, [(x, value, f"{label} {value / backbone:.2f}×", color)
                              for x, value, label, color in ends], backbone, 7)
    _bytes_axis(ax)
    _backbone_axis(ax, backbone, "y")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _room_right(ax, labels, max(x for x, *_ in ends))
    ax.set_xticks([t for t in ax.get_xticks() if seen.min() <= t <= seen.max()])  # none under the labels
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("cumulative storage (bytes on disk, log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend_with(ax, [], fontsize=8, ncols=3)
    sizes = [float(_rows(curve_table, key)["artifact_bytes"].mean()) for key in styles]
    _per_task_bars(bars, [style["label"] for style in styles.values()], sizes,
                   [style["color"] for style in styles.values()])
    return fig


def _swept_settings(stats: pd.DataFrame) -> dict[tuple[str, str], str]:
    """A short label per configuration: the options that vary between the variants of its method
    (``k=2`` rather than ``head_learning_rate=0.001,k=2``); the method label for a method run once."""
    out = {}
    for _, rows in stats.groupby(["method_name", "budget"], sort=False):
        options = [dict(item.split("=", 1) for item in setting.split(",") if "=" in item) for setting in rows["setting"]]
        varying = sorted(k for k in set().union(*options) if len({o.get(k) for o in options}) > 1)
        for (method, budget), option in zip(zip(rows["method"], rows["budget"]), options):
            out[(method, budget)] = ",".join(f"{k}={option.get(k)}" for k in varying) or method
    return out


def plot_pareto(final: pd.DataFrame, *, title: str = "Final average score vs total storage") -> Figure:
    """Each configuration's final average score (mean ± sd) against its total storage (log x).

    Variants of one method (its own setting swept: ``k``, density, adapter size) are joined by a line in
    order of storage; the Pareto front (no other configuration is both smaller and better) is the dotted
    staircase, its points ringed. Faint points are the individual runs. A right panel puts the same scores
    against bytes per task file, which tells apart shared-backbone methods whose totals the backbone makes
    nearly equal. The dash-dot line is the average chance score.
    """
    final = _with_configuration(final)
    stats = aggregate(final, ["average", "total_bytes", "bytes_per_task"])
    styles = configuration_styles(final)
    fig = Figure(figsize=(11.5, 5.2), layout="constrained")
    ax, per_task = fig.subplots(1, 2, sharey=True, width_ratios=[1.5, 1])
    short = _swept_settings(stats)
    totals = stats["total_bytes"].to_numpy(dtype=float)
    crowded = {(m, b): int(np.sum(np.abs(np.log(totals / total)) < np.log(1.1))) > 1
               for m, b, total in zip(stats["method"], stats["budget"], totals)}
    first_of_family = set()
    for (family, budget), rows in stats.groupby(["method_name", "budget"], sort=False):
        if len(rows) > 1:
            rows = rows.sort_values("total_bytes")
            first_of_family.add((rows["method"].iloc[0], budget))
            style = styles[(rows["method"].iloc[0], budget)]
            ax.plot(rows["total_bytes"], rows["average"], color=style["family_color"], alpha=0.5,
                    linewidth=1.3, linestyle=style["linestyle"], zorder=1)
    for key, style in styles.items():
        row = _rows(stats, key).iloc[0]
        ax.errorbar(row["total_bytes"], row["average"], yerr=0 if np.isnan(row["average_std"]) else row["average_std"],
                    fmt=style["marker"], color=style["color"], markersize=7, capsize=3, zorder=3,
                    label=f"{style['label']} (n={int(row['n'])})")
        points = _rows(final, key)
        ax.scatter(points["total_bytes"], points["average"], s=12, color=style["color"], alpha=0.4, linewidths=0,
                   zorder=2)
        # The smallest variant of a swept method is labelled on its left, the others on their right,
        # bottom-aligned above the point: clear of the front's horizontal steps, which run at point height.
        # Points whose totals nearly coincide (the backbone dominates) are labelled only in the per-task
        # panel, where they stand apart.
        left = key in first_of_family
        if not crowded.get(key, False):
            ax.annotate(short[key], (row["total_bytes"], row["average"]), textcoords="offset points",
                        xytext=(-8 if left else 8, 5), ha="right" if left else "left", va="bottom", fontsize=8,
                        color=style["color"])
        per_task.errorbar(row["bytes_per_task"], row["average"],
                          yerr=0 if np.isnan(row["average_std"]) else row["average_std"], fmt=style["marker"],
                          color=style["color"], markersize=7, capsize=3, zorder=3)
        per_task.annotate(short[key], (row["bytes_per_task"], row["average"]), textcoords="offset points",
                          xytext=(6, 3), ha="left", va="bottom", fontsize=7, color=style["color"])
    front = stats[pareto_mask(stats["total_bytes"], stats["average"])].sort_values("total_bytes")
    ax.step(front["total_bytes"], front["average"], where="post", color="black", linestyle=":", linewidth=1.2,
            zorder=0)
    ax.scatter(front["total_bytes"], front["average"], s=230, facecolors="none", edgecolors="black",
               linewidths=1.0, zorder=4)
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.set_xlim(low / 1.3, high * 1.3)
    _bytes_axis(ax, "x")
    if "backbone_bytes" in final:
        _backbone_axis(ax, float(final["backbone_bytes"].iloc[0]), "x")
    low, high = ax.get_xlim()
    ax.set_xlim(low / 1.3, high * 1.3)
    entry = _chance_level(ax, _final_chance(final))
    _chance_level(per_task, _final_chance(final))
    per_task.set_xscale("log")
    low, high = per_task.get_xlim()
    per_task.set_xlim(low / 1.5, high * 1.5)
    _bytes_axis(per_task, "x")
    per_task.set_xlabel("bytes per task file (log scale)")
    per_task.set_title("per task file (apart from the shared backbone)", fontsize=9)
    per_task.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("total storage after the last task (bytes on disk, log scale)")
    ax.set_ylabel("final average score (mean ± sd)")
    fig.suptitle(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linestyle=":", marker="o", markerfacecolor="none", markersize=10))
    labels.append("Pareto front")
    fig.legend([*handles, entry[0]], [*labels, entry[1]], fontsize=8, loc="outside lower center", ncols=3)
    return fig


def plot_order_sensitivity(final: pd.DataFrame, *,
                           title: str = "Final average score by task order") -> Figure:
    """Per configuration, the final average score of each task order (mean over its seeds: large marker,
    joined across orders by a grey line; seeds: small dots) and the spread between the orders' means
    (the number above): how much the order alone moves the result."""
    final = _with_configuration(final)
    styles = configuration_styles(final)
    orders = list(dict.fromkeys(final["order"]))
    offsets = _dodge(len(orders), 0.25)
    fig = Figure(figsize=(max(6.0, 1.05 * len(styles) + 2.0), 5.4), layout="constrained")
    ax = fig.add_subplot()
    for x, (key, style) in enumerate(styles.items()):
        rows = _rows(final, key)
        means = rows.groupby("order", sort=False)["average"].mean().reindex(orders)
        if means.notna().sum() > 1:
            present = means.notna().to_numpy()
            ax.plot(x + offsets[present], means[present], color="grey", linewidth=1, alpha=0.7, zorder=1)
            ax.annotate(f"spread {means.max() - means.min():.1f}", (x, means.max()), textcoords="offset points",
                        xytext=(0, 9), ha="center", fontsize=7, color="dimgrey")
        for j, order in enumerate(orders):
            seeds = rows[rows["order"] == order]
            if seeds.empty:
                continue
            ax.scatter(np.full(len(seeds), x + offsets[j]), seeds["average"], s=10, color=style["color"],
                       alpha=0.5, linewidths=0)
            ax.scatter([x + offsets[j]], [seeds["average"].mean()], s=55, color=style["color"],
                       marker=_MARKERS[j % len(_MARKERS)], edgecolors="black", linewidths=0.5, zorder=3)
    ax.set_xticks(range(len(styles)), [style["label"] for style in styles.values()], rotation=15, ha="right",
                  fontsize=8)
    entry = _chance_level(ax, _final_chance(final))
    handles = [Line2D([], [], linestyle="", marker=_MARKERS[j % len(_MARKERS)], color="grey",
                      markeredgecolor="black", markersize=7) for j in range(len(orders))]
    fig.legend([*handles, entry[0]], [*orders, entry[1]], title="task order", fontsize=7, title_fontsize=8,
               loc="outside lower center", ncols=min(3, len(orders) + 1))
    ax.set_ylabel("final average score")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _clusters(values: list[float], ratio: float = 1.5) -> list[list[float]]:
    """Sorted ``values`` grouped where each is within ``ratio`` of its group's first (for one label each)."""
    groups: list[list[float]] = []
    for value in sorted(values):
        if groups and value <= groups[-1][0] * ratio:
            groups[-1].append(value)
        else:
            groups.append([value])
    return groups


def plot_storage_scaling(fits: pd.DataFrame, curve_table: pd.DataFrame | None = None, *, max_tasks: int = 1000,
                         marks: tuple[int, ...] = (100, 1000),
                         title: str = "Cumulative storage extrapolated to many tasks") -> Figure:
    """The fitted lines S(t) = shared + t * per_task of :func:`analysis.scaling.storage_fits` from 1 to
    ``max_tasks`` tasks (log-log), the measured cumulative bytes as markers (from ``curve_table``, a
    :func:`analysis.tables.curves` table), each method's lower-bound line dashed where it reports one,
    the crossings of the lines as rings labelled with their task count, and the multiple of the
    backbone's size at the right edge."""
    fits = _with_configuration(fits)
    styles = configuration_styles(fits)
    backbone = float(fits["backbone_bytes"].iloc[0])
    grid = np.unique(np.concatenate([np.geomspace(1, max_tasks, 200), marks]))
    lines = extrapolate_storage(fits, grid)
    fig = Figure(figsize=(10.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ends = []  # (S(max_tasks), label, colour) per configuration, labelled at the right edge
    for key, style in styles.items():
        rows = _rows(lines, key)
        ax.plot(rows["tasks"], rows["bytes"], color=style["color"], linestyle=style["linestyle"],
                label=style["label"], linewidth=1.6)
        if rows["bound_bytes"].notna().all():
            ax.plot(rows["tasks"], rows["bound_bytes"], color=style["color"], linestyle=(0, (2, 2)), linewidth=1.0,
                    alpha=0.8)
        end = rows.iloc[-1]
        ends.append((end["bytes"], f"{style['label']} {multiple(end['x_backbone'])}", style["color"]))
        if curve_table is not None:
            measured = _rows(_with_configuration(curve_table), key).groupby("tasks_seen")["cumulative_bytes"].mean()
            ax.scatter(measured.index, measured.to_numpy(), color=style["color"], marker=style["marker"], s=22,
                       zorder=3)
    crossings = storage_crossings(fits)
    crossings = crossings[(crossings["tasks"] >= 1) & (crossings["tasks"] <= max_tasks)]
    ax.scatter(crossings["tasks"], crossings["bytes"], s=70, facecolors="none", edgecolors="black", linewidths=1.0,
               zorder=4)
    # Every storage line lies on or above the backbone's, so the strip below it is free of data: the
    # crossings' labels go there, each joined to its ring by a thin leader.
    for cluster in _clusters(crossings["tasks"].tolist()):
        last = crossings[crossings["tasks"] == cluster[-1]].iloc[0]
        text = f"t={cluster[0]:.3g}" if len(cluster) == 1 else f"t={cluster[0]:.3g}–{cluster[-1]:.3g}"
        ax.annotate(text, (last["tasks"], last["bytes"]), xytext=(last["tasks"] * 1.15, backbone / 1.12),
                    textcoords="data", va="top", ha="left", fontsize=7,
                    arrowprops={"arrowstyle": "-", "color": "black", "linewidth": 0.5, "shrinkB": 5})
    for mark in marks:
        ax.axvline(mark, color="grey", linestyle=":", linewidth=0.8)
    # Up to the last task count only, so the end labels right of the lines never sit on it.
    ax.plot([1, max_tasks], [backbone, backbone], color="grey", linestyle="--", linewidth=0.8,
            label=f"backbone ({human_bytes(backbone)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _label_ends(ax, [(max_tasks, value, text, color) for value, text, color in ends], backbone, 7)
    ax.set_ylim(bottom=min(ax.get_ylim()[0], backbone / 1.45))
    _bytes_axis(ax)
    ax.yaxis.set_major_locator(LogLocator(base=2, numticks=14))
    _backbone_axis(ax, backbone, "y")
    ax.set_xlim(1, max_tasks * 6)  # room for the end labels, which name their lines
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("number of tasks t (log scale; dotted: " + ", ".join(map(str, marks)) + ")")
    ax.set_ylabel("cumulative storage S(t) (bytes on disk, log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="black", linestyle=(0, (2, 2)), linewidth=1.0),
                Line2D([], [], color="black", marker="o", linestyle="", markerfacecolor="none", markersize=8)]
    labels += ["lower bound (where reported)", "lines cross"]
    if curve_table is not None:
        handles.append(Line2D([], [], color="black", marker="o", linestyle="", markersize=4))
        labels.append("measured")
    fig.legend(handles, labels, fontsize=7, loc="outside right upper")
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save a figure as PNG (150 dpi) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    return path
