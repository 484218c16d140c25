"""Dev evaluation in order of length against the split's own order: time and how far the predictions move.

    python -m bench.eval_order --tasks cola,sst2,mrpc,stsb,rte --rounds 3 --out bench/results/eval_order

Model selection evaluates the dev split about ten times per training stage, so its cost is a fixed share of
every run. :func:`methods.core.training.predict` with ``by_length=True`` batches the rows shortest first
(each batch pads to rows like its own) and returns them in the split's order. For each task this times
both on the same dev rows (the reproduction's: up to 500 carved from train, length 128, batch 64) in alternating
rounds with the bundled MiniLM and a fresh task head, and reports the CPU seconds, the speed-up and the
largest difference between the two predictions (class ids: how many differ; regression values: the
largest absolute difference).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.common import command_line, default_glue_dir, load_average, write_results

import numpy as np  # noqa: E402
import torch  # noqa: E402

from methods.core.backbone import load_backbone  # noqa: E402
from methods.core.task_model import TaskModel  # noqa: E402
from methods.core.training import predict  # noqa: E402
from methods.registry import build_method  # noqa: E402
from stream.core.scenario import ArrivalBuilder, Budget  # noqa: E402
from stream.engine.config import RunConfig, resolve_tasks  # noqa: E402


def measure(task_name: str, backbone, args) -> dict:
    """CPU seconds of the dev split's predictions in split order and in length order, and their difference."""
    budget = Budget(max_dev_examples=args.dev_rows, max_seq_length=args.max_length)
    specs, source = resolve_tasks(RunConfig(tasks=(task_name,), data_dir=str(args.data_dir), budget=budget))
    builder = ArrivalBuilder(source, tasks=specs, budgets={task_name: budget}, seed=0)
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    arrival = builder.arrival(1, task_name)
    model = TaskModel(backbone.encoder, build_method("full", {}, backbone).task_head(arrival), backbone.pooling)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for by_length in (False, True):
                start = time.process_time()
                outputs[by_length] = predict(model, arrival.dev, arrival.task, batch_size=args.batch_size,
                                             by_length=by_length)
                seconds[by_length].append(time.process_time() - start)
    plain, ordered = (statistics.median(seconds[k]) for k in (False, True))
    if arrival.task.is_regression:
        difference = {"max_abs_difference": float(np.abs(outputs[False] - outputs[True]).max())}
    else:
        difference = {"rows_differing": int((outputs[False] != outputs[True]).sum())}
    lengths = arrival.dev.lengths.float()
    return {"task": task_name, "rows": len(arrival.dev), "mean_length": float(lengths.mean()),
            "max_length": int(lengths.max()), "split_order_s": plain, "length_order_s": ordered,
            "speedup": plain / ordered, **difference}


def markdown(results: list[dict], info: dict) -> str:
    lines = [
        "# Dev evaluation in order of length", "",
        f"Command: `{info['command']}`", "",
        f"Up to {info['rows']} dev rows per task carved from train (seed 0), length <= {info['max_length']}, batch "
        f"{info['batch_size']}, {info['threads']} thread(s), bundled MiniLM with a fresh head, fp32 (as model "
        f"selection evaluates); CPU seconds per pass over the split, median of {info['rounds']} alternating rounds. "
        f"Load average {info['load_before']} before, {info['load_after']} after.", "",
        "| task | rows | mean / max tokens | split order s | length order s | speed-up | predictions differing |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        differing = (f"{r['rows_differing']} of {r['rows']} class ids" if "rows_differing" in r
                     else f"largest value difference {r['max_abs_difference']:.1e}")
        lines.append(f"| {r['task']} | {r['rows']} | {r['mean_length']:.1f} / {r['max_length']} | "
                     f"{r['split_order_s']:.2f} | {r['length_order_s']:.2f} | {r['speedup']:.2f}x | {differing} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="cola,sst2,mrpc,stsb,rte")
    parser.add_argument("--data-dir", default=default_glue_dir())
    parser.add_argument("--dev-rows", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = load_backbone("bundled:all-MiniLM-L6-v2", device="cpu")
    load_before = load_average()
    results = [measure(task, backbone, args) for task in args.tasks.split(",")]
    info = {"command": command_line("bench.eval_order", argv), "rows": args.dev_rows, "max_length": args.max_length,
            "batch_size": args.batch_size, "threads": args.threads, "rounds": args.rounds, "load_before": load_before,
            "load_after": load_average()}
    text = markdown(results, info)
    print(text)
    write_results(None if args.out is None else Path(args.out), text,
                  {"info": info, "results": results})
    return results


if __name__ == "__main__":
    main()
