"""The diff pruning paper's Table 1 comparison, reproduced on offline GLUE with the bundled MiniLM: one command.

    python -m bench.reproduce                       # run (or resume) the study, then write the results
    python -m bench.reproduce --tables-only         # only (re)write the results from the study directory

1. Runs ``taskstream sweep bench/studies/reproduction.toml --study-dir runs/reproduction --data-dir
   ../shared/glue --workers 2 --threads 1`` in a subprocess (sweeps resume: a re-launch skips finished runs
   and continues an interrupted one after its last completed task), timing its wall time.
2. Copies the study directory to ``bench/results/reproduction/`` without the ``.safetensors`` tensor files
   (spec, ``study.json``, launches, status, and per run its config, versions, ledger, log and artifact
   sidecars: everything the tables and figures are drawn from) and writes the study report there
   (``report.md``, ``report.html``, ``figures/``: score vs tasks, storage, Pareto, placement).
3. Writes ``table1.md`` / ``table1.json``: the paper's Table 1 shape (score per task, average, new
   parameters per task in %, the total-parameter multiplier for the five tasks) plus true bytes per task and
   cumulative bytes, each mean ± sample sd over the seeds, beside the paper's numbers (BERT-large, GLUE test
   server, Guo, Rush & Kim 2021, Table 1), and the wall time each method's runs took.

Everything in step 3 is computed from the copied files alone, so ``--tables-only`` redraws it at any time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, default_glue_dir  # first: offline Hugging Face defaults

import pandas as pd  # noqa: E402

from analysis.paired import format_difference, paired_differences  # noqa: E402
from analysis.study_report import pm, summary_stats_table, write_study_report  # noqa: E402
from analysis.tables import final_stats, final_table, load_ledger, read_study  # noqa: E402

# The paper's Table 1 (Guo, Rush & Kim 2021; BERT-large, GLUE test server, nine tasks):
# average score and new parameters per task (%). None: not in that table (BitFit reports GLUE dev 84.2 vs
# diff pruning 84.6 vs full finetuning 84.8 in its own paper; LoRA, masking and the linear probe are not in it).
PAPER = {
    "full": (80.6, 100.0), "adapters": (80.4, 3.6), "diff_pruning": (80.6, 0.5),
    "diff_pruning_unstructured": (79.4, 0.5), "diff_pruning_nonadaptive": (75.5, 0.5),
    "last_layer-k1": (68.2, 3.8),
}
DEFAULT_SPEC = REPO / "bench" / "studies" / "reproduction.toml"
DEFAULT_STUDY_DIR = REPO / "runs" / "reproduction"
DEFAULT_OUT = REPO / "bench" / "results" / "reproduction"
SKIPPED_SUFFIXES = (".safetensors",)
SKIPPED_NAMES = (".lock",)


def run_sweep(args) -> dict:
    """Run (or resume) the study in a subprocess; its wall time and the machine's load around it.

    Not its CPU time: the runs execute in forkserver workers, grandchildren this process never waits for,
    so ``RUSAGE_CHILDREN`` would not count them."""
    command = [sys.executable, "-m", "stream.engine.cli", "sweep", str(args.spec), "--study-dir", str(args.study_dir),
               "--workers", str(args.workers), "--threads", str(args.threads), "--no-report"]
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    print("$ " + " ".join(command), flush=True)
    start, load_before = time.perf_counter(), os.getloadavg()
    returncode = subprocess.call(command, cwd=REPO, env=env)
    return {"command": command, "returncode": returncode, "wall_seconds": time.perf_counter() - start,
            "load_before": load_before, "load_after": os.getloadavg(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def copy_study(study_dir: Path, out: Path) -> None:
    """Copy the study directory without tensor files (they stay in the study directory)."""
    if out.exists():
        for child in out.iterdir():
            if child.name in ("runs", "status") and child.is_dir():
                shutil.rmtree(child)
    shutil.copytree(study_dir, out, dirs_exist_ok=True,
                    ignore=lambda _, names: [n for n in names if n.endswith(SKIPPED_SUFFIXES) or n in SKIPPED_NAMES])


def _times(iso: str) -> float:
    return time.mktime(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))


def study_timing(study_dir: Path) -> dict:
    """Wall time of the study from its own records: launches, and each run's status (seconds, end time)."""
    launches = [json.loads(line) for line in (study_dir / "launches.jsonl").read_text().splitlines() if line.strip()]
    statuses = [json.loads(p.read_text()) for p in sorted((study_dir / "status").glob("*.json"))]
    done = [s for s in statuses if s.get("state") == "done" and "seconds" in s]
    first = min(_times(line["time"]) for line in launches)
    last = max((_times(s["time"]) for s in done), default=first)
    return {"launches": len(launches), "first_launch": launches[0]["time"], "last_run_done": max(
        (s["time"] for s in done), default=None), "span_seconds": last - first,
            "run_seconds_total": sum(s["seconds"] for s in done), "runs_done": len(done), "runs": len(statuses),
            "workers": max(line.get("workers") or 0 for line in launches), "threads": launches[-1].get("threads"),
            "versions": launches[-1].get("versions", {})}


def method_seconds(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: ledger wall seconds per run (train, eval, all phases), mean over its runs."""
    steps = table.drop_duplicates(["run", "method", "step"])
    phases = pd.DataFrame(list(steps["seconds"]), index=steps.index)
    phases[["run", "method"]] = steps[["run", "method"]]
    per_run = phases.groupby(["method", "run"], sort=False).sum(numeric_only=True)
    return per_run.groupby(level="method", sort=False).mean()


def paper_table(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Table 1's shape with ± over seeds, the paper's columns, and the per-method records for JSON."""
    shown = summary_stats_table(table)
    stats = final_stats(table).set_index("method")
    final = final_table(table)
    bound = final.groupby("method", sort=False)["bytes_vs_bound"].mean()
    seconds = method_seconds(table)
    versus_full = paired_differences(final, "full").set_index("method")
    shown.insert(shown.columns.get_loc("GLUE avg") + 1, "Δ vs full [95% CI]",
                 [format_difference(*versus_full.loc[m, ["mean", "low", "high"]]) if m in versus_full.index else ""
                  for m in shown["method"]])
    methods = [m for m in shown["method"] if m in stats.index]  # not the chance row
    shown["bytes / bound"] = [("n/a" if pd.isna(bound.get(m)) else f"{bound[m]:.3f}") if m in methods else ""
                              for m in shown["method"]]
    shown["train s / run"] = [f"{seconds.loc[m, 'train']:.0f}" if m in methods else "" for m in shown["method"]]
    shown["paper avg (9 tasks)"] = [f"{PAPER[m][0]:.1f}" if m in PAPER else "" for m in shown["method"]]
    shown["paper new params / task"] = [f"{PAPER[m][1]:g}%" if m in PAPER else "" for m in shown["method"]]
    records = []
    tasks = [c for c in shown.columns if c in set(table["eval_task"])]
    for method in methods:
        # One seed has no sample sd: None in the JSON (NaN is not JSON).
        row = stats.loc[method].astype(object).where(stats.loc[method].notna(), None)
        records.append({
            "method": method, "runs": int(row["n"]),
            "scores": {t: {"mean": row[t], "sd": row[f"{t}_std"]} for t in tasks},
            "average": {"mean": row["average"], "sd": row["average_std"]},
            "delta_vs_full": None if method not in versus_full.index else {
                key: (None if pd.isna(versus_full.loc[method, key]) else float(versus_full.loc[method, key]))
                for key in ("pairs", "mean", "low", "high")},
            "new_params_per_task_pct": {"mean": row["new_params_per_task_pct"],
                                        "sd": row["new_params_per_task_pct_std"]},
            "total_params_multiplier": {"mean": row["total_params_multiplier"],
                                        "sd": row["total_params_multiplier_std"]},
            "bytes_per_task": {"mean": row["bytes_per_task"], "sd": row["bytes_per_task_std"]},
            "cumulative_bytes": {"mean": row["total_bytes"], "sd": row["total_bytes_std"]},
            "bytes_vs_lower_bound": None if pd.isna(bound.get(method)) else float(bound[method]),
            "seconds_per_run": {k: float(v) for k, v in seconds.loc[method].items()},
            "paper": None if method not in PAPER else {"average": PAPER[method][0],
                                                       "new_params_per_task_pct": PAPER[method][1]},
        })
    return shown, records


def budget_sentence(config: dict) -> str:
    """The study's budget in words: the shared fields, then each task's overrides."""
    budget = config["budget"]
    rows = "all" if budget["max_train_examples"] is None else f"up to {budget['max_train_examples']:,}"
    per_task = config.get("task_budgets") or {}
    # A task's max_steps replaces any epochs, its epochs replace the base's unless the base sets max_steps.
    sets_length = [("max_steps" in fields or ("epochs" in fields and not budget.get("max_steps")))
                   for fields in per_task.values()]
    if per_task.keys() == set(config["tasks"]) and all(sets_length):
        length = "each task's own length"  # the base length applies to no task
    else:
        length = (f"{budget['max_steps']} optimizer steps" if budget.get("max_steps") else f"{budget['epochs']} epochs")
    test = ("the whole GLUE validation split" if budget["max_eval_examples"] is None
            else f"GLUE validation capped at {budget['max_eval_examples']} rows")
    text = (f"{rows} training rows, {length} of batch {budget['batch_size']}, length {budget['max_seq_length']}, "
            f"dev {budget['max_dev_examples']} rows carved from train, test = {test}")
    overrides = "; ".join(f"{task}: " + ", ".join(f"{key} = {value}" for key, value in fields.items())
                          for task, fields in per_task.items())
    return text + (f" (per task: {overrides})" if overrides else "")


# The reproduction's goals (the reproduction issue): (method, reference, bound, wording). A goal is met when the
# GLUE average's mean paired difference method - reference is at least ``bound`` (None: when the difference's
# whole 95% interval lies below zero, i.e. the method is clearly below the reference).
GOALS = (
    ("diff_pruning", "full", -0.5, "structured diff pruning within 0.5 points of full finetuning"),
    ("adapters", "full", -1.0, "adapters within 1.0 point of full finetuning"),
    ("masking", "full", -2.0, "masking within 2.0 points of full finetuning"),
    ("last_layer-k1", "full", None, "last-layer tuning clearly below full finetuning"),
    ("diff_pruning_nonadaptive", "diff_pruning", None, "the non-adaptive baseline clearly below diff pruning"),
)


def paired_gap(final: pd.DataFrame, method: str, reference: str) -> dict:
    """``method``'s GLUE average minus ``reference``'s, paired by seed: pairs, mean, and the 95% interval's
    low and high (None where there is no interval: one pair)."""
    pair = final[final["method"].isin([method, reference])]
    row = paired_differences(pair, reference).set_index("method").loc[method]
    return {"pairs": int(row["pairs"]), "mean": float(row["mean"]),
            **{k: None if pd.isna(row[k]) else float(row[k]) for k in ("low", "high")}}


def _gap_text(gap: dict) -> str:
    return format_difference(gap["mean"], *(math.nan if gap[k] is None else gap[k] for k in ("low", "high")))


def goal_records(final: pd.DataFrame) -> list[dict]:
    """Each goal of :data:`GOALS` whose two methods are in ``final``: the paired difference of the GLUE
    average, its interval, and whether the goal is met (None when it cannot be judged: no interval)."""
    records = []
    for method, reference, bound, text in GOALS:
        if not {method, reference} <= set(final["method"]):
            continue
        gap = paired_gap(final, method, reference)
        if bound is not None:
            met = gap["mean"] >= bound
        else:
            met = None if gap["high"] is None else gap["high"] < 0
        records.append({"goal": text, "method": method, "reference": reference, **gap, "met": met})
    return records


def goal_lines(records: list[dict]) -> list[str]:
    """The goals as a table under a heading; no lines without any goal to judge."""
    if not records:
        return []
    rows = pd.DataFrame([{"goal": r["goal"], "difference [95% CI]": _gap_text(r),
                          "met": {True: "yes", False: "no", None: "not judged (one seed)"}[r["met"]]}
                         for r in records])
    return ["## Goals", "", "GLUE average, method minus reference, paired by seed (95% t-interval over the seeds).",
            "", _markdown_table(rows), ""]


def ordering_records(final: pd.DataFrame) -> list[dict]:
    """The paper's ranking of its methods (by Table 1's average), each neighbouring pair (higher, lower) with
    the paper's gap and ours paired by seed; pairs with a method missing here are left out."""
    ranked = sorted((m for m in PAPER if m in set(final["method"])), key=lambda m: -PAPER[m][0])
    records = []
    for higher, lower in zip(ranked, ranked[1:]):
        gap = paired_gap(final, higher, lower)
        records.append({"higher": higher, "lower": lower, "paper": round(PAPER[higher][0] - PAPER[lower][0], 1),
                        **gap, "same_order": gap["mean"] >= 0})
    return records


def ordering_lines(records: list[dict]) -> list[str]:
    """The paper's ordering against this study's as a table under a heading; none without a pair."""
    if not records:
        return []
    rows = pd.DataFrame([{"paper's order": f"{r['higher']} ≥ {r['lower']}", "paper gap": f"{r['paper']:+.1f}",
                          "gap here [95% CI]": _gap_text(r), "same order": "yes" if r["same_order"] else "no"}
                         for r in records])
    return ["## The paper's ordering", "",
            "Neighbours in the paper's ranking (Table 1's average), higher minus lower: the paper's gap, and this "
            "study's GLUE-average gap paired by seed.", "", _markdown_table(rows), ""]


def settings_lines(study: dict) -> list[str]:
    """Each method's fixed per-task options (the selection study's dev-chosen learning rates) as a table
    under a heading; no lines when the study fixes none (every method at its defaults)."""
    per_method: dict[str, dict[str, dict]] = {}
    for run in study["runs"]:
        for method in run["config"]["methods"]:
            per_method.setdefault(method["label"], method.get("per_task") or {})
    if not any(per_method.values()):
        return []
    tasks = study["runs"][0]["config"]["tasks"]
    rows = pd.DataFrame([{"method": label, **{t: ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                                           for k, v in per_task.get(t, {}).items()) or "default"
                                              for t in tasks}}
                         for label, per_task in per_method.items()])
    return ["## Settings per task", "",
            "Chosen on each task's dev split by the selection study (`bench/studies/reproduction_lr.toml`, "
            "seed 0, a three-value learning-rate grid per method; its ledgers record every candidate's dev "
            "score); the same for every seed of a method.", "", _markdown_table(rows), ""]


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(frame.columns))) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def ranking(records: list[dict]) -> str:
    ordered = sorted(records, key=lambda r: -r["average"]["mean"])
    return " > ".join(f"{r['method']} {pm(r['average']['mean'], r['average']['sd'])}" for r in ordered)


def write_tables(out: Path, sweep: dict | None) -> dict:
    table = load_ledger(out)
    shown, records = paper_table(table)
    timing = study_timing(out)
    study = read_study(out)
    budget = study["runs"][0]["config"]["budget"]
    seeds = sorted({r["seed"] for r in study["runs"]})
    settings = settings_lines(study)
    goals = goal_records(final_table(table))
    ordering = ordering_records(final_table(table))
    n_tasks = len(set(table["eval_task"]))
    versions = {k: v for k, v in timing["versions"].items() if k in (
        "python", "platform", "torch", "transformers", "peft", "avalanche-lib", "numpy", "safetensors")}
    lines = [
        f"# Table 1 of the diff pruning paper, reproduced on MiniLM ({study['name']})", "",
        f"{n_tasks} GLUE tasks in the given order ({' > '.join(study['runs'][0]['order'])}), "
        f"backbone `{study['runs'][0]['config']['backbone']}` (6 layers, hidden 384, "
        f"{int(table['backbone_params'].iloc[0]):,} parameters), seeds {seeds}; "
        f"{'every method at the settings below' if settings else 'every method at its defaults'} "
        f"with the same budget: {budget_sentence(study['runs'][0]['config'])}. Scores x100 "
        "from models rebuilt from the stored files; ± is the sample sd over the seeds; Δ vs full is the GLUE "
        "average's difference from full finetuning paired by seed, with its 95% t-interval over the seeds. "
        "New params / task and "
        f"total params follow the paper's convention (the multiplier is for these {n_tasks} tasks; full "
        f"finetuning shares nothing, so it is {n_tasks}x); bytes are the artifact files on disk (tensors + JSON sidecar), total "
        "bytes include the backbone once for shared-backbone methods. bytes / bound: artifact bytes over the "
        "ledger's information-theoretic lower bound (methods storing sparse positions or masks). train s / run: "
        f"the ledger's training wall seconds for the {n_tasks} tasks (machine shared, see below). Paper columns: "
        "BERT-large on the GLUE test server over nine tasks (so compare orderings and gaps, not levels).", "",
        _markdown_table(shown), "",
        f"Ranking by average: {ranking(records)}", "",
        *goal_lines(goals),
        *ordering_lines(ordering),
        *settings,
        "## Command, versions and time", "",
        "    python -m bench.reproduce", "",
        "which runs `" + " ".join(["taskstream sweep", "bench/studies/reproduction.toml", "--study-dir",
                                   "runs/reproduction", "--data-dir ../shared/glue", "--workers", "2",
                                   "--threads", "1"]) + "` and writes this directory (`--tables-only` redraws "
        "it from the files here).", "",
        f"- study: {timing['runs_done']}/{timing['runs']} runs done in {timing['launches']} launch(es); first "
        f"launch {timing['first_launch']}, last run done {timing['last_run_done']}: "
        f"{timing['span_seconds'] / 3600:.2f} h wall on up to {timing['workers']} worker(s) x {timing['threads']} "
        f"thread(s); the runs' own wall time sums to {timing['run_seconds_total'] / 3600:.2f} h.",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    if sweep is not None:
        lines.append(f"- this launch: {sweep['wall_seconds'] / 3600:.2f} h wall, load average "
                     f"{'/'.join(f'{x:.1f}' for x in sweep['load_before'])} before, "
                     f"{'/'.join(f'{x:.1f}' for x in sweep['load_after'])} after.")
    lines.append("")
    (out / "table1.md").write_text("\n".join(lines))
    result = {"study": study["name"], "budget": budget, "seeds": seeds, "methods": records, "goals": goals,
              "ordering": ordering, "timing": timing,
              "sweep": sweep}
    (out / "table1.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    print("\n".join(lines))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--study-dir", type=Path, default=DEFAULT_STUDY_DIR,
                        help="where the runs (with their tensor files) live (default: runs/reproduction)")
    parser.add_argument("--data-dir", type=Path, default=default_glue_dir(),
                        help="offline GLUE (default: $TASKSTREAM_DATA_DIR, else a shared/glue folder above the repo)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (committed)")
    parser.add_argument("--tables-only", action="store_true", help="skip the sweep; redraw from --out")
    args = parser.parse_args(argv)
    sweep = None
    if not args.tables_only:
        sweep = run_sweep(args)
        if sweep["returncode"] != 0:
            print(f"sweep exited with {sweep['returncode']}; writing results for the runs that finished",
                  file=sys.stderr)
        copy_study(args.study_dir, args.out)
    write_study_report(args.out, args.out)
    return write_tables(args.out, sweep)


if __name__ == "__main__":
    main()
