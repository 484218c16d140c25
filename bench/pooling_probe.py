"""Pooling and learning-rate probe for frozen-backbone methods on all-MiniLM-L6-v2, built on the package.

Which pooling of the encoder should a task head read, and at what learning rate do the linear probe and
last-layer tuning train in a short budget? For every pooling (``RunConfig.pooling``: ``mean``, ``cls``,
``pooler``) and seed, one ordinary run trains the linear probe and last-layer tuning (k = 1) at each given
learning rate through the runner: the package's data loading (the seeded train rows and dev split, GLUE
validation as test), pooling (:func:`methods.core.task_model.pool`) and training loop, every score from the
model rebuilt from its artifact file. Beside the runs, on the same tokenised rows and the same pooling:
feature diagnostics of the frozen pooled features on the test split (mean norm, mean pairwise cosine, effective
rank of their covariance) and the logistic-regression bound (a tuned linear classifier on the frozen
features of the training rows, scored on the test split with the task's metric).

    python -m bench.pooling_probe --data-dir ../shared/glue --run-dir runs/pooling_probe \\
        --out bench/results/pooling_probe_runs

Re-running resumes the runs. The committed ``bench/results/pooling_probe.md`` was measured by the earlier,
stand-alone version of this script (it says so); its conclusions set today's defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import default_glue_dir  # first: offline Hugging Face defaults

import numpy as np  # noqa: E402
import torch  # noqa: E402

from methods.core.backbone import POOLINGS, load_backbone  # noqa: E402
from methods.core.task_model import pool  # noqa: E402
from stream.core.ledger import read_ledger  # noqa: E402
from stream.core.metrics import compute_metrics, task_score  # noqa: E402
from stream.core.scenario import ArrivalBuilder, Budget  # noqa: E402
from stream.core.tokenization import TokenizedSplit  # noqa: E402
from stream.engine.config import MethodSpec, RunConfig, resolve_tasks  # noqa: E402
from stream.engine.runner import run_stream  # noqa: E402


def run_config(args: argparse.Namespace, pooling: str, seed: int) -> RunConfig:
    """One task, every probe and last-layer learning rate as a method variant of one run."""
    methods = ([MethodSpec(name="linear_probe", options=(("learning_rate", lr),)) for lr in args.probe_lrs]
               + [MethodSpec(name="last_layer", options=(("k", 1), ("learning_rate", lr))) for lr in args.block_lrs])
    budget = Budget(max_train_examples=args.n_train, epochs=args.epochs, max_seq_length=args.max_seq_length)
    return RunConfig(tasks=(args.task,), methods=tuple(methods), pooling=pooling, data_dir=str(args.data_dir),
                     budget=budget, seed=seed, device="cpu")


@torch.inference_mode()
def pooled_features(backbone, split: TokenizedSplit, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, hidden) frozen features by the package's pooling, and the labels."""
    features, labels = [], []
    backbone.encoder.eval()
    for batch in split.batches(64):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = backbone.encoder(**inputs)
        features.append(pool(out.last_hidden_state, inputs["attention_mask"], pooling,
                             getattr(out, "pooler_output", None)))
        labels.append(batch["labels"])
    return torch.cat(features).float().numpy(), torch.cat(labels).numpy()


def diagnostics(x: np.ndarray) -> dict[str, float]:
    """Mean norm, mean pairwise cosine, and the participation-ratio effective rank of the covariance."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    cosine = (np.square(unit.sum(0)).sum() - n) / (n * (n - 1))  # mean over pairs i != j
    eigen = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)
    return {"norm": float(np.linalg.norm(x, axis=1).mean()), "mean_cosine": float(cosine),
            "effective_rank": float(eigen.sum() ** 2 / np.square(eigen).sum())}


def logistic_bound(task, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int
                   ) -> float:
    """The task's score of a logistic regression on standardised frozen features, C by 5-fold CV on train."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=5, max_iter=2000, random_state=seed))
    model.fit(*train)
    predictions = model.predict(test[0])
    return task_score(task, {"test": compute_metrics(task, predictions, test[1])})


def probe(args: argparse.Namespace) -> list[dict]:
    """Every (pooling, seed): the runs' scores per method variant, the diagnostics and the bound."""
    results = []
    for pooling in args.poolings:
        backbone = load_backbone(pooling=pooling, device="cpu")
        for seed in args.seeds:
            config = run_config(args, pooling, seed)
            run_dir = args.run_dir / f"{pooling}-seed{seed}"
            run_stream(config, run_dir, backbone=backbone, progress=False)
            scores = {row["method"]: row["score"] for row in read_ledger(run_dir) if row["eval_task"] == row["task"]}
            tasks, source = resolve_tasks(config)
            builder = ArrivalBuilder(source, tasks=tasks, budgets={args.task: config.budget}, seed=seed)
            builder.use_tokenizer(backbone.tokenizer, backbone.identity)
            arrival = builder.arrival(1, args.task)
            train = pooled_features(backbone, arrival.train, pooling)
            test_split = next(iter(arrival.tests.values()))
            test = pooled_features(backbone, test_split, pooling)
            results.append({"pooling": pooling, "seed": seed, "scores": scores, "features": diagnostics(test[0]),
                            "logistic_bound": logistic_bound(arrival.task, train, test, seed)})
            print(json.dumps(results[-1]), flush=True)
    return results


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    labels = list(results[0]["scores"])
    lines = [f"# Pooling probe: {args.task}, {args.n_train} training rows x {args.epochs} epochs", "",
             "Made by `python -m bench.pooling_probe` (the runs under "
             f"`{args.run_dir}`). Scores: the task's metric x 100 on GLUE validation, from the runs' ledgers.", "",
             "| pooling | seed | " + " | ".join(labels) + " | logistic bound | norm | mean cosine | effective rank |",
             "|---|---:|" + "---:|" * (len(labels) + 4)]
    for r in results:
        f = r["features"]
        lines.append(f"| {r['pooling']} | {r['seed']} | " + " | ".join(f"{r['scores'][k]:.1f}" for k in labels)
                     + f" | {r['logistic_bound']:.1f} | {f['norm']:.2f} | {f['mean_cosine']:.3f} | "
                       f"{f['effective_rank']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_glue_dir())
    parser.add_argument("--run-dir", type=Path, required=True, help="one run per pooling and seed (resumed)")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--poolings", nargs="+", default=list(POOLINGS), choices=POOLINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--probe-lrs", nargs="+", type=float, default=[2e-5, 1e-3, 1e-2])
    parser.add_argument("--block-lrs", nargs="+", type=float, default=[2e-5, 1e-4, 5e-4])
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.md and <out>.json")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("no local GLUE data found: pass --data-dir")
    results = probe(args)
    text = markdown(results, args)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
