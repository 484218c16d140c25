"""Figures and a Markdown report for one run directory, built from its files alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.narrative import storage_accuracy_sentences
from analysis.plots import plot_average_score, plot_score_vs_storage, plot_storage, save_figure
from analysis.tables import (CHANCE_LEGEND, accuracy_matrix, average_chance, chance_table, common_steps, curves,
                             final_table, format_chance, format_score, human_bytes, load_ledger, phase_seconds,
                             progress, task_columns)
from stream.core.rundir import CONFIG_FILE, LEDGER_FILE, read_run_config

FIGURES_DIR = "figures"
REPORT_FILE = "report.md"
CHANCE_ROW = "chance (majority class)"


def write_run_figures(run_dir: str | Path) -> dict[str, Path]:
    """Draw the run's figures into ``run_dir/figures`` and return their paths by name.

    The curves show every finished arrival; the storage-vs-score figure compares the methods over the
    arrivals all of them finished (:func:`~analysis.tables.common_steps`).
    """
    run_dir = Path(run_dir)
    table = load_ledger(run_dir)
    curve_table = curves(table)
    figures = {
        "score_vs_storage": plot_score_vs_storage(final_table(common_steps(table))),
        "storage": plot_storage(curve_table),
        "average_score": plot_average_score(curve_table),
    }
    return {name: save_figure(fig, run_dir / FIGURES_DIR / f"{name}.png") for name, fig in figures.items()}


def _markdown(frame: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A DataFrame as a GitHub Markdown table (pandas' to_markdown needs tabulate; this does not)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if value != value else format(value, floatfmt)
        return str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The report's main table: final scores per task (marked when not above chance), average, bytes and
    the papers' parameter columns, then a row with each task's chance score and noise band ("n/a" for
    ledgers that predate them). An unfinished run is cut to the arrivals every method finished
    (:func:`~analysis.tables.common_steps`), so every average covers the same tasks."""
    table = common_steps(table)
    final = final_table(table)
    chance = chance_table(table)
    tasks = task_columns(final)
    shown = final[["method"]].copy()
    for task in tasks:
        level, band = chance.at[task, "chance_score"], chance.at[task, "noise_band"]
        shown[task] = [format_score(v, level, band) for v in final[task]]
    level, band = average_chance(chance, tasks)
    shown["average"] = [format_score(v, level, band) for v in final["average"]]
    shown["new params / task"] = [f"{v:.3g}%" for v in final["new_params_per_task_pct"]]
    shown["total params"] = [f"{v:.2f}x" for v in final["total_params_multiplier"]]
    shown["bytes / task"] = [human_bytes(v) for v in final["bytes_per_task"]]
    shown["total bytes"] = [human_bytes(v) for v in final["total_bytes"]]
    chance_row = {"method": CHANCE_ROW, "average": format_chance(level, band),
                  **{task: format_chance(chance.at[task, "chance_score"], chance.at[task, "noise_band"])
                     for task in tasks}}
    return pd.concat([shown, pd.DataFrame([chance_row])], ignore_index=True).fillna("")


def storage_table(table: pd.DataFrame) -> pd.DataFrame:
    """Cumulative bytes per method (rows) after each step (columns); "n/a" where a method has not got that far."""
    curve_table = curves(table)
    pivot = curve_table.pivot(index="method", columns="tasks_seen", values="cumulative_bytes")
    pivot = pivot.reindex(list(dict.fromkeys(curve_table["method"])))
    out = pivot.map(human_bytes)
    out.columns = [f"after {c}" for c in out.columns]
    return out.reset_index()


def marked_matrix(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """R[t, i] of one method as a table: scores marked when not above chance, then the chance row."""
    matrix = accuracy_matrix(table, method)
    chance = chance_table(table)
    out = pd.DataFrame({task: [format_score(v, chance.at[task, "chance_score"], chance.at[task, "noise_band"])
                               for v in matrix[task]] for task in matrix.columns}, index=matrix.index)
    out.loc[CHANCE_ROW] = [format_chance(chance.at[task, "chance_score"], chance.at[task, "noise_band"])
                           for task in matrix.columns]
    return out.reset_index(names="after step")


def completeness_note(table: pd.DataFrame, config: dict) -> list[str]:
    """Lines saying the run is unfinished (empty when every configured method finished the stream): what
    each method finished, and that the tables compare the arrivals all of them finished."""
    done = progress(table).set_index("method")
    planned = len(config.get("tasks", [])) or int(done["done"].max())
    labels = [m["label"] for m in config.get("methods", [])] or list(done.index)
    counts = {label: int(done.at[label, "done"]) if label in done.index else 0 for label in labels}
    if all(count >= planned for count in counts.values()):
        return []
    common = common_steps(table)
    order = common.drop_duplicates("step").sort_values("step")["task"].tolist()
    finished = ", ".join(f"{label} {count} of {planned}" for label, count in counts.items())
    missing = [label for label, count in counts.items() if count == 0]
    return [f"**Incomplete run.** Tasks finished per method: {finished}. The final-score table and the storage-"
            f"vs-score figure compare the methods after the {len(order)} task(s) every method with results "
            f"finished ({', '.join(order)}); their averages are over those tasks only."
            + (f" No results yet: {', '.join(missing)}." if missing else "")
            + " Run `taskstream run` again on this directory to finish it.", ""]


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` (tables plus the figures, drawn fresh) and return its path.

    It opens with the storage-vs-score figure and sentences written from the run's numbers; an unfinished
    run is marked so and compared over the arrivals every method finished. Files are named relative to
    the report (it sits in the run directory).
    """
    run_dir = Path(run_dir)
    table = load_ledger(run_dir)
    figures = write_run_figures(run_dir)
    config = read_run_config(run_dir)
    compared = common_steps(table)
    order = table.drop_duplicates("step").sort_values("step")["task"].tolist()
    links = {name: path.relative_to(run_dir).as_posix() for name, path in figures.items()}
    lines = [f"# taskstream run: {run_dir.name}", "", *completeness_note(table, config),
             f"![score_vs_storage]({links['score_vs_storage']})", "",
             " ".join(storage_accuracy_sentences(final_table(compared), chance_table(compared))), "",
             f"- sources: `{CONFIG_FILE}` and `{LEDGER_FILE}` beside this report",
             f"- backbone: `{config['backbone']}` (pooling: {config['pooling']})",
             f"- task order: {' -> '.join(config.get('tasks') or order)}",
             f"- seed: {config['seed']}; budget: {', '.join(f'{k}={v}' for k, v in config['budget'].items())}",
             "- scores: each task's GLUE metric x100 on its validation split (the test set); the average is over "
             "the tasks seen. Bytes are the artifact files on disk (tensors + sidecar); shared-backbone methods "
             "also count the backbone once, full finetuning shares nothing.", "",
             "## Final scores and storage", "", _markdown(summary_table(compared)), "",
             f"{CHANCE_ROW}: the score of always answering the task's majority training class (regression: the "
             "mean label), and its noise band (two standard errors of a guessing score on the test rows); n/a "
             f"where the ledger predates them. {CHANCE_LEGEND}", "",
             "## Cumulative storage after each task", "", _markdown(storage_table(table)), "",
             ]
    for method in dict.fromkeys(table["method"]):
        rows = table[table["method"] == method]
        reevaluated = ((rows["eval_step"] < rows["step"]) & ~rows["reused"].astype(bool)).any()
        if reevaluated:
            lines += [f"## Accuracy matrix R[t, i]: {method}", "", _markdown(marked_matrix(table, method)), ""]
    seconds = phase_seconds(table).reset_index()
    lines += ["## Wall time per phase (seconds, all steps)", "", _markdown(seconds, ".1f"), "", "## More figures", ""]
    for name in ("storage", "average_score"):
        lines += [f"![{name}]({links[name]})", ""]
    report = run_dir / REPORT_FILE
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
