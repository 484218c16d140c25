"""Taskstream's full-finetuning loop against Avalanche's stock Naive strategy: wall and CPU time per epoch.

Same model, same rows, same batch size, same optimizer:

- **taskstream**: :func:`methods.core.training.fit` (the shared loop every method trains through) on a
  :class:`~methods.core.task_model.TaskModel` (a fresh copy of the backbone's encoder plus a seeded head), with the
  parameter groups full finetuning uses; its protocol (linear warm-up/decay schedule, gradient clipping to 1.0,
  dev-score model selection) included. The dev split is one row, so model selection costs nothing here.
- **avalanche**: ``avalanche.training.Naive``, unmodified, on the same scenario exported with
  :func:`stream.engine.avalanche_bridge.to_avalanche` (the rows taskstream trains on), its model from
  ``AvalancheStream.multi_head_model()`` (the same encoder copy and head, behind Avalanche's multi-task
  module), ``MultiTaskCriterion``, ``train_mb_size`` = the batch size, no evaluation during training. Stock
  Naive rebuilds its optimizer's single parameter group from the model, so it gets one group.

Both use ``torch.optim.AdamW(fused=True)`` (lr 5e-5, weight decay 0.01): the comparison is of the loops, not
of optimizer kernels. Each (loop, round) runs in its own forked child, alternating, so both see the same
machine load; each child trains ``--epochs`` epochs and every epoch is timed (wall and process CPU):
taskstream from its ``after_step`` hook, Avalanche from a plugin's ``before_training_epoch`` /
``after_training_epoch``. Epoch 1 includes warm-up (allocator, first-call costs); the ratio is reported on
all epochs and on epochs after the first. Also reported: the whole call (``fit`` / ``strategy.train``),
which adds per-task set-up (Avalanche: model adaptation, optimizer reset, data loader construction).

    python -m bench.loop_overhead --task sst2 --examples 512 --epochs 2 --rounds 3 \\
        --out bench/results/loop_overhead
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
import warnings
from pathlib import Path

from bench.common import command_line, default_glue_dir, load_average, write_results  # first: offline HF defaults

import torch  # noqa: E402

from stream.engine.config import RunConfig  # noqa: E402
from stream.core.scenario import Budget  # noqa: E402

LOOPS = ("taskstream", "avalanche")
LEARNING_RATE, WEIGHT_DECAY = 5e-5, 0.01


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def build(args):
    """The backbone, the task's arrival (taskstream's rows) and the same scenario exported to Avalanche."""
    from methods.core.backbone import load_backbone
    from stream.core.scenario import ArrivalBuilder
    from stream.engine.avalanche_bridge import stream_from_builder
    from stream.engine.config import resolve_tasks

    budget = Budget(max_train_examples=args.examples, epochs=args.epochs, batch_size=args.batch_size,
                    max_seq_length=args.seq_len, max_dev_examples=1, max_eval_examples=1)
    config = RunConfig(tasks=(args.task,), data_dir=str(args.data_dir) if args.data_dir else None, budget=budget,
                       seed=args.seed, device="cpu")
    tasks, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=tasks, budgets={args.task: budget}, seed=args.seed)
    backbone = load_backbone(config.backbone, device="cpu")
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    arrival = builder.arrival(1, args.task)
    stream = stream_from_builder(builder, (args.task,), backbone)  # the same cached rows, as Avalanche datasets
    return backbone, arrival, stream


def run_taskstream(backbone, arrival, args) -> dict:
    from methods.core.task_model import TaskHead, TaskModel
    from methods.core.training import decay_groups, fit
    from methods.full import FullConfig

    torch.manual_seed(args.seed)
    encoder = backbone.fresh_encoder().requires_grad_(True)
    head = TaskHead(backbone.hidden_size, arrival.task.num_outputs, 0.1)
    model = TaskModel(encoder, head, backbone.pooling)
    groups = decay_groups(model.named_parameters(), LEARNING_RATE, WEIGHT_DECAY)
    steps_per_epoch = -(-len(arrival.train) // args.batch_size)
    stamps: list[tuple[float, float]] = []
    start = _clock()
    fit(model, groups, arrival.train, arrival.dev, arrival.task, config=FullConfig(learning_rate=LEARNING_RATE),
        epochs=args.epochs, max_steps=None, batch_size=args.batch_size, seed=args.seed, device=backbone.device,
        after_step=lambda step: stamps.append(_clock()))
    end = _clock()
    bounds = [start] + [stamps[e * steps_per_epoch - 1] for e in range(1, args.epochs + 1)]
    return _record("taskstream", bounds, start, end, len(stamps))


def run_avalanche(backbone, stream, args) -> dict:
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

    from methods.core.multitask import MultiTaskCriterion

    class EpochClock(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.bounds: list[tuple[float, float]] = []
            self.iterations = 0

        def before_training_epoch(self, strategy, **kwargs) -> None:
            if not self.bounds:
                self.bounds.append(_clock())

        def after_training_iteration(self, strategy, **kwargs) -> None:
            self.iterations += 1

        def after_training_epoch(self, strategy, **kwargs) -> None:
            self.bounds.append(_clock())

    torch.manual_seed(args.seed)
    model = stream.multi_head_model(seed=args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, fused=True)
    clock = EpochClock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy = Naive(model=model, optimizer=optimizer, criterion=MultiTaskCriterion(),
                         train_mb_size=args.batch_size, train_epochs=args.epochs, eval_mb_size=64, device="cpu",
                         plugins=[clock], evaluator=EvaluationPlugin(), eval_every=-1)
        start = _clock()
        strategy.train(stream.train_stream[0], eval_streams=[])
        end = _clock()
    # The epoch timing starts at the first epoch; the set-up before it counts in the whole call.
    return _record("avalanche", clock.bounds, start, end, clock.iterations)


def _record(loop: str, bounds: list[tuple[float, float]], start, end, steps: int) -> dict:
    return {"loop": loop, "steps": steps,
            "epoch_seconds": [b[0] - a[0] for a, b in zip(bounds, bounds[1:])],
            "epoch_cpu_seconds": [b[1] - a[1] for a, b in zip(bounds, bounds[1:])],
            "call_seconds": end[0] - start[0], "call_cpu_seconds": end[1] - start[1]}


def _child(conn, loop, backbone, arrival, stream, args) -> None:
    try:
        torch.set_num_threads(args.threads)
        result = run_taskstream(backbone, arrival, args) if loop == "taskstream" else run_avalanche(backbone, stream,
                                                                                                     args)
        conn.send(("ok", result))
    except BaseException as exc:  # report, never hang the parent
        import traceback

        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_in_child(loop, backbone, arrival, stream, args) -> dict:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, loop, backbone, arrival, stream, args))
    proc.start()
    child.close()
    status, payload = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{loop} failed:\n{payload}")
    return payload


def summarise(results: list[dict]) -> dict:
    out = {}
    for loop in LOOPS:
        rows = [r for r in results if r["loop"] == loop]
        later = [s for r in rows for s in r["epoch_seconds"][1:]]
        later_cpu = [s for r in rows for s in r["epoch_cpu_seconds"][1:]]
        out[loop] = {
            "epoch_seconds": statistics.median(s for r in rows for s in r["epoch_seconds"]),
            "epoch_cpu_seconds": statistics.median(s for r in rows for s in r["epoch_cpu_seconds"]),
            "later_epoch_seconds": statistics.median(later) if later else None,
            "later_epoch_cpu_seconds": statistics.median(later_cpu) if later_cpu else None,
            "call_seconds": statistics.median(r["call_seconds"] for r in rows),
            "call_cpu_seconds": statistics.median(r["call_cpu_seconds"] for r in rows),
            "steps": rows[0]["steps"],
        }
    ratios = {}
    for key in ("epoch_seconds", "epoch_cpu_seconds", "later_epoch_seconds", "later_epoch_cpu_seconds",
                "call_seconds", "call_cpu_seconds"):
        a, b = out["taskstream"][key], out["avalanche"][key]
        ratios[key] = a / b if a and b else None
    out["taskstream_over_avalanche"] = ratios
    return out


def markdown(summary: dict, results: list[dict], info: dict) -> str:
    ratio = summary["taskstream_over_avalanche"]
    lines = [f"# Training loop overhead: taskstream's fit vs Avalanche's Naive ({info['task']}, "
             f"{info['examples']} examples, batch {info['batch_size']})", "",
             f"Command: `{info['command']}`", "",
             f"Measured {info['started']} on {info['machine']} (load average {info['load_before']} before, "
             f"{info['load_after']} after; the machine is shared, so CPU seconds are the steadier measure). "
             f"{info['threads']} torch thread(s); {info['rounds']} rounds, each loop in its own forked child, "
             f"alternating; {info['epochs']} epochs of {summary['taskstream']['steps'] // info['epochs']} steps per "
             "child. Same backbone copy and head initialisation, same rows (exported with "
             "`stream.engine.avalanche_bridge`), fused AdamW in both. taskstream's loop also does its protocol's "
             "linear schedule, gradient clipping and dev-score selection (1 dev row here); stock Naive does "
             "none of these.", "",
             "| measure | taskstream | avalanche Naive | taskstream / avalanche |", "|---|---:|---:|---:|"]
    names = {"epoch_seconds": "wall s per epoch (all epochs)", "epoch_cpu_seconds": "CPU s per epoch (all epochs)",
             "later_epoch_seconds": "wall s per epoch (after the first)",
             "later_epoch_cpu_seconds": "CPU s per epoch (after the first)",
             "call_seconds": "wall s, whole call", "call_cpu_seconds": "CPU s, whole call"}
    for key, name in names.items():
        a, b = summary["taskstream"][key], summary["avalanche"][key]
        if a is None or b is None:
            continue
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {ratio[key]:.3f} |")
    lines += ["", "Every child (epoch wall s / CPU s):", ""]
    for r in results:
        epochs = ", ".join(f"{w:.1f}/{c:.1f}" for w, c in zip(r["epoch_seconds"], r["epoch_cpu_seconds"]))
        lines.append(f"- {r['loop']}: {epochs}; whole call {r['call_seconds']:.1f}/{r['call_cpu_seconds']:.1f}")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from bench.step_cost import machine_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--examples", type=int, default=512, help="training rows (subsampled with the seed)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128, help="maximum length (batches are trimmed to their longest row)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=default_glue_dir())
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone, arrival, stream = build(args)
    from stream.engine.runner import package_versions

    info = {"command": command_line("bench.loop_overhead", argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info()["cpu"],
            "load_before": load_average(), "task": args.task, "examples": len(arrival.train),
            "batch_size": args.batch_size, "epochs": args.epochs, "rounds": args.rounds, "threads": args.threads}
    results = []
    for round_ in range(args.rounds):
        for loop in LOOPS if round_ % 2 == 0 else reversed(LOOPS):
            print(f"[round {round_ + 1}/{args.rounds}] {loop} ...", flush=True)
            results.append(run_in_child(loop, backbone, arrival, stream, args))
    summary = summarise(results)
    info.update(load_after=load_average(), versions={k: v for k, v in package_versions().items()
                                                     if k in ("python", "torch", "transformers", "avalanche-lib")})
    text = markdown(summary, results, info)
    print(text)
    write_results(args.out, text, {"info": info, "summary": summary, "results": results})
    return summary


if __name__ == "__main__":
    main()
