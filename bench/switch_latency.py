"""Switch latency of multi-task serving: each method's in-place switch against loading a full copy from disk.

One TaskBank serves a run made with the real backbone (all-MiniLM-L6-v2 by default) and every method. For
each method the bank switches between the run's tasks many times (every timed switch goes from one task of
the method to another: revert the active task's patch, apply the next one's, or, for methods without a
patch, rebuild the model with ``Method.load``). The baseline, timed in the same rounds, is what a server
without patches does for full finetuning: read the task's full-finetuning artifact with the store (size and
sha256 checks) and ``load_state_dict`` it, with the head, into an already built model. Rounds interleave
the methods and the baseline, so a busy machine slows all of them alike. Reports the median (and 10th/90th
percentiles) per method and the baseline's median over each method's median.

The run directory is made first when it does not exist, with tiny budgets (training quality does not
matter for latency):

    python bench/switch_latency.py --data-dir /work/shared/glue --run-dir /tmp/taskstream-switch-latency \\
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

REPO = Path(__file__).resolve().parents[1]
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
    p.add_argument("--switches", type=int, default=60, help="timed switches per method (and baseline loads)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the order in which methods are timed per round")
    p.add_argument("--out", type=Path, help="write <out>.md and <out>.json (default: print only)")
    return p.parse_args(argv)


def make_run(args: argparse.Namespace) -> None:
    from stream.config import RunConfig
    from stream.runner import run_stream

    if (args.run_dir / "ledger.jsonl").exists():
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


def full_copy_load(bank, label: str):
    """The baseline: read a full-finetuning artifact from disk (store checks included) and load_state_dict it,
    with its head, into one model built beforehand. Returns a function of the task name."""
    from methods.task_model import load_head

    encoder = bank.backbone.fresh_encoder()

    def load(task: str) -> None:
        artifact = bank.store.read(bank.entry(task, label).key)
        own = {k[len("encoder."):]: v for k, v in artifact.tensors.items() if k.startswith("encoder.")}
        encoder.load_state_dict(own, strict=False)
        load_head(artifact.tensors, bank.backbone.hidden_size, bank.task_specs[task].num_outputs)

    return load


SENTENCES = ["a gripping, beautifully acted film", "the plot goes nowhere and the jokes fall flat",
             "A man is sleeping on the couch.", "Stocks fell sharply after the report."]


def exact_everywhere(bank) -> dict[str, bool]:
    """Per method: do the bank's logits equal, bit for bit, those of ``Method.load``'s rebuilt model for every
    task (on a few sentences or sentence pairs)?"""
    import torch

    exact = {}
    for label in bank.methods:
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


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    sys.path.insert(0, str(REPO))  # this checkout's packages, not an installed copy
    import torch

    from stream.runner import package_versions
    from stream.serving import TaskBank

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    make_run(args)
    bank = TaskBank(args.run_dir, device="cpu")
    full = next((label for label in bank.methods if bank.entry(bank.tasks(label)[0], label).method_name == "full"),
                None)
    if full is None:
        raise SystemExit("the run needs a full-finetuning method for the baseline")
    baseline = full_copy_load(bank, full)
    tasks = {label: bank.tasks(label) for label in bank.methods}
    timed = {label: [] for label in bank.methods}
    timed["baseline"] = []
    position = {label: 0 for label in timed}

    def next_task(label: str) -> str:
        names = tasks[full if label == "baseline" else label]
        position[label] += 1
        return names[position[label] % len(names)]

    in_place, cold = {}, {}
    for label in bank.methods:
        bank.method(label)  # build the method objects (and import their libraries) before any timing
    for label in bank.methods:  # first switches: read and verify the artifact, build the patch
        cold[label] = []
        for task in tasks[label]:
            bank.reset()
            start = time.perf_counter()
            bank.switch(task, label)
            cold[label].append(time.perf_counter() - start)
            in_place[label] = bank.active_patch is not None
    rng = random.Random(args.seed)
    for _ in range(args.switches):
        order = list(timed)
        rng.shuffle(order)
        for label in order:
            if label == "baseline":
                task = next_task(label)
                start = time.perf_counter()
                baseline(task)
                timed[label].append(time.perf_counter() - start)
                continue
            bank.switch(tasks[label][position[label] % len(tasks[label])], label)  # this method active, untimed
            task = next_task(label)
            start = time.perf_counter()
            bank.switch(task, label)
            timed[label].append(time.perf_counter() - start)
    exact = exact_everywhere(bank)
    bank.reset(verify=True)  # raises unless the backbone is bit for bit the original

    rows = {label: summary(seconds) for label, seconds in timed.items()}
    base = rows["baseline"]["median_ms"]
    sizes = {}
    for row in (json.loads(line) for line in (args.run_dir / "ledger.jsonl").read_text().splitlines()):
        sizes.setdefault(row["method"], {})[row["task"]] = row["artifact_bytes"]
    results = []
    for label in bank.methods:
        results.append({"method": label, "switch": "in-place patch" if in_place[label] else "reload (Method.load)",
                        "equals_method_load": exact[label],
                        **rows[label], "baseline_over_switch": base / rows[label]["median_ms"],
                        "first_switch_ms": 1000 * statistics.mean(cold[label]),
                        "mean_artifact_bytes": statistics.mean(sizes[label].values())})
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "run_dir": str(args.run_dir), "run_config": bank.config, "backbone": bank.backbone.identity,
        "backbone_parameters": bank.backbone.num_parameters, "tasks": {k: list(v) for k, v in tasks.items()},
        "threads": args.threads, "switches_per_method": args.switches, "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "machine": platform.machine(), "versions": package_versions(),
        "baseline": {"what": "store.read (size + sha256 check) of a full-finetuning artifact + "
                             "load_state_dict into a prebuilt encoder + head", **rows["baseline"]},
        "methods": results,
    }
    lines = [f"Switch latency on {bank.backbone.identity} ({bank.backbone.num_parameters:,} parameters), "
             f"{args.threads} torch thread(s), median of {args.switches} switches per method alternating over "
             f"{', '.join(tasks[full])}; load average at the end {record['load_average'][0]:.2f} "
             f"on {os.cpu_count()} cores.", "",
             f"The run served: methods {', '.join(bank.methods)}; budget {json.dumps(bank.config['budget'])} "
             "(made by this script from --data-dir when the run directory does not exist).", "",
             f"Baseline, loading a full finetuned copy from disk (store read with sha256 + load_state_dict): "
             f"median {base:.1f} ms (p10 {rows['baseline']['p10_ms']:.1f}, p90 {rows['baseline']['p90_ms']:.1f}).",
             "", "| method | switch | median ms | p10 ms | p90 ms | full-copy load / switch | first switch ms "
             "| artifact bytes | logits = Method.load's |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['switch']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {r['baseline_over_switch']:.1f}x | {r['first_switch_ms']:.1f} | "
                     f"{r['mean_artifact_bytes']:,.0f} | {'bit for bit' if r['equals_method_load'] else 'NO'} |")
    lines += ["", "A switch goes from one task of the method to another (revert, then apply; or rebuild with "
              "`Method.load`). The first switch to a task (mean over the tasks) also reads and verifies its "
              "artifact and builds its patch. Full-finetuning artifacts are read from the page cache after the "
              "first time, so the baseline is a warm-cache read.", "", "Every method's logits were compared with those of the model `Method.load` rebuilds from the same "
              "file (all tasks, a few sentences); the backbone's fingerprint after the last revert was the "
              "original's."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        args.out.with_suffix(".md").write_text("# Switch latency\n\n" + text + "\n\nCommand: `"
                                               + record["command"] + "`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
