"""Cold ``taskstream predict`` for one example on a finished run: wall and CPU seconds of a fresh process.

Each repetition starts a new Python process (`python -m stream.engine.cli predict RUN --task T --method M
TEXT`), so every import and the backbone load are paid, as a user pays them; the files themselves are in
the page cache after the first repetition. Reports the median wall time per method and the CPU time (user
+ system) of the child, which a busy machine inflates less than the wall time.

    taskstream run --run-dir runs/default     # a finished run (predict only reads it)
    nice -n -5 python -m bench.predict_latency --run-dir runs/default --methods full,diff_pruning,adapters \\
        --note "..." --out bench/results/predict_latency
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, command_line, write_results  # first: offline HF defaults


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/taskstream-switch-latency"), help="a finished run")
    p.add_argument("--task", default="sst2", help="the task to ask")
    p.add_argument("--methods", default="bitfit,diff_pruning,lora,full", help="method labels to ask with")
    p.add_argument("--text", default="a gripping, beautifully acted film", help="the example")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per method")
    p.add_argument("--note", default="", help="what else ran on the machine (written beside the numbers)")
    p.add_argument("--out", type=Path, help="write <out>.md and <out>.json (default: print only)")
    return p.parse_args(argv)


def one(args: argparse.Namespace, method: str) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh ``predict`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stream.engine.cli", "predict", str(args.run_dir), "--task",
                           args.task, "--method", method, "--device", "cpu", args.text], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"predict with {method} failed ({done.returncode}):\n{done.stderr}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = {}
    for method in args.methods.split(","):
        runs = [one(args, method) for _ in range(args.repeats)]
        rows[method] = {"median_wall_s": statistics.median(w for w, _ in runs),
                        "median_cpu_s": statistics.median(c for _, c in runs), "runs": runs}
        print(f"{method}: {rows[method]['median_wall_s']:.1f} s wall, {rows[method]['median_cpu_s']:.1f} s CPU",
              flush=True)
    record = {"command": command_line("bench.predict_latency"), "run_dir": str(args.run_dir),
              "task": args.task, "repeats": args.repeats, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(), "niceness": os.nice(0), "note": args.note, "methods": rows}
    lines = [f"Cold `taskstream predict` of one example (task {args.task}) on run `{args.run_dir}`: median of "
             f"{args.repeats} fresh processes per method; load average at the end {record['load_average'][0]:.2f} "
             f"on {os.cpu_count()} cores, this bench at niceness {record['niceness']} (wall time grows with the "
             f"load; CPU time much less). {args.note}".rstrip(), "",
             "| method | wall s | CPU s (user + system) |", "|---|---:|---:|"]
    lines += [f"| {m} | {r['median_wall_s']:.1f} | {r['median_cpu_s']:.1f} |" for m, r in rows.items()]
    text = "\n".join(lines)
    print(text)
    write_results(args.out, f"# Cold predict\n\n{text}\n\nCommand: `{record['command']}`\n", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
