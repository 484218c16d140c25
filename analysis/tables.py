"""Tidy tables from run directories: pure functions over the ledger, no live models.

The ledger has one row per (method, step, evaluated task). From it:

- :func:`load_ledger` — the tidy table itself (one row per ledger line, metrics flattened);
- :func:`curves` — one row per (method, step): average score over the tasks seen, storage, multiplier;
- :func:`final_table` — one row per method: final score per task, GLUE-style average, bytes, params;
- :func:`accuracy_matrix` — R[t, i], the score on task i after t arrivals, for one method.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

LEDGER_FILE = "ledger.jsonl"


def read_ledger_rows(run_dir: str | Path) -> list[dict]:
    """The ledger rows of a run directory (an empty list when nothing was recorded yet)."""
    path = Path(run_dir) / LEDGER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a taskstream run directory "
                                "(run `taskstream run --run-dir DIR` first).")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line of a killed run; the run itself repairs it on resume
    return rows


def load_ledger(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The tidy table of one or several runs; a ``run`` column names each run directory."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    frames = []
    for run_dir in run_dirs:
        rows = read_ledger_rows(run_dir)
        for row in rows:
            for split, values in row["metrics"].items():
                for metric, value in values.items():
                    row[f"metric.{split}.{metric}"] = value
        frame = pd.DataFrame(rows)
        frame.insert(0, "run", str(run_dir))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_STEP_COLUMNS = ["method", "method_name", "sharing", "step", "task", "artifact_bytes", "cumulative_bytes",
                 "new_params", "new_params_fraction", "total_params_multiplier", "lower_bound_bytes",
                 "backbone_bytes", "backbone_params"]


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method, step): ``tasks_seen``, ``average_score`` and the storage columns."""
    keys = ["run", "method", "step"]
    per_step = table.groupby(keys, sort=False).agg(average_score=("score", "mean"),
                                                   tasks_seen=("eval_task", "count"))
    first = table.drop_duplicates(keys).set_index(keys)[[c for c in _STEP_COLUMNS if c not in keys]]
    return per_step.join(first).reset_index()


def accuracy_matrix(table: pd.DataFrame, method: str, run: str | None = None) -> pd.DataFrame:
    """R[t, i]: rows are steps (with the arriving task), columns the evaluated tasks in arrival order."""
    rows = table[table["method"] == method]
    if run is not None:
        rows = rows[rows["run"] == run]
    if rows["run"].nunique() > 1:
        raise ValueError(f"method {method!r} appears in several runs; pass run=")
    order = rows.sort_values("eval_step").drop_duplicates("eval_task")["eval_task"].tolist()
    matrix = rows.pivot(index="step", columns="eval_task", values="score").reindex(columns=order)
    matrix.index = [f"{t}:{task}" for t, task in
                    rows.drop_duplicates("step").sort_values("step")[["step", "task"]].itertuples(index=False)]
    return matrix


def final_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method) at the last step: score per task, average, storage and parameters."""
    out = []
    for (run, method), rows in table.groupby(["run", "method"], sort=False):
        last = rows[rows["step"] == rows["step"].max()]
        first = last.iloc[0]
        record = {"run": run, "method": method, "tasks": int(first["step"])}
        for row in last.sort_values("eval_step").itertuples():
            record[row.eval_task] = row.score
        record["average"] = float(last["score"].mean())
        per_task = rows.drop_duplicates("step")
        record["bytes_per_task"] = float(per_task["artifact_bytes"].mean())
        record["total_bytes"] = int(first["cumulative_bytes"])
        record["new_params_per_task_pct"] = 100.0 * float(per_task["new_params_fraction"].mean())
        record["total_params_multiplier"] = float(first["total_params_multiplier"])
        lower = per_task["lower_bound_bytes"].dropna() if "lower_bound_bytes" in per_task else []
        record["bytes_vs_bound"] = (float(per_task["artifact_bytes"].sum() / lower.sum())
                                    if len(lower) == len(per_task) and len(lower) else np.nan)
        out.append(record)
    return pd.DataFrame(out)


def phase_seconds(table: pd.DataFrame) -> pd.DataFrame:
    """Wall time per phase (prepare, train, store, load, eval, wall) summed per method."""
    steps = table.drop_duplicates(["run", "method", "step"])
    seconds = pd.DataFrame(list(steps["seconds"]), index=steps.index)
    seconds["method"] = steps["method"]
    return seconds.groupby("method", sort=False).sum()


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
