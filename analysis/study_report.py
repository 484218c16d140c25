"""The report of a study, or of any set of runs and studies: Markdown plus one self-contained HTML page.

Built from the directories' files alone (ledgers, configs, sidecars, status and launch records), so a
study can be re-reported at any time without training. The tables are the ones a paper prints: final
score per task and GLUE-style average, new parameters per task, the total-parameter multiplier, true
bytes per task and in total, each as mean ± sample standard deviation over the runs of a configuration
(its seeds x task orders); then the curves, the Pareto plot, order sensitivity, forgetting and placement.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.heatmaps import evolving_configurations, plot_accuracy_matrices, plot_placement
from analysis.placement import PLACEMENT_KEY, load_placement, placement_summary
from analysis.plots import FIGURE_DPI, plot_order_sensitivity, plot_pareto, plot_score_bands, plot_storage_bands
from analysis.report import CHANCE_ROW, FIGURES_DIR, _markdown
from analysis.tables import (CHANCE_LEGEND, CONFIGURATION, aggregate, average_chance, chance_table, curves,
                             final_stats, final_table, format_chance, format_score, human_bytes, is_study_dir,
                             load_ledger, progress, read_study, run_entries, task_columns, transfer_table)
from stream.core.rundir import CONFIG_FILE, read_run_config

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


@dataclass
class Section:
    """One part of a report: a heading, Markdown-ish text (paragraphs and ``- `` lists), then optionally
    a table, a figure (by name) and a code block."""

    title: str
    text: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    figure: str | None = None
    code: str | None = None


def pm(mean: float, sd: float, fmt: str = "{:.1f}") -> str:
    """``"72.3 ± 1.1"``; the mean alone when the deviation is undefined (one run) or shows as zero."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if (sd is None or math.isnan(sd) or abs(sd) <= 1e-9 * max(1.0, abs(mean))
            or fmt.format(abs(sd)) in (fmt.format(0.0), fmt.format(-0.0))):
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format(sd)}"


def pm_bytes(mean: float, sd: float) -> str:
    """``"6.8 MiB ± 1.2 KiB"``; the ± is left out below 0.1% of the mean (sidecar JSON differing by a
    few bytes between runs), as the overview says."""
    if sd is None or math.isnan(sd) or sd < 1e-3 * abs(mean):
        return human_bytes(mean)
    return f"{human_bytes(mean)} ± {human_bytes(sd)}"


def _label(row, several_budgets: bool) -> str:
    return row["method"] if not several_budgets else f"{row['method']} [{row['budget']}]"


def summary_stats_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper table: per configuration, final score per task and average, new params per task, the
    total-params multiplier, bytes per task and total bytes, each mean ± sd over its runs. A mean within
    the noise band of chance gets :data:`~analysis.tables.CHANCE_MARK`; the last row gives each task's
    chance score and band ("n/a" for ledgers that predate them)."""
    stats = final_stats(table)
    chance = chance_table(table)
    several = stats["budget"].nunique() > 1
    out = pd.DataFrame({"method": [_label(r, several) for _, r in stats.iterrows()], "runs": stats["n"]})
    tasks = task_columns(stats)
    for task in tasks:
        level, band = chance.at[task, "chance_score"], chance.at[task, "noise_band"]
        out[task] = [format_score(m, level, band, pm(m, s)) for m, s in zip(stats[task], stats[f"{task}_std"])]
    out["GLUE avg"] = [format_score(m, level, band, pm(m, s)) for m, s, level, band in
                       zip(stats["average"], stats["average_std"], stats["chance_average"], stats["chance_band"])]
    out["new params / task"] = [pm(m, s, "{:.3g}") + "%" for m, s in
                                zip(stats["new_params_per_task_pct"], stats["new_params_per_task_pct_std"])]
    out["total params"] = [pm(m, s, "{:.2f}") + "×" for m, s in
                           zip(stats["total_params_multiplier"], stats["total_params_multiplier_std"])]
    out["bytes / task"] = [pm_bytes(m, s) for m, s in zip(stats["bytes_per_task"], stats["bytes_per_task_std"])]
    out["total bytes"] = [pm_bytes(m, s) for m, s in zip(stats["total_bytes"], stats["total_bytes_std"])]
    average = average_chance(chance, tasks)
    chance_row = {"method": CHANCE_ROW, "runs": "", "GLUE avg": format_chance(*average),
                  **{task: format_chance(chance.at[task, "chance_score"], chance.at[task, "noise_band"])
                     for task in tasks}}
    return pd.concat([out, pd.DataFrame([chance_row])], ignore_index=True).fillna("")


def _by_tasks_seen(table: pd.DataFrame, value: str, cell, chance: bool = False) -> pd.DataFrame:
    """``value`` per configuration (rows) after each arrival (columns); with ``chance``, scores are marked
    against the chance average of the same tasks and a last row gives that chance average and band."""
    stats = aggregate(curves(table), [value, "chance_average", "chance_band"], by=[*CONFIGURATION, "tasks_seen"])
    several = stats["budget"].nunique() > 1
    stats["label"] = [_label(r, several) for _, r in stats.iterrows()]
    stats["cell"] = [cell(m, s) for m, s in zip(stats[value], stats[f"{value}_std"])]
    if chance:
        stats["cell"] = [format_score(m, c, b, text) for m, c, b, text in
                         zip(stats[value], stats["chance_average"], stats["chance_band"], stats["cell"])]
    pivot = stats.pivot(index="label", columns="tasks_seen", values="cell")
    pivot = pivot.reindex(list(dict.fromkeys(stats["label"])))
    if chance:
        levels = stats.groupby("tasks_seen")[["chance_average", "chance_band"]].mean()
        pivot.loc[CHANCE_ROW] = [format_chance(levels.at[t, "chance_average"], levels.at[t, "chance_band"])
                                 for t in pivot.columns]
    pivot.columns = [f"after {c}" for c in pivot.columns]
    return pivot.reset_index(names="method").fillna("n/a")


def average_score_table(table: pd.DataFrame) -> pd.DataFrame:
    """Average score over the tasks seen, after each arrival (mean ± sd over runs), marked against the
    chance average of the same tasks, which the last row gives."""
    return _by_tasks_seen(table, "average_score", pm, chance=True)


def cumulative_bytes_table(table: pd.DataFrame) -> pd.DataFrame:
    """Cumulative bytes on disk after each arrival (mean ± sd over runs)."""
    return _by_tasks_seen(table, "cumulative_bytes", pm_bytes)


def transfer_summary(table: pd.DataFrame, configurations: list[tuple[str, str]]) -> pd.DataFrame:
    """Backward transfer, forgetting and final average of the given configurations (mean ± sd)."""
    transfer = transfer_table(table)
    keep = transfer[[key in configurations for key in zip(transfer["method"], transfer["budget"])]]
    stats = aggregate(keep, ["backward_transfer", "forgetting", "final_average", "chance_average", "chance_band"])
    several = stats["budget"].nunique() > 1
    return pd.DataFrame({
        "method": [_label(r, several) for _, r in stats.iterrows()], "runs": stats["n"],
        "backward transfer": [pm(m, s, "{:+.1f}") for m, s in zip(stats["backward_transfer"],
                                                                  stats["backward_transfer_std"])],
        "forgetting": [pm(m, s) for m, s in zip(stats["forgetting"], stats["forgetting_std"])],
        "final average": [format_score(m, c, b, pm(m, s)) for m, s, c, b in
                          zip(stats["final_average"], stats["final_average_std"], stats["chance_average"],
                              stats["chance_band"])]})


def order_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Final average per configuration (rows) and task order (columns, mean ± sd over seeds), and the
    spread between the orders' means."""
    stats = aggregate(final_table(table), ["average", "chance_average", "chance_band"],
                      by=[*CONFIGURATION, "order"])
    several = stats["budget"].nunique() > 1
    stats["label"] = [_label(r, several) for _, r in stats.iterrows()]
    stats["cell"] = [format_score(m, c, b, pm(m, s)) for m, s, c, b in
                     zip(stats["average"], stats["average_std"], stats["chance_average"], stats["chance_band"])]
    pivot = stats.pivot(index="label", columns="order", values="cell")
    labels = list(dict.fromkeys(stats["label"]))
    orders = list(dict.fromkeys(stats["order"]))
    pivot = pivot.reindex(index=labels, columns=orders)
    spread = stats.groupby("label")["average"].agg(lambda v: v.max() - v.min()).reindex(labels)
    pivot["spread"] = [f"{v:.1f}" for v in spread]
    levels = stats.groupby("order")[["chance_average", "chance_band"]].mean()
    pivot.loc[CHANCE_ROW] = [*(format_chance(levels.at[o, "chance_average"], levels.at[o, "chance_band"])
                               for o in orders), ""]
    return pivot.reset_index(names="method")


def _statuses(paths: Iterable[Path]) -> dict[str, dict]:
    """Status records of every study run under ``paths`` by run directory (absent for plain runs)."""
    out = {}
    for path in paths:
        if not is_study_dir(path):
            continue
        for run in read_study(path)["runs"]:
            status_file = path / "status" / f"{run['run_id']}.json"
            status = json.loads(status_file.read_text()) if status_file.exists() else {"state": "pending"}
            out[str(path / run["run_dir"])] = {**status, **run, "study_dir": str(path)}
    return out


def runs_table(table: pd.DataFrame, statuses: dict[str, dict]) -> pd.DataFrame:
    """Every run (the per-seed, per-order points): axes, state, final average, total bytes, wall time."""
    final = final_table(table)
    steps = table.drop_duplicates(["run", "method", "step"])
    wall = steps.groupby(["run", "method"])["seconds"].apply(lambda s: sum(d.get("wall", 0.0) for d in s))
    rows = []
    for _, row in final.iterrows():
        state = statuses.get(row["run"], {}).get("state", "complete" if row["tasks"] else "")
        rows.append({"run": row.get("run_id", Path(row["run"]).name), "method": row["method"], "seed": row["seed"],
                     "order": row.get("order", ""), "state": state, "tasks": row["tasks"],
                     "final average": format_score(row["average"], row["chance_average"], row["chance_band"]),
                     "chance": format_chance(row["chance_average"], row["chance_band"]),
                     "total bytes": human_bytes(row["total_bytes"]),
                     "wall s": f"{wall[(row['run'], row['method'])]:.0f}"})
    seen = set(final["run"])
    for run_dir, status in statuses.items():
        if run_dir not in seen:
            rows.append({"run": status["run_id"], "method": status["method"], "seed": status["seed"],
                         "order": ">".join(status.get("order", [])), "state": status.get("state", "pending"),
                         "tasks": 0, "final average": "", "chance": "", "total bytes": "", "wall s": ""})
    return pd.DataFrame(rows)


def finished_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows the final-score tables and figures use, and a sentence saying which (empty when all is
    finished): the runs that finished their stream when some did, so no average mixes 2-task and 3-task
    means; else every run cut to the arrivals all of them finished."""
    done = progress(table)
    if done["finished"].all():
        return table, ""
    key = pd.MultiIndex.from_frame(table[["run", "method"]])
    finished = pd.MultiIndex.from_frame(done.loc[done["finished"], ["run", "method"]])
    if len(finished):
        return (table[key.isin(finished)],
                f"{int((~done['finished']).sum())} of {len(done)} runs have not finished their task stream; the "
                "final-score tables and figures use only the finished runs (every run is in Runs, and in the "
                "curves up to where it got).")
    common = int(done["done"].min())
    return (table[table["step"] <= common],
            f"No run has finished its task stream yet: the final-score tables and figures compare every run "
            f"after its first {common} task(s), the most that all of them finished; averages are over those "
            "tasks only.")


def study_figures(table: pd.DataFrame, placement: pd.DataFrame | None = None,
                  final_rows: pd.DataFrame | None = None) -> dict[str, Figure]:
    """Every figure the report shows, by name; the forgetting and placement figures only when the runs
    hold an evolving method or recorded placement. The final-score figures use ``final_rows`` (default:
    :func:`finished_rows`), the curves every row."""
    final_rows = finished_rows(table)[0] if final_rows is None else final_rows
    curve_table, final = curves(table), final_table(final_rows)
    figures = {"average_score": plot_score_bands(curve_table), "storage": plot_storage_bands(curve_table),
               "pareto": plot_pareto(final), "order_sensitivity": plot_order_sensitivity(final)}
    if evolving_configurations(table):
        figures["accuracy_matrices"] = plot_accuracy_matrices(table)
    if placement is not None and not placement.empty:
        summary = placement_summary(placement)
        for method, budget in dict.fromkeys(zip(summary["method"], summary["budget"])):
            name = f"placement_{method}" + ("" if summary["budget"].nunique() == 1 else f"_{budget}")
            figures[name] = plot_placement(summary, method, budget)
    return figures


def relative_name(path: str | Path, base: str | Path) -> str:
    """``path`` named relative to ``base`` (the report's directory), never as an absolute path of this
    machine: a report read elsewhere, or committed, still points at its sources."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def _overview(table: pd.DataFrame, paths: list[Path], statuses: dict[str, dict], base: Path) -> list[str]:
    runs = table.drop_duplicates(["run", "method"])
    configs = runs.drop_duplicates(["method", "budget"])
    backbones = sorted({read_run_config(r).get("backbone", "?")
                        for r in runs["run"] if (Path(r) / CONFIG_FILE).exists()})
    failed = [s for s in statuses.values() if s.get("state") == "failed"]
    pending = [s for s in statuses.values() if s.get("state") not in ("done", "failed")]
    names = [relative_name(p, base) for p in paths]
    lines = [f"- sources (relative to this report): "
             f"{', '.join('`.` (the directory of this report)' if n == '.' else f'`{n}`' for n in names)}",
             f"- runs: {len(runs)} with results" + (f", {len(failed)} failed" if failed else "")
             + (f", {len(pending)} not finished" if pending else "")
             + f"; {len(configs)} configurations (method x budget), seeds {sorted(set(runs['seed']))}, "
             f"{runs['order'].nunique()} task order(s): {', '.join(dict.fromkeys(runs['order']))}",
             f"- backbone: {', '.join(f'`{b}`' for b in backbones)}",
             "- scores: each task's GLUE metric x100 on its validation split (the test set), from models rebuilt "
             "from the stored files; GLUE avg is the mean over the tasks. Bytes are the artifact files on disk; "
             "shared-backbone methods also count the backbone once, full finetuning shares nothing.",
             "- ± is the sample standard deviation over a configuration's runs (its seeds x task orders); "
             "a value without ± comes from one run or did not vary (bytes: by less than 0.1%)."]
    if runs["budget"].nunique() > 1:
        lines.append(f"- budgets: {', '.join(dict.fromkeys(runs['budget']))}")
    if table.groupby("run")["eval_task"].apply(lambda t: frozenset(t)).nunique() > 1:
        lines.append("- note: the runs cover different task sets; averages are over each run's own tasks.")
    return lines


def _reproducibility(paths: list[Path], base: Path) -> list[Section]:
    sections = []
    for path in paths:
        if not is_study_dir(path):
            continue
        study = read_study(path)
        launches_file = path / "launches.jsonl"
        launches = [json.loads(line) for line in launches_file.read_text().splitlines() if line.strip()] \
            if launches_file.exists() else []
        rows = [{"time": l.get("time", ""), "host": l.get("host", ""), "backend": l.get("backend", ""),
                 "workers x threads": f"{l.get('workers', '?')} x {l.get('threads', '?')}",
                 "runs to do": len(l.get("runs_to_do", [])) if isinstance(l.get("runs_to_do"), list) else "",
                 "python": l.get("versions", {}).get("python", ""), "torch": l.get("versions", {}).get("torch", ""),
                 "transformers": l.get("versions", {}).get("transformers", "")} for l in launches]
        spec_file = study.get("spec_file")
        if spec_file and Path(spec_file).is_absolute():
            spec_file = relative_name(spec_file, base)
        text = [f"Study `{study['name']}` in `{relative_name(path, base)}` (relative to this report): the spec "
                f"below (normalised; the original file is `{spec_file or 'not recorded'}`), the resolved config "
                "of every run in `study.json` and each run's `config.json`, package versions per launch below and in each run's "
                "`versions.json`. On CPU, re-running the spec with the same threads per worker reproduces the "
                "ledgers' scores and bytes exactly (wall times differ)."]
        sections.append(Section(f"Reproducibility: {study['name']}", text,
                                table=pd.DataFrame(rows) if rows else None,
                                code=json.dumps(study.get("spec", {}), indent=2, sort_keys=True)))
    return sections


def build_report(paths: Iterable[str | Path], out_dir: str | Path | None = None
                 ) -> tuple[str, list[Section], dict[str, Figure]]:
    """The report's title, sections and figures for run and study directories; sources are named
    relative to ``out_dir``, where the report will be written (default: the current directory)."""
    paths = [Path(p) for p in paths]
    base = Path(out_dir) if out_dir is not None else Path.cwd()
    table = load_ledger(paths)
    if table.empty:
        raise FileNotFoundError(f"No run under {', '.join(map(str, paths))} has recorded results yet.")
    statuses = _statuses(paths)
    entries = run_entries(paths)
    placement = load_placement(table)
    final_rows, unfinished = finished_rows(table)
    figures = study_figures(table, placement, final_rows)
    studies = [read_study(p)["name"] for p in paths if is_study_dir(p)]
    title = (f"taskstream study: {studies[0]}" if len(paths) == 1 and studies
             else f"taskstream comparison of {len(entries)} runs")
    sections = [
        Section("Overview", [*(["**Incomplete.** " + unfinished] if unfinished else []),
                             *_overview(table, paths, statuses, base)]),
        Section("Final scores and storage", ["Per configuration, after the last task: score per task, GLUE-style "
                                             "average, the papers' parameter columns and the true bytes on disk. "
                                             f"The last row, {CHANCE_ROW}, is what always answering the task's "
                                             "majority training class (regression: the mean label) scores, with "
                                             "its noise band (two standard errors of a guessing score on the test "
                                             "rows); n/a where the ledgers predate them.", CHANCE_LEGEND]
                + ([unfinished] if unfinished else []),
                table=summary_stats_table(final_rows)),
        Section("Average score vs tasks seen", ["Mean over runs with a ±1 sd band; faint points are single runs; "
                                                "the dash-dot line is the chance average of the same tasks. "
                                                "After t tasks the average is over the t tasks seen (which differ "
                                                "between orders)."], table=average_score_table(table),
                figure="average_score"),
        Section("Cumulative storage vs tasks seen", ["Log scale; the dashed line is the backbone, the right axis "
                                                     "the multiple of its size."],
                table=cumulative_bytes_table(table), figure="storage"),
        Section("Final score vs total storage", ["Variants of one method (its own setting) are joined by a line; "
                                                 "ringed points form the Pareto front (nothing else is both "
                                                 "smaller and better)."], figure="pareto"),
        Section("Task order sensitivity", ["Final average per task order, mean ± sd over the seeds run with "
                                           "that order; spread = max - min over the orders' means."],
                table=order_summary(final_rows), figure="order_sensitivity"),
    ]
    evolving = evolving_configurations(table)
    if evolving:
        sections.append(Section("Forgetting: accuracy matrices", [
            "R[t, i] is the score on the i-th arriving task after t arrivals, averaged over runs by arrival "
            "position. Backward transfer = mean over i < T of R[T, i] - R[i, i]; forgetting = mean over i < T "
            "of the best earlier score on task i minus its final score."],
            table=transfer_summary(final_rows, evolving), figure="accuracy_matrices"))
    else:
        sections.append(Section("Forgetting: accuracy matrices", [
            "No method here changes shared state across tasks (none is `evolving`): every earlier task is "
            "scored from its own unchanged file, so R[t, i] = R[i, i], backward transfer and forgetting are 0."]))
    placement_figures = [name for name in figures if name.startswith("placement_")]
    if placement_figures:
        for name in placement_figures:
            sections.append(Section(f"Where the task pieces land: {name[len('placement_'):]}", [
                f"From the artifacts' `meta[\"{PLACEMENT_KEY}\"]`: per task, the % of each kind of weight in each "
                "layer that the task's piece changes (pooled over runs). Grey: not covered by the method."],
                figure=name))
    else:
        sections.append(Section("Where the task pieces land", [
            f"No method here recorded `meta[\"{PLACEMENT_KEY}\"]` in its artifacts (the contract in "
            "`analysis/placement.py`, for methods that change a subset of the pretrained weights, such as diff "
            "pruning and masking), so there is no placement figure."]))
    sections.append(Section("Runs", ["Every run (the per-seed, per-order points behind the ± columns)."],
                            table=runs_table(table, statuses)))
    failed = {run: s for run, s in statuses.items() if s.get("state") == "failed"}
    if failed:
        text = [f"- `{s['run_id']}`: {s.get('error', 'failed')}" for s in failed.values()]
        text.append("Failed runs are retried by the next `taskstream sweep` of the same spec; full tracebacks "
                    "are in `status/<run>.json`.")
        sections.append(Section("Failed runs", text,
                                code="\n\n".join(f"# {s['run_id']}\n{s.get('traceback', '')}".rstrip()
                                                 for s in failed.values())))
    sections += _reproducibility(paths, base)
    return title, sections, figures


# ----------------------------------------------------------------------------------------------------
# Rendering

def render_markdown(title: str, sections: list[Section], figure_files: dict[str, str]) -> str:
    """The report as Markdown; figures are linked by their relative PNG paths."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for number, paragraph in enumerate(section.text):
            lines.append(paragraph)
            following = section.text[number + 1] if number + 1 < len(section.text) else ""
            if not (paragraph.startswith("- ") and following.startswith("- ")):
                lines.append("")
        if section.table is not None and not section.table.empty:
            lines += [_markdown(section.table), ""]
        if section.figure:
            lines += [f"![{section.figure}]({figure_files[section.figure]})", ""]
        if section.code:
            lines += ["```", section.code, "```", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(f"<td>{html.escape('' if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))}"
                        "</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;
white-space:nowrap}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.8em}code{background:#f3f3f3;padding:0 .2em}"""


def render_html(title: str, sections: list[Section], figure_png: dict[str, bytes]) -> str:
    """The report as one self-contained HTML page: figures are embedded as base64 PNG."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        items = [t for t in section.text if t.startswith("- ")]
        for paragraph in section.text:
            if not paragraph.startswith("- "):
                parts.append(f"<p>{_inline(paragraph)}</p>")
        if items:
            parts.append("<ul>" + "".join(f"<li>{_inline(t[2:])}</li>" for t in items) + "</ul>")
        if section.table is not None and not section.table.empty:
            parts.append(_html_table(section.table))
        if section.figure:
            data = base64.b64encode(figure_png[section.figure]).decode("ascii")
            parts.append(f"<figure><img alt=\"{html.escape(section.figure)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{html.escape(section.figure)}</figcaption></figure>")
        if section.code:
            parts.append(f"<pre><code>{html.escape(section.code)}</code></pre>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_study_report(paths: str | Path | Iterable[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` for runs and studies into ``out_dir``.

    Returns the paths by name (``markdown``, ``html`` and one per figure).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out_dir = Path(out_dir)
    title, sections, figures = build_report(paths, out_dir)
    written: dict[str, Path] = {}
    pngs: dict[str, bytes] = {}
    (out_dir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
        pngs[name] = buffer.getvalue()
        written[name] = out_dir / FIGURES_DIR / f"{name}.png"
        written[name].write_bytes(pngs[name])
    files = {name: path.relative_to(out_dir).as_posix() for name, path in written.items()}
    written["markdown"] = out_dir / REPORT_MD
    written["markdown"].write_text(render_markdown(title, sections, files), encoding="utf-8")
    written["html"] = out_dir / REPORT_HTML
    written["html"].write_text(render_html(title, sections, pngs), encoding="utf-8")
    return written

