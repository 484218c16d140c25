"""How diff pruning's L0 penalty, Adam epsilon and learning rates behave on all-MiniLM-L6-v2 at small budgets.

Why: the expected-L0 penalty's gradient on a log-alpha is ``lambda * p * (1 - p)`` (about 8e-10 at the
paper's lambda = 1.25e-7 and the initial log-alpha 5), below Adam's default epsilon 1e-8. So Adam does
not normalise it: the log-alphas drift at ``lr * lambda * p(1-p) / eps`` per step, a few thousandths,
and only the paper's ~25k steps on BERT-large close gates. With an epsilon well below the gradients Adam
normalises the penalty and every log-alpha without task signal falls by about ``lr`` per step, whatever
lambda; lambda then only weighs the penalty against the task's gradient. This sweep measures which
regime gives a good sparse model within the budgets a stream gives one task (tens of steps).

What: for each configuration, the real arrival loop (:func:`stream.engine.runner.run_stream`) trains diff
pruning on a real GLUE task, writes the artifact, rebuilds the model from it and scores the test split
(GLUE validation). Reported per configuration: the stage-1 density (nonzero fraction of the effective
diff under the deterministic gate, before projection), the expected density sum P(z != 0) / N, the dev
score after stage 3, the test score, and the artifact's bytes against its lower bound. Every option that
matters is spelled out per configuration (except ``chosen``, the current defaults), so results do not
depend on the defaults.

Run (1 torch thread, about 2-3 CPU-minutes per configuration on sst2). The committed results
(bench/results/diff_pruning_sweep.md) were made by the commands listed in that file, in five runs,
then merged with ``--combine``; for example:

    python bench/diff_pruning_sweep.py --tasks sst2 --out bench/results/diff_pruning_sweep_sst2
    python bench/diff_pruning_sweep.py --tasks rte --configs chosen,nonadaptive,full,linear_probe \\
        --run-dir /tmp/taskstream-diff-pruning-sweep-rte --out bench/results/diff_pruning_sweep_rte
    python bench/diff_pruning_sweep.py --combine bench/results/diff_pruning_sweep_sst2*.json \\
        --out bench/results/diff_pruning_sweep

"chosen" is the configuration of the defaults at the time of the run (every option is recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_setup import default_glue_dir, write_results  # first: offline HF defaults, this checkout on sys.path

import torch  # noqa: E402

from stream.core.ledger import read_ledger  # noqa: E402
from stream.core.scenario import Budget  # noqa: E402
from stream.engine.config import MethodSpec, RunConfig  # noqa: E402
from stream.engine.runner import run_stream  # noqa: E402

PAPER = {"l0_penalty": 1.25e-7, "alpha_eps": 1e-8, "alpha_learning_rate": 0.1, "learning_rate": 1e-5,
         "finetune_learning_rate": 5e-5, "head_learning_rate": 1e-3}
# name -> (registered method, options). "chosen" is the configuration the defaults were set to.
CONFIGS: dict[str, tuple[str, dict]] = {
    "paper": ("diff_pruning", PAPER),
    "eps1e-12": ("diff_pruning", {**PAPER, "alpha_eps": 1e-12}),
    "lam1.25e-5": ("diff_pruning", {**PAPER, "l0_penalty": 1.25e-5}),
    "alr0.5-eps1e-12": ("diff_pruning", {**PAPER, "alpha_eps": 1e-12, "alpha_learning_rate": 0.5}),
    "alr0.5-eps1e-12-additive": ("diff_pruning", {**PAPER, "alpha_eps": 1e-12, "alpha_learning_rate": 0.5,
                                                  "structured_penalty": "additive"}),
    "unstructured-alr0.5-eps1e-12": ("diff_pruning_unstructured", {**PAPER, "alpha_eps": 1e-12,
                                                                   "alpha_learning_rate": 0.5}),
    "wlr1e-4-eps1e-12": ("diff_pruning", {**PAPER, "alpha_eps": 1e-12, "learning_rate": 1e-4}),
    "wlr1e-4-ftlr5e-4": ("diff_pruning", {**PAPER, "learning_rate": 1e-4, "finetune_learning_rate": 5e-4}),
    "unstructured-eps1e-12": ("diff_pruning_unstructured", {**PAPER, "alpha_eps": 1e-12}),
    "nonadaptive": ("diff_pruning_nonadaptive", {**PAPER, "learning_rate": 5e-5}),
    "chosen": ("diff_pruning", {}),
    # References on the same data and budget (their own defaults).
    "full": ("full", {}),
    "linear_probe": ("linear_probe", {}),
}
REFERENCES = ("full", "linear_probe")
TASK_BUDGETS = {"sst2": {"max_seq_length": 64}, "rte": {"max_seq_length": 128}}


def summarise(run_dir: Path, task: str, labels: dict[str, str]) -> list[dict]:
    """One row per configuration from the run's ledger and artifact sidecars."""
    rows = read_ledger(run_dir)
    out = []
    for label, config in labels.items():
        row = next(r for r in rows if r["method"] == label and r["eval_task"] == task)
        sidecar = json.loads((run_dir / "artifacts" / row["artifact_path"].split("/", 1)[1])
                             .with_suffix(".json").read_text())
        meta = sidecar["meta"]
        stage1 = meta.get("l0_stage", {})
        out.append({"config": config, "method": row["method_name"], "options": sidecar["config"],
                    "stage1_density": stage1.get("density"), "stage1_expected_density": stage1.get("expected_density"),
                    "closed_tensors": len(stage1.get("closed_tensors", [])), "stage1_dev": stage1.get("best_dev_score"),
                    "dev": row["dev_score"], "test": row["score"], "nonzeros": meta.get("nonzeros"),
                    "new_params": row["new_params"], "artifact_bytes": row["artifact_bytes"],
                    "lower_bound_bytes": row["lower_bound_bytes"], "train_seconds": row["seconds"]["train"],
                    "steps": row["train_steps"], "nonzeros_per_layer": meta.get("nonzeros_per_layer")})
    return out


TABLE_NOTE = ("Stage-1 density: nonzero fraction of the effective diff under the deterministic gate before "
              "projection (expected: sum P(z != 0) / N). Dev: best dev score after stage 3; test: GLUE validation, "
              "scored on the model rebuilt from the artifact. Penalty: the structured penalty form.")


def table(rows: list[dict]) -> list[str]:
    """Markdown table lines, every option that matters spelled out per row."""
    def cell(value, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    lines = ["| config | variant | penalty | lambda | alpha eps | alpha lr | w lr | fixed-mask lr | head lr "
             "| stage-1 density | expected | closed tensors | stage-1 dev | dev | test | artifact bytes | / bound |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o = r["options"]
        bound = r["lower_bound_bytes"]
        variant = o.get("variant", r["method"])
        penalty = o.get("structured_penalty") if variant == "structured" else None
        lines.append(f"| {r['config']} | {variant} | {penalty or 'n/a'} | {cell(o.get('l0_penalty'), 'g')} | "
                     f"{cell(o.get('alpha_eps'), 'g')} | {cell(o.get('alpha_learning_rate'), 'g')} | "
                     f"{o['learning_rate']:g} | {cell(o.get('finetune_learning_rate'), 'g')} | "
                     f"{cell(o.get('head_learning_rate'), 'g')} | {cell(r['stage1_density'], '.3f')} | "
                     f"{cell(r['stage1_expected_density'], '.3f')} | {r['closed_tensors']} | "
                     f"{cell(r['stage1_dev'], '.1f')} | {r['dev']:.1f} | {r['test']:.1f} | {r['artifact_bytes']:,} | "
                     f"{cell(r['artifact_bytes'] / bound if bound else None, '.3f')} |")
    return lines


def markdown(task: str, rows: list[dict], info: dict) -> str:
    lines = [f"# Diff pruning sweep: {task}, {info['backbone']}", "", f"Command: `{info['command']}`", "",
             f"Budget: {info['budget']}. Seed {info['seed']}, 1 torch thread, {info['started']}; "
             f"{info['cpu_minutes']:.1f} CPU-minutes. {TABLE_NOTE}", "", *table(rows)]
    return "\n".join(lines) + "\n"


def combine(paths: list[Path], out: Path) -> str:
    """One table from several runs' JSON results (rows labelled by the file they come from)."""
    rows, sources = [], []
    for path in paths:
        data = json.loads(path.read_text())
        info = data["info"]
        sources.append(f"- `{path.name}`: `{info['command']}` ({info['started']}, {info['cpu_minutes']:.1f} "
                       "CPU-minutes)")
        rows += [{**row, "config": f"{row['config']} ({path.stem})"} for row in data["rows"]]
        budget, seed, backbone = info["budget"], info["seed"], info["backbone"]
    text = "\n".join([f"# Diff pruning sweep, combined: {backbone}", "",
                      f"Budget: {budget}. Seed {seed}, 1 torch thread. {TABLE_NOTE} Made with "
                      f"`python bench/diff_pruning_sweep.py --combine {' '.join(str(p) for p in paths)} "
                      f"--out {out}` from:", "", *sources, "", *table(rows)]) + "\n"
    out.with_suffix(".md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sst2", help="comma-separated GLUE tasks (sst2, rte, ...)")
    parser.add_argument("--configs", default=",".join(c for c in CONFIGS if c != "chosen" and c not in REFERENCES),
                        help=f"comma-separated configurations among: {', '.join(CONFIGS)}")
    parser.add_argument("--glue-dir", type=Path, default=default_glue_dir())
    parser.add_argument("--backbone", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dev-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/taskstream-diff-pruning-sweep"),
                        help="where the runs' artifacts and ledgers go (resumable)")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.json")
    parser.add_argument("--combine", type=Path, nargs="+", default=None,
                        help="instead of running, merge these result JSON files into one table at <out>.md")
    args = parser.parse_args(argv)
    if args.combine:
        if args.out is None:
            parser.error("--combine needs --out")
        print(combine(args.combine, args.out))
        return
    unknown = sorted(set(args.configs.split(",")) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    if args.glue_dir is None:
        parser.error("no GLUE data found; pass --glue-dir")
    torch.set_num_threads(1)
    start_cpu, started = time.process_time(), time.strftime("%Y-%m-%d %H:%M:%S")
    chosen = args.configs.split(",")
    labels = {f"dp-{name}": name for name in chosen}
    methods = tuple(MethodSpec(name=CONFIGS[name][0], options=tuple(CONFIGS[name][1].items()), label=label)
                    for label, name in labels.items())
    results = {}
    for task in args.tasks.split(","):
        budget = Budget(max_train_examples=args.n_train, epochs=args.epochs, batch_size=args.batch_size,
                        max_eval_examples=None, max_dev_examples=args.dev_examples, **TASK_BUDGETS.get(task, {}))
        config = RunConfig(tasks=(task,), methods=methods, data_dir=str(args.glue_dir), budget=budget,
                           backbone=args.backbone, seed=args.seed, device="cpu")
        run_dir = args.run_dir / task
        run_stream(config, run_dir, progress=False)
        results[task] = summarise(run_dir, task, labels)
        command = " ".join(["python", "bench/diff_pruning_sweep.py", *(argv or sys.argv[1:])])
        info = {"backbone": args.backbone, "command": command,
                "budget": {k: v for k, v in vars(budget).items() if v is not None}, "seed": args.seed,
                "started": started, "cpu_minutes": (time.process_time() - start_cpu) / 60}
        text = markdown(task, results[task], info)
        print(text, flush=True)
        if args.out:
            suffix = "" if len(args.tasks.split(",")) == 1 else f"_{task}"
            write_results(Path(f"{args.out}{suffix}"), text, {"info": info, "rows": results[task]})


if __name__ == "__main__":
    main()
