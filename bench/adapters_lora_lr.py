"""Learning-rate and size sanity check for adapters and LoRA on all-MiniLM-L6-v2, through the real runner.

Every variant is one method of a single ``run_stream`` run on one task (default: SST-2, 500 training rows,
2 epochs, batch 32), so each number comes from the model rebuilt from its artifact file, exactly as in a
study. Printed per variant: the test score (GLUE validation split, all rows), the best dev score and the
step it was reached, the artifact's bytes on disk (tensors + sidecar) and its breakdown, new parameters as
a percentage of the backbone, and training seconds.

The budget is deliberately the stream's small one (the default budget trains on 1000 rows for 2 epochs), so
the chosen defaults are the ones that work when few steps are taken; papers tuned for far longer runs.
One seed per variant: differences under ~2 points on SST-2's 872 test rows are noise.

Run from the repository root (about 20 minutes on one core with the defaults):
    python bench/adapters_lora_lr.py --run-dir /tmp/bench-adapters-lora
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_setup import default_glue_dir  # first: offline HF defaults, this checkout on sys.path

DEFAULT_METHODS = [
    "linear_probe",
    "adapters:learning_rate=1e-4",
    "adapters:learning_rate=3e-4",
    "adapters:learning_rate=1e-3",
    "adapters:learning_rate=3e-3",
    "adapters:bottleneck=8:learning_rate=1e-3",
    "adapters:bottleneck=256:learning_rate=1e-3",
    "lora:learning_rate=3e-4",
    "lora:learning_rate=1e-3",
    "lora:learning_rate=3e-3",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory (resumed if it exists)")
    parser.add_argument("--glue-dir", type=Path, default=default_glue_dir())
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                        help="method variants as name[:key=value...] (as in taskstream run --methods)")
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--max-eval-examples", type=int, default=None, help="cap on test rows (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    import torch

    from stream.core.ledger import read_ledger
    from stream.core.scenario import Budget
    from stream.engine.config import MethodSpec, RunConfig
    from stream.engine.runner import run_stream

    torch.set_num_threads(args.threads)
    budget = Budget(max_train_examples=args.n_train, epochs=args.epochs, batch_size=args.batch_size,
                    max_seq_length=args.max_seq_length, max_eval_examples=args.max_eval_examples)
    config = RunConfig(tasks=(args.task,), methods=tuple(MethodSpec.parse(m) for m in args.methods),
                       data_dir=str(args.glue_dir) if args.glue_dir else None, budget=budget, seed=args.seed,
                       device="cpu")
    started = time.perf_counter()
    summary = run_stream(config, args.run_dir, progress=False)
    rows = read_ledger(summary.run_dir)

    table = []
    for spec in config.methods:
        row = next(r for r in rows if r["method"] == spec.resolved_label)
        table.append({
            "method": spec.resolved_label, "test": row["score"], "dev": row["dev_score"],
            "best_step": json.loads((args.run_dir / row["artifact_path"]).with_suffix(".json").read_text())
            ["fit"]["best_step"],
            "steps": row["train_steps"], "bytes": row["artifact_bytes"], "breakdown": row["breakdown"],
            "new_params": row["new_params"], "new_params_pct": 100 * row["new_params_fraction"],
            "train_seconds": row["seconds"]["train"],
        })
    print(f"\n{args.task}: {args.n_train} training rows, {args.epochs} epochs, batch {args.batch_size}, "
          f"seed {args.seed}; test = GLUE validation; backbone {rows[0]['backbone_params']:,} params")
    print("| method | test | dev | best step / steps | bytes per task | tensor bytes by group | new params % | train s |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for t in table:
        groups = ", ".join(f"{k} {v:,}" for k, v in t["breakdown"].items())
        print(f"| {t['method']} | {t['test']:.1f} | {t['dev']:.1f} | {t['best_step']} / {t['steps']} | "
              f"{t['bytes']:,} | {groups} | {t['new_params_pct']:.2f} | {t['train_seconds']:.0f} |")
    print(f"\nwall time {time.perf_counter() - started:.0f}s (resumed variants are not retrained)")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
