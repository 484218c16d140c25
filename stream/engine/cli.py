"""taskstream: feed tasks one at a time to parameter-efficient methods on one shared backbone, and measure
what each method stores against how well it scores.

Subcommands: ``run`` (run or resume a stream), ``retrain`` (train one task of a run again), ``sweep`` (run or
resume a study: many runs from one spec, on local worker processes or Ray), ``plot`` and ``report`` (figures
and a report of a run or a study),
``compare`` (one report over several runs and studies), ``predict`` (answer for any task of a finished run,
served from one backbone), ``serve`` (the same answers, every method side by side, on a local web page),
``methods`` and ``tasks`` (what is registered).
User errors print one clear message and exit with status 2; nothing already written is touched.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
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
    p.add_argument("--tasks", help="comma-separated task names in arrival order (default: sst2,stsb)")
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
    from stream.engine.config import RunConfig, load_config_file

    data = load_config_file(args.config) if args.config else {}
    for key in ("tasks", "methods", "backbone", "pooling", "hub_repo", "seed", "order_seed", "device", "reevaluate",
                "avalanche_loggers"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    flags = {k: getattr(args, k) for k in _BUDGET_FLAGS if getattr(args, k) is not None}
    if flags:
        # A file's budget that is not a table is left as it is for RunConfig to refuse by name.
        budget = data.get("budget", {})
        data["budget"] = {**budget, **flags} if isinstance(budget, dict) else budget
    data_dir = args.data_dir or data.get("data_dir") or os.environ.get(DATA_DIR_ENV)
    if isinstance(data_dir, (str, Path)) and str(data_dir):
        data["data_dir"] = str(Path(data_dir).expanduser().resolve())
    return RunConfig.from_dict(data)


def _cmd_run(args) -> int:
    config = config_from_args(args)  # before the heavy imports, so a bad flag fails at once
    from stream.engine.runner import run_stream

    run_dir = args.run_dir or Path(DEFAULT_RUN_DIR)
    summary = run_stream(config, run_dir, progress=not args.no_progress)
    if not args.no_report:
        from analysis.report import write_run_report

        print(f"report: {write_run_report(run_dir)}")
    _print_summary(summary.run_dir)
    return 0


def _add_retrain_parser(sub) -> None:
    p = sub.add_parser("retrain", help="train one task of a run again (e.g. after its artifact was refused)",
                       description="Move the task's artifact files (and, for an evolving method, every later one) "
                                   "to RUN/forgotten/<time>/ with the ledger rows that depend on them, then resume "
                                   "the run with its saved config, which trains the task again and re-scores the "
                                   "steps after it.")
    p.add_argument("run", type=Path, metavar="RUN", help="a run directory")
    p.add_argument("--method", required=True, help="the method label, as in the run's ledger and artifacts folder")
    p.add_argument("--task", required=True, help="the task to train again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="skip the figures and report at the end")


def _cmd_retrain(args) -> int:
    from stream.engine.retrain import forget_task

    config, forgotten = forget_task(args.run, args.method, args.task)
    print(f"set aside {len(forgotten.files)} file(s) and {forgotten.rows} ledger row(s) in {forgotten.folder}",
          file=sys.stderr)
    from stream.engine.runner import run_stream

    run_stream(config, args.run, progress=not args.no_progress)
    if not args.no_report:
        from analysis.report import write_run_report

        print(f"report: {write_run_report(args.run)}")
    _print_summary(args.run)
    return 0


def _print_summary(run_dir: Path) -> None:
    from analysis.report import summary_table
    from analysis.tables import CHANCE_LEGEND, load_ledger

    print(summary_table(load_ledger(run_dir)).to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print(CHANCE_LEGEND)


def _add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run (or resume) a study: a grid of runs from one spec file",
                       description="Expand a study spec (TOML or YAML: a base config, and methods x seeds x task "
                                   "orders x budgets) into runs, one run directory each under the study directory, "
                                   "and run them on local worker processes or Ray. Re-running the same command "
                                   "skips finished runs and resumes interrupted ones; failed runs are recorded "
                                   "and retried.")
    p.add_argument("spec", type=Path, help="the study spec (.toml, .yaml or .yml)")
    p.add_argument("--study-dir", type=Path, help="study directory (default: runs/<study name>)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local worker processes (default) or Ray (needs the optional extra: taskstream[ray])")
    p.add_argument("--workers", type=int, help="runs in parallel (default: cores // 2, at least 1)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: cores // workers)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--data-dir", type=Path, help=f"local GLUE data, overriding the spec's (default: the spec's, "
                                                 f"else ${DATA_DIR_ENV}, else the Hub)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    p.add_argument("--no-report", action="store_true", help="skip the study report at the end")


def _study_spec(args):
    from stream.engine.config import load_config_file
    from stream.engine.study import StudySpec

    data_dir = args.data_dir
    if data_dir is None and "data_dir" not in load_config_file(args.spec).get("base", {}):
        data_dir = os.environ.get(DATA_DIR_ENV)
    return StudySpec.from_file(args.spec, data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None)


def _cmd_sweep(args) -> int:
    spec = _study_spec(args)  # before the heavy imports, so a bad spec fails at once
    from stream.engine.study import StudyDirectory, is_complete

    study_dir = args.study_dir or Path("runs") / spec.name
    if args.dry_run:
        directory = StudyDirectory(study_dir)
        for run in spec.runs:
            state = "complete" if is_complete(directory, run) else directory.status(run.run_id)["state"]
            print(f"{run.run_id:<60} {state}")
        print(f"{len(spec.runs)} runs in {directory.root}")
        return 0

    from stream.engine.sweep import run_study

    def show(progress) -> None:
        print(progress.line(), file=sys.stderr, flush=True)

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt  # SIGTERM (a batch scheduler, kill): stop the workers, keep what is written

    signal.signal(signal.SIGTERM, stop)

    outcome = run_study(spec, study_dir, backend=args.backend, workers=args.workers, threads=args.threads,
                        address=args.address, spec_file=args.spec, on_progress=show)
    print(f"study {spec.name}: {outcome.total} runs, {len(outcome.skipped)} already complete, "
          f"{len(outcome.completed)} completed now, {len(outcome.failed)} failed ({outcome.study_dir})")
    for run_id, error in outcome.failed.items():
        print(f"  failed: {run_id}: {error}")
    if not args.no_report and len(outcome.failed) < outcome.total:
        from analysis.study_report import write_study_report

        written = write_study_report(outcome.study_dir, outcome.study_dir)
        print(f"report: {written['markdown']}\nreport: {written['html']}")
    return 1 if outcome.failed else 0


def _cmd_plot(args) -> int:
    from analysis.tables import is_study_dir

    if is_study_dir(args.run):
        from analysis.placement import load_placement
        from analysis.plots import save_figure
        from analysis.report import FIGURES_DIR
        from analysis.study_report import study_figures
        from analysis.tables import load_ledger

        table = load_ledger(args.run)
        figures = study_figures(table, load_placement(table))
        paths = {name: save_figure(fig, args.run / FIGURES_DIR / f"{name}.png") for name, fig in figures.items()}
    else:
        from analysis.report import write_run_figures

        paths = write_run_figures(args.run)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_report(args) -> int:
    from analysis.tables import is_study_dir

    if is_study_dir(args.run):
        from analysis.study_report import write_study_report

        written = write_study_report(args.run, args.run)
        print(f"{written['markdown']}\n{written['html']}")
        return 0
    from analysis.report import write_run_report

    print(write_run_report(args.run))
    return 0


def _cmd_compare(args) -> int:
    from analysis.study_report import write_study_report

    written = write_study_report(args.paths, args.out)
    print(f"{written['markdown']}\n{written['html']}")
    return 0


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict with a finished run's task models, served from one backbone",
                       description="Load the run's backbone once and answer for one of its tasks from that task's "
                                   "artifact: the predicted label name with every class's probability "
                                   "(tab-separated), or the regression value; one line per example.")
    p.add_argument("run", type=Path, metavar="RUN", help="a run directory")
    p.add_argument("texts", nargs="*", metavar="TEXT",
                   help="one example: its text, or the two texts of a pair task (each quoted)")
    p.add_argument("--task", required=True, help="the task to answer for, as named in the run")
    p.add_argument("--method", help="the method label to answer with (needed when the run has several)")
    p.add_argument("--file", type=Path, help="examples from a file instead: one per line (a tab between the texts "
                                             "of a pair), or a .csv whose header names the task's text columns")
    p.add_argument("--json", action="store_true", help="one JSON object per example, with its texts")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass (default: 32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def _cmd_predict(args) -> int:
    import json

    from stream.core.errors import ConfigError, DataError
    from stream.core.validation import check_device, check_int
    from stream.engine.run_index import RunIndex, as_examples, read_examples

    check_int("", "--batch-size", args.batch_size, minimum=1)
    check_device("", "--device", args.device)
    # Names and examples are checked from the run's files, before torch and the backbone load: a typo fails at once.
    index = RunIndex(args.run)
    task = index.task_spec(args.task)
    index.entry(args.task, args.method)
    if args.file is not None:
        if args.texts:
            raise ConfigError("Give the examples either as TEXT arguments or with --file, not both.")
        examples = read_examples(args.file, task)
    elif not args.texts:
        raise DataError(f"No example given: add the text{'s' * (len(task.text_columns) > 1)} of one example "
                        f"({' and '.join(task.text_columns)}) as argument(s), or --file PATH.")
    else:
        examples = as_examples(task, [tuple(args.texts)])
    from stream.engine.serving import TaskBank

    with TaskBank(args.run, device=args.device) as bank:
        predictions = bank.predict(args.task, examples, method=args.method, batch_size=args.batch_size)
    for texts, prediction in zip(examples, predictions):
        if args.json:
            print(json.dumps({"texts": list(texts), **prediction.to_dict()}))
        elif prediction.label is None:
            print(f"{prediction.value:.4f}")
        else:
            print("\t".join([prediction.label] + [f"{name}={p:.4f}" for name, p in prediction.probabilities.items()]))
    return 0


def _add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="a local web page: pick a task, type a sentence, see every method's answer",
                       description="Start a small web page over a run or a study: every method's answer to a "
                                   "sentence (or pair) side by side, with what it stores for the task, and the "
                                   "run's storage and score curves. Serves on 127.0.0.1 unless --host says "
                                   "otherwise; Ctrl-C stops it.")
    p.add_argument("run", type=Path, metavar="RUN_OR_STUDY", help="a run directory or a study directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def _cmd_serve(args) -> int:
    from stream.core.validation import check_device, check_int

    check_int("", "--port", args.port, minimum=1, maximum=65535)
    check_device("", "--device", args.device)
    from stream.engine.webpage import serve

    serve(args.run, host=args.host, port=args.port, device=args.device)
    return 0


def _cmd_methods(args) -> int:
    # From the registry's catalogue: listing imports no method module, so no torch.
    import textwrap

    from methods.registry import method_info, method_names, option_defaults, shared_option_defaults

    def shown(value) -> str:
        # written as on the command line and in config files: a list joined with "+", none, true/false
        if isinstance(value, tuple):
            return "+".join(map(str, value))
        return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    def options(values) -> str:
        return " ".join(f"{key}={shown(value)}" for key, value in values.items())

    for name in method_names():
        info = method_info(name)
        print(f"{name:<26} {info.sharing.value:<16} {info.summary}")
        own = option_defaults(name)
        if own:
            print(textwrap.fill(options(own), width=118, initial_indent=" " * 27 + "options: ",
                                subsequent_indent=" " * 36, break_on_hyphens=False))
    print()
    print(textwrap.fill("Every method also takes (default unless its options above say otherwise): "
                        + options(shared_option_defaults()), width=118, break_on_hyphens=False))
    print("Set options as name:key=value (last_layer:k=2), or in a config file's [[methods]] table.")
    return 0


def _cmd_tasks(args) -> int:
    from stream.core.tasks import get_task, registered_tasks

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
    _add_retrain_parser(sub)
    _add_sweep_parser(sub)
    for name, helptext in (("plot", "draw a run's or a study's figures into PATH/figures"),
                           ("report", "write PATH/report.md (a study also gets a self-contained report.html)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run", type=Path, metavar="PATH", help="a run directory or a study directory")
    p = sub.add_parser("compare", help="one report (Markdown + HTML) over several runs and studies",
                       description="Aggregate run and study directories into one report: each (method, budget) "
                                   "configuration's runs (seeds, task orders) give mean ± sd.")
    p.add_argument("paths", type=Path, nargs="+", metavar="RUN_OR_STUDY")
    p.add_argument("--out", type=Path, default=Path("runs/comparison"),
                   help="where report.md, report.html and figures/ go (default: runs/comparison)")
    _add_predict_parser(sub)
    _add_serve_parser(sub)
    sub.add_parser("methods", help="list the registered methods")
    sub.add_parser("tasks", help="list the registered tasks")
    return parser


_COMMANDS = {"run": _cmd_run, "retrain": _cmd_retrain, "sweep": _cmd_sweep, "plot": _cmd_plot, "report": _cmd_report,
             "compare": _cmd_compare, "predict": _cmd_predict, "serve": _cmd_serve, "methods": _cmd_methods,
             "tasks": _cmd_tasks}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``taskstream`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "predict" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        # argparse gives a positional list only the strings before the first option: `predict RUN --task t
        # "text"` leaves "text" over. A one-word text starting with "-" must come before the options.
        args.texts += extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from stream.core.errors import TaskstreamError

    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not as an error at exit
        return code
    except TaskstreamError as exc:
        print(f"taskstream: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        print(f"taskstream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taskstream: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`taskstream methods | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
