"""Write the reproduction's study spec from the learning rates its selection study chose per task.

    python -m bench.reproduction_settings runs/reproduction_lr      # writes bench/studies/reproduction.toml

The reproduction runs in two studies with one budget:

1. ``bench/studies/reproduction_lr.toml`` trains every tuned method once (seed 0) with a ``search`` over a
   small learning-rate grid; on every task the candidate with the best dev score is kept, and the grid,
   each candidate's dev score and the choice are recorded in the artifact sidecars and the ledger.
2. ``bench/studies/reproduction.toml`` (written by this script) runs the Table 1 methods over the seeds
   with those choices fixed per task (``per_task``), so every seed of a method trains at the same settings
   and the table's training seconds are one run's, not a search's.

Methods without their own search take another's choice, as :data:`PLAN` says: the non-adaptive baseline
prunes a full finetuning run made at full finetuning's settings, so it takes full finetuning's learning
rate; the unstructured and fp16-value variants of diff pruning take the structured variant's (the paper
uses one set of hyperparameters for its diff pruning variants). The budget, tasks, pooling and data of the
written spec are the selection study's own, copied from its ``study.json``, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO  # first: offline Hugging Face defaults

from analysis.tables import arrival_rows, load_ledger, read_study  # noqa: E402
from stream.engine.study import StudySpec  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "studies" / "reproduction.toml"
ALL_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Planned:
    """One method of the reproduction: its spec table, its seeds, and whose choices it takes.

    ``settings_from`` is the selection study's method label whose chosen options (by the same option
    names) this method uses on each task.
    """

    method: dict[str, Any]
    seeds: tuple[int, ...]
    settings_from: str


PLAN: tuple[Planned, ...] = (
    Planned({"name": "full"}, ALL_SEEDS, "full"),
    Planned({"name": "diff_pruning"}, ALL_SEEDS, "diff_pruning"),
    Planned({"name": "diff_pruning_nonadaptive"}, ALL_SEEDS, "full"),
    Planned({"name": "adapters"}, ALL_SEEDS, "adapters"),
    Planned({"name": "masking"}, ALL_SEEDS, "masking"),
    Planned({"name": "last_layer", "k": 1}, ALL_SEEDS, "last_layer-k1"),
    Planned({"name": "diff_pruning_unstructured"}, (0,), "diff_pruning"),
    Planned({"name": "diff_pruning", "value_dtype": "float16"}, (0,), "diff_pruning"),
    Planned({"name": "bitfit"}, (0,), "bitfit"),
    Planned({"name": "lora"}, (0,), "lora"),
    Planned({"name": "linear_probe"}, (0,), "linear_probe"),
)


class SelectionIncomplete(RuntimeError):
    """The selection study has no choice yet for some (method, task) the plan needs."""


def chosen_options(study_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method label: {task: chosen options}}`` from the selection study's ledgers (own-arrival rows)."""
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    for row in arrival_rows(load_ledger(study_dir)).to_dict("records"):
        if isinstance(row.get("chosen_options"), dict):
            chosen.setdefault(row["method"], {})[row["task"]] = row["chosen_options"]
    return chosen


def planned_methods(study: dict, chosen: dict[str, dict[str, dict[str, Any]]],
                    plan: tuple[Planned, ...] = PLAN) -> list[tuple[dict, tuple[int, ...]]]:
    """``plan``'s method tables with ``per_task`` filled in from ``chosen``, each with its seeds; raises
    SelectionIncomplete naming every (label, task) still missing."""
    tasks = study["runs"][0]["config"]["tasks"]
    missing = sorted({f"{p.settings_from}/{task}" for p in plan for task in tasks
                      if task not in chosen.get(p.settings_from, {})})
    if missing:
        raise SelectionIncomplete(
            f"The selection study has no dev-chosen options yet for {len(missing)} (method, task) pair(s): "
            f"{', '.join(missing)}. Finish it first (re-run its sweep command; finished runs are skipped).")
    methods = []
    for planned in plan:
        per_task = {task: dict(chosen[planned.settings_from][task]) for task in tasks}
        methods.append(({**planned.method, "per_task": per_task}, planned.seeds))
    return methods


def toml_value(value: Any) -> str:
    """A TOML literal for the scalars and lists a study spec holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a study spec cannot hold {value!r}")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}: {value!r}")


def spec_text(study: dict, methods: list[tuple[dict, tuple[int, ...]]], source: str) -> str:
    """The reproduction's spec: the selection study's base, then one ``[[runs]]`` entry per (method, seed)."""
    base = {k: v for k, v in study["spec"]["base"].items() if k not in ("budget", "task_budgets")}
    budget = study["spec"]["base"].get("budget", {})
    task_budgets = study["spec"]["base"].get("task_budgets", {})
    lines = [
        "# The diff pruning paper's Table 1 on MiniLM: the methods over seeds at learning rates chosen per task",
        f"# on the dev split by the selection study ({source}). Written by",
        "#",
        f"#   python -m bench.reproduction_settings {source}",
        "#",
        "# (do not edit by hand: edit bench/reproduction_settings.py or the selection study and re-write it).",
        "# Run and tabulate (resumable):  python -m bench.reproduce",
        'name = "reproduction"',
        'description = "Table 1 of the diff pruning paper on MiniLM at dev-chosen per-task learning rates"',
        "",
        "[base]",
        *(f"{key} = {toml_value(value)}" for key, value in base.items()),
        "",
        "[base.budget]",
        *(f"{key} = {toml_value(value)}" for key, value in budget.items()),
    ]
    for task, fields in task_budgets.items():
        lines += ["", f"[base.task_budgets.{task}]", *(f"{key} = {toml_value(v)}" for key, v in fields.items())]
    # Seed-major, as a grid expands: the first runs to finish already compare every method on one seed.
    for seed in sorted({s for _, seeds in methods for s in seeds}):
        for method, seeds in methods:
            if seed in seeds:
                lines += ["", "[[runs]]", f"seed = {seed}", f"method = {toml_value(method)}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path, help="the selection study's directory (runs/reproduction_lr)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the spec to write")
    args = parser.parse_args(argv)
    study = read_study(args.study_dir)
    try:
        methods = planned_methods(study, chosen_options(args.study_dir))
    except SelectionIncomplete as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = spec_text(study, methods, f"runs/{study['name']}")
    StudySpec.from_mapping(tomllib.loads(text))  # refuse to write a spec the sweep would refuse
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({sum(len(s) for _, s in methods)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
