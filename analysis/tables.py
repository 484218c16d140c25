"""Tidy tables from run and study directories: pure functions over the ledger, no live models.

The ledger has one row per (method, step, evaluated task). From it:

- :func:`load_ledger` — the tidy table itself (one row per ledger row of a complete step, metrics flattened), from run
  directories and study directories alike, with each run's axes (seed, order, budget, setting);
- :func:`curves` — one row per (run, method, step): average score over the tasks seen, storage, multiplier;
- :func:`final_table` — one row per (run, method): final score per task, GLUE-style average, bytes, params;
- :func:`accuracy_matrix` — R[t, i], the score on task i after t arrivals, for one method of one run.

Across runs (seeds and task orders are replicates of one configuration, a (method, budget) pair):

- :func:`aggregate` — mean, sample standard deviation and count of any columns over each configuration;
- :func:`curve_stats`, :func:`final_stats`, :func:`task_score_stats` — the above, aggregated;
- :func:`position_matrix`, :func:`backward_transfer`, :func:`forgetting`, :func:`transfer_table` — the
  accuracy matrix indexed by arrival position, and the continual-learning summaries of it;
- :func:`order_table` — the final score of each configuration per task order (order sensitivity);
- :func:`pareto_mask` — which (storage, score) points no other point beats on both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from stream.core.ledger import read_ledger
from stream.core.rundir import CONFIG_FILE, LEDGER_FILE, read_run_config

STUDY_FILE = "study.json"  # the study record written by stream.engine.study (read here as plain JSON)
DEFAULT_BUDGET = "default"
# Columns describing a run (or a method within it) that load_ledger adds to every ledger row.
RUN_COLUMNS = ["run_id", "study", "order", "order_id", "budget", "setting"]
# What makes runs replicates of one another: everything else but the seed and the task order.
CONFIGURATION = ["method", "budget"]
# Per-configuration constants carried through aggregation.
_CARRIED = ["method_name", "setting", "sharing", "backbone_bytes", "backbone_params"]
# Everything that describes a (run, method) beyond its key.
_RUN_META = list(dict.fromkeys(["seed", *RUN_COLUMNS, *_CARRIED]))


def is_study_dir(path: str | Path) -> bool:
    """Whether ``path`` is a study directory (it holds ``study.json``) rather than a run directory."""
    return (Path(path) / STUDY_FILE).is_file()


def read_study(study_dir: str | Path) -> dict:
    """The study record (``study.json``) of a study directory."""
    return json.loads((Path(study_dir) / STUDY_FILE).read_text(encoding="utf-8"))


def run_entries(paths: str | Path | Iterable[str | Path]) -> list[tuple[Path, dict | None]]:
    """Run directories of run or study paths, each with its study record entry (None for a plain run).

    A study's runs that have not written a ledger yet are left out.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    entries: dict[Path, tuple[Path, dict | None]] = {}
    for path in map(Path, paths):
        if is_study_dir(path):
            study = read_study(path)
            for run in study["runs"]:
                run_dir = path / run["run_dir"]
                if (run_dir / LEDGER_FILE).exists():
                    entries.setdefault(run_dir.resolve(), (run_dir, {**run, "study": study["name"]}))
        else:
            entries.setdefault(path.resolve(), (path, None))  # a run named twice (alone and in its study) counts once
    return list(entries.values())


def _budget_labels(entries: list[tuple[Path, dict | None]], configs: list[dict]) -> list[str]:
    """A budget label per run: the study's budget names when all runs come from one study; otherwise
    ``default`` when every run has the same budget, else the budget fields that differ (``epochs=3``)."""
    studies = {record["study"] if record else None for _, record in entries}
    if len(studies) == 1 and None not in studies:
        return [record["budget"] for _, record in entries]
    budgets = [config.get("budget", {}) for config in configs]
    varying = sorted(k for k in set().union(*budgets) if len({json.dumps(b.get(k)) for b in budgets}) > 1)
    return [",".join(f"{k}={b.get(k)}" for k in varying) or DEFAULT_BUDGET for b in budgets]


def load_ledger(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The tidy table of one or several runs or studies; a ``run`` column names each run directory.

    Besides the ledger's fields, every row gets the run's axes: ``run_id``, ``study`` (empty for a plain
    run), ``order`` (the arrival order, ``a>b>c``), ``order_id`` (the study's name for it), ``budget``
    (see :func:`_budget_labels`) and ``setting`` (the method's options, ``k=2``).
    """
    entries = run_entries(run_dirs)
    configs = [read_run_config(run_dir) if (run_dir / CONFIG_FILE).exists() else {}
               for run_dir, _ in entries]
    budgets = _budget_labels(entries, configs)
    frames = []
    for (run_dir, record), config, budget in zip(entries, configs, budgets):
        rows = read_ledger(run_dir)
        if not rows:
            continue
        for row in rows:
            for split, values in row["metrics"].items():
                for metric, value in values.items():
                    row[f"metric.{split}.{metric}"] = value
        frame = pd.DataFrame(rows)
        frame.insert(0, "run", str(run_dir))
        order = ">".join(frame.drop_duplicates("step").sort_values("step")["task"])
        settings = {m["label"]: ",".join(f"{k}={v}" for k, v in sorted(m["options"].items()))
                    for m in config.get("methods", [])}
        frame["run_id"] = record["run_id"] if record else Path(run_dir).name
        frame["study"] = record["study"] if record else ""
        frame["order"] = order
        frame["order_id"] = record["order_id"] if record else order
        frame["budget"] = budget
        frame["setting"] = frame["method"].map(settings).fillna("")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_STEP_COLUMNS = ["method", "method_name", "sharing", "step", "task", "artifact_bytes", "cumulative_bytes",
                 "new_params", "new_params_fraction", "total_params_multiplier", "lower_bound_bytes",
                 "backbone_bytes", "backbone_params"]


def _present(table: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c in table.columns]


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method, step): ``tasks_seen``, ``average_score`` and the storage columns."""
    keys = ["run", "method", "step"]
    per_step = table.groupby(keys, sort=False).agg(average_score=("score", "mean"),
                                                   tasks_seen=("eval_task", "count"))
    carried = _present(table, [c for c in dict.fromkeys(_STEP_COLUMNS + _RUN_META) if c not in keys])
    first = table.drop_duplicates(keys).set_index(keys)[carried]
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


# Columns of final_table that are not task names.
FINAL_COLUMNS = frozenset({"run", "method", "tasks", "average", "bytes_per_task", "total_bytes",
                           "new_params_per_task_pct", "total_params_multiplier", "bytes_vs_bound", "seed",
                           *RUN_COLUMNS, *_CARRIED})


def task_columns(final: pd.DataFrame) -> list[str]:
    """The task-score columns of a :func:`final_table` (or :func:`final_stats`) in their order."""
    return [c for c in final.columns if c not in FINAL_COLUMNS and not c.endswith(("_std", "_n")) and c != "n"]


def final_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method) at the last step: score per task, average, storage and parameters."""
    keys = ["run", "method"]
    last = table[table["step"] == table.groupby(keys, sort=False)["step"].transform("max")]
    first = last.drop_duplicates(keys).set_index(keys)
    out = pd.DataFrame({"tasks": first["step"].astype(int)}, index=first.index)
    out = out.join(first[_present(table, _RUN_META)])
    tasks = list(dict.fromkeys(last["eval_task"]))  # the first run's arrival order, then any others
    scores = last.pivot_table(index=keys, columns="eval_task", values="score", aggfunc="first")
    out = out.join(scores.reindex(columns=tasks))
    out["average"] = last.groupby(keys, sort=False)["score"].mean()
    per_task = table.drop_duplicates([*keys, "step"]).groupby(keys, sort=False)
    out["bytes_per_task"] = per_task["artifact_bytes"].mean().astype(float)
    out["total_bytes"] = first["cumulative_bytes"].astype(int)
    out["new_params_per_task_pct"] = 100.0 * per_task["new_params_fraction"].mean()
    out["total_params_multiplier"] = first["total_params_multiplier"].astype(float)
    if "lower_bound_bytes" in table:
        steps = table.drop_duplicates([*keys, "step"]).assign(
            lower=lambda f: pd.to_numeric(f["lower_bound_bytes"], errors="coerce"))
        grouped = steps.groupby(keys, sort=False)
        complete = grouped["lower"].count() == grouped.size()
        out["bytes_vs_bound"] = (grouped["artifact_bytes"].sum() / grouped["lower"].sum()).where(complete)
    else:
        out["bytes_vs_bound"] = np.nan
    return out.reset_index()


def aggregate(frame: pd.DataFrame, values: Iterable[str], by: Iterable[str] = CONFIGURATION) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof 1; nan for one run) and count of ``values`` per group.

    Returns one row per group with the ``by`` columns, the per-configuration constants present in
    ``frame`` (method name, setting, sharing, backbone size), ``<value>`` (the mean), ``<value>_std``
    and ``n`` (the number of runs in the group). Groups keep their order of first appearance.
    """
    by, values = list(by), list(values)
    grouped = frame.groupby(by, sort=False, dropna=False)
    out = grouped[values].mean()
    std = grouped[values].std(ddof=1)
    out = out.join(std.add_suffix("_std"))
    out["n"] = grouped.size()
    carried = [c for c in _present(frame, _CARRIED) if c not in by]
    if carried:
        out = grouped[carried].first().join(out)
    return out.reset_index()


def curve_stats(table: pd.DataFrame) -> pd.DataFrame:
    """Average score, cumulative bytes and parameter multiplier vs tasks seen, over each configuration's runs."""
    return aggregate(curves(table), ["average_score", "cumulative_bytes", "total_params_multiplier"],
                     by=[*CONFIGURATION, "tasks_seen"])


def final_stats(table: pd.DataFrame) -> pd.DataFrame:
    """Final scores per task, average, bytes and parameter columns over each configuration's runs."""
    final = final_table(table)
    values = [*task_columns(final), "average", "bytes_per_task", "total_bytes", "new_params_per_task_pct",
              "total_params_multiplier"]
    return aggregate(final, values)


def task_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Long form of the final scores: one row per (run, method, task) at the run's last step."""
    last = table[table["step"] == table.groupby(["run", "method"])["step"].transform("max")]
    columns = ["run", "method", *_present(table, _RUN_META), "eval_task", "eval_step", "score"]
    return last[columns].rename(columns={"eval_task": "task", "eval_step": "position"}).reset_index(drop=True)


def task_score_stats(table: pd.DataFrame) -> pd.DataFrame:
    """Each task's final score over each configuration's runs."""
    return aggregate(task_scores(table), ["score"], by=[*CONFIGURATION, "task"])


def position_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """R[t, i] of one run and method, indexed by arrival position: the score on the i-th arriving task
    after t arrivals (rows t = 1..T, columns i = 1..T; nan where i > t)."""
    if rows["run"].nunique() != 1 or rows["method"].nunique() != 1:
        raise ValueError("position_matrix needs the rows of exactly one (run, method)")
    matrix = rows.pivot(index="step", columns="eval_step", values="score").sort_index().sort_index(axis=1)
    steps = range(1, int(rows["step"].max()) + 1)
    return matrix.reindex(index=steps, columns=steps).astype(float)


def backward_transfer(matrix: pd.DataFrame) -> float:
    """BWT (Lopez-Paz & Ranzato 2017): mean over i < T of R[T, i] - R[i, i]; nan for one task.

    Negative values are forgetting; zero for methods whose earlier task files never change.
    """
    values = matrix.to_numpy(dtype=float)
    n = values.shape[0]
    if n < 2:
        return float("nan")
    return float(np.mean([values[n - 1, i] - values[i, i] for i in range(n - 1)]))


def forgetting(matrix: pd.DataFrame) -> float:
    """Average forgetting (Chaudhry et al. 2018): mean over i < T of max_{i <= t < T} R[t, i] - R[T, i]."""
    values = matrix.to_numpy(dtype=float)
    n = values.shape[0]
    if n < 2:
        return float("nan")
    return float(np.mean([np.nanmax(values[i:n - 1, i]) - values[n - 1, i] for i in range(n - 1)]))


def transfer_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method): backward transfer, forgetting and final average (per-run points)."""
    out = []
    for (run, method), rows in table.groupby(["run", "method"], sort=False):
        matrix = position_matrix(rows)
        first = rows.iloc[0]
        out.append({"run": run, "method": method, **{c: first[c] for c in _present(rows, _RUN_META)},
                    "backward_transfer": backward_transfer(matrix), "forgetting": forgetting(matrix),
                    "final_average": float(np.nanmean(matrix.to_numpy(dtype=float)[-1]))})
    return pd.DataFrame(out)


def mean_position_matrix(table: pd.DataFrame, method: str, budget: str | None = None) -> pd.DataFrame:
    """R[t, i] by arrival position averaged over a configuration's runs (seeds and orders)."""
    rows = table[table["method"] == method]
    if budget is not None and "budget" in rows:
        rows = rows[rows["budget"] == budget]
    if rows.empty:
        raise ValueError(f"no ledger rows for method {method!r}" + (f" and budget {budget!r}" if budget else ""))
    matrices = [position_matrix(group) for _, group in rows.groupby("run", sort=False)]
    return sum(matrices) / len(matrices)


def order_table(table: pd.DataFrame) -> pd.DataFrame:
    """Final average score per (configuration, task order), over the seeds run with that order."""
    return aggregate(final_table(table), ["average"], by=[*CONFIGURATION, "order"])


def pareto_mask(cost: Iterable[float], value: Iterable[float]) -> np.ndarray:
    """True for points no other point dominates (cost <= and value >= with one strictly better)."""
    cost, value = np.asarray(list(cost), dtype=float), np.asarray(list(value), dtype=float)
    keep = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (value >= value[i]) & ((cost < cost[i]) | (value > value[i]))
        keep[i] = not dominated.any()
    return keep


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
