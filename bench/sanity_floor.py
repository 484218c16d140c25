"""Full finetuning against the reproduction's sanity floor, one row per (run, task) with what the run varied.

The reproduction issue asks full finetuning of all-MiniLM-L6-v2 to reach what small BERTs reach with all their
data before anything else runs (:data:`FLOOR`), and to write down what was tried when it does not. This reads
the studies that tried something (budget, learning rate, SST-2's row cap and length, pooling) and tabulates
each run's own-task dev and test scores beside the settings that tell the runs apart, from the files alone.

    python -m bench.sanity_floor bench/results/budget bench/results/floor_lr bench/results/floor_sst2_data \\
        bench/results/floor_sst2_epoch bench/results/floor_pooling bench/results/floor_pooling_pairs
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import REPO, command_line, write_results  # first: offline Hugging Face defaults

from analysis.tables import arrival_rows, load_ledger  # noqa: E402
from stream.core.rundir import read_run_config  # noqa: E402
from stream.engine.config import RunConfig  # noqa: E402

OUT = REPO / "bench" / "results" / "sanity_floor"
#: The floor the reproduction issue sets (test score x100; MRPC: mean of F1 and accuracy).
FLOOR = {"cola": 25.0, "sst2": 88.0, "mrpc": 82.0, "stsb": 84.0, "rte": 60.0}


def _learning_rate(record: dict, spec) -> float:
    """The run's learning rate on the record's task: the dev-chosen one where the spec searched it."""
    chosen = record.get("chosen_options")
    if isinstance(chosen, dict) and "learning_rate" in chosen:
        return chosen["learning_rate"]
    return spec.config(record["task"]).learning_rate


def floor_rows(paths: list[Path]) -> list[dict]:
    """One record per (run, task) of full finetuning: the run's distinguishing settings and its scores."""
    rows = []
    for path in paths:
        table = load_ledger(path)
        own = arrival_rows(table)
        own = own[own["method_name"] == "full"]
        for record in own.to_dict("records"):
            config = RunConfig.from_dict(read_run_config(Path(record["run"])))
            spec = next(m for m in config.methods if m.resolved_label == record["method"])
            budget = config.budget_for(record["task"])
            rows.append({"study": path.name, "task": record["task"], "steps": int(record["train_steps"]),
                         "train_rows": "all" if budget.max_train_examples is None else budget.max_train_examples,
                         "learning_rate": _learning_rate(record, spec),
                         "pooling": config.pooling, "dev": record["dev_score"], "test": record["score"],
                         "floor": FLOOR.get(record["task"]),
                         "met": FLOOR.get(record["task"]) is not None and record["score"] >= FLOOR[record["task"]]})
    return sorted(rows, key=lambda r: (list(FLOOR).index(r["task"]), r["steps"], str(r["train_rows"]),
                                       r["learning_rate"], r["pooling"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="study or run directories")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = floor_rows(args.paths)
    lines = ["# Full finetuning against the reproduction's sanity floor", "",
             "Test = GLUE validation x100 from the model rebuilt from its file; dev = the run's model-selection split "
             "(carved from train). Floor: what small BERTs reach with all their data (the reproduction issue). "
             "Seed 0, batch 32, bf16, length-grouped batches; each row is one run's own task.", "",
             "| task | steps | training rows | learning rate | pooling | dev | test | floor | met | study |",
             "|---|---:|---:|---:|---|---:|---:|---:|---|---|"]
    lines += [f"| {r['task']} | {r['steps']} | {r['train_rows']} | {r['learning_rate']:g} | {r['pooling']} | "
              f"{r['dev']:.1f} | {r['test']:.1f} | {r['floor']:g} | {'yes' if r['met'] else 'no'} | {r['study']} |"
              for r in rows]
    record = {"command": command_line("bench.sanity_floor", argv), "floor": FLOOR, "rows": rows}
    lines += ["", f"Command: `{record['command']}`", ""]
    text = "\n".join(lines)
    write_results(args.out, text, record)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
