"""What the training-speed levers cost in accuracy: full finetuning with one lever switched off, against the run
with both on.

The reference is the budget study's 200-step run (bf16 autocast and length-grouped batches, both on by
default); ``bench/studies/levers_fp32_grouped.toml`` switches bf16 off and ``levers_bf16_random.toml``
switches length grouping off, on SST-2, MRPC and STS-B with the same budget, seed and data, and
``levers_grouping_seeds.toml`` repeats both grouping settings on seeds 1 and 2. A lever *costs* what the
reference's dev score loses against the run without it, per seed; the accuracy issue's rule keeps a lever on
by default only while its mean cost over the seeds is at most ``--tolerance`` (0.3) dev points on every task.
A dev split of 500 rows has a standard error of about 1.5 points on SST-2's accuracy, so a cost read on one
seed is one draw, not a measured effect.

    taskstream sweep bench/studies/levers_fp32_grouped.toml --data-dir ../shared/glue --workers 2 --threads 1
    taskstream sweep bench/studies/levers_bf16_random.toml --data-dir ../shared/glue --workers 2 --threads 1
    taskstream sweep bench/studies/levers_grouping_seeds.toml --data-dir ../shared/glue --workers 2 --threads 1
    python -m bench.levers_accuracy runs/budget runs/levers_fp32_grouped runs/levers_bf16_random \\
        --grouping-seeds runs/levers_grouping_seeds
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from bench.common import REPO, command_line, write_results  # first: offline Hugging Face defaults

from analysis.tables import arrival_rows, load_ledger  # noqa: E402

OUT = REPO / "bench" / "results" / "levers_accuracy"
REFERENCE_STEPS = 200


def own_scores(study_dir: Path, *, steps: int | None = None, budget: str | None = None) -> dict[int, dict[str, dict]]:
    """seed -> task -> {dev, test, train_seconds} of the study's runs on their own task, keeping the runs of
    ``steps`` optimizer steps and of the study budget named ``budget`` when given."""
    table = load_ledger(study_dir)
    own = arrival_rows(table)
    if steps is not None:
        own = own[own["train_steps"] == steps]
    if budget is not None:
        own = own[own["budget"] == budget]
    out: dict[int, dict[str, dict]] = {}
    for row in own.to_dict("records"):
        out.setdefault(int(row["seed"]), {})[row["task"]] = {
            "dev": row["dev_score"], "test": row["score"], "train_seconds": row["seconds"]["train"]}
    return out


def merged(*parts: dict[int, dict[str, dict]]) -> dict[int, dict[str, dict]]:
    """Seed-keyed scores from several studies in one mapping (a seed's tasks from every part)."""
    out: dict[int, dict[str, dict]] = {}
    for part in parts:
        for seed, tasks in part.items():
            out.setdefault(seed, {}).update(tasks)
    return out


def compare(reference: dict[int, dict[str, dict]], without: dict[int, dict[str, dict]],
            tolerance: float) -> list[dict]:
    """One row per task: the lever's cost on every seed both sides finished (lever-off dev minus reference
    dev; negative: the lever's run scored higher), their mean and sample sd, and whether the mean is within
    ``tolerance``; the scores are means over those seeds."""
    rows = []
    tasks = list(dict.fromkeys(task for seed in sorted(without) for task in without[seed]))
    for task in tasks:
        seeds = [s for s in sorted(without) if task in without[s] and task in reference.get(s, {})]
        if not seeds:
            continue
        on = [reference[s][task] for s in seeds]
        off = [without[s][task] for s in seeds]
        costs = [b["dev"] - a["dev"] for a, b in zip(on, off)]
        mean = statistics.fmean(costs)
        rows.append({"task": task, "seeds": seeds, "costs": costs, "cost": mean,
                     "cost_sd": statistics.stdev(costs) if len(costs) > 1 else math.nan,
                     "within": mean <= tolerance,
                     **{f"{key}_{side}": statistics.fmean(r[key] for r in runs)
                        for side, runs in (("on", on), ("off", off)) for key in ("dev", "test", "train_seconds")}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("budget_study", type=Path, help="the budget study's folder (its 200-step run, seed 0)")
    parser.add_argument("fp32_study", type=Path, help="levers_fp32_grouped's folder (bf16 off, seed 0)")
    parser.add_argument("random_study", type=Path, help="levers_bf16_random's folder (grouping off, seed 0)")
    parser.add_argument("--grouping-seeds", type=Path, default=None,
                        help="levers_grouping_seeds's folder: both grouping settings on more seeds")
    parser.add_argument("--tolerance", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    reference = own_scores(args.budget_study, steps=REFERENCE_STEPS)
    shuffled = own_scores(args.random_study)
    if args.grouping_seeds is not None:
        reference = merged(reference, own_scores(args.grouping_seeds, budget="grouped"))
        shuffled = merged(shuffled, own_scores(args.grouping_seeds, budget="shuffled"))
    levers = {"bf16 autocast": compare(reference, own_scores(args.fp32_study), args.tolerance),
              "length-grouped batches": compare(reference, shuffled, args.tolerance)}
    lines = ["# The speed levers' accuracy effect", "",
             f"Full finetuning, {REFERENCE_STEPS} steps of batch 32 per task on SST-2, MRPC and STS-B. Reference: "
             f"the budget study's {REFERENCE_STEPS}-step run (both levers on; seed 0) and, for length grouping, "
             "its seeds in `levers_grouping_seeds` when given; each lever's runs switch that lever off with the "
             "same seed, budget and data. Cost = lever-off dev score - reference dev score (what the lever "
             "loses; negative: the run with the lever scored higher), per seed, then the mean over the seeds "
             f"both sides finished. Rule: a lever stays on by default while its mean cost is at most "
             f"{args.tolerance} dev points on every task. A 500-row dev split has a standard error of 1-2 points, "
             "so a cost read on one seed is one draw.", ""]
    record = {"command": command_line("bench.levers_accuracy", argv), "tolerance": args.tolerance,
              "reference_steps": REFERENCE_STEPS, "levers": levers}
    for lever, rows in levers.items():
        lines += [f"## {lever}", "", "| task | seeds | dev with / without | test with / without | cost per seed | "
                  "mean cost (sd) | train s with / without |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['task']} | {', '.join(map(str, r['seeds']))} | {r['dev_on']:.2f} / {r['dev_off']:.2f} | "
                  f"{r['test_on']:.2f} / {r['test_off']:.2f} | {', '.join(f'{c:+.2f}' for c in r['costs'])} | "
                  f"{r['cost']:+.2f}" + ("" if math.isnan(r["cost_sd"]) else f" ({r['cost_sd']:.2f})")
                  + f" | {r['train_seconds_on']:.0f} / {r['train_seconds_off']:.0f} |" for r in rows]
        worst = max((r["cost"] for r in rows), default=math.nan)
        fewest = min((len(r["seeds"]) for r in rows), default=0)
        verdict = ("no task finished yet" if not rows else
                   f"stays on: its mean cost is at most {worst:+.2f} dev points" if all(r["within"] for r in rows)
                   else f"its mean cost reaches {worst:+.2f} dev points on a task: off by default under the rule")
        lines += ["", f"{lever}: {verdict} ({len(rows)} of 3 tasks measured, at least {fewest} seed(s) each).", ""]
        record[f"verdict: {lever}"] = verdict
    lines += ["Training seconds: 1 thread each, on a machine shared with other jobs (the speed itself is measured "
              "side by side by `bench/train_speed.py`).", "", f"Command: `{record['command']}`", ""]
    text = "\n".join(lines)
    write_results(args.out, text, record)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
