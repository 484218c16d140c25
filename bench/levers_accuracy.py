"""What the training-speed levers cost in accuracy: full finetuning with one lever switched off, against the run
with both on.

The reference is the budget study's 200-step run (bf16 autocast and length-grouped batches, both on by
default); ``bench/studies/levers_fp32_grouped.toml`` switches bf16 off and ``levers_bf16_random.toml``
switches length grouping off, on SST-2, MRPC and STS-B with the same budget, seed and data. A lever *costs*
what the reference's dev score loses against the run without it; the accuracy issue's rule keeps a lever on
by default only while it costs at most ``--tolerance`` (0.3) dev points on every task. One seed: a dev split
of 500 rows has a standard error of about 1.5 points on SST-2's accuracy, so a cost smaller than that is a
reading of one draw, not a measured effect.

    taskstream sweep bench/studies/levers_fp32_grouped.toml --data-dir ../shared/glue --workers 2 --threads 1
    taskstream sweep bench/studies/levers_bf16_random.toml --data-dir ../shared/glue --workers 2 --threads 1
    python -m bench.levers_accuracy runs/budget runs/levers_fp32_grouped runs/levers_bf16_random
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench.common import REPO, command_line, write_results  # first: offline Hugging Face defaults

from analysis.tables import load_ledger  # noqa: E402

OUT = REPO / "bench" / "results" / "levers_accuracy"
REFERENCE_STEPS = 200


def own_scores(study_dir: Path, steps: int | None = None) -> dict[str, dict]:
    """task -> {dev, test, train_seconds, precision, steps} of the study's runs on their own task (the run of
    ``steps`` optimizer steps when the study has several budgets)."""
    table = load_ledger(study_dir)
    own = table[table["eval_task"] == table["task"]]
    if steps is not None:
        own = own[own["train_steps"] == steps]
    return {row["task"]: {"dev": row["dev_score"], "test": row["score"], "train_seconds": row["seconds"]["train"],
                          "precision": (row["numerics"] or {}).get("precision")}
            for row in own.to_dict("records")}


def compare(reference: dict[str, dict], without: dict[str, dict], tolerance: float) -> list[dict]:
    """One row per task the lever-off run finished: both runs' dev and test scores and the lever's cost
    (lever-off dev minus reference dev; negative: the lever's run scored higher)."""
    rows = []
    for task, off in without.items():
        if task not in reference:
            continue
        on = reference[task]
        cost = off["dev"] - on["dev"]
        rows.append({"task": task, "dev_on": on["dev"], "dev_off": off["dev"], "test_on": on["test"],
                     "test_off": off["test"], "cost": cost, "within": cost <= tolerance,
                     "train_seconds_on": on["train_seconds"], "train_seconds_off": off["train_seconds"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("budget_study", type=Path, help="the budget study's folder (its 200-step run)")
    parser.add_argument("fp32_study", type=Path, help="levers_fp32_grouped's folder (bf16 off)")
    parser.add_argument("random_study", type=Path, help="levers_bf16_random's folder (length grouping off)")
    parser.add_argument("--tolerance", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    reference = own_scores(args.budget_study, REFERENCE_STEPS)
    levers = {"bf16 autocast": compare(reference, own_scores(args.fp32_study), args.tolerance),
              "length-grouped batches": compare(reference, own_scores(args.random_study), args.tolerance)}
    lines = ["# The speed levers' accuracy effect", "",
             f"Full finetuning, {REFERENCE_STEPS} steps of batch 32 per task, seed 0. Reference: the budget study's "
             f"{REFERENCE_STEPS}-step run (both levers on); each lever's study switches one lever off. Cost = "
             "lever-off dev score - reference dev score (what the lever loses; negative: the run with the lever "
             "scored higher). Rule: a "
             f"lever stays on by default while it costs at most {args.tolerance} dev points on every task. One "
             "seed: a 500-row dev split has a standard error of 1-2 points, so these costs read one draw.", ""]
    record = {"command": command_line("bench.levers_accuracy", argv), "tolerance": args.tolerance,
              "reference_steps": REFERENCE_STEPS, "levers": levers}
    for lever, rows in levers.items():
        lines += [f"## {lever}", "", "| task | dev with / without | test with / without | cost (dev points) | "
                  "train s with / without |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['task']} | {r['dev_on']:.2f} / {r['dev_off']:.2f} | {r['test_on']:.2f} / "
                  f"{r['test_off']:.2f} | {r['cost']:+.2f} | {r['train_seconds_on']:.0f} / "
                  f"{r['train_seconds_off']:.0f} |" for r in rows]
        worst = max((r["cost"] for r in rows), default=math.nan)
        verdict = ("no task finished yet" if not rows else
                   f"stays on: costs at most {worst:+.2f} dev points" if all(r["within"] for r in rows) else
                   f"costs {worst:+.2f} dev points on a task: off by default")
        lines += ["", f"{lever}: {verdict} ({len(rows)} of 3 tasks measured).", ""]
        record[f"verdict: {lever}"] = verdict
    lines += ["Training seconds: 1 thread each, on a machine shared with other jobs (the speed itself is measured "
              "side by side by `bench/train_speed.py`).", "", f"Command: `{record['command']}`", ""]
    text = "\n".join(lines)
    write_results(args.out, text, record)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
