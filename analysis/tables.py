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

Chance and completeness, so a reader cannot mistake guessing or a half-finished run for a result:

- :func:`chance_table` — each task's chance (majority-class) score and noise band, from schema-2 ledgers;
  :func:`not_above_chance` — whether a score is within that band of chance (shown with :data:`CHANCE_MARK`);
- :func:`progress` — arrivals each (run, method) finished out of its stream; :func:`common_steps` — the
  table cut to the arrivals every method of a run finished, so averages never mix 2- and 3-task means.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from stream.core.ledger import read_ledger
from stream.core.rundir import CONFIG_FILE, LEDGER_FILE, read_run_config

CHANCE_COLUMNS = ("chance_score", "noise_band", "test_rows")
#: Appended to a score that is not clearly above chance; :data:`CHANCE_LEGEND` says what it means.
CHANCE_MARK = "~"
CHANCE_LEGEND = (f"{CHANCE_MARK} after a score: within the noise band of chance, i.e. less than two standard errors "
                 "of a guessing score above what always answering the task's majority class (regression: always "
                 "the mean label) scores on its test set; such a score cannot be told apart from guessing.")
STUDY_FILE = "study.json"  # the study record written by stream.engine.study (read here as plain JSON)
DEFAULT_BUDGET = "default"
# Columns describing a run (or a method within it) that load_ledger adds to every ledger row.
RUN_COLUMNS = ["run_id", "study", "order", "order_id", "budget", "setting"]
# What makes runs replicates of one another: everything else but the seed and the task order.
CONFIGURATION = ["method", "budget"]
# Per-configuration constants carried through aggregation.
_CARRIED = ["method_name", "setting", "sharing", "backbone_bytes", "backbone_params"]
# Everything that describes a (run, method) beyond its key.
_RUN_META = list(dict.fromkeys(["seed", *RUN_COLUMNS, *_CARRIED, "stream_length"]))


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
        # The planned stream (nan when the config does not say): how a reader tells a run still going.
        frame["stream_length"] = len(config["tasks"]) if config.get("tasks") else np.nan
        for name in CHANCE_COLUMNS:  # schema 1 rows predate them: absent, never computed here
            frame[name] = pd.to_numeric(frame[name], errors="coerce") if name in frame else np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_STEP_COLUMNS = ["method", "method_name", "sharing", "step", "task", "artifact_bytes", "cumulative_bytes",
                 "new_params", "new_params_fraction", "total_params_multiplier", "lower_bound_bytes",
                 "backbone_bytes", "backbone_params"]


def _present(table: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c in table.columns]


def _mean_or_nan(values: pd.Series) -> float:
    """The mean, or nan when any value is missing (an average of chance scores needs every task's)."""
    return float(values.mean()) if values.notna().all() and len(values) else float("nan")


def _band_of_mean(bands: pd.Series) -> float:
    """The noise band of a mean over independent test sets: root of the summed squared bands over their
    count; nan when any band is missing."""
    if not len(bands) or bands.isna().any():
        return float("nan")
    return float(np.sqrt((bands.astype(float) ** 2).sum()) / len(bands))


def _with_chance_columns(table: pd.DataFrame) -> pd.DataFrame:
    missing = {name: np.nan for name in ("chance_score", "noise_band") if name not in table}
    return table.assign(**missing) if missing else table


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method, step): ``tasks_seen``, ``average_score``, ``chance_average`` and
    ``chance_band`` (what a majority-class guesser averages on the same tasks, and that average's noise
    band; nan on ledgers without chance scores) and the storage columns."""
    keys = ["run", "method", "step"]
    table = _with_chance_columns(table)
    per_step = table.groupby(keys, sort=False).agg(average_score=("score", "mean"),
                                                   tasks_seen=("eval_task", "count"),
                                                   chance_average=("chance_score", _mean_or_nan),
                                                   chance_band=("noise_band", _band_of_mean))
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
                           "stream_length", "chance_average", "chance_band", *RUN_COLUMNS, *_CARRIED})


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
    chance = _with_chance_columns(last).groupby(keys, sort=False)
    out["chance_average"] = chance["chance_score"].agg(_mean_or_nan)
    out["chance_band"] = chance["noise_band"].agg(_band_of_mean)
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
              "total_params_multiplier", "chance_average", "chance_band"]
    return aggregate(final, values)


def arrival_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that score each task at the step it arrived: its own training's test score, dev score,
    training seconds and artifact (later rows re-score it from the same file or, for evolving methods, from
    a later one)."""
    return table[table["eval_task"] == table["task"]]


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
    """One row per (run, method): backward transfer, forgetting and final average (per-run points), with
    the chance average and band of the final step's tasks."""
    out = []
    for (run, method), rows in _with_chance_columns(table).groupby(["run", "method"], sort=False):
        matrix = position_matrix(rows)
        first = rows.iloc[0]
        last = rows[rows["step"] == rows["step"].max()]
        out.append({"run": run, "method": method, **{c: first[c] for c in _present(rows, _RUN_META)},
                    "backward_transfer": backward_transfer(matrix), "forgetting": forgetting(matrix),
                    "final_average": float(np.nanmean(matrix.to_numpy(dtype=float)[-1])),
                    "chance_average": _mean_or_nan(last["chance_score"]),
                    "chance_band": _band_of_mean(last["noise_band"])})
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


def chance_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per evaluated task (index, in order of first appearance): ``chance_score`` (what always answering the
    majority training label scores; mean over runs) and ``noise_band`` (two standard errors of a guessing
    score on the task's test rows). Both nan for a task any of whose rows lacks them (ledgers written
    before schema 2): nothing is computed here, the ledger is the only source."""
    tasks = list(dict.fromkeys(table["eval_task"]))
    out = pd.DataFrame(index=pd.Index(tasks, name="task"))
    for name in ("chance_score", "noise_band"):
        values = table[name] if name in table else pd.Series(np.nan, index=table.index)
        out[name] = values.groupby(table["eval_task"]).agg(_mean_or_nan).reindex(tasks)
    return out


def average_chance(chance: pd.DataFrame, tasks: Iterable[str]) -> tuple[float, float]:
    """(chance score, noise band) of the average over ``tasks``: the mean of their chance scores, and the
    band of a mean of independent test sets (root of the summed squared bands over the task count)."""
    rows = chance.reindex(list(tasks))
    return _mean_or_nan(rows["chance_score"]), _band_of_mean(rows["noise_band"])


def not_above_chance(score: float, chance: float, band: float) -> bool:
    """Whether ``score`` is less than ``band`` above ``chance`` (so it cannot be told from guessing);
    False when any is unknown."""
    values = [score, chance, band]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return False
    return float(score) < float(chance) + float(band)


def format_score(score: float, chance: float = float("nan"), band: float = float("nan"),
                 text: str | None = None) -> str:
    """``score`` as ``"85.1"`` (or ``text`` when given), with :data:`CHANCE_MARK` when it is not above chance."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return ""
    shown = f"{score:.1f}" if text is None else text
    return shown + (CHANCE_MARK if not_above_chance(score, chance, band) else "")


def format_chance(chance: float, band: float) -> str:
    """A chance cell: ``"52.7 (band 6.0)"``, or ``"n/a"`` when the ledger does not record it."""
    if math.isnan(chance) or math.isnan(band):
        return "n/a"
    return f"{chance:.1f} (band {band:.1f})"


def progress(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, method): ``done`` (arrivals with results) and ``planned`` (the stream's length;
    nan when the run's config does not say), and ``finished`` (done >= planned, or planned unknown)."""
    grouped = table.groupby(["run", "method"], sort=False)
    out = grouped["step"].max().rename("done").to_frame()
    planned = grouped["stream_length"].first() if "stream_length" in table else np.nan
    out["planned"] = planned
    out["finished"] = out["planned"].isna() | (out["done"] >= out["planned"])
    return out.reset_index()


def common_steps(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the arrivals that every method of its run finished: each run is cut to its least
    advanced method's last step, so every method's final scores and bytes cover the same tasks."""
    done = table.groupby(["run", "method"], sort=False)["step"].transform("max")
    common = done.groupby(table["run"]).transform("min")
    return table[table["step"] <= common]


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; a missing value (nan, None: a method that has not got that far) -> 'n/a'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
