"""Synthetic study directories: ledgers, configs, sidecars and status files with known numbers.

They stand in for methods other engineers are still writing (an evolving method that forgets, a diff
pruning method with two densities that records ``meta["placement"]``), so every table and figure can be
tested without training anything. Scores are a per-method base plus seeded noise; an evolving method
loses ``FORGET_PER_STEP`` points on each earlier task at every later arrival.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

BACKBONE_PARAMS = 22_713_216
BACKBONE_BYTES = 4 * BACKBONE_PARAMS
TASKS = ("rte", "mrpc", "stsb")
ORDERS = {"order0": ("rte", "mrpc", "stsb"), "order1": ("stsb", "rte", "mrpc")}
FORGET_PER_STEP = 8.0
# task -> (chance score, noise band, test rows) as schema-2 ledgers record them (stream/core/metrics.py).
CHANCE = {"rte": (52.7, 6.0, 277), "mrpc": (68.4, 3.5, 408), "stsb": (0.0, 5.2, 1500)}
HIDDEN, FFN, LAYERS, VOCAB = 384, 1536, 6, 30522

# label -> (method name, options, sharing, bytes per task, new params per task, base score per task)
METHODS = {
    "full": ("full", {}, "standalone", BACKBONE_BYTES + 2_000, BACKBONE_PARAMS, {"rte": 66, "mrpc": 86, "stsb": 86}),
    "last_layer-k1": ("last_layer", {"k": 1}, "shared_backbone", 7_100_000, 1_774_464,
                      {"rte": 58, "mrpc": 78, "stsb": 79}),
    "last_layer-k2": ("last_layer", {"k": 2}, "shared_backbone", 14_200_000, 3_548_160,
                      {"rte": 61, "mrpc": 81, "stsb": 82}),
    "diff_pruning-density0.005": ("diff_pruning", {"density": 0.005}, "shared_backbone", 620_000, 113_566,
                                  {"rte": 63, "mrpc": 84, "stsb": 84}),
    "diff_pruning-density0.02": ("diff_pruning", {"density": 0.02}, "shared_backbone", 2_300_000, 454_264,
                                 {"rte": 65, "mrpc": 85, "stsb": 85}),
    "sequential": ("sequential", {}, "evolving", BACKBONE_BYTES + 4_000, BACKBONE_PARAMS,
                   {"rte": 64, "mrpc": 85, "stsb": 85}),
}


def bert_parameters() -> dict[str, int]:
    """Parameter name -> numel of a MiniLM-sized BERT encoder (the names placement uses)."""
    params = {"embeddings.word_embeddings.weight": VOCAB * HIDDEN, "embeddings.position_embeddings.weight": 512 * HIDDEN,
              "embeddings.token_type_embeddings.weight": 2 * HIDDEN, "embeddings.LayerNorm.weight": HIDDEN,
              "embeddings.LayerNorm.bias": HIDDEN}
    for layer in range(LAYERS):
        block = f"encoder.layer.{layer}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            params[block + name + ".weight"] = HIDDEN * HIDDEN
            params[block + name + ".bias"] = HIDDEN
        params[block + "intermediate.dense.weight"] = FFN * HIDDEN
        params[block + "intermediate.dense.bias"] = FFN
        params[block + "output.dense.weight"] = HIDDEN * FFN
        params[block + "output.dense.bias"] = HIDDEN
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            params[block + norm + ".weight"] = HIDDEN
            params[block + norm + ".bias"] = HIDDEN
    return params


def placement_for(density: float, task: str, seed: int) -> dict[str, list[int]]:
    """A plausible diff-pruning placement: more changes in upper blocks and in biases."""
    rng = np.random.default_rng(seed * 7 + len(task))
    out = {}
    for name, total in bert_parameters().items():
        layer = int(name.split(".")[2]) if name.startswith("encoder.layer.") else -1
        weight = (1.0 + 0.3 * layer) * (6.0 if name.endswith("bias") else 1.0) * (0.2 if layer < 0 else 1.0)
        if task == "stsb" and "attention.self" in name:
            weight *= 2.0
        changed = int(min(total, round(total * density * weight * rng.uniform(0.8, 1.2))))
        out[name] = [changed, total]
    return out


def _score(label: str, task: str, seed: int, order_id: str) -> float:
    rng = np.random.default_rng([seed, int(order_id[-1]), sum(map(ord, label + task))])
    return float(METHODS[label][5][task] + rng.normal(0.0, 1.5))


def method_rows(run_dir: Path, label: str, seed: int, order_id: str, steps: int | None = None,
                chance: bool = False) -> list[dict]:
    """The ledger rows of ``label`` in one run (its first ``steps`` arrivals; all by default), writing the
    artifacts' sidecars under ``run_dir``; ``chance`` adds the schema-2 chance fields of :data:`CHANCE`."""
    name, options, sharing, size, new_params, _ = METHODS[label]
    order = ORDERS[order_id]
    diagonal = {task: _score(label, task, seed, order_id) for task in order}
    rows, sizes = [], []
    for step, task in enumerate(order[:steps], 1):
        sizes.append(size + step)  # sidecar sizes differ a little between steps
        cumulative = {"standalone": sum(sizes), "shared_backbone": BACKBONE_BYTES + sum(sizes),
                      "evolving": sizes[-1]}[sharing]
        multiplier = {"standalone": step * new_params / BACKBONE_PARAMS,
                      "shared_backbone": 1 + step * new_params / BACKBONE_PARAMS,
                      "evolving": new_params / BACKBONE_PARAMS}[sharing]
        path = f"artifacts/{label}/{step:03d}-{task}.safetensors"
        meta = {"placement": placement_for(options["density"], task, seed)} if name == "diff_pruning" else {}
        sidecar = run_dir / path.replace(".safetensors", ".json")
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps({"meta": meta}))
        for eval_step, eval_task in enumerate(order[:step], 1):
            score = diagonal[eval_task]
            if sharing == "evolving":
                score -= FORGET_PER_STEP * (step - eval_step)
            row = {"method": label, "method_name": name, "sharing": sharing, "seed": seed, "step": step,
                   "task": task, "eval_task": eval_task, "eval_step": eval_step, "score": score,
                   "metrics": {"validation": {"accuracy": score}}, "reused": False, "rows_in_step": step,
                   "artifact_bytes": size + step, "cumulative_bytes": cumulative, "artifact_path": path,
                   "artifact_sha256": hashlib.sha256(path.encode()).hexdigest(),
                   "new_params": new_params, "new_params_fraction": new_params / BACKBONE_PARAMS,
                   "total_params_multiplier": multiplier, "lower_bound_bytes": None,
                   "backbone_bytes": BACKBONE_BYTES, "backbone_params": BACKBONE_PARAMS,
                   "seconds": {"train": 1.0, "eval": 0.5, "wall": 1.6}}
            if chance:
                row["schema_version"] = 2
                row["chance_score"], row["noise_band"], row["test_rows"] = CHANCE[eval_task]
            rows.append(row)
    return rows


def write_run(run_dir: Path, label: str | tuple[str, ...], seed: int, order_id: str,
              steps: dict[str, int] | None = None, chance: bool = False) -> None:
    """One run directory (config.json, ledger.jsonl, sidecars) of one method label or several, with a known
    ledger; ``steps`` cuts a method short (label -> arrivals it finished: an unfinished run)."""
    labels = (label,) if isinstance(label, str) else tuple(label)
    order = ORDERS[order_id]
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"tasks": list(order), "order_seed": None, "seed": seed, "backbone": "synthetic", "pooling": "mean",
              "methods": [{"name": METHODS[m][0], "label": m, "options": METHODS[m][1]} for m in labels],
              "budget": {"max_train_examples": 200, "epochs": 1}}
    (run_dir / "config.json").write_text(json.dumps(config))
    rows = [row for m in labels for row in method_rows(run_dir, m, seed, order_id, (steps or {}).get(m), chance)]
    (run_dir / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_study(root: Path, labels=tuple(METHODS), seeds=(0, 1), failed_run: bool = True,
                chance: bool = False) -> Path:
    """A study directory of ``labels`` x ``seeds`` x both orders, plus (optionally) one failed run;
    ``chance`` writes schema-2 rows with chance scores."""
    runs = []
    for seed in seeds:
        for order_id, order in ORDERS.items():
            for label in labels:
                run_id = f"{label}__seed{seed}__{order_id}"
                write_run(root / "runs" / run_id, label, seed, order_id, chance=chance)
                runs.append({"run_id": run_id, "run_dir": f"runs/{run_id}", "method": label,
                             "method_name": METHODS[label][0], "options": METHODS[label][1], "seed": seed,
                             "order_id": order_id, "order": list(order), "budget": "default", "config": {}})
                status = root / "status" / f"{run_id}.json"
                status.parent.mkdir(parents=True, exist_ok=True)
                status.write_text(json.dumps({"run_id": run_id, "state": "done", "seconds": 12.0}))
    if failed_run:
        run_id = "broken__seed0__order0"
        runs.append({"run_id": run_id, "run_dir": f"runs/{run_id}", "method": "broken", "method_name": "broken",
                     "options": {}, "seed": 0, "order_id": "order0", "order": list(ORDERS["order0"]),
                     "budget": "default", "config": {}})
        (root / "status" / f"{run_id}.json").write_text(json.dumps(
            {"run_id": run_id, "state": "failed", "error": "ConfigError: k must be <= 6; got 9.",
             "traceback": "Traceback (most recent call last):\n  ...\nConfigError: k must be <= 6; got 9."}))
    spec = {"name": "synthetic", "grid": {"methods": list(labels), "seeds": list(seeds), "orders": [0, 1]}}
    (root / "study.json").write_text(json.dumps({"schema": 1, "name": "synthetic", "description": "synthetic ledgers",
                                                 "spec": spec, "spec_file": None, "runs": runs}))
    (root / "launches.jsonl").write_text(json.dumps({"time": "2026-01-01T00:00:00", "backend": "local", "workers": 2,
                                                     "threads": 1, "host": "test",
                                                     "versions": {"python": "3.11", "torch": "2.14.1"}}) + "\n")
    return root
