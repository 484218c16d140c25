"""Where a default ``taskstream run`` spends its time: training and evaluation vs everything else.

Runs the real command line, ``taskstream run`` (``stream.engine.cli.main``), in this process with the default
config (or the flags given after ``--``), and times, wall and CPU:

- process start-up: the interpreter's start to this script's first line (from ``/proc/self/stat``), then
  the imports a run needs (torch, transformers, the method modules, analysis);
- run set-up: resolving tasks and the data source, reading every split (``ArrivalBuilder.preload``),
  loading the backbone, creating the run directory;
- per step, from the ledger's own ``seconds`` (prepare = data and tokenisation, train, store, load, eval,
  wall) and from timers around the store's writes and reads, the backbone check, the ledger appends;
- the end: figures and report.md, the printed summary.

"Training" is the methods' ``train`` calls (their dev-split model selection included), "evaluation" the
scoring of the rebuilt models on the test splits; the share outside both is the overhead this benchmark
reports (target: under 5%).

    python -m bench.run_overhead --out bench/results/run_overhead -- \\
        --data-dir ../shared/glue --run-dir /tmp/taskstream-default-run --no-progress
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _process_age() -> float:
    """Seconds since this process started (Linux), so interpreter start-up is counted too."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    return float(Path("/proc/uptime").read_text().split()[0]) - start


_AGE_AT_START = _process_age()
_T0 = (time.perf_counter(), time.process_time())

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
from collections import defaultdict  # noqa: E402

# Before anything imports a Hugging Face library: offline defaults.
from bench.common import command_line, load_average, write_results  # noqa: E402

TIMES: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])  # name -> [wall, cpu, calls]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def timed(name: str, function):
    """``function`` with its wall and CPU time added to ``TIMES[name]`` (not re-entrant-safe: not needed)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = _clock()
        try:
            return function(*args, **kwargs)
        finally:
            end = _clock()
            entry = TIMES[name]
            entry[0] += end[0] - start[0]
            entry[1] += end[1] - start[1]
            entry[2] += 1
    return wrapper


def patch(owner, attr: str, name: str) -> None:
    setattr(owner, attr, timed(name, getattr(owner, attr)))


def instrument() -> None:
    """Wrap the run's phases; imports happen here, timed as ``imports``."""
    start = _clock()
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import analysis.report
    import methods.core.base
    import methods.full  # noqa: F401
    import methods.last_layer  # noqa: F401
    import stream.engine.cli
    import stream.engine.runner as runner
    from methods.core.backbone import Backbone
    from stream.core.ledger import Ledger
    from stream.core.scenario import ArrivalBuilder
    from stream.core.store import ArtifactStore

    end = _clock()
    TIMES["imports"] = [end[0] - start[0], end[1] - start[1], 1]
    patch(runner, "resolve_tasks", "setup: resolve tasks and data source")
    patch(ArrivalBuilder, "preload", "setup: read every split (preload)")
    patch(runner, "load_backbone", "setup: load backbone")
    patch(runner, "prepare_run_dir", "setup: run directory")
    patch(ArrivalBuilder, "arrival", "step: build arrival (data, tokenisation)")
    patch(ArtifactStore, "write", "step: store.write")
    patch(ArtifactStore, "read", "step: store.read")
    patch(Backbone, "verify_unchanged", "step: backbone check")
    patch(Ledger, "append_step", "step: ledger append")
    patch(runner, "evaluate", "evaluation: evaluate")
    patch(analysis.report, "write_run_report", "end: figures and report")
    patch(stream.engine.cli, "_print_summary", "end: printed summary")
    original_get = runner.get_method_class

    def get_method_class(name):
        cls = original_get(name)
        if not hasattr(cls.train, "__wrapped__"):  # once per class (a subclass may inherit the wrapped one)
            cls.train = timed("training: method.train", cls.train)
        return cls

    runner.get_method_class = timed("setup: method class", get_method_class)


def ledger_phases(run_dir: Path) -> dict[str, float]:
    """Sum of the ledger's per-step seconds over every (method, step) of the run."""
    from stream.core.ledger import read_ledger

    totals: dict[str, float] = defaultdict(float)
    seen = set()
    for row in read_ledger(run_dir):
        key = (row["method"], row["step"])
        if key in seen:
            continue
        seen.add(key)
        for phase, seconds in row["seconds"].items():
            totals[phase] += seconds
    return dict(totals)


def summarise(total: tuple[float, float], phases: dict[str, float]) -> dict:
    train = TIMES["training: method.train"]
    evaluation = TIMES["evaluation: evaluate"]
    wall, cpu = total
    outside_wall = wall - train[0] - evaluation[0]
    outside_cpu = cpu - train[1] - evaluation[1]
    return {"total_wall_seconds": wall, "total_cpu_seconds": cpu,
            "training_wall_seconds": train[0], "training_cpu_seconds": train[1],
            "evaluation_wall_seconds": evaluation[0], "evaluation_cpu_seconds": evaluation[1],
            "outside_wall_seconds": outside_wall, "outside_cpu_seconds": outside_cpu,
            "outside_wall_share": outside_wall / wall, "outside_cpu_share": outside_cpu / cpu,
            "ledger_seconds": phases}


def markdown(summary: dict, info: dict) -> str:
    wall, cpu = summary["total_wall_seconds"], summary["total_cpu_seconds"]
    lines = [f"# Overhead of a default `taskstream run`: {summary['outside_wall_share']:.2%} of wall time "
             f"({summary['outside_cpu_share']:.2%} of CPU time) outside training and evaluation", "",
             f"Command: `{info['command']}`", "",
             f"Measured {info['started']} on {info['machine']} ({info['threads']} torch thread(s); load average "
             f"{info['load_before']} before, {info['load_after']} after: the machine is shared, so wall times "
             "are inflated by other processes and CPU times are the steadier measure). The run: "
             f"{info['run']}.", "",
             "| phase | wall s | share of wall | CPU s | share of CPU | calls |", "|---|---:|---:|---:|---:|---:|"]
    rows = [("process start-up (interpreter, before this script)", info["age_at_start"], None, 1)]
    rows += [(name, *TIMES[name]) for name in TIMES]
    for name, w, c, calls in rows:
        lines.append(f"| {name} | {w:.2f} | {w / wall:.2%} | {'' if c is None else f'{c:.2f}'} | "
                     f"{'' if c is None else f'{c / cpu:.2%}'} | {calls} |")
    lines += [f"| **total (process start to exit)** | {wall:.1f} | 100% | {cpu:.1f} | 100% | |",
              f"| **training + evaluation** | {summary['training_wall_seconds'] + summary['evaluation_wall_seconds']:.1f} | "
              f"{1 - summary['outside_wall_share']:.2%} | "
              f"{summary['training_cpu_seconds'] + summary['evaluation_cpu_seconds']:.1f} | "
              f"{1 - summary['outside_cpu_share']:.2%} | |",
              f"| **everything else** | {summary['outside_wall_seconds']:.1f} | {summary['outside_wall_share']:.2%} | "
              f"{summary['outside_cpu_seconds']:.1f} | {summary['outside_cpu_share']:.2%} | |", "",
              "The ledger's own per-step seconds, summed over every (method, step): "
              + ", ".join(f"{k} {v:.1f}" for k, v in summary["ledger_seconds"].items()) + ".",
              "Phases nest: `step: store.read` includes the reads inside `evaluation` only for evolving methods "
              "(none here); `step: build arrival` is the ledger's `prepare`; rows starting `setup`, `step` and "
              "`end` are the overhead's parts (the process start-up row is wall time only, before CPU counting "
              "began, and is added to the total).", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    own, run_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.json")
    args = parser.parse_args(own)
    instrument()
    import torch

    from bench.step_cost import machine_info
    from stream.engine.cli import main as cli_main
    from stream.engine.runner import package_versions

    torch.set_num_threads(args.threads)
    run_dir = Path(run_args[run_args.index("--run-dir") + 1]) if "--run-dir" in run_args else Path("runs/default")
    info = {"command": command_line("bench.run_overhead", argv), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine_info()["cpu"], "threads": args.threads, "load_before": load_average(),
            "age_at_start": _AGE_AT_START}
    status = cli_main(["run", *run_args])
    end = _clock()
    if status != 0:
        raise SystemExit(f"taskstream run exited with {status}")
    config = json.loads((run_dir / "config.json").read_text())
    info.update(load_after=load_average(), run=(
        f"tasks {' > '.join(config['tasks'])}, methods {', '.join(m['label'] for m in config['methods'])}, "
        f"budget {config['budget']}, seed {config['seed']}"),
        versions={k: v for k, v in package_versions().items() if k in ("python", "torch", "transformers")})
    total = (_AGE_AT_START + end[0] - _T0[0], end[1])  # CPU: the process's own, from its start
    summary = summarise(total, ledger_phases(run_dir))
    summary["times"] = {name: {"wall": w, "cpu": c, "calls": n} for name, (w, c, n) in TIMES.items()}
    summary["process_startup_wall_seconds"] = _AGE_AT_START
    text = markdown(summary, info)
    print(text)
    write_results(args.out, text, {"info": info, "summary": summary})
    return summary


if __name__ == "__main__":
    main()
