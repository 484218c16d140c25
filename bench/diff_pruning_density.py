"""Does diff pruning's L0 stage reach its target density by itself, per task?

Reads diff pruning artifacts of any runs or studies (their sidecars record the L0 stage: the expected
density along the way, the density of the state model selection kept, the open-gate fraction, and what the
magnitude projection then did) and writes ``bench/results/diff_pruning_density.{md,png}``: per (method, task),
the target, the density stage 1 ended at under the evaluation gates, how many entries the projection kept
against the k it may keep, and the dev scores of stage 1 and of fixed-mask finetuning.

    python -m bench.diff_pruning_density runs/default_probe [more runs or studies]

A stage-1 density near the target means the controller did the pruning and the projection only trimmed; a
density far above it means the projection, not the L0 stage, chose the mask (what the paper's fixed penalty
does in a stream's few hundred steps).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.common import REPO  # first: offline Hugging Face defaults

from analysis.diff_stages import density_traces, plot_density_traces  # noqa: E402
from analysis.tables import arrival_rows, load_ledger  # noqa: E402

OUT = REPO / "bench" / "results" / "diff_pruning_density"


def stage_rows(table) -> list[dict]:
    """One record per diff pruning artifact: target, stage-1 density, kept entries, stage dev scores."""
    records = []
    own = arrival_rows(table)
    for record in own.to_dict("records"):
        sidecar_path = (Path(record["run"]) / record["artifact_path"]).with_suffix(".json")
        if not sidecar_path.exists():
            continue
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        meta = sidecar.get("meta", {})
        stage1 = meta.get("l0_stage")
        if not isinstance(stage1, dict):
            continue
        gated = int(meta["gated_params"])
        target = float(sidecar["config"]["target_density"])
        projection = stage1.get("projection", {})
        records.append({
            "run": os.path.basename(record["run"]), "method": record["method"], "task": record["task"],
            "target": target,
            "stage1_density": float(stage1["density"]),
            "open_fraction": stage1.get("open_fraction"), "expected_density": stage1.get("expected_density"),
            "control": stage1.get("control", "fixed"), "kept": projection.get("kept"),
            "k": round(target * gated), "gated": gated,
            "stage1_dev": stage1.get("best_dev_score"),
            "stage3_dev": (meta.get("finetune_stage") or {}).get("best_dev_score"),
            "test": record["score"], "steps": record["train_steps"],
        })
    return sorted(records, key=lambda r: (r["method"], r["task"], r["run"]))


def markdown(records: list[dict], sources: list[str]) -> str:
    """The results page."""
    lines = ["# Diff pruning: the density its L0 stage reaches, per task", "",
             "Made by `bench/diff_pruning_density.py` from: " + ", ".join(f"`{s}`" for s in sources) + ".", "",
             "| run | method | task | control | target | stage-1 density | open gates | kept / k | stage-1 dev | "
             "stage-3 dev | test | steps |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.3f}%"

    def score(value):
        return "n/a" if value is None else f"{value:.1f}"

    for r in records:
        kept = "n/a" if r["kept"] is None else f"{r['kept']:,} / {r['k']:,}"
        lines.append(f"| {r['run']} | {r['method']} | {r['task']} | {r['control']} | {pct(r['target'])} | "
                     f"{pct(r['stage1_density'])} | {pct(r['open_fraction'])} | {kept} | {score(r['stage1_dev'])} | "
                     f"{score(r['stage3_dev'])} | {score(r['test'])} | {r['steps']} |")
    lines += ["", "Stage-1 density: the nonzero fraction of the diff under the evaluation gates in the state the L0 "
              "stage kept; open gates: the fraction with log-alpha > 0 at the stage's end. The figure "
              "(`diff_pruning_density.png`) shows the expected density along the L0 stage against the "
              "controller's schedule."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", type=Path, nargs="+", metavar="RUN_OR_STUDY")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = load_ledger(args.paths)
    records = stage_rows(table)
    if not records:
        parser.error("no diff pruning artifact with an L0 stage in " + ", ".join(map(str, args.paths)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sources = [os.path.relpath(p, args.out.parent) for p in args.paths]
    args.out.with_suffix(".md").write_text(markdown(records, sources), encoding="utf-8")
    plot_density_traces(density_traces(table)).savefig(args.out.with_suffix(".png"), dpi=120)
    print(args.out.with_suffix(".md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
