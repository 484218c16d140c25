"""Switch latency of multi-task serving: each method's in-place switch against loading a full copy from disk.

One TaskBank serves a run made with the real backbone (all-MiniLM-L6-v2 by default) and every method. For
each method the bank switches between the run's tasks many times (every timed switch goes from one task of
the method to another: revert the active task's patch, apply the next one's, or, for methods without a
patch, rebuild the model with ``Method.load``). The baselines, timed in the same rounds, are what a server
without patches does for full finetuning: load the task's full-finetuning artifact, encoder and head, into a
model built beforehand (``load_state_dict``), reading it with the store (size and sha256 checked, as every
taskstream read is) or, second baseline, mapping the file with safetensors without any check. Rounds
interleave the methods and the baselines in a shuffled order, so a busy machine slows all of them alike.
Reports the median (and 10th/90th percentiles) per method and each baseline's median over it.

The run directory is made first when it does not exist, with tiny budgets (training quality does not
matter for latency):

    python -m bench.switch_latency --data-dir /work/shared/glue --run-dir /tmp/taskstream-switch-latency \\
        --out bench/results/switch_latency

Correctness is checked on the way: every method's logits, for every task, must equal bit for bit those of the
model ``Method.load`` rebuilds from the file, and after the last revert the backbone's fingerprint must be
the original's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from bench.common import command_line, write_results  # first: offline Hugging Face defaults

DEFAULT_METHODS = "full,last_layer,linear_probe,adapters,bitfit,lora,masking,diff_pruning"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/taskstream-switch-latency"),
                   help="run to serve; made with the settings below when it does not exist")
    p.add_argument("--data-dir", type=Path, help="GLUE data, needed only to make the run")
    p.add_argument("--backbone", default=None, help="backbone of a new run (default: the bundled MiniLM)")
    p.add_argument("--tasks", default="sst2,rte,mrpc", help="tasks of a new run")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="methods of a new run")
    p.add_argument("--max-train-examples", type=int, default=32, help="budget of a new run")
    p.add_argument("--max-eval-examples", type=int, default=32, help="budget of a new run")
    p.add_argument("--only", help="time only these method labels (comma-separated; default: every method served)")
    p.add_argument("--switches", type=int, default=60, help="timed switches per method (and baseline loads)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the order in which methods are timed per round")
    p.add_argument("--out", type=Path, help="write <out>.md and <out>.json (default: print only)")
    return p.parse_args(argv)


def make_run(args: argparse.Namespace) -> None:
    from stream.core.rundir import LEDGER_FILE
    from stream.engine.config import RunConfig
    from stream.engine.runner import run_stream

    if (args.run_dir / LEDGER_FILE).exists():
        return
    if args.data_dir is None:
        raise SystemExit(f"{args.run_dir} has no run yet; pass --data-dir to make it.")
    options = {"tasks": args.tasks, "methods": args.methods, "data_dir": str(args.data_dir), "device": "cpu",
               "budget": {"max_train_examples": args.max_train_examples, "epochs": 1,
                          "max_eval_examples": args.max_eval_examples}}
    if args.backbone:
        options["backbone"] = args.backbone
    started = time.perf_counter()
    run_stream(RunConfig.from_dict(options), args.run_dir, progress=False)
    print(f"made the run in {time.perf_counter() - started:.0f}s: {args.run_dir}", flush=True)


def full_copy_loaders(bank, label: str) -> dict:
    """The baselines, as functions of a task name. Both load a full-finetuning artifact's encoder and head into
    one model built beforehand (``load_state_dict``); ``checked`` reads it with the store (size and sha256
    checked, as every taskstream read is), ``unchecked`` maps the tensor file with safetensors, no checks."""
    from safetensors.torch import load_file

    from methods.core.task_model import load_head

    encoder = bank.backbone.fresh_encoder()

    def into_model(tensors, task: str) -> None:
        encoder.load_state_dict({k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")},
                                strict=False)
        load_head(tensors, bank.backbone.hidden_size, bank.task_specs[task].num_outputs)

    def checked(task: str) -> None:
        into_model(bank.store.read(bank.entry(task, label).key).tensors, task)

    def unchecked(task: str) -> None:
        into_model(load_file(bank.store.paths(bank.entry(task, label).key)[0]), task)

    return {"full copy, store read": checked, "full copy, unchecked read": unchecked}


SENTENCES = ["a gripping, beautifully acted film", "the plot goes nowhere and the jokes fall flat",
             "A man is sleeping on the couch.", "Stocks fell sharply after the report."]


def exact_everywhere(bank, labels) -> dict[str, bool]:
    """Per method: do the bank's logits equal, bit for bit, those of ``Method.load``'s rebuilt model for every
    task (on a few sentences or sentence pairs)?"""
    import torch

    exact = {}
    for label in labels:
        exact[label] = True
        for task in bank.tasks(label):
            width = len(bank.task_specs[task].text_columns)
            split = bank.encode(task, [tuple(SENTENCES[i:i + width]) for i in range(len(SENTENCES) - width + 1)])
            bank.reset()  # Method.load copies the live encoder: it must be pristine
            model = bank.method(label).load(bank.read(task, label), bank.task_specs[task])
            with torch.inference_mode():
                reference = model(**{k: v for k, v in split.batch(torch.arange(len(split))).items() if k != "labels"})
            del model
            exact[label] &= torch.equal(bank.logits(task, split, method=label), reference.float())
    return exact


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in seconds)
    decile = max(1, len(ms) // 10)
    return {"median_ms": statistics.median(ms), "p10_ms": ms[decile - 1], "p90_ms": ms[-decile], "n": len(ms)}


def first_switches(bank, labels) -> tuple[dict[str, bool], dict[str, list[float]]]:
    """Switch once to every (method, task), timing it (read and verify the artifact, build the patch); whether
    each method switches in place."""
    for label in labels:
        bank.method(label)  # build the method objects (and import their libraries) before any timing
    in_place, cold = {}, {}
    for label in labels:
        cold[label] = []
        for task in bank.tasks(label):
            bank.reset()
            start = time.perf_counter()
            bank.switch(task, label)
            cold[label].append(time.perf_counter() - start)
            in_place[label] = bank.active_patch is not None
    return in_place, cold


def timed_rounds(bank, labels, baselines: dict, full: str, rounds: int, seed: int) -> dict[str, list[float]]:
    """``rounds`` rounds; in each, every method switches once from one of its tasks to the next (timed, after
    an untimed switch to the first) and every baseline loads once, in a shuffled order."""
    tasks = {label: bank.tasks(label) for label in labels}
    tasks.update({name: bank.tasks(full) for name in baselines})
    timed: dict[str, list[float]] = {name: [] for name in tasks}
    position = dict.fromkeys(tasks, 0)
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(tasks)
        rng.shuffle(order)
        for name in order:
            names = tasks[name]
            if name in baselines:
                load, arguments = baselines[name], ()
            else:
                bank.switch(names[position[name] % len(names)], name)  # this method active, untimed
                load, arguments = bank.switch, (name,)
            position[name] += 1
            start = time.perf_counter()
            load(names[position[name] % len(names)], *arguments)
            timed[name].append(time.perf_counter() - start)
    return timed


def report(args, bank, labels, full: str, rows: dict, in_place: dict, cold: dict, exact: dict) -> tuple[dict, str]:
    """The JSON record and the markdown text."""
    from stream.core.ledger import read_ledger
    from stream.engine.runner import package_versions

    sizes: dict[str, dict[str, int]] = {}
    for row in read_ledger(args.run_dir):
        sizes.setdefault(row["method"], {})[row["task"]] = row["artifact_bytes"]
    checked, unchecked = rows["full copy, store read"]["median_ms"], rows["full copy, unchecked read"]["median_ms"]
    results = [{"method": label, "switch": "in-place patch" if in_place[label] else "reload (Method.load)",
                **rows[label], "store_read_load_over_switch": checked / rows[label]["median_ms"],
                "unchecked_load_over_switch": unchecked / rows[label]["median_ms"],
                "first_switch_ms": 1000 * statistics.mean(cold[label]),
                "mean_artifact_bytes": statistics.mean(sizes[label].values()), "equals_method_load": exact[label]}
               for label in labels]
    record = {
        "command": command_line("bench.switch_latency"),
        "run_dir": str(args.run_dir), "run_config": bank.config, "backbone": bank.backbone.identity,
        "backbone_parameters": bank.backbone.num_parameters, "tasks": list(bank.tasks(full)),
        "threads": args.threads, "switches_per_method": args.switches, "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "niceness": args.niceness, "machine": platform.machine(),
        "versions": package_versions(),
        "baselines": {name: rows[name] for name in ("full copy, store read", "full copy, unchecked read")},
        "methods": results,
    }
    lines = [f"Switch latency on {bank.backbone.identity} ({bank.backbone.num_parameters:,} parameters), "
             f"{args.threads} torch thread(s), median of {args.switches} switches per method alternating over "
             f"{', '.join(bank.tasks(full))}; load average at the end {record['load_average'][0]:.2f} on "
             f"{os.cpu_count()} cores (other jobs shared the machine; rounds interleave every method and the "
             "baselines, so they shared the slowdown); this process's niceness at the start and the end: "
             f"{args.niceness[0]}, {args.niceness[1]}.", "",
             f"The run served: methods {', '.join(bank.methods)} (timed: {', '.join(labels)}); "
             f"budget {json.dumps(bank.config['budget'])} "
             "(made by this script from --data-dir when the run directory does not exist).", "",
             "Baselines, loading a full finetuned copy from disk into a model built beforehand "
             "(`load_state_dict`, encoder and head):", ""]
    for name in ("full copy, store read", "full copy, unchecked read"):
        what = ("the store's read, which checks size and sha256 (what taskstream does)" if "store" in name
                else "safetensors `load_file`, no checks")
        lines.append(f"- {name} ({what}): median {rows[name]['median_ms']:.1f} ms "
                     f"(p10 {rows[name]['p10_ms']:.1f}, p90 {rows[name]['p90_ms']:.1f})")
    lines += ["", "| method | switch | median ms | p10 ms | p90 ms | store-read load / switch | unchecked load / "
              "switch | first switch ms | artifact bytes | logits = Method.load's |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['switch']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {r['store_read_load_over_switch']:.1f}x | "
                     f"{r['unchecked_load_over_switch']:.1f}x | {r['first_switch_ms']:.1f} | "
                     f"{r['mean_artifact_bytes']:,.0f} | {'bit for bit' if r['equals_method_load'] else 'NO'} |")
    lines += ["", "A switch goes from one task of the method to another (revert, then apply; or rebuild with "
              "`Method.load`). The first switch to a task (mean over the tasks) also reads and verifies its "
              "artifact and builds its patch. After the first time, full-finetuning artifacts come from the "
              "page cache, so the baselines are warm-cache reads.", "",
              "Every method's logits were compared with those of the model `Method.load` rebuilds from the same "
              "file (all tasks, a few sentences); the backbone's fingerprint after the last revert was the "
              "original's."]
    return record, "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.niceness = [os.nice(0)]  # the priority it was started with, and (below) the one it ended with
    import torch

    from stream.engine.serving import TaskBank

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    make_run(args)
    bank = TaskBank(args.run_dir, device="cpu")
    full = next((label for label in bank.methods if bank.entry(bank.tasks(label)[0], label).method_name == "full"),
                None)
    if full is None:
        raise SystemExit("the run needs a full-finetuning method for the baselines")
    labels = args.only.split(",") if args.only else list(bank.methods)
    unknown = sorted(set(labels) - set(bank.methods))
    if unknown:
        raise SystemExit(f"--only names {', '.join(unknown)}, which the run does not serve ({', '.join(bank.methods)})")
    in_place, cold = first_switches(bank, labels)
    timed = timed_rounds(bank, labels, full_copy_loaders(bank, full), full, args.switches, args.seed)
    exact = exact_everywhere(bank, labels)
    bank.reset(verify=True)  # raises unless the backbone is bit for bit the original
    rows = {name: summary(seconds) for name, seconds in timed.items()}
    args.niceness.append(os.nice(0))
    record, text = report(args, bank, labels, full, rows, in_place, cold, exact)
    print(text)
    write_results(args.out, f"# Switch latency\n\n{text}\n\nCommand: `{record['command']}`\n", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
