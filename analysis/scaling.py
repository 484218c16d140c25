"""Storage as the number of tasks grows: a line fitted to the measured files, extrapolated.

Every method's cumulative storage is a line in the number of tasks t (README, "What a run does": storage is bytes on disk):

    S(t) = shared + t * per_task

- ``shared_backbone`` methods: ``shared`` is the backbone's bytes (counted once), ``per_task`` the mean of
  their per-task files; S(t) is exact at every measured t.
- ``standalone`` methods (full finetuning): ``shared`` is 0, ``per_task`` the mean file (a whole model).
- ``evolving`` methods keep only their newest file, which grows by a head (and any buffers) per task:
  ``shared`` and ``per_task`` are the least-squares line through the measured (t, S(t)).

The lower-bound line uses the same ``shared`` plus ``t`` times the mean ``lower_bound_bytes`` of the
ledger (the information-theoretic size of what the method stores: sparse positions at log2 C(N, k) bits,
masks at their entropy, values and heads at their stored precision), for methods that report one.

Functions: :func:`storage_fits` (one line per configuration), :func:`extrapolate_storage` (the lines at
chosen task counts), :func:`storage_crossings` (where two lines cross), :func:`scaling_table` (a table to
print), :func:`per_task_storage` (what one task's file is made of, beside its lower bound).
:func:`analysis.plots.plot_storage_scaling` draws the lines.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from analysis.tables import DEFAULT_BUDGET, human_bytes

FIT_COLUMNS = ["method", "budget", "method_name", "sharing", "shared_bytes", "per_task_bytes", "per_task_min",
               "per_task_max", "lower_bound_per_task", "tasks_measured", "runs", "backbone_bytes"]


def _step_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method, step) with the configuration columns present."""
    steps = table.drop_duplicates(["run", "method", "step"]).copy()
    if "budget" not in steps:
        steps["budget"] = DEFAULT_BUDGET
    if "method_name" not in steps:
        steps["method_name"] = steps["method"]
    return steps


def _line(steps: pd.DataFrame, sharing: str, backbone: float) -> tuple[float, float]:
    """(shared, per_task) of one configuration's measured steps (see the module docstring)."""
    if sharing == "evolving":
        t = steps["step"].to_numpy(dtype=float)
        s = steps["cumulative_bytes"].to_numpy(dtype=float)
        if np.unique(t).size < 2:
            return float(s.mean()), 0.0
        slope, intercept = np.polyfit(t, s, 1)
        return float(intercept), float(slope)
    shared = backbone if sharing == "shared_backbone" else 0.0
    return shared, float(steps["artifact_bytes"].mean())


def storage_fits(table: pd.DataFrame) -> pd.DataFrame:
    """S(t) = shared + t * per_task for every configuration (method, budget) of a tidy ledger table.

    Returns one row per configuration with ``shared_bytes``, ``per_task_bytes`` (the fitted slope),
    ``per_task_min`` / ``per_task_max`` (the smallest and largest single task file, which differ by head
    size and sidecar length), ``lower_bound_per_task`` (mean ``lower_bound_bytes``; nan unless every
    step reports it), ``tasks_measured`` (the longest run's step count), ``runs`` and ``backbone_bytes``.
    """
    steps = _step_rows(table)
    out = []
    for (method, budget), rows in steps.groupby(["method", "budget"], sort=False):
        sharing = rows["sharing"].iloc[0]
        backbone = float(rows["backbone_bytes"].iloc[0])
        shared, per_task = _line(rows, sharing, backbone)
        bound = pd.to_numeric(rows.get("lower_bound_bytes", pd.Series(np.nan, index=rows.index)), errors="coerce")
        out.append({"method": method, "budget": budget, "method_name": rows["method_name"].iloc[0],
                    "sharing": sharing, "shared_bytes": shared, "per_task_bytes": per_task,
                    "per_task_min": float(rows["artifact_bytes"].min()),
                    "per_task_max": float(rows["artifact_bytes"].max()),
                    "lower_bound_per_task": float(bound.mean()) if bound.notna().all() else math.nan,
                    "tasks_measured": int(rows["step"].max()), "runs": int(rows["run"].nunique()),
                    "backbone_bytes": backbone})
    return pd.DataFrame(out, columns=FIT_COLUMNS)


def extrapolate_storage(fits: pd.DataFrame, tasks: Iterable[int | float]) -> pd.DataFrame:
    """The fitted lines at the given task counts: one row per (configuration, tasks).

    Columns: the configuration's, ``tasks``, ``bytes`` (S(t)), ``bound_bytes`` (the lower-bound line;
    nan without a bound), ``x_backbone`` (S(t) in multiples of the backbone's bytes).
    """
    tasks = np.asarray(list(tasks), dtype=float)
    if tasks.size == 0 or (tasks < 0).any():
        raise ValueError(f"extrapolate_storage needs non-negative task counts; got {tasks.tolist()}")
    rows = []
    for fit in fits.to_dict("records"):
        for t in tasks:
            total = fit["shared_bytes"] + t * fit["per_task_bytes"]
            rows.append({"method": fit["method"], "budget": fit["budget"], "method_name": fit["method_name"],
                         "sharing": fit["sharing"], "tasks": t, "bytes": total,
                         "bound_bytes": fit["shared_bytes"] + t * fit["lower_bound_per_task"],
                         "x_backbone": total / fit["backbone_bytes"]})
    return pd.DataFrame(rows)


def storage_crossings(fits: pd.DataFrame) -> pd.DataFrame:
    """Where two configurations' storage lines cross, for every pair whose lines cross at t >= 1 (a
    crossing before the first task changes nothing: one of the two is cheaper at every task count).

    Columns: ``method_a``/``budget_a`` (the one cheaper before the crossing), ``method_b``/``budget_b``,
    ``tasks`` (the real t where S_a(t) = S_b(t)), ``first_task_b_cheaper`` (the smallest whole task
    count at which b costs strictly less than a), ``bytes`` (S at the crossing). Sorted by ``tasks``.
    """
    rows = []
    records = fits.to_dict("records")
    for a, b in itertools.combinations(records, 2):
        slope = a["per_task_bytes"] - b["per_task_bytes"]
        if slope == 0:
            continue
        t = (b["shared_bytes"] - a["shared_bytes"]) / slope
        if t < 1:
            continue
        # Before t the line with the smaller intercept is cheaper; after it, the one with the smaller slope.
        first, second = (a, b) if a["shared_bytes"] < b["shared_bytes"] else (b, a)
        whole = math.floor(t) + 1
        rows.append({"method_a": first["method"], "budget_a": first["budget"], "method_b": second["method"],
                     "budget_b": second["budget"], "tasks": t, "first_task_b_cheaper": whole,
                     "bytes": a["shared_bytes"] + t * a["per_task_bytes"]})
    columns = ["method_a", "budget_a", "method_b", "budget_b", "tasks", "first_task_b_cheaper", "bytes"]
    return pd.DataFrame(rows, columns=columns).sort_values("tasks", ignore_index=True)


def scaling_table(fits: pd.DataFrame, tasks: Iterable[int] = (10, 100, 1000)) -> pd.DataFrame:
    """A printable table: per configuration its shared and per-task bytes, S(t) at each of ``tasks``
    (bytes and multiple of the backbone) and, where reported, the lower bound at the largest ``tasks``."""
    tasks = list(tasks)
    several = fits["budget"].nunique() > 1
    out = pd.DataFrame({"method": [f"{m} [{b}]" if several else m for m, b in zip(fits["method"], fits["budget"])],
                        "sharing": fits["sharing"],
                        "shared": [human_bytes(v) for v in fits["shared_bytes"]],
                        "per task": [human_bytes(v) for v in fits["per_task_bytes"]]})
    at = extrapolate_storage(fits, tasks)
    for t in tasks:
        rows = at[at["tasks"] == t]
        out[f"S({t})"] = [f"{human_bytes(b)} ({multiple(x)})" for b, x in zip(rows["bytes"], rows["x_backbone"])]
    last = at[at["tasks"] == tasks[-1]]
    out[f"bound S({tasks[-1]})"] = [human_bytes(v) if np.isfinite(v) else "" for v in last["bound_bytes"]]
    out[f"S / bound at {tasks[-1]}"] = [f"{b / v:.2f}" if np.isfinite(v) else ""
                                        for b, v in zip(last["bytes"], last["bound_bytes"])]
    return out


def multiple(x: float) -> str:
    """A multiple of the backbone's size as a label: ``1.04×``, ``28×``, ``1,000×``."""
    return f"{x:,.0f}×" if x >= 100 else f"{x:.3g}×"


def per_task_storage(table: pd.DataFrame) -> pd.DataFrame:
    """What a task's file pair is made of, per configuration (means over its steps and runs).

    Columns: ``file_bytes`` (tensors + sidecar, what storage counts), ``head_bytes`` (the task head's
    tensors), ``method_bytes`` (every other tensor: the method's own piece), ``header_bytes`` (the
    safetensors header: tensor names, dtypes, shapes, offsets), ``sidecar_bytes`` (the JSON sidecar),
    ``lower_bound_bytes`` (nan unless every step reports one) and ``file_vs_bound`` (their ratio).
    """
    steps = _step_rows(table)
    breakdown = steps["breakdown"] if "breakdown" in steps else pd.Series([{}] * len(steps), index=steps.index)
    payload = breakdown.map(lambda groups: sum(groups.values()) if isinstance(groups, dict) else math.nan)
    steps = steps.assign(
        head_bytes=breakdown.map(lambda groups: groups.get("head", 0) if isinstance(groups, dict) else math.nan),
        payload_bytes=payload,
        header_bytes=steps["tensor_bytes"] - payload if "tensor_bytes" in steps else math.nan,
        lower=pd.to_numeric(steps.get("lower_bound_bytes", pd.Series(np.nan, index=steps.index)), errors="coerce"))
    out = []
    for (method, budget), rows in steps.groupby(["method", "budget"], sort=False):
        bound = float(rows["lower"].mean()) if rows["lower"].notna().all() else math.nan
        file_bytes = float(rows["artifact_bytes"].mean())
        out.append({"method": method, "budget": budget, "sharing": rows["sharing"].iloc[0], "file_bytes": file_bytes,
                    "head_bytes": float(rows["head_bytes"].mean()),
                    "method_bytes": float((rows["payload_bytes"] - rows["head_bytes"]).mean()),
                    "header_bytes": float(rows["header_bytes"].mean()),
                    "sidecar_bytes": float(rows["sidecar_bytes"].mean()) if "sidecar_bytes" in rows else math.nan,
                    "lower_bound_bytes": bound, "file_vs_bound": file_bytes / bound})
    return pd.DataFrame(out)
