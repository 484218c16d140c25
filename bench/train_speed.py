"""Training throughput on this CPU: each speed lever alone and combined, per method and task, in one run.

For every (task, method) the same training rows are trained for ``--warmup`` + ``--steps`` optimizer steps
under each configuration, interleaved in ``--rounds`` shuffled rounds so machine load hits them alike:

- ``before``: fp32 and uniformly shuffled batches (what the loop did before these levers);
- ``bf16``: bf16 autocast of the forward pass only;
- ``grouped``: batches of similar length (``Budget.group_by_length``) only;
- ``after``: both (the defaults on a CPU with native bf16).

Each configuration runs in a forked child (the backbone and tokenised data are loaded once and shared), the
method's real ``train`` with its real parameter groups and stages; ``Method.fit`` is wrapped only to stop
after the timed steps and to timestamp every step (wall and process CPU time). A method's per-step cost is
the mean over its stages' timed steps (diff pruning: its L0 and fixed-mask stages alike). The per-method
CPU time of a reproduction run, before vs after, weights each task's per-step CPU time by that task's
steps (``--task-steps``, by default the budget study's choice when its results exist, else equal).

    python -m bench.train_speed --out bench/results/train_speed           # ~30-60 min on 2 cores
    python -m bench.train_speed --methods full --tasks sst2,rte --steps 3 # a quick look

The accuracy effect of the levers is measured separately, on whole runs (bench/studies/levers_*.toml).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from methods.core.backbone import load_backbone, native_bf16  # noqa: E402
from methods.core.base import Method  # noqa: E402
from methods.registry import build_method  # noqa: E402
from stream.core.scenario import ArrivalBuilder, Budget  # noqa: E402
from stream.engine.config import RunConfig, resolve_tasks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"before": ("fp32", False), "bf16": ("bf16", False), "grouped": ("fp32", True), "after": ("bf16", True)}
METHODS = ("full", "last_layer", "linear_probe", "adapters", "masking", "diff_pruning", "diff_pruning_unstructured",
           "diff_pruning_nonadaptive", "bitfit", "lora")
TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
BUDGET_RESULTS = REPO / "bench" / "results" / "budget_study.json"


class _Done(Exception):
    """Raised from the step hook once the timed steps are over: nothing after them is measured."""


def _time_method(name: str, arrival, backbone, warmup: int, steps: int) -> dict:
    """Train ``name`` on ``arrival`` in this (forked) process; per-step wall and CPU seconds of every stage."""
    stages: list[list[tuple[float, float]]] = []
    real_fit = Method.fit

    def timed_fit(self, model, groups, arrival, **kwargs):
        stamps: list[tuple[float, float]] = [(time.perf_counter(), time.process_time())]
        inner = kwargs.pop("after_step", None)

        def after_step(step: int) -> None:
            if inner is not None:
                inner(step)
            stamps.append((time.perf_counter(), time.process_time()))

        kwargs["steps"] = warmup + steps
        result = real_fit(self, model, groups, arrival, after_step=after_step, **kwargs)
        stages.append([(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])][warmup:])
        return result

    Method.fit = timed_fit
    method = build_method(name, {}, backbone)
    method.train(arrival)
    timed = [step for stage in stages for step in stage]
    return {"wall": statistics.fmean(w for w, _ in timed), "cpu": statistics.fmean(c for _, c in timed),
            "stages": len(stages)}


def _child(queue, name, arrival, backbone, warmup, steps, threads):
    torch.set_num_threads(threads)
    try:
        queue.put(_time_method(name, arrival, backbone, warmup, steps))
    except Exception as exc:  # reported in the results, the other children go on
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def measure(name, arrival, backbone, args) -> dict:
    context = mp.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue, name, arrival, backbone, args.warmup, args.steps,
                                                 args.threads))
    child.start()
    result = queue.get()
    child.join()
    return result


def arrivals(args, backbone) -> dict:
    """One arrival per task per batching choice: the same rows, a dev split of 2 rows (model selection is
    not what is timed)."""
    budget = Budget(max_train_examples=args.rows, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                    max_dev_examples=2, dev_evaluations=1, max_eval_examples=2)
    config = RunConfig(tasks=tuple(args.tasks), data_dir=str(args.data_dir), budget=budget)
    specs, source = resolve_tasks(config)
    out = {}
    for precision, grouped in {(p, g) for p, g in CONFIGS.values()}:
        task_budget = dataclasses.replace(budget, group_by_length=grouped)
        builder = ArrivalBuilder(source, tasks=specs, budgets={t: task_budget for t in specs}, seed=0,
                                 precision=precision)
        builder.use_tokenizer(backbone.tokenizer, backbone.identity)
        for task in args.tasks:
            out[(task, precision, grouped)] = builder.arrival(1, task)
    return out


def task_steps(args) -> dict[str, float]:
    if args.task_steps:
        return {k: float(v) for k, v in (item.split("=") for item in args.task_steps.split(","))}
    if BUDGET_RESULTS.exists():
        chosen = json.loads(BUDGET_RESULTS.read_text())["chosen_steps"]
        return {task: float(chosen[task]) for task in args.tasks}
    return {task: 1.0 for task in args.tasks}


def report(results: dict, args, weights: dict[str, float]) -> tuple[str, dict]:
    lines = [f"# Training throughput: speed levers, {platform.processor() or platform.machine()}, "
             f"{args.threads} thread(s), native bf16: {native_bf16(torch.device('cpu'))}", "",
             f"Same rows per (task, method); {args.steps} timed steps after {args.warmup} warm-up, batch "
             f"{args.batch_size}, length <= {args.max_seq_length}, {args.rounds} interleaved round(s); CPU "
             "seconds per optimizer step (process time, all threads), median over rounds. Speed-up = before / "
             f"configuration. Load average when it finished: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.", "",
             "| method | task | before CPU s/step | bf16 | grouped | after (both) |", "|---|---|---:|---:|---:|---:|"]
    summary = {}
    for method in args.methods:
        totals = {config: 0.0 for config in CONFIGS}
        complete = True
        for task in args.tasks:
            cell = results.get((method, task), {})
            if any("error" in cell.get(c, {"error": "missing"}) for c in CONFIGS):
                complete = False
                lines.append(f"| {method} | {task} | not measured: "
                             f"{next(v.get('error') for v in cell.values() if 'error' in v) if cell else 'missing'}"
                             " | | | |")
                continue
            before = cell["before"]["cpu"]
            for config in CONFIGS:
                totals[config] += weights[task] * cell[config]["cpu"]
            lines.append(f"| {method} | {task} | {before:.3f} | " + " | ".join(
                f"{before / cell[c]['cpu']:.2f}x" for c in ("bf16", "grouped", "after")) + " |")
        if complete:
            summary[method] = {config: totals[config] for config in CONFIGS}
    lines += ["", "Per method, CPU seconds of a run's training steps with the tasks weighted by "
              f"{json.dumps(weights)} steps (before / after = the speed-up at equal steps):", "",
              "| method | before CPU s | after CPU s | speed-up | bf16 alone | grouped alone |", "|---|---:|---:|---:|---:|---:|"]
    for method, totals in summary.items():
        lines.append(f"| {method} | {totals['before']:.2f} | {totals['after']:.2f} | "
                     f"{totals['before'] / totals['after']:.2f}x | {totals['before'] / totals['bf16']:.2f}x | "
                     f"{totals['before'] / totals['grouped']:.2f}x |")
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "weights": weights,
              "per_task": {f"{m}/{t}": v for (m, t), v in results.items()}, "per_method": summary,
              "torch": torch.__version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return "\n".join(lines) + "\n", record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    parser.add_argument("--tasks", type=lambda s: s.split(","), default=list(TASKS))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "glue")
    parser.add_argument("--rows", type=int, default=1600, help="training rows per task (length groups form in them)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task-steps", help="weights, e.g. cola=800,sst2=400 (default: the budget study's)")
    parser.add_argument("--out", type=Path, help="write <out>.md and <out>.json")
    args = parser.parse_args()
    backbone = load_backbone(device="cpu")
    data = arrivals(args, backbone)
    samples: dict[tuple[str, str], dict[str, list[dict]]] = {}
    rng = random.Random(0)
    for round_ in range(args.rounds):
        for method in args.methods:
            for task in args.tasks:
                order = list(CONFIGS)
                rng.shuffle(order)
                for config in order:
                    precision, grouped = CONFIGS[config]
                    result = measure(method, data[(task, precision, grouped)], backbone, args)
                    samples.setdefault((method, task), {}).setdefault(config, []).append(result)
                    print(f"round {round_ + 1} {method:<26} {task:<5} {config:<8} "
                          + (result["error"] if "error" in result else f"{result['cpu']:.3f} CPU s/step"),
                          flush=True)
    results = {key: {config: (runs[0] if any("error" in r for r in runs) else
                              {"cpu": statistics.median(r["cpu"] for r in runs),
                               "wall": statistics.median(r["wall"] for r in runs)})
                     for config, runs in configs.items()} for key, configs in samples.items()}
    text, record = report(results, args, task_steps(args))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
