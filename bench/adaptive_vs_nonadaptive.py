"""What adaptive selection buys: diff pruning against its non-adaptive baseline, paired over seeds.

Reads the study ``bench/studies/adaptive_vs_nonadaptive.toml`` describes and writes
``bench/results/adaptive_vs_nonadaptive.{md,json}``: per task and seed, the test and dev scores of
``diff_pruning`` (its L0 stage chooses the entries) and ``diff_pruning_nonadaptive`` (the largest changes of a
finished full finetuning), their paired difference with a 95% t-interval over the seeds, and the density
stage 1 of diff pruning ended at (the adaptive selection only means something when the L0 stage, not the
projection, chose the entries).

    taskstream sweep bench/studies/adaptive_vs_nonadaptive.toml --data-dir ../shared/glue --workers 2 --threads 1
    python -m bench.adaptive_vs_nonadaptive runs/adaptive_vs_nonadaptive

The difference is reported whether it favours adaptive selection or not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from bench.common import REPO, write_results  # first: offline Hugging Face defaults

from analysis.paired import paired_interval  # noqa: E402
from analysis.tables import arrival_rows, load_ledger  # noqa: E402

OUT = REPO / "bench" / "results" / "adaptive_vs_nonadaptive"
ADAPTIVE, BASELINE = "diff_pruning", "diff_pruning_nonadaptive"


def per_seed(study_dir: Path) -> list[dict]:
    """One record per (task, seed) that both methods finished: their test and dev scores, stage-1 density."""
    table = load_ledger(study_dir)
    own = arrival_rows(table)
    cells: dict[tuple[str, int], dict] = {}
    for record in own.to_dict("records"):
        cell = cells.setdefault((record["task"], int(record["seed"])), {"task": record["task"],
                                                                       "seed": int(record["seed"])})
        cell[record["method"]] = {"test": record["score"], "dev": record["dev_score"]}
        if record["method"] == ADAPTIVE:
            sidecar = json.loads((Path(record["run"]) / record["artifact_path"]).with_suffix(".json").read_text())
            cell["stage1_density"] = sidecar["meta"]["l0_stage"]["density"]
            cell["target_density"] = sidecar["config"]["target_density"]
    return sorted((c for c in cells.values() if ADAPTIVE in c and BASELINE in c),
                  key=lambda c: (c["task"], c["seed"]))


def summarise(records: list[dict]) -> list[dict]:
    """Per task: both methods' mean test score and the paired difference (adaptive - baseline) with its CI."""
    out = []
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        differences = [r[ADAPTIVE]["test"] - r[BASELINE]["test"] for r in rows]
        mean, low, high = paired_interval(differences)
        out.append({"task": task, "seeds": len(rows),
                    "adaptive": sum(r[ADAPTIVE]["test"] for r in rows) / len(rows),
                    "baseline": sum(r[BASELINE]["test"] for r in rows) / len(rows),
                    "difference": mean, "ci_low": low, "ci_high": high,
                    "stage1_density": [r["stage1_density"] for r in rows]})
    return out


def markdown(records: list[dict], summary: list[dict], source: str) -> str:
    """The results page."""
    lines = ["# Adaptive vs non-adaptive diff pruning", "",
             f"Made by `bench/adaptive_vs_nonadaptive.py` from `{source}`. Test scores are GLUE validation x 100 "
             "from models rebuilt from the stored files; the difference is diff_pruning minus "
             "diff_pruning_nonadaptive, paired by seed, with a 95% t-interval over the seeds.", "",
             "| task | seeds | diff_pruning | non-adaptive | difference | 95% interval | stage-1 density |",
             "|---|---:|---:|---:|---:|---|---|"]
    for s in summary:
        interval = "n/a (one seed)" if math.isnan(s["ci_low"]) else f"[{s['ci_low']:+.1f}, {s['ci_high']:+.1f}]"
        density = ", ".join(f"{100 * d:.3f}%" for d in s["stage1_density"])
        lines.append(f"| {s['task']} | {s['seeds']} | {s['adaptive']:.1f} | {s['baseline']:.1f} | "
                     f"{s['difference']:+.1f} | {interval} | {density} |")
    lines += ["", "Per seed (test / dev):", "", "| task | seed | diff_pruning | non-adaptive |", "|---|---:|---|---|"]
    for r in records:
        lines.append(f"| {r['task']} | {r['seed']} | {r[ADAPTIVE]['test']:.1f} / {r[ADAPTIVE]['dev']:.1f} | "
                     f"{r[BASELINE]['test']:.1f} / {r[BASELINE]['dev']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    records = per_seed(args.study)
    if not records:
        parser.error(f"{args.study}: no (task, seed) that both {ADAPTIVE} and {BASELINE} finished")
    summary = summarise(records)
    source = os.path.relpath(args.study, args.out.parent)
    write_results(args.out, markdown(records, summary, source), {"per_seed": records, "summary": summary})
    print(args.out.with_suffix(".md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
