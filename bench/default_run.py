"""The default run, timed, and every method's margin over each task's chance score.

Runs ``taskstream run`` with no method, task or budget flags (what ``make run`` does) into a fresh run
directory from a warm environment, times its wall clock, records the machine's load before and after (the
default run's promise, at most 20 minutes, is for an otherwise idle machine), then reads the run's own ledger
and checks that every method ends clearly above every task's chance score: a margin of at least
``--min-margin`` points (default 5), or one above the noise band the ledger states for that task. It writes
``bench/results/default_run.{md,json}`` and copies the report's storage-vs-accuracy figure beside them.

    python -m bench.default_run --data-dir ../shared/glue            # run, time, check
    python -m bench.default_run --data-dir ../shared/glue --analyse-only runs/default   # check a finished run

The exit code is 1 when a method fails the margin check or the run exceeds ``--max-minutes``, so the
script can gate a change to the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, write_results  # first: offline Hugging Face defaults

from stream.core.ledger import read_ledger  # noqa: E402

OUT = REPO / "bench" / "results" / "default_run"


def final_scores(run_dir: Path) -> list[dict]:
    """One record per (method, task): the task's score after the method's last step and its chance score,
    with the bytes and training seconds of the step at which the task arrived."""
    rows = read_ledger(run_dir)
    last_step: dict[str, int] = {}
    arrival = {}
    for row in rows:
        last_step[row["method"]] = max(last_step.get(row["method"], 0), row["step"])
        if row["eval_task"] == row["task"]:
            arrival[row["method"], row["task"]] = row
    records = []
    for row in rows:
        if row["step"] != last_step[row["method"]]:
            continue
        arrived = arrival[row["method"], row["eval_task"]]
        records.append({"method": row["method"], "task": row["eval_task"], "score": row["score"],
                        "chance": row.get("chance_score"), "noise_band": row.get("noise_band"),
                        "bytes": arrived["artifact_bytes"], "train_seconds": arrived["seconds"].get("train")})
    return sorted(records, key=lambda r: (r["method"], r["task"]))


def check_margins(records: list[dict], min_margin: float) -> list[dict]:
    """Add ``margin`` and ``clear`` (margin >= min_margin, or above the task's noise band) to every record."""
    for record in records:
        if record["chance"] is None or record["score"] is None:
            record["margin"], record["clear"] = None, False
            continue
        record["margin"] = record["score"] - record["chance"]
        band = record["noise_band"] if record["noise_band"] is not None else float("inf")
        record["clear"] = record["margin"] >= min_margin or record["margin"] > band
    return records


def load_average() -> float:
    """The 1-minute load average (the run's neighbours on the CPU)."""
    return os.getloadavg()[0]


def run_default(run_dir: Path, data_dir: Path | None) -> tuple[float, float, float]:
    """Run the default stream into ``run_dir``; return (wall seconds, load before, load after)."""
    command = [str(Path(sys.executable).with_name("taskstream")), "run", "--run-dir", str(run_dir), "--no-progress"]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    before = load_average()
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start, before, load_average()


def markdown(records: list[dict], timing: dict, min_margin: float) -> str:
    """The results page: timing, then the per-(method, task) table with the margins."""
    lines = ["# The default run: wall time and margins over chance", "",
             "Made by `bench/default_run.py` (re-run it to refresh this page).", ""]
    if timing.get("wall_seconds") is not None:
        lines += [f"- Wall time: **{timing['wall_seconds'] / 60:.1f} min** from a warm environment "
                  f"(load average {timing['load_before']:.2f} before, {timing['load_after']:.2f} after; "
                  f"{os.cpu_count()} cores).", ""]
    lines += [f"A method clears a task when its final score is at least {min_margin:g} points above the task's "
              "chance score (always the majority training label; the mean for regression) or above the noise "
              "band the ledger states (two standard errors of a guessing score on the test rows).", "",
              "| method | task | score | chance | noise band | margin | clear | artifact bytes | train s |",
              "|---|---|---:|---:|---:|---:|:-:|---:|---:|"]
    for r in records:
        margin = "n/a" if r["margin"] is None else f"{r['margin']:+.1f}"
        band = "n/a" if r["noise_band"] is None else f"{r['noise_band']:.1f}"
        chance = "n/a" if r["chance"] is None else f"{r['chance']:.1f}"
        stored = f"{r['bytes']:,}"
        seconds = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"| {r['method']} | {r['task']} | {r['score']:.1f} | {chance} | {band} | {margin} | "
                     f"{'yes' if r['clear'] else '**no**'} | {stored} | {seconds} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="local GLUE data (else $TASKSTREAM_DATA_DIR, else the Hub)")
    parser.add_argument("--analyse-only", type=Path, metavar="RUN", help="check a finished run instead of running")
    parser.add_argument("--keep", type=Path, help="run into this (new) directory and keep it")
    parser.add_argument("--min-margin", type=float, default=5.0)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=OUT, help="output prefix (default: bench/results/default_run)")
    args = parser.parse_args(argv)

    timing: dict = {"wall_seconds": None}
    scratch = None
    if args.analyse_only is not None:
        run_dir = args.analyse_only
        previous = args.out.with_suffix(".json")
        if previous.exists():  # keep the wall time measured when this very run was made
            recorded = json.loads(previous.read_text(encoding="utf-8")).get("timing", {})
            if recorded.get("run_dir") == str(run_dir.resolve()):
                timing = recorded
    else:
        if args.keep is not None and args.keep.exists():
            parser.error(f"--keep {args.keep} exists; a timing needs a fresh run directory")
        run_dir = args.keep or Path(scratch := tempfile.mkdtemp(prefix="default-run-")) / "run"
        wall, before, after = run_default(run_dir, args.data_dir)
        timing = {"wall_seconds": wall, "load_before": before, "load_after": after,
                  "run_dir": str(run_dir.resolve())}
    records = check_margins(final_scores(run_dir), args.min_margin)
    write_results(args.out, markdown(records, timing, args.min_margin),
                  {"timing": timing, "min_margin": args.min_margin, "scores": records})
    figure = run_dir / "figures" / "score_vs_storage.png"
    if figure.exists():
        shutil.copyfile(figure, args.out.with_suffix(".png"))
    print(args.out.with_suffix(".md").read_text(encoding="utf-8"), end="")
    if scratch is not None:
        shutil.rmtree(scratch)
    failed = [f"{r['method']} on {r['task']}" for r in records if not r["clear"]]
    too_slow = timing["wall_seconds"] is not None and timing["wall_seconds"] > 60 * args.max_minutes
    if failed:
        print("Not clearly above chance: " + ", ".join(failed), file=sys.stderr)
    if too_slow:
        print(f"The default run took {timing['wall_seconds'] / 60:.1f} min, over {args.max_minutes:g}.",
              file=sys.stderr)
    return 1 if failed or too_slow else 0


if __name__ == "__main__":
    sys.exit(main())
