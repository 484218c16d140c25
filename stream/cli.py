"""The ``taskstream`` command line.

Subcommands: ``run`` (run or resume a stream), ``plot`` and ``report`` (figures and a Markdown report
from a run directory), ``methods`` and ``tasks`` (what is registered). User errors print one clear
message and exit with status 2; nothing already written is touched.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_RUN_DIR = "runs/default"
DATA_DIR_ENV = "TASKSTREAM_DATA_DIR"

# Flags that set a Budget field, by flag name (argparse dest) -> type.
_BUDGET_FLAGS = {
    "max_train_examples": int, "epochs": int, "max_steps": int, "batch_size": int,
    "max_seq_length": int, "max_eval_examples": int,
}


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run (or resume) a task stream",
                       description="Run a task stream: each method trains on every arriving task, stores its "
                                   "artifact, and is evaluated on every task seen so far from the files alone. "
                                   "Re-running into the same --run-dir resumes.")
    p.add_argument("--config", type=Path, help="TOML or YAML file with any of the settings below")
    p.add_argument("--run-dir", type=Path, help=f"run directory (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--data-dir", type=Path, help=f"local GLUE data: the Hub layout (<task>/<split>.jsonl.gz) or a "
                                                 f"glue_data/ folder of TSVs (default: ${DATA_DIR_ENV}, else the Hub)")
    p.add_argument("--tasks", help="comma-separated task names in arrival order (default: cola,sst2,mrpc,stsb,rte)")
    p.add_argument("--order-seed", type=int, help="shuffle the task order with this seed")
    p.add_argument("--methods", help="comma-separated methods, each name[:key=value...], e.g. full,last_layer:k=2")
    p.add_argument("--backbone", help="Hub id or local model folder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--pooling", choices=("mean", "cls", "pooler"), help="how the task head reads the encoder")
    p.add_argument("--hub-repo", help="Hub dataset id used when no local data is given (default: nyu-mll/glue)")
    p.add_argument("--seed", type=int, help="run seed (dev splits, subsampling, initialisation, training)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    for flag, kind in _BUDGET_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), type=kind, help=f"budget: {flag.replace('_', ' ')} per task")
    p.add_argument("--reevaluate", action="store_true", default=None,
                   help="re-evaluate earlier tasks from their files even when they cannot have changed")
    p.add_argument("--avalanche-loggers", help="comma-separated Avalanche loggers (csv, tensorboard, text) recording "
                                               "every method's steps under RUN_DIR/avalanche/<method>/")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="skip the figures and report at the end")


def config_from_args(args: argparse.Namespace):
    """Defaults, then the config file, then flags."""
    from stream.config import RunConfig, load_config_file

    data = load_config_file(args.config) if args.config else {}
    for key in ("tasks", "methods", "backbone", "pooling", "hub_repo", "seed", "order_seed", "device", "reevaluate",
                "avalanche_loggers"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    budget = dict(data.get("budget", {}))
    budget.update({k: getattr(args, k) for k in _BUDGET_FLAGS if getattr(args, k) is not None})
    if budget:
        data["budget"] = budget
    data_dir = args.data_dir or data.get("data_dir") or os.environ.get(DATA_DIR_ENV)
    if data_dir:
        data["data_dir"] = str(Path(data_dir).expanduser().resolve())
    return RunConfig.from_dict(data)


def _cmd_run(args) -> int:
    config = config_from_args(args)  # before the heavy imports, so a bad flag fails at once
    from stream.runner import run_stream

    run_dir = args.run_dir or Path(DEFAULT_RUN_DIR)
    summary = run_stream(config, run_dir, progress=not args.no_progress)
    if not args.no_report:
        from analysis.report import write_run_report

        print(f"report: {write_run_report(run_dir)}")
    _print_summary(summary.run_dir)
    return 0


def _print_summary(run_dir: Path) -> None:
    from analysis.report import summary_table
    from analysis.tables import load_ledger

    print(summary_table(load_ledger(run_dir)).to_string(index=False))


def _cmd_plot(args) -> int:
    from analysis.report import write_run_figures

    for name, path in write_run_figures(args.run).items():
        print(f"{name}: {path}")
    return 0


def _cmd_report(args) -> int:
    from analysis.report import write_run_report

    print(write_run_report(args.run))
    return 0


def _cmd_methods(args) -> int:
    from methods.base import registered_methods

    for name, cls in registered_methods().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:<16} {cls.sharing.value:<16} {doc}")
    return 0


def _cmd_tasks(args) -> int:
    from stream.tasks import get_task, registered_tasks

    for name in registered_tasks():
        task = get_task(name)
        labels = "regression" if task.is_regression else "/".join(task.label_names)
        print(f"{name:<6} {'+'.join(task.text_columns):<22} {labels:<40} {', '.join(task.metrics)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    for name, helptext in (("plot", "draw a run's figures into RUN/figures"),
                           ("report", "write RUN/report.md (tables and figures)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run", type=Path, help="a run directory")
    sub.add_parser("methods", help="list the registered methods")
    sub.add_parser("tasks", help="list the registered tasks")
    return parser


_COMMANDS = {"run": _cmd_run, "plot": _cmd_plot, "report": _cmd_report, "methods": _cmd_methods,
             "tasks": _cmd_tasks}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``taskstream`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from stream.errors import TaskstreamError

    try:
        return _COMMANDS[args.command](args)
    except TaskstreamError as exc:
        print(f"taskstream: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"taskstream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taskstream: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
