"""Mixed-task traffic: one request stream over many tasks and methods, served three ways, side by side.

The stream is ``--requests`` requests, each one sentence (or pair) for a (method, task) drawn at random
(seeded) from every pair a finished run serves. Three servers answer it, each in a fresh process so that
their resident memory can be compared:

- ``grouped``: one TaskBank (one backbone in memory); the requests are grouped by (method, task), one
  switch per group, then one forward pass per request;
- ``per-request``: the same bank, in arrival order: a switch whenever the request's (method, task) differs
  from the previous one's (almost always);
- ``full-models``: every (method, task) materialised beforehand as its own model (``Method.load``), all
  kept in memory: no switch at all, one model per task and method.

Every strategy makes one forward pass per request (no batching, so the numbers isolate switching); the
answers of the three are checked equal. Every artifact is read before timing (the bank switches to every pair
once during setup: reads, verifies, builds the patch), so the timed part holds switches and forward passes.
Reported: requests per second over the stream (setup excluded), the setup time, and resident memory (RSS after
setup and the peak, from /proc).

    python -m bench.traffic --run-dir /tmp/taskstream-switch-latency --out bench/results/traffic

The run is the switch-latency bench's (``python -m bench.switch_latency`` makes it from ``--data-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, command_line, write_results  # first: offline Hugging Face defaults

STRATEGIES = ("grouped", "per-request", "full-models")
SENTENCES = ["a gripping, beautifully acted film", "the plot goes nowhere and the jokes fall flat",
             "A man is sleeping on the couch.", "Someone is asleep.", "Stocks fell sharply after the report.",
             "The market dropped after the news."]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/taskstream-switch-latency"), help="a finished run")
    p.add_argument("--methods", help="method labels the stream asks (comma-separated; default: every one served); "
                                     "full-models keeps a full model per (method, task), so each adds ~90 MB per task")
    p.add_argument("--requests", type=int, default=240, help="requests in the stream")
    p.add_argument("--seed", type=int, default=0, help="seed of the stream")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, help="write <out>.md and <out>.json (default: print only)")
    p.add_argument("--worker", choices=STRATEGIES, help=argparse.SUPPRESS)  # one strategy, in this process
    return p.parse_args(argv)


def memory_kib() -> dict[str, int]:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return {"rss_kib": fields["VmRSS"], "peak_kib": fields["VmHWM"]}


def request_stream(bank, methods: str | None, count: int, seed: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """``count`` requests (method label, task, texts), drawn with ``seed`` from every pair the bank serves for
    ``methods`` (comma-separated labels; None: all)."""
    rng = random.Random(seed)
    wanted = methods.split(",") if methods else list(bank.methods)
    unknown = sorted(set(wanted) - set(bank.methods))
    if unknown:
        raise SystemExit(f"--methods names {', '.join(unknown)}, which the run does not serve")
    pairs = sorted(pair for pair in bank.served if pair[0] in wanted)
    stream = []
    for _ in range(count):
        label, task = rng.choice(pairs)
        width = len(bank.task_spec(task).text_columns)
        start = rng.randrange(len(SENTENCES) - width + 1)
        stream.append((label, task, tuple(SENTENCES[start:start + width])))
    return stream


def worker(args: argparse.Namespace) -> dict:
    """Serve the stream with one strategy; returns its timings, memory and answers."""
    import torch

    from stream.engine.serving import TaskBank

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    bank = TaskBank(args.run_dir, device="cpu")
    stream = request_stream(bank, args.methods, args.requests, args.seed)
    encoded = [bank.encode(task, [texts]) for _, task, texts in stream]
    models = {}
    if args.worker == "full-models":
        for label, task in sorted({(label, task) for label, task, _ in stream}):
            models[(label, task)] = bank.method(label).load(bank.read(task, label), bank.task_specs[task])
    else:
        # Read and verify every artifact the stream needs and build its patch before timing, as full-models
        # loads every model before timing: the timed part is then switches and forward passes only.
        for label, task in sorted({(label, task) for label, task, _ in stream}):
            bank.switch(task, label)
        bank.reset()
    setup = time.perf_counter() - started
    after_setup = memory_kib()
    order = list(range(len(stream)))
    if args.worker == "grouped":
        order.sort(key=lambda i: stream[i][:2])
    answers: list = [None] * len(stream)
    switches = 0
    switch_seconds = {"in place": 0.0, "rebuilt": 0.0}  # time spent switching, by how the new task is served
    started = time.perf_counter()
    with torch.inference_mode():
        for i in order:
            label, task, _ = stream[i]
            if args.worker == "full-models":
                model = models[(label, task)]
            else:
                switching = bank.active != (label, task)
                switches += switching
                start = time.perf_counter()
                model = bank.switch(task, label)
                if switching:
                    kind = "rebuilt" if bank.active_patch is None else "in place"
                    switch_seconds[kind] += time.perf_counter() - start
            batch = encoded[i].batch(torch.arange(1))
            answers[i] = model(**{k: v for k, v in batch.items() if k != "labels"}).float()[0].tolist()
    seconds = time.perf_counter() - started
    bank.reset(verify=args.worker != "full-models")
    return {"strategy": args.worker, "requests": len(stream), "seconds": seconds, "setup_seconds": setup,
            "requests_per_second": len(stream) / seconds, "switches": switches, "switch_seconds": switch_seconds,
            "models_in_memory": len(models),
            "pairs": len({pair[:2] for pair in stream}), "after_setup": after_setup, "end": memory_kib(),
            "answers": answers}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if not (args.run_dir / "ledger.jsonl").is_file():
        raise SystemExit(f"{args.run_dir} is not a finished run; make one with "
                         "python -m bench.switch_latency --data-dir.")
    results = {}
    for strategy in STRATEGIES:
        command = [sys.executable, "-m", "bench.traffic", "--run-dir", str(args.run_dir.resolve()),
                   "--requests", str(args.requests), "--seed", str(args.seed), "--threads", str(args.threads),
                   "--worker", strategy]
        if args.methods:
            command += ["--methods", args.methods]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"the {strategy} worker failed (exit {done.returncode}):\n{done.stderr}")
        results[strategy] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{strategy}: {results[strategy]['requests_per_second']:.1f} requests/s", flush=True)
    reference = results["full-models"]["answers"]
    same = {s: r["answers"] == reference for s, r in results.items()}
    for r in results.values():
        del r["answers"]
    record = {"command": command_line("bench.traffic"), "run_dir": str(args.run_dir),
              "requests": args.requests, "seed": args.seed, "threads": args.threads, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(), "answers_equal_full_models": same, "strategies": results}
    first = results["grouped"]
    lines = [f"Traffic over {first['pairs']} (method, task) pairs of run `{args.run_dir}`: {args.requests} "
             f"requests drawn at random (seed {args.seed}), one sentence or pair each, one forward pass per "
             f"request, {args.threads} torch thread(s); load average at the end {record['load_average'][0]:.2f} "
             f"on {os.cpu_count()} cores (other jobs shared the machine).", "",
             "| strategy | requests/s | switches | time switching in place s | time rebuilding s | models in memory "
             "| setup s | RSS after setup MiB | peak RSS MiB | answers = full models' |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['requests_per_second']:.1f} | {r['switches']} | "
                     f"{r['switch_seconds']['in place']:.3f} | {r['switch_seconds']['rebuilt']:.2f} | "
                     f"{r['models_in_memory'] or 1} | {r['setup_seconds']:.1f} | "
                     f"{r['after_setup']['rss_kib'] / 1024:,.0f} | {r['end']['peak_kib'] / 1024:,.0f} | "
                     f"{'yes' if same[name] else 'NO'} |")
    lines += ["", "`grouped` and `per-request` serve from one TaskBank: one backbone in memory, each task's small "
              "file applied in place (full finetuning and other whole-model methods are rebuilt from their file, "
              "read and checked again, at each switch); every artifact was read, verified and made a patch once "
              "during setup, as full-models loads its models during setup. `full-models` keeps every (method, "
              "task) as its own full model. Each strategy ran in its own process; RSS is /proc's VmRSS after "
              "setup, the peak VmHWM at the end. The switching columns split the time spent in switches by how "
              "the new task is served: a patch applied in place, or a model rebuilt from its file."]
    text = "\n".join(lines)
    print(text)
    write_results(args.out, f"# Mixed-task traffic\n\n{text}\n\nCommand: `{record['command']}`\n", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
