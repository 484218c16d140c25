"""Training with the allocator keeping large freed blocks against glibc's default: CPU time, peak memory, bits.

    python -m bench.allocator --methods full,diff_pruning,masking,adapters --lengths 16,128 --steps 20

Each (method, length, allocator) trains in a fresh child process (the allocator is set before the backbone is
loaded, as :func:`stream.engine.runner.run_stream` sets it): the bundled MiniLM on GLUE RTE training pairs
(longest first) padded or cut to ``length`` tokens, batch 32, bf16 autocast, one thread, ``--steps`` optimizer
steps (diff pruning splits them between its two stages). The two allocator settings alternate within each round.
Reported: the training call's CPU seconds (median over rounds), the child's peak RSS, and whether the two
settings wrote the same artifact tensors (sha256 over them).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path

from bench.common import command_line, default_glue_dir, load_average, write_results

SETTINGS = ("default", "keep")


def _child(conn, method_name: str, length: int, steps: int, setting: str) -> None:
    if setting == "keep":
        from stream.engine.allocator import keep_freed_memory

        assert keep_freed_memory(), "this C library has no glibc mallopt"
    import torch

    from bench import step_cost
    from methods.registry import build_method
    from stream.core.scenario import Arrival, Budget
    from stream.core.tasks import get_task

    torch.set_num_threads(1)
    # step_cost's splits: every row padded to ``length``, the training rows enough for ``steps`` batches.
    args = argparse.Namespace(backbone="bundled:all-MiniLM-L6-v2", tiny=False, glue_dir=default_glue_dir(),
                              seq_len=length, batch_size=32, warmup=0, steps=steps, eval_examples=64, seed=0)
    backbone = step_cost.load_bench_backbone(args)
    train, dev, test, _ = step_cost.build_splits(backbone, args)
    budget = Budget(batch_size=32, max_steps=steps, max_seq_length=length, dev_evaluations=1)
    arrival = Arrival(step=1, task=get_task("rte"), budget=budget, seed=0, train=train, dev=dev,
                      tests={"validation": test}, precision="bf16")
    options = {"stage_budget": "split"} if method_name.startswith("diff_pruning") else {}
    method = build_method(method_name, options, backbone)
    start = time.process_time()
    trained = method.train(arrival)
    seconds = time.process_time() - start
    digest = hashlib.sha256()
    for name in sorted(trained.payload.tensors):
        digest.update(trained.payload.tensors[name].detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    conn.send({"cpu_s": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "sha256": digest.hexdigest()})


def measure(method_name: str, length: int, steps: int, setting: str) -> dict:
    """One training call in a fresh process (forkserver: a clean allocator state each time)."""
    context = mp.get_context("forkserver")
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(child, method_name, length, steps, setting))
    process.start()
    result = parent.recv()
    process.join()
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="full,diff_pruning,masking,adapters")
    parser.add_argument("--lengths", default="16,128")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    args = parser.parse_args(argv)
    load_before = load_average()
    results = []
    for method_name in args.methods.split(","):
        for length in map(int, args.lengths.split(",")):
            runs = {s: [] for s in SETTINGS}
            for _ in range(args.rounds):
                for setting in SETTINGS:
                    runs[setting].append(measure(method_name, length, args.steps, setting))
            row = {"method": method_name, "length": length}
            for setting in SETTINGS:
                row[f"{setting}_cpu_s"] = statistics.median(r["cpu_s"] for r in runs[setting])
                row[f"{setting}_peak_mib"] = max(r["peak_mib"] for r in runs[setting])
            row["speedup"] = row["default_cpu_s"] / row["keep_cpu_s"]
            row["same_bits"] = len({r["sha256"] for rs in runs.values() for r in rs}) == 1
            results.append(row)
            print(row, flush=True)
    load_after = load_average()
    lines = ["# Training with large freed blocks kept for reuse", "",
             f"Command: `{command_line('bench.allocator', argv)}`", "",
             "GLUE RTE training pairs (longest first) padded or cut to the length shown, batch 32, bf16, one thread, "
             f"{args.steps} optimizer "
             "steps (diff pruning: half per stage), each in a fresh process; CPU seconds of the training call, "
             f"median of {args.rounds} alternating rounds; peak RSS of the process. Load average {load_before} "
             f"before, {load_after} after.", "",
             "| method | tokens | glibc default CPU s | kept CPU s | speed-up | peak MiB default | peak MiB kept | "
             "same artifact bits |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['method']} | {r['length']} | {r['default_cpu_s']:.1f} | {r['keep_cpu_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['default_peak_mib']:.0f} | {r['keep_peak_mib']:.0f} | "
              f"{'yes' if r['same_bits'] else 'NO'} |" for r in results]
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(None if args.out is None else Path(args.out), text,
                  {"command": command_line("bench.allocator", argv), "results": results})
    return results


if __name__ == "__main__":
    main()
