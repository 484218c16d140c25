"""Forgetting of the continual-learning baselines against a frozen-backbone method, on real GLUE rows.

Runs one taskstream stream (default: sst2, rte, mrpc, cola with a few hundred training rows each) on the
real all-MiniLM-L6-v2 backbone for sequential finetuning (Avalanche's Naive), EWC and replay (evolving: one
shared encoder plus a head per task, earlier tasks re-scored from the newest file) and linear_probe
(frozen backbone; re-scored from its own files with --reevaluate, so its forgetting must be exactly zero).

Prints, per method: the accuracy matrix R[t, i] (task score on task i after t arrivals), each earlier task's
forgetting (R[i, i] - R[T, i]), backward transfer (mean of R[T, i] - R[i, i] over i < T), the newest
artifact's bytes broken down (encoder, heads, ewc, replay) and the cumulative storage S(T). With --json the
same numbers are written as JSON.

Run (about 20 minutes on one CPU thread with the defaults):
    python -m bench.continual_forgetting --run-dir /tmp/continual-bench \\
        --json bench/results/continual_forgetting.json
The run directory holds full-model artifacts (hundreds of MB): keep it out of the repository.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import command_line, default_glue_dir  # first: offline Hugging Face defaults


def _matrix_summary(matrix) -> dict:
    """Forgetting per earlier task and backward transfer from an accuracy matrix (rows: steps)."""
    values = matrix.to_numpy()
    last = len(values) - 1
    forgetting = {task: float(values[i, i] - values[last, i]) for i, task in enumerate(matrix.columns[:last])}
    bwt = float(sum(values[last, i] - values[i, i] for i in range(last)) / last) if last else 0.0
    return {"forgetting": forgetting, "backward_transfer": bwt}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=default_glue_dir())
    ap.add_argument("--run-dir", type=Path, required=True, help="run directory (large artifacts; not in the repo)")
    ap.add_argument("--tasks", default="sst2,rte,mrpc,cola")
    ap.add_argument("--methods", default="sequential,ewc,replay,linear_probe",
                    help="taskstream method specs, e.g. sequential:learning_rate=1e-4,ewc:ewc_lambda=1e5")
    ap.add_argument("--max-train-examples", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--max-eval-examples", type=int, default=300)
    ap.add_argument("--max-dev-examples", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from analysis.tables import accuracy_matrix, load_ledger
    from stream.engine.config import RunConfig
    from stream.engine.runner import run_stream

    config = RunConfig.from_dict({
        "tasks": args.tasks, "methods": args.methods, "data_dir": str(args.data_dir) if args.data_dir else None,
        "seed": args.seed, "device": "cpu", "reevaluate": True,
        "budget": {"max_train_examples": args.max_train_examples, "epochs": args.epochs,
                   "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
                   "max_eval_examples": args.max_eval_examples, "max_dev_examples": args.max_dev_examples},
    })
    start = time.perf_counter()
    run_stream(config, args.run_dir, progress=False)
    table = load_ledger(args.run_dir)
    results = {"command": command_line("bench.continual_forgetting", argv),
               "config": config.to_dict(), "seconds": time.perf_counter() - start, "methods": {}}
    for spec in config.methods:
        label = spec.resolved_label
        matrix = accuracy_matrix(table, label)
        rows = table[table["method"] == label]
        last = rows[rows["step"] == rows["step"].max()].iloc[0]
        steps = rows.drop_duplicates("step").sort_values("step")
        record = {
            "matrix": {index: {task: float(v) for task, v in row.items() if v == v} for index, row in matrix.iterrows()},
            **_matrix_summary(matrix),
            "final_average": float(rows[rows["step"] == rows["step"].max()]["score"].mean()),
            "artifact_bytes_per_step": [int(b) for b in steps["artifact_bytes"]],
            "newest_artifact_breakdown": dict(last["breakdown"]),
            "cumulative_bytes": int(last["cumulative_bytes"]),
            "train_seconds": float(sum(s["train"] for s in steps["seconds"])),
        }
        results["methods"][label] = record
        print(f"\n== {label} ({last['sharing']}) ==")
        print(matrix.round(2).to_string())
        print("forgetting:", {k: round(v, 2) for k, v in record["forgetting"].items()},
              f"BWT {record['backward_transfer']:.2f}, final average {record['final_average']:.2f}")
        print(f"newest artifact {record['artifact_bytes_per_step'][-1]:,} B {record['newest_artifact_breakdown']}, "
              f"S(T) {record['cumulative_bytes']:,} B, train {record['train_seconds']:.0f} s")
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
