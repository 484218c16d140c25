"""How long the small commands take from a cold start: ``--help``, ``methods``, ``tasks``, an argument error and
config errors (issue 13's target: each under 2 s on this machine, importing torch, transformers and Avalanche only
when needed).

Each command runs in a fresh interpreter (``python -m stream.engine.cli``), ``--repeats`` times; the table gives
the median wall time and the median CPU time (user + system of the child), and the machine's load average when
the bench ran, since on a shared machine the wall time mostly measures the other processes.

    nice -n -5 python -m bench.startup --note "..."     # writes bench/results/startup.md
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "startup.md"


def commands(scratch: Path, run_dir: Path | None) -> dict[str, list[str]]:
    bad_toml = scratch / "bad.toml"
    bad_toml.write_text("tasks = 5\n")
    bad_study = scratch / "study.toml"
    bad_study.write_text('name = "s"\n[base]\ntasks = ["rte"]\n[grid]\nmethods = ["ful"]\n')
    predict = {} if run_dir is None else {
        "predict error (unknown task)": ["predict", str(run_dir), "--task", "bogus", "a text"]}
    return {
        "--help": ["--help"],
        "methods": ["methods"],
        "tasks": ["tasks"],
        "argument error (unknown flag)": ["run", "--bogus"],
        "config error (unknown task)": ["run", "--tasks", "bogus", "--run-dir", str(scratch / "r")],
        "config error (bad budget)": ["run", "--batch-size", "0", "--run-dir", str(scratch / "r")],
        "config error (tasks = 5 in a file)": ["run", "--config", str(bad_toml), "--run-dir", str(scratch / "r")],
        "method option error": ["run", "--methods", "last_layer:k=x", "--run-dir", str(scratch / "r")],
        "unknown method": ["run", "--methods", "lorax", "--run-dir", str(scratch / "r")],
        "study spec error (unknown method)": ["sweep", str(bad_study), "--dry-run", "--study-dir", str(scratch / "s")],
        **predict,
    }


def measure(args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and exit status of one cold run of ``taskstream ARGS``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stream.engine.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-dir", type=Path, help="a finished run: also time predict's error for an unknown task")
    parser.add_argument("--note", default="", help="what else ran on the machine (written beside the numbers)")
    args = parser.parse_args()
    load = os.getloadavg()
    lines = ["# Cold start of the small commands", "",
             f"`python -m bench.startup --repeats {args.repeats}"
             f"{f' --run-dir {args.run_dir}' if args.run_dir else ''}`; {os.cpu_count()} CPUs, load average "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) when it started, this bench at "
             f"niceness {os.nice(0)}. {args.note}".rstrip() + " Target: under 2 s.", "",
             "| command | exit status | median wall s | median CPU s |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in commands(Path(tmp), args.run_dir).items():
            runs = [measure(argv) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            lines.append(f"| {name} | {runs[0][2]} | {wall:.2f} | {cpu:.2f} |")
            print(lines[-1], flush=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
