"""Learning-rate sanity check for masking and BitFit on all-MiniLM-L6-v2, with bytes per task.

Why this exists
---------------
Both papers tuned on BERT-base/large: masking uses Adam at ~1e-3 on the mask scores, BitFit a "large" learning
rate (~1e-3) on the biases. This script checks those defaults on the 6-block MiniLM backbone with a short real
budget, side by side in one run, and measures what each method's per-task file costs against its lower bound.

What it measures
----------------
Each configuration is one method spec (``name:key=value:...``, as on the taskstream command line), run as a
one-task stream through ``stream.engine.runner.run_stream``: the same train/dev rows for every configuration, model
selection on the dev split carved from train, the score on the GLUE validation split (the test set) from the
model rebuilt from the artifact file. For each: dev and test score, optimizer steps and seconds per step, the
artifact's bytes on disk (tensor file + sidecar), its tensor payload, the lower bound the method reports, the
papers' new-params fraction, and for masking the fraction of covered weights masked out at the end.

The default grid: the linear probe (head only, for reference), BitFit at 1e-4 / 1e-3 / 3e-3, masking at
1e-4 / 1e-3 / 1e-2 with the default first_block (1 on MiniLM), masking at 1e-3 with every block masked
(first_block=0), and masking at 1e-3 entropy-coded (same masks as the plain run, smaller file).

Run (about 10 minutes on an idle core with the defaults, 20 on a busy shared one; --configs runs fewer):
    python bench/masking_bitfit_lr.py --json /tmp/masking_bitfit.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_setup import default_glue_dir  # first: offline HF defaults, this checkout on sys.path

DEFAULT_CONFIGS = (
    "linear_probe",
    "bitfit:learning_rate=1e-4",
    "bitfit:learning_rate=1e-3",
    "bitfit:learning_rate=3e-3",
    "masking:learning_rate=1e-4",
    "masking:learning_rate=1e-3",
    "masking:learning_rate=1e-2",
    "masking:learning_rate=1e-3:first_block=0",
    "masking:learning_rate=1e-3:entropy_coded=true",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2", help="GLUE task (default sst2)")
    parser.add_argument("--data-dir", type=Path, default=default_glue_dir(),
                        help="local GLUE copy (default: $TASKSTREAM_DATA_DIR, else ../shared/glue of an ancestor)")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        help="method specs, e.g. masking:learning_rate=1e-3 (default: the grid above)")
    parser.add_argument("--n-train", type=int, default=500, help="training examples (default 500)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--max-dev", type=int, default=200, help="dev rows carved from train (default 200)")
    parser.add_argument("--max-eval", type=int, default=None, help="cap on test rows (default: all)")
    parser.add_argument("--evals-per-epoch", type=int, default=2, help="model-selection points per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", type=Path, default=None, help="keep the run here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results table as JSON")
    return parser.parse_args()


def run(args: argparse.Namespace, run_dir: Path) -> list[dict]:
    import torch

    from stream.core.ledger import read_ledger
    from stream.core.scenario import Budget
    from stream.engine.config import MethodSpec, RunConfig
    from stream.engine.runner import run_stream

    torch.set_num_threads(args.threads)
    steps_per_epoch = -(-args.n_train // args.batch_size)
    budget = Budget(max_train_examples=args.n_train, epochs=args.epochs, batch_size=args.batch_size,
                    max_seq_length=args.max_seq_length, max_dev_examples=args.max_dev,
                    max_eval_examples=args.max_eval,
                    eval_every_steps=max(1, steps_per_epoch // args.evals_per_epoch))
    specs = tuple(MethodSpec.parse(text) for text in args.configs)
    config = RunConfig(tasks=(args.task,), methods=specs, data_dir=str(args.data_dir) if args.data_dir else None,
                       budget=budget, seed=args.seed, device="cpu")
    started = time.perf_counter()
    run_stream(config, run_dir, progress=False)
    print(f"[run took {time.perf_counter() - started:.0f}s]")
    results = []
    for row in read_ledger(run_dir):
        sidecar = json.loads((run_dir / row["artifact_path"]).with_suffix(".json").read_text())
        results.append({
            "config": row["method"], "dev": row["dev_score"], "test": row["score"],
            "steps": row["train_steps"], "s_per_step": row["seconds"]["train"] / max(1, row["train_steps"]),
            "best_step": sidecar["fit"]["best_step"],
            "artifact_bytes": row["artifact_bytes"], "tensor_bytes": row["tensor_bytes"],
            "sidecar_bytes": row["sidecar_bytes"], "breakdown": row["breakdown"],
            "lower_bound_bytes": row["lower_bound_bytes"], "new_params": row["new_params"],
            "new_params_pct": 100 * row["new_params_fraction"],
            "masked_out_pct": (100 * sidecar["meta"]["masked_out_fraction"]
                               if "masked_out_fraction" in sidecar["meta"] else None),
            "flipped_pct": (100 * sidecar["meta"]["flipped_fraction"]
                            if "flipped_fraction" in sidecar["meta"] else None),
        })
    return results


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\n### {args.task}: {args.n_train} train examples x {args.epochs} epochs, batch {args.batch_size}, "
          f"max length {args.max_seq_length}, {args.max_dev} dev rows, seed {args.seed}, {args.threads} thread(s)")
    print("| config | dev | test | best step / steps | s/step | artifact bytes | payload (head) | lower bound bytes "
          "| new params % | masked out % | flipped % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        payload = sum(r["breakdown"].values())
        bound = "" if r["lower_bound_bytes"] is None else f"{r['lower_bound_bytes']:,.0f}"
        masked = "" if r["masked_out_pct"] is None else f"{r['masked_out_pct']:.2f}"
        flipped = "" if r["flipped_pct"] is None else f"{r['flipped_pct']:.3f}"
        print(f"| {r['config']} | {r['dev']:.1f} | {r['test']:.1f} | {r['best_step']} / {r['steps']} "
              f"| {r['s_per_step']:.2f} | {r['artifact_bytes']:,} | {payload:,} ({r['breakdown'].get('head', 0):,}) "
              f"| {bound} | {r['new_params_pct']:.3f} | {masked} | {flipped} |")


def main() -> None:
    args = parse_args()
    if args.run_dir is None:
        with tempfile.TemporaryDirectory(prefix="masking_bitfit_") as tmp:
            results = run(args, Path(tmp))
    else:
        results = run(args, args.run_dir)
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=1))


if __name__ == "__main__":
    main()
