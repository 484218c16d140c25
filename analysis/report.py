"""Figures and a Markdown report for one run directory, built from its files alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.plots import plot_average_score, plot_score_vs_storage, plot_storage, save_figure
from analysis.tables import (accuracy_matrix, curves, final_table, human_bytes, load_ledger, phase_seconds,
                             task_columns)
from stream.core.rundir import read_run_config

FIGURES_DIR = "figures"
REPORT_FILE = "report.md"


def write_run_figures(run_dir: str | Path) -> dict[str, Path]:
    """Draw the run's figures into ``run_dir/figures`` and return their paths by name."""
    run_dir = Path(run_dir)
    table = load_ledger(run_dir)
    curve_table = curves(table)
    figures = {
        "storage": plot_storage(curve_table),
        "average_score": plot_average_score(curve_table),
        "score_vs_storage": plot_score_vs_storage(final_table(table)),
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
    """The report's main table: final scores per task, average, bytes and the papers' parameter columns."""
    final = final_table(table)
    shown = final[["method", *task_columns(final), "average"]].copy()
    shown["new params / task"] = [f"{v:.3g}%" for v in final["new_params_per_task_pct"]]
    shown["total params"] = [f"{v:.2f}x" for v in final["total_params_multiplier"]]
    shown["bytes / task"] = [human_bytes(v) for v in final["bytes_per_task"]]
    shown["total bytes"] = [human_bytes(v) for v in final["total_bytes"]]
    return shown


def storage_table(table: pd.DataFrame) -> pd.DataFrame:
    """Cumulative bytes per method (rows) after each step (columns)."""
    curve_table = curves(table)
    pivot = curve_table.pivot(index="method", columns="tasks_seen", values="cumulative_bytes")
    pivot = pivot.reindex(list(dict.fromkeys(curve_table["method"])))
    out = pivot.map(human_bytes)
    out.columns = [f"after {c}" for c in out.columns]
    return out.reset_index()


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` (tables plus the figures, drawn fresh) and return its path."""
    run_dir = Path(run_dir)
    table = load_ledger(run_dir)
    figures = write_run_figures(run_dir)
    config = read_run_config(run_dir)
    order = table.drop_duplicates("step").sort_values("step")["task"].tolist()
    lines = [
        f"# taskstream run: {run_dir.name}", "",
        f"- backbone: `{config['backbone']}` (pooling: {config['pooling']})",
        f"- task order: {' -> '.join(order)}",
        *[f"- **{c['name']} is not GLUE's {c['name']}**: the run replaced it with its own files "
          f"({', '.join(f'{split}: {path}' for split, path in c['files'].items())}; custom task with override_glue)"
          for c in config.get("custom_tasks", []) if c.get("override_glue") and c["name"] in order],
        f"- seed: {config['seed']}; budget: {', '.join(f'{k}={v}' for k, v in config['budget'].items())}",
        "- scores: each task's GLUE metric x100 on its validation split (the test set); the average is over "
        "the tasks seen. Bytes are the artifact files on disk (tensors + sidecar); shared-backbone methods "
        "also count the backbone once, full finetuning shares nothing.", "",
        "## Final scores and storage", "", _markdown(summary_table(table)), "",
        "## Cumulative storage after each task", "", _markdown(storage_table(table)), "",
    ]
    for method in dict.fromkeys(table["method"]):
        rows = table[table["method"] == method]
        reevaluated = ((rows["eval_step"] < rows["step"]) & ~rows["reused"].astype(bool)).any()
        if reevaluated:
            matrix = accuracy_matrix(table, method).reset_index(names="after step")
            lines += [f"## Accuracy matrix R[t, i]: {method}", "", _markdown(matrix), ""]
    seconds = phase_seconds(table).reset_index()
    lines += ["## Wall time per phase (seconds, all steps)", "", _markdown(seconds, ".1f"), "", "## Figures", ""]
    for name, path in figures.items():
        lines += [f"![{name}]({path.relative_to(run_dir).as_posix()})", ""]
    report = run_dir / REPORT_FILE
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
