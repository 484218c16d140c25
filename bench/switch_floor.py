"""Where a position edit's switch time goes: the switch against its bare writes, cache-cold and cache-resident.

Diff pruning's and masking's switches (revert one task, apply another) are two ``scatter_`` calls on the
served encoder's flat buffer (:class:`~methods.core.patches.AddAtPositions`,
:class:`~methods.core.patches.ZeroAtPositions`). This bench times, in the same shuffled rounds as the
baseline that ``bench/switch_latency.py`` compares with (a full finetuned copy read with safetensors, no
checks, into a model built beforehand):

- ``switch``: the TaskBank's switch from one task of the method to the next, as the switch-latency bench
  times it;
- ``bare writes``: the same two ``scatter_`` calls alone (no Python around them), same positions and entries;
- ``bare writes, cache-resident``: the same calls with the same number of entries into a small buffer that
  stays in the CPU caches: the kernels' own cost, without memory misses;
- ``dense copy of the buffer``: one ``copy_`` of the whole flat buffer (every weight) into another tensor in
  memory: a full copy's memory traffic with no file, no parsing and no checks.

Before each timed operation except the cache-resident one, the last level cache is flushed by reading and
writing a buffer larger than it, as a forward pass or a full-copy load between two switches would.
The ``lines`` column counts the distinct 64-byte cache lines the two scatters write.

    python -m bench.switch_floor --run-dir /tmp/ts-serve-switch --out bench/results/switch_floor
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from bench.common import command_line, write_results  # first: offline Hugging Face defaults
from bench.switch_latency import full_copy_loaders, summary

FLUSH_BYTES = 256 << 20  # well above any last-level cache here (32 MiB)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/taskstream-switch-latency"),
                   help="a finished run (python -m bench.switch_latency makes one)")
    p.add_argument("--rounds", type=int, default=60, help="timed rounds")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the order of the operations per round")
    p.add_argument("--out", type=Path, help="write <out>.md and <out>.json (default: print only)")
    return p.parse_args(argv)


def position_methods(bank) -> dict[str, list[tuple]]:
    """Per method label whose patches are one position edit: (buffer, positions, new, originals) per task."""
    from methods.core.patches import AddAtPositions, ZeroAtPositions

    found = {}
    for label in bank.methods:
        per_task = []
        for task in bank.tasks(label):
            bank.switch(task, label)
            patch = bank.active_patch
            if patch is None or len(patch.edits) != 1 or not isinstance(patch.edits[0],
                                                                        (AddAtPositions, ZeroAtPositions)):
                break
            per_task.append(patch.edits[0].entries(bank.backbone.encoder))
        else:
            found[label] = per_task
        bank.reset()
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from stream.engine.serving import TaskBank

    niceness = [os.nice(0)]
    torch.set_num_threads(args.threads)
    bank = TaskBank(args.run_dir, device="cpu")
    full = next((label for label in bank.methods if bank.entry(bank.tasks(label)[0], label).method_name == "full"),
                None)
    if full is None:
        raise SystemExit("the run needs a full-finetuning method for the baseline")
    methods = position_methods(bank)
    if not methods:
        raise SystemExit(f"run {args.run_dir} serves no method whose switch is one position edit")
    read_full_copy = full_copy_loaders(bank, full)["full copy, unchecked read"]
    buffer = next(iter(methods.values()))[0][0]
    flush_from, flush_to = torch.ones(FLUSH_BYTES // 8), torch.empty(FLUSH_BYTES // 8)
    dense_to = torch.empty_like(buffer)
    generator = torch.Generator().manual_seed(args.seed)
    resident = {}  # per label and task: positions and entries in a small buffer that stays cached
    for label, per_task in methods.items():
        size = 2 * max(index.numel() for _, index, _, _ in per_task)
        scratch = torch.zeros(size, dtype=buffer.dtype)
        resident[label] = (scratch, [(torch.sort(torch.randperm(size, generator=generator)[:index.numel()]).values,
                                      new, old) for _, index, new, old in per_task])

    def flush() -> None:
        flush_to.copy_(flush_from)

    def timed(operation) -> float:
        start = time.perf_counter()
        operation()
        return time.perf_counter() - start

    def switch_op(label: str, turn: int):
        tasks = bank.tasks(label)
        bank.switch(tasks[turn % len(tasks)], label)
        flush()
        seconds = timed(lambda: bank.switch(tasks[(turn + 1) % len(tasks)], label))
        bank.reset()
        return seconds

    def bare_op(label: str, turn: int):
        per_task = methods[label]
        _, a_index, a_new, a_old = per_task[turn % len(per_task)]
        _, b_index, b_new, b_old = per_task[(turn + 1) % len(per_task)]
        buffer.scatter_(0, a_index, a_new)
        flush()
        seconds = timed(lambda: (buffer.scatter_(0, a_index, a_old), buffer.scatter_(0, b_index, b_new)))
        buffer.scatter_(0, b_index, b_old)
        return seconds

    def resident_op(label: str, turn: int):
        scratch, per_task = resident[label]
        a_index, a_new, a_old = per_task[turn % len(per_task)]
        b_index, b_new, _ = per_task[(turn + 1) % len(per_task)]
        scratch.scatter_(0, a_index, a_new)
        return timed(lambda: (scratch.scatter_(0, a_index, a_old), scratch.scatter_(0, b_index, b_new)))

    def dense_op(_label: str, _turn: int):
        flush()
        return timed(lambda: dense_to.copy_(buffer))

    def baseline_op(_label: str, turn: int):
        tasks = bank.tasks(full)
        flush()
        return timed(lambda: read_full_copy(tasks[turn % len(tasks)]))

    operations = {(label, kind): op for label in methods for kind, op in (
        ("switch", switch_op), ("bare writes", bare_op), ("bare writes, cache-resident", resident_op))}
    operations[("", "dense copy of the buffer")] = dense_op
    operations[("", "full copy, unchecked read")] = baseline_op
    seconds = {name: [] for name in operations}
    rng = random.Random(args.seed)
    with torch.inference_mode():
        for turn in range(args.rounds):
            order = list(operations)
            rng.shuffle(order)
            for name in order:
                seconds[name].append(operations[name](name[0], turn))
    bank.reset(verify=True)  # raises unless the backbone is bit for bit the original
    niceness.append(os.nice(0))
    rows = {name: summary(values) for name, values in seconds.items()}
    baseline = rows[("", "full copy, unchecked read")]["median_ms"]
    lines_written = {label: statistics.mean(
        int(torch.unique(torch.cat([index // (64 // buffer.element_size()) for _, index, _, _ in
                                    (per_task[i], per_task[(i + 1) % len(per_task)])])).numel())
        for i in range(len(per_task))) for label, per_task in methods.items()}
    table = ["| method | operation | entries written | lines | median ms | p10 ms | p90 ms | full-copy read / this |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (label, kind), row in rows.items():
        entries = (statistics.mean(2 * index.numel() for _, index, _, _ in methods[label]) if label else None)
        table.append(f"| {label or '-'} | {kind} | {f'{entries:,.0f}' if entries else '-'} | "
                     f"{f'{lines_written[label]:,.0f}' if label and 'resident' not in kind else '-'} | "
                     f"{row['median_ms']:.3f} | {row['p10_ms']:.3f} | {row['p90_ms']:.3f} | "
                     f"{baseline / row['median_ms']:.1f}x |")
    load = os.getloadavg()
    text = "\n".join([
        f"{bank.backbone.identity} ({buffer.numel():,} weights in the flat buffer, "
        f"{buffer.numel() * buffer.element_size() / 2**20:.0f} MiB), run `{args.run_dir}`, {args.threads} torch "
        f"thread(s), median of {args.rounds} rounds (operations shuffled per round); load average at the end "
        f"{load[0]:.2f} on {os.cpu_count()} cores; niceness at the start and the end {niceness[0]}, "
        f"{niceness[1]}.", "", *table])
    record = {"command": command_line("bench.switch_floor"), "run_dir": str(args.run_dir),
              "backbone": bank.backbone.identity, "buffer_elements": buffer.numel(), "rounds": args.rounds,
              "threads": args.threads, "cpu_count": os.cpu_count(), "load_average": load, "niceness": niceness,
              "lines_written": lines_written,
              "rows": [{"method": label, "operation": kind, **row} for (label, kind), row in rows.items()]}
    print(text)
    write_results(args.out, f"# Switch floor\n\n{text}\n\nCommand: `{record['command']}`\n", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
