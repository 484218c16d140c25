"""Training-step cost, peak memory and evaluation throughput of every method, beside full finetuning.

What it measures, in ONE run on the same batches (real all-MiniLM-L6-v2 and real GLUE text by default):

- **train step time**: the median wall time of ``--steps`` optimizer steps after ``--warmup`` steps, for
  every training stage of a method (diff pruning has two: the L0 stage and the fixed-mask stage);
- **peak memory** of each stage: the process's peak resident set size (VmHWM) during that stage, and the
  same minus the RSS before the method was built (what training adds to a loaded backbone and data);
- **evaluation throughput** (examples/s) of the model rebuilt from the method's artifact, plus the
  artifact's bytes on disk (tensor file + sidecar) and, when the method reports one, its lower bound;
- ratios of each to full finetuning's (single) stage.

How: the backbone and batches are built once, then every method runs in its own forked child process
(fork shares the loaded backbone and data, and gives each method a fresh RSS high-water mark). The child
builds the method, replaces its ``fit`` (the funnel every method's training goes through,
:meth:`methods.core.base.Method.fit`) with a wrapper that runs the real shared loop,
:func:`methods.core.training.fit`, for exactly warm-up + timed steps on the bench batches (a 2-row dev split,
evaluated only at the start and end) and timestamps each step from the loop's ``after_step`` hook; at
each stage start it resets the kernel's peak-RSS counter (``/proc/self/clear_refs``, Linux). So each
method is measured with exactly the model, parameter groups, extra loss and hooks it trains with, without
any per-method code here (the Avalanche methods, which bypass ``Method.fit``, are timed from their strategy;
see below); a method whose training reaches neither is reported as not measured.
After ``train`` returns, the artifact is written and read back with the real store and its rebuilt
model is timed on ``--eval-examples`` rows. Peak memory on CPU is the RSS: it counts what the process
really holds (allocator slack included), which torch's own allocation counters would not.

The continual-learning baselines (``sequential``, ``ewc``, ``lwf``, ``replay``) train through Avalanche
strategies, not ``Method.fit``: for them the child timestamps each step from the strategy's own
:class:`methods.avalanche_strategies.FitControl` plugin (``after_training_iteration``, before its dev
evaluation) and resets the peak-RSS counter in its ``before_training_exp``, so they are measured on their
real path (Avalanche's loop, data loader and plugins). Their per-step cost depends on what they carry from
earlier tasks (EWC's penalty, LwF's teacher forward, Replay's buffered half of every minibatch), so each is
first primed with an untimed one-step arrival of another task, stored and read back with the real store, and
the timed arrival continues from that artifact as it would in a stream.

Besides the per-step numbers, every method's whole ``train`` call is timed: ``train() s`` minus the time of
its stages' steps is what a task costs outside the optimizer steps (copying the backbone, diff pruning's
projection, EWC's importance pass over the task's rows, building the payload).

Machine load matters: ratios come from one run, and each method's steps run back to back; repeat with
``--rounds`` to interleave methods when the machine is shared.

Run (real model, about 10-20 minutes on 2 shared cores):

    python -m bench.step_cost --methods full,diff_pruning --batch-size 32 --seq-len 128 \\
        --steps 10 --out bench/results/step_cost
    python -m bench.step_cost --tiny --steps 5            # a tiny random BERT, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import command_line, default_glue_dir, load_average, write_results  # first: offline HF defaults

import torch  # noqa: E402

from methods.core.base import Method  # noqa: E402
from methods.core.training import evaluate  # noqa: E402
from methods.registry import build_method, registered_methods  # noqa: E402
from stream.core.ledger import Sharing  # noqa: E402
from stream.core.scenario import Arrival, Budget  # noqa: E402
from stream.core.store import ArtifactKey, ArtifactStore  # noqa: E402
from stream.core.tasks import get_task  # noqa: E402
from stream.core.tokenization import TokenizedSplit  # noqa: E402
from stream.engine.config import MethodSpec  # noqa: E402

REFERENCE = "full"
# The task of the untimed first arrival that evolving methods continue from (any task other than rte).
PRIMING_TASK = "mrpc"


# ------------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    return _status_kib("VmHWM") / 1024


# -------------------------------------------------------------------------------------------- data
def fixed_length_split(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                       labels: torch.Tensor, name: str) -> TokenizedSplit:
    """A split whose every batch is exactly ``input_ids.shape[1]`` long (lengths set to the full width)."""
    rows, width = input_ids.shape
    return TokenizedSplit(task="rte", split=name, input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids, lengths=torch.full((rows,), width), labels=labels)


def glue_rows(glue_dir: Path | None, rows: int) -> tuple[list[str], list[str], list[int]] | None:
    """RTE sentence pairs (long ones, so rows fill the sequence length), or None if absent."""
    import gzip

    path = glue_dir / "rte" / "train.jsonl.gz" if glue_dir else None
    if path is None or not path.exists():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = [json.loads(line) for line in f]
    data.sort(key=lambda r: -len(r["sentence1"]) - len(r["sentence2"]))
    data = data[:rows]
    return [r["sentence1"] for r in data], [r["sentence2"] for r in data], [int(r["label"]) for r in data]


def build_splits(backbone, args) -> tuple[TokenizedSplit, TokenizedSplit, TokenizedSplit, str]:
    """(train, dev, eval) splits of fixed length ``--seq-len``; real RTE text when available."""
    generator = torch.Generator().manual_seed(args.seed)
    n_train = args.batch_size * (args.warmup + args.steps)
    n_total = n_train + 2 + args.eval_examples
    texts = None if args.tiny else glue_rows(args.glue_dir, n_total)
    if texts is not None:
        enc = backbone.tokenizer(texts[0], texts[1], truncation=True, max_length=args.seq_len, padding="max_length",
                                 return_tensors="pt", return_token_type_ids=True)
        ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
        labels = torch.tensor(texts[2])
        source = f"GLUE rte train pairs (longest first), padded/truncated to {args.seq_len} tokens"
        if len(labels) < n_total:  # cycle rows if the file is short
            reps = -(-n_total // len(labels))
            ids, mask, types, labels = ids.repeat(reps, 1), mask.repeat(reps, 1), types.repeat(reps, 1), \
                labels.repeat(reps)
    else:
        vocab = int(backbone.encoder.config.vocab_size)
        ids = torch.randint(5, vocab, (n_total, args.seq_len), generator=generator)
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        labels = torch.randint(0, 2, (n_total,), generator=generator)
        source = f"random token ids, {args.seq_len} tokens"
    cut = [n_train, n_train + 2]
    split = lambda a, b, name: fixed_length_split(ids[a:b], mask[a:b], types[a:b], labels[a:b], name)  # noqa: E731
    return split(0, cut[0], "train"), split(cut[0], cut[1], "dev"), split(cut[1], n_total, "validation"), source


def load_bench_backbone(args):
    from methods.core.backbone import backbone_from_module, load_backbone

    if not args.tiny:
        return load_backbone(args.backbone, device="cpu")
    from transformers import BertConfig, BertModel

    torch.manual_seed(args.seed)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=max(64, args.seq_len))
    return backbone_from_module(BertModel(config), None, identity="tiny-random-bert", device="cpu")


# ------------------------------------------------------------------------------------- measurement
def _stage_record(name: str, trainable: int, start: tuple[float, float], stamps: list[tuple[float, float]],
                  warmup: int, baseline: float, start_rss: float, can_reset: bool) -> dict:
    """One stage's numbers from its start and per-step (wall, CPU) stamps; the first ``warmup`` are untimed."""
    timed = list(zip(stamps[warmup - 1:], stamps[warmup:]))
    durations = [b[0] - a[0] for a, b in timed]
    cpu = [b[1] - a[1] for a, b in timed]
    return {
        "stage": None, "name": name, "trainable_params": trainable, "steps_run": len(stamps),
        "stage_step_seconds": (stamps[-1][0] - start[0]) if stamps else 0.0,
        "step_seconds": statistics.median(durations), "step_seconds_all": durations,
        "step_cpu_seconds": statistics.median(cpu), "step_cpu_seconds_all": cpu,
        "peak_rss_mib": peak_rss_mib() if can_reset else None, "start_rss_mib": start_rss,
        "peak_above_baseline_mib": (peak_rss_mib() - baseline) if can_reset else None,
    }


def _prime_evolving(method: Method, arrival: Arrival, args, store: ArtifactStore):
    """An untimed one-step arrival of another task, stored and read back: the measured arrival's ``previous``."""
    budget = dataclasses.replace(arrival.budget, max_steps=1)
    first = dataclasses.replace(arrival, step=1, task=get_task(PRIMING_TASK), budget=budget)
    trained = method.train(first)
    key = ArtifactKey(method.name, 1, PRIMING_TASK)
    store.write(key, trained.payload.tensors, {"meta": trained.payload.meta, "new_params": trained.payload.new_params,
                                               "lower_bound_bits": None, "fit": trained.fit.to_dict()})
    del trained
    return store.read(key)


def _instrument_avalanche(stages: list[dict], args, baseline: float) -> None:
    """Time the steps of an Avalanche strategy from its FitControl plugin (see the module docstring)."""
    from methods.avalanche_strategies import STRATEGIES, FitControl

    state: dict = {}
    original_before, original_after = FitControl.before_training_exp, FitControl.after_training_iteration

    def before_training_exp(self, strategy, **kwargs):
        original_before(self, strategy, **kwargs)
        state.update(stamps=[], can_reset=reset_peak_rss(), start_rss=rss_mib(),
                     start=(time.perf_counter(), time.process_time()),
                     trainable=sum(p.numel() for p in strategy.model.parameters() if p.requires_grad))

    def after_training_iteration(self, strategy, **kwargs):
        state["stamps"].append((time.perf_counter(), time.process_time()))  # before its dev evaluation
        original_after(self, strategy, **kwargs)
        if self.step == self.total_steps and state.get("measure"):
            name = next(k for k, v in STRATEGIES.items() if isinstance(strategy, v))
            stages.append(_stage_record(f"train (Avalanche {name})", state["trainable"],
                                        state["start"], state["stamps"], args.warmup, baseline,
                                        state["start_rss"], state["can_reset"]))

    FitControl.before_training_exp = before_training_exp
    FitControl.after_training_iteration = after_training_iteration
    return state


def measure_method(spec: MethodSpec, backbone, arrival: Arrival, args) -> dict:
    """Train ``spec`` with every stage cut to warm-up + timed steps; time, memory, artifact, eval speed."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    baseline = rss_mib()
    method = build_method(spec.name, dict(spec.options), backbone)
    stages: list[dict] = []
    measured_steps = args.warmup + args.steps

    def measured_fit(model, groups, arrival_, *, progress, desc=None, **overrides):
        stamps: list[tuple[float, float]] = []  # (wall, process CPU) after each step
        inner = overrides.pop("after_step", None)

        def after_step(step: int) -> None:
            if inner is not None:
                inner(step)
            stamps.append((time.perf_counter(), time.process_time()))

        # One dev evaluation, after the last timed step (its 2-row split costs next to nothing).
        budget = dataclasses.replace(overrides.pop("budget", arrival_.budget), dev_evaluations=1)
        overrides.update(steps=measured_steps, select_from=0, budget=budget, after_step=after_step)
        can_reset = reset_peak_rss()
        start_rss = rss_mib()
        start = (time.perf_counter(), time.process_time())
        result = Method.fit(method, model, groups, arrival_, progress=False, desc=desc, **overrides)
        prefix = f"{method.name} {arrival_.step}:{arrival_.task.name}"
        stages.append(_stage_record((desc or prefix).removeprefix(prefix).strip() or "train",
                                    sum(p.numel() for g in groups for p in g["params"]), start, stamps,
                                    args.warmup, baseline, start_rss, can_reset))
        return result

    method.fit = measured_fit  # the one funnel of every method's training (see the module docstring)
    evolving = method.sharing is Sharing.EVOLVING
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(tmp))
        previous = None
        if evolving:
            avalanche = _instrument_avalanche(stages, args, baseline)
            previous = _prime_evolving(method, arrival, args, store)
            avalanche["measure"] = True
        measured = dataclasses.replace(arrival, step=2) if evolving else arrival
        start, start_cpu = time.perf_counter(), time.process_time()
        trained = method.train(measured, previous=previous)
        train_seconds, train_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        for number, stage in enumerate(stages, 1):
            stage["stage"] = number
        bound_bits = trained.payload.lower_bound_bits
        out = {"method": spec.resolved_label, "name": spec.name, "options": dict(spec.options),
               "sharing": method.sharing.value, "baseline_rss_mib": baseline, "stages": stages,
               "train_seconds": train_seconds, "train_cpu_seconds": train_cpu,
               "train_outside_steps_seconds": train_seconds - sum(s["stage_step_seconds"] for s in stages),
               "primed_with": PRIMING_TASK if evolving else None,
               "lower_bound_bytes": None if bound_bits is None else bound_bits / 8}
        key = ArtifactKey(spec.resolved_label, measured.step, arrival.task.name)
        record = store.write(key, trained.payload.tensors, {
            "meta": trained.payload.meta, "new_params": trained.payload.new_params,
            "lower_bound_bits": bound_bits, "fit": trained.fit.to_dict()})
        del trained
        model = method.load(store.read(key), arrival.task)
    out["artifact_bytes"] = record.total_bytes
    evaluate(model, {"warm": arrival.dev}, arrival.task, batch_size=args.eval_batch_size)
    start, start_cpu = time.perf_counter(), time.process_time()
    evaluate(model, arrival.tests, arrival.task, batch_size=args.eval_batch_size)
    rows = len(arrival.tests["validation"])
    out["eval_examples_per_second"] = rows / (time.perf_counter() - start)
    out["eval_examples_per_cpu_second"] = rows / (time.process_time() - start_cpu)
    return out


def _child(conn, spec, backbone, arrival, args) -> None:
    try:
        conn.send(("ok", measure_method(spec, backbone, arrival, args)))
    except BaseException as exc:  # report, never hang the parent
        import traceback

        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_in_child(spec: MethodSpec, backbone, arrival: Arrival, args) -> dict:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, spec, backbone, arrival, args))
    proc.start()
    child.close()
    status, payload = parent.recv()
    proc.join()
    if status != "ok":
        return {"method": spec.resolved_label, "name": spec.name, "options": dict(spec.options), "error": payload}
    return payload


# ------------------------------------------------------------------------------------------ report
def merge_rounds(rounds: list[dict]) -> dict:
    """One result per method from several rounds: medians over all timed steps, max of peaks."""
    first = dict(rounds[0])
    if "error" in first or len(rounds) == 1:
        return first
    stages = []
    for i, stage in enumerate(first["stages"]):
        all_steps = [s for r in rounds for s in r["stages"][i]["step_seconds_all"]]
        all_cpu = [s for r in rounds for s in r["stages"][i]["step_cpu_seconds_all"]]
        peaks = [r["stages"][i]["peak_rss_mib"] for r in rounds if r["stages"][i]["peak_rss_mib"] is not None]
        above = [r["stages"][i]["peak_above_baseline_mib"] for r in rounds
                 if r["stages"][i]["peak_above_baseline_mib"] is not None]
        stages.append({**stage, "step_seconds": statistics.median(all_steps), "step_seconds_all": all_steps,
                       "step_cpu_seconds": statistics.median(all_cpu), "step_cpu_seconds_all": all_cpu,
                       "peak_rss_mib": max(peaks) if peaks else None,
                       "peak_above_baseline_mib": max(above) if above else None})
    first["stages"] = stages
    for key in ("eval_examples_per_second", "eval_examples_per_cpu_second", "train_seconds", "train_cpu_seconds",
                "train_outside_steps_seconds"):
        first[key] = statistics.median(r[key] for r in rounds)
    return first


def with_ratios(results: list[dict]) -> list[dict]:
    reference = next((r for r in results if r.get("name") == REFERENCE and "error" not in r), None)
    ref = reference["stages"][0] if reference and reference["stages"] else None
    for r in results:
        for s in r.get("stages", []):
            s["step_ratio"] = s["step_seconds"] / ref["step_seconds"] if ref else None
            s["step_cpu_ratio"] = s["step_cpu_seconds"] / ref["step_cpu_seconds"] if ref else None
            for key in ("peak_rss_mib", "peak_above_baseline_mib"):
                ok = ref and ref[key] and s[key] is not None
                s[key.replace("_mib", "_ratio")] = s[key] / ref[key] if ok else None
        if reference and "error" not in r:
            r["eval_ratio"] = r["eval_examples_per_second"] / reference["eval_examples_per_second"]
            r["eval_cpu_ratio"] = r["eval_examples_per_cpu_second"] / reference["eval_examples_per_cpu_second"]
    return results


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(results: list[dict], info: dict) -> str:
    lines = [f"# Step cost: {info['backbone']}, batch {info['batch_size']}, length {info['seq_len']}, "
             f"{info['threads']} thread(s)", "",
             f"Command: `{info['command']}`", "",
             f"Measured {info['started']} on {info['machine']['cpu']} ({info['machine']['cores']} cores, load "
             f"average {info['load_before']} before, {info['load_after']} after). Data: {info['data']}. "
             f"Median of {info['steps']} timed steps after {info['warmup']} warm-up step(s) per stage"
             f"{', over ' + str(info['rounds']) + ' interleaved rounds' if info['rounds'] > 1 else ''}. Ratios "
             f"(x) are to `{REFERENCE}`. Wall s: wall-clock time per step; CPU s: the process's CPU time per "
             "step (user + system), less sensitive to other processes on a shared machine. Peak: the process's "
             "peak RSS during the stage; above base: that minus the RSS with the backbone and data loaded, "
             "before the method was built. Eval: examples/s of the model rebuilt from the artifact (wall, and "
             "per CPU second). train() s: the whole train call (all stages, warm-up included); outside steps: "
             "that minus its stages' step time (setup, projection, EWC's importance pass, payload). Evolving "
             f"methods (Avalanche strategies) are timed on a second arrival, continuing from a one-step "
             f"`{PRIMING_TASK}` arrival, so their penalties, teachers and replay buffers are active. The artifacts come from stages cut to a few steps with a 2-row dev split, so "
             "their sizes are real files but not trained ones (a sparse diff whose stage 1 kept its initial state "
             "has clustered positions); trained artifacts are measured by the study bench/studies/diff_pruning_sweep.toml.", "",
             "| method | stage | trainable params | wall s | x | CPU s | x | peak MiB | x | above base MiB | x "
             "| eval ex/s | ex/CPU s | x | artifact bytes | / lower bound | train() s | outside steps s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    empty = " |" * 16
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error'].splitlines()[0]} |{empty}")
            continue
        if not r["stages"]:
            lines.append(f"| {r['method']} | not measured: trains outside Method.fit and FitControl |{empty}")
        bound = r.get("lower_bound_bytes")
        for i, s in enumerate(r["stages"]):
            tail = (f"{r['eval_examples_per_second']:.1f} | {r['eval_examples_per_cpu_second']:.1f} | "
                    f"{_fmt(r.get('eval_cpu_ratio'), '.2f')} | {r['artifact_bytes']:,} | "
                    f"{_fmt(r['artifact_bytes'] / bound if bound else None, '.3f')} | {r['train_seconds']:.1f} | "
                    f"{r['train_outside_steps_seconds']:.1f}" if i == 0 else " | | | | | |")
            lines.append(f"| {r['method'] if i == 0 else ''} | {s['stage']}: {s['name']} | {s['trainable_params']:,} | "
                         f"{s['step_seconds']:.2f} | {_fmt(s['step_ratio'], '.2f')} | {s['step_cpu_seconds']:.2f} | "
                         f"{_fmt(s['step_cpu_ratio'], '.2f')} | {_fmt(s['peak_rss_mib'], '.0f')} | "
                         f"{_fmt(s['peak_rss_ratio'], '.2f')} | {_fmt(s['peak_above_baseline_mib'], '.0f')} | "
                         f"{_fmt(s['peak_above_baseline_ratio'], '.2f')} | {tail} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), ""]
    return "\n".join(lines)


def machine_info() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # no /proc (not Linux): keep platform.processor()'s answer
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=None,
                        help="comma-separated name[:key=value...] (default: full plus every registered method)")
    parser.add_argument("--backbone", default="bundled:all-MiniLM-L6-v2", help="backbone (default: bundled MiniLM)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random BERT and random tokens instead")
    parser.add_argument("--glue-dir", type=Path, default=default_glue_dir(),
                        help="GLUE in the Hub layout (default: $TASKSTREAM_DATA_DIR, else a shared/glue folder "
                             "beside the repo or its parent)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per stage (>= 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every method this many times, interleaved")
    parser.add_argument("--eval-examples", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.json")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be >= 1")
    torch.set_num_threads(args.threads)
    names = args.methods.split(",") if args.methods else [REFERENCE] + sorted(set(registered_methods()) - {REFERENCE})
    specs = [MethodSpec.parse(n) for n in names]

    backbone = load_bench_backbone(args)
    train, dev, test, data = build_splits(backbone, args)
    budget = Budget(batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                    eval_batch_size=args.eval_batch_size, max_seq_length=args.seq_len)
    arrival = Arrival(step=1, task=get_task("rte"), budget=budget, seed=args.seed, train=train, dev=dev,
                      tests={"validation": test})
    info = {"command": command_line("bench.step_cost", argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), "load_before": load_average(),
            "backbone": backbone.identity, "backbone_params": backbone.num_parameters, "data": data,
            **{k: getattr(args, k) for k in ("batch_size", "seq_len", "warmup", "steps", "rounds", "threads")}}
    rounds: dict[str, list[dict]] = {s.resolved_label: [] for s in specs}
    for round_ in range(args.rounds):
        for spec in specs:
            print(f"[round {round_ + 1}/{args.rounds}] {spec.resolved_label} ...", flush=True)
            rounds[spec.resolved_label].append(run_in_child(spec, backbone, arrival, args))
    results = with_ratios([merge_rounds(r) for r in rounds.values()])
    from stream.engine.runner import package_versions

    info.update(load_after=load_average(), versions={k: v for k, v in package_versions().items()
                                                     if k in ("python", "torch", "transformers", "taskstream")})
    text = markdown(results, info)
    print(text)
    write_results(args.out, text, {"info": info, "results": results})
    return results


if __name__ == "__main__":
    main()
