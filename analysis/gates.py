"""The hard-concrete gate's distribution in closed form, for teaching figures (notebooks/02).

Diff pruning (:mod:`methods.diff_pruning`) gates every weight's diff with a hard-concrete gate
(Louizos et al. 2018) at temperature 1, stretched to (``lower``, ``upper``) and clipped to [0, 1]:

    s = sigmoid(logit(u) + log_alpha),  u ~ U(0, 1)      (so logit(s) ~ Logistic(log_alpha, 1))
    z = clip(s * (upper - lower) + lower, 0, 1)

``z`` is a mixture: a point mass at 0 (all s below s0 = -lower / (upper - lower)), a point mass at 1 (s
above s1 = (1 - lower) / (upper - lower)) and a density on (0, 1) in between:

    P(z = 0) = sigmoid(logit(s0) - log_alpha) = 1 - sigmoid(log_alpha - log(-lower / upper))
    P(z = 1) = sigmoid(log_alpha - logit(s1))
    p(z) = f(logit(s) - log_alpha) / (s (1 - s) (upper - lower)),  s = (z - lower) / (upper - lower),

with f(y) = sigmoid(y) sigmoid(-y) the logistic density. ``P(z != 0)`` is the term the expected-L0
penalty sums. At evaluation the gate is deterministic: clip(sigmoid(log_alpha) * (upper - lower) + lower).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _check_stretch(lower: float, upper: float) -> None:
    if not (lower < 0.0 and upper > 1.0):
        raise ValueError(f"the gate's stretch needs lower < 0 and upper > 1; got lower={lower}, upper={upper}.")


@dataclass(frozen=True)
class GateDistribution:
    """The law of one gate ``z`` at a given ``log_alpha``.

    Attributes:
        log_alpha: the gate's location.
        z: (points,) grid strictly inside (0, 1) where ``density`` is given.
        density: (points,) density of the continuous part on ``z`` (integrates to ``p_between``).
        p_zero / p_one: the point masses at exactly 0 and exactly 1.
        p_between: P(0 < z < 1) = 1 - p_zero - p_one.
        mean: E[z].
        deterministic: the evaluation-time gate value.
    """

    log_alpha: float
    z: np.ndarray
    density: np.ndarray
    p_zero: float
    p_one: float
    p_between: float
    mean: float
    deterministic: float

    @property
    def p_nonzero(self) -> float:
        """P(z != 0): what the expected-L0 penalty counts for this gate."""
        return 1.0 - self.p_zero


def gate_distribution(log_alpha: float, lower: float = -1.5, upper: float = 1.5, *,
                      points: int = 2001) -> GateDistribution:
    """The distribution of a hard-concrete gate (see the module docstring for the formulas)."""
    _check_stretch(lower, upper)
    span = upper - lower
    s0, s1 = -lower / span, (1.0 - lower) / span
    p_zero = float(_sigmoid(_logit(s0) - log_alpha))
    p_one = float(_sigmoid(log_alpha - _logit(s1)))
    # Midpoints of `points` equal cells: strictly inside (0, 1), and a midpoint rule for the moments.
    z = (np.arange(points) + 0.5) / points
    s = (z - lower) / span
    y = np.log(s / (1.0 - s)) - log_alpha
    density = _sigmoid(y) * _sigmoid(-y) / (s * (1.0 - s) * span)
    mean = p_one + float(np.sum(z * density) / points)
    deterministic = float(np.clip(_sigmoid(log_alpha) * span + lower, 0.0, 1.0))
    return GateDistribution(log_alpha=float(log_alpha), z=z, density=density, p_zero=p_zero, p_one=p_one,
                            p_between=1.0 - p_zero - p_one, mean=mean, deterministic=deterministic)


def gate_table(log_alphas: Iterable[float], lower: float = -1.5, upper: float = 1.5) -> pd.DataFrame:
    """One row per log-alpha: ``P(z=0)``, ``P(0<z<1)``, ``P(z=1)``, ``P(z!=0)``, ``E[z]``, ``eval z``."""
    rows = []
    for log_alpha in log_alphas:
        d = gate_distribution(log_alpha, lower, upper)
        rows.append({"log_alpha": d.log_alpha, "P(z=0)": d.p_zero, "P(0<z<1)": d.p_between, "P(z=1)": d.p_one,
                     "P(z!=0)": d.p_nonzero, "E[z]": d.mean, "eval z": d.deterministic})
    return pd.DataFrame(rows)


def plot_gate_distribution(log_alphas: Iterable[float], lower: float = -1.5, upper: float = 1.5, *,
                           alpha_range: tuple[float, float] = (-6.0, 8.0),
                           title: str = "The hard-concrete gate z as log-alpha moves") -> Figure:
    """Top: one panel per log-alpha with the density of z on (0, 1) and the point masses at 0 and 1 (bars,
    right axis, labelled with their probability). Bottom: P(z=0), P(z=1), E[z], P(z != 0) and the
    evaluation-time gate against log-alpha, the chosen values marked."""
    log_alphas = list(log_alphas)
    dists = [gate_distribution(a, lower, upper) for a in log_alphas]
    fig = Figure(figsize=(max(8.0, 2.1 * len(dists)), 6.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.15])
    axes = top.subplots(1, len(dists), sharey=True, squeeze=False)[0]
    high = max(float(d.density.max()) for d in dists) * 1.1
    for ax, d in zip(axes, dists):
        ax.fill_between(d.z, d.density, color="C0", alpha=0.3, linewidth=0)
        ax.plot(d.z, d.density, color="C0", linewidth=1.2)
        mass = ax.twinx()
        mass.bar([0.0, 1.0], [d.p_zero, d.p_one], width=0.07, color=["C3", "C2"], alpha=0.85)
        for x, p in ((0.0, d.p_zero), (1.0, d.p_one)):
            mass.annotate(f"{p:.2f}", (x, p), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        mass.set_ylim(0, 1.12)
        mass.tick_params(labelsize=7)
        if ax is axes[-1]:
            mass.set_ylabel("point mass P(z=0), P(z=1)", fontsize=8)
        else:
            mass.set_yticklabels([])
        ax.axvline(d.deterministic, color="black", linestyle=":", linewidth=1)
        ax.set_xlim(-0.08, 1.08)
        ax.set_ylim(0, high)
        ax.set_title(f"log α = {d.log_alpha:g}\nE[z] = {d.mean:.2f}", fontsize=9)
        ax.set_xlabel("z", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("density of z on (0, 1)", fontsize=8)
    top.suptitle("bars: P(z=0) (red) and P(z=1) (green); curve: density in between; dotted: the gate used at "
                 "evaluation", fontsize=8)
    ax = bottom.subplots()
    grid = np.linspace(*alpha_range, 281)
    table = gate_table(grid, lower, upper)
    for column, color, style in (("P(z=0)", "C3", "-"), ("P(z=1)", "C2", "-"), ("E[z]", "C0", "-"),
                                 ("P(z!=0)", "C1", "--"), ("eval z", "black", ":")):
        label = {"P(z!=0)": "P(z≠0) (what the L0 penalty sums)", "eval z": "gate at evaluation"}.get(column, column)
        ax.plot(table["log_alpha"], table[column], color=color, linestyle=style, label=label)
    for a in log_alphas:
        ax.axvline(a, color="grey", linewidth=0.6, alpha=0.6)
    ax.set_xlabel("log α")
    ax.set_ylabel("probability / value")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    fig.suptitle(f"{title} (stretch l = {lower:g}, r = {upper:g}, temperature 1)", fontsize=10)
    return fig
