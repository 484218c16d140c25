"""Studies: a small spec file expanded into many ordinary runs, and the study directory that records them.

A study spec (TOML or YAML) names a base run config and the axes to sweep::

    name = "glue3"                        # the study's name (default: the file's stem)
    description = "..."

    [base]                                # any RunConfig field, as in `taskstream run --config`
    tasks = ["rte", "mrpc", "stsb"]
    data_dir = "../glue"                  # relative paths are relative to the spec file
    device = "cpu"
    budget = { max_train_examples = 200, epochs = 1 }

    [grid]                                # every combination of these is one run
    methods = ["full", "last_layer:k=1", { name = "last_layer", sweep = { k = [2, 3] } }]
    # a swept method may set other options, and a label template naming every swept option:
    # { name = "last_layer", head_learning_rate = 1e-3, sweep = { k = [1, 2] }, label = "ll-k{k}" }
    seeds = [0, 1]
    orders = [0, 1]                       # order seeds; "given" (tasks as listed); or a list of task names
    budgets = ["default", "tiny"]         # [budgets.*] names (default: all of them; none: the base budget)

    [budgets.tiny]                        # named overrides of base.budget
    max_train_examples = 50

    [[runs]]                              # optional explicit points, added to (or instead of) the grid
    method = "last_layer:k=4"
    seed = 0
    order = "given"
    budget = "default"

Run granularity: one run per (method variant, seed, order, budget). A run is an ordinary run directory
(``taskstream report RUN`` works on it) whose config never changes, so adding a method, a seed or an
order to the spec later adds runs and leaves the finished ones untouched; one method failing does not
take the other methods of the same seed with it; and a pool or a Ray cluster gets more, smaller jobs. The
price is that a run reads and tokenises its data itself instead of sharing that with the other methods of
the same seed and order: 5-10 s per run for three GLUE tasks on a loaded 2-core machine (the runs'
``run.log``), against minutes of training per run.

Study directory::

    study.json          the spec (normalised), and every run: id, axes and resolved RunConfig
    spec.<toml|yaml>    the spec file exactly as given
    launches.jsonl      one line per launch: time, host, backend, workers, threads, package versions
    status/<run>.json   per run: pending, running (host, pid, worker), done or failed (error, traceback)
    runs/<run>/         the ordinary run directories
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError
from stream.core.ledger import read_ledger
from stream.core.plan import resolve_order
from stream.core.rundir import LEDGER_FILE
from stream.engine.config import MethodSpec, RunConfig, anchor_paths, load_config_file

STUDY_FILE = "study.json"
LAUNCHES_FILE = "launches.jsonl"
STATUS_DIR = "status"
RUNS_DIR = "runs"
STUDY_SCHEMA = 1
DEFAULT_BUDGET = "default"
GIVEN_ORDER = "given"

_SPEC_KEYS = {"name", "description", "base", "grid", "budgets", "runs"}
_GRID_KEYS = {"methods", "seeds", "orders", "budgets"}
_POINT_KEYS = {"method", "seed", "order", "budget"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class OrderSpec:
    """A task order of a study: the tasks as listed, a seeded permutation, or an explicit sequence."""

    seed: int | None = None
    tasks: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        """Short name used in run ids: ``given``, ``order3`` or ``order-rte.mrpc.stsb``."""
        if self.tasks is not None:
            return "order-" + ".".join(self.tasks)
        return GIVEN_ORDER if self.seed is None else f"order{self.seed}"

    def apply(self, config: RunConfig) -> RunConfig:
        if self.tasks is not None:
            return dataclasses.replace(config, tasks=self.tasks, order_seed=None)
        return dataclasses.replace(config, order_seed=self.seed)

    @classmethod
    def parse(cls, value: Any, tasks: Sequence[str], where: str) -> OrderSpec:
        """An int (order seed), ``"given"``, or task names (a list, or a comma-separated string)."""
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an order seed, 'given' or a list of task names; got {value!r}.")
        if isinstance(value, int):
            if value < 0:
                raise ConfigError(f"{where} must be >= 0 when it is an order seed; got {value!r}.")
            return cls(seed=value)
        if value == GIVEN_ORDER:
            return cls()
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where} must be an order seed, 'given' or a list of task names; got {value!r}.")
        names = tuple(n.strip() for n in names)
        if sorted(names) != sorted(tasks):
            raise ConfigError(f"{where} must be an ordering of exactly the study's tasks {list(tasks)}; "
                              f"got {list(names)}.")
        return cls(tasks=names)


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: its id, its axes, and the complete RunConfig it runs (with one method)."""

    run_id: str
    method: MethodSpec
    seed: int
    order: OrderSpec
    budget: str
    config: RunConfig

    @property
    def arrival_order(self) -> tuple[str, ...]:
        return resolve_order(self.config.tasks, self.config.order_seed)

    def record(self) -> dict[str, Any]:
        """The run's entry in ``study.json``."""
        return {"run_id": self.run_id, "run_dir": f"{RUNS_DIR}/{self.run_id}",
                "method": self.method.resolved_label, "method_name": self.method.name,
                "options": dict(self.method.options), "seed": self.seed, "order_id": self.order.id,
                "order": list(self.arrival_order), "budget": self.budget, "config": self.config.to_dict()}


def _run_id(method: MethodSpec, seed: int, order: OrderSpec, budget: str) -> str:
    parts = [method.resolved_label, f"seed{seed}", order.id]
    if budget != DEFAULT_BUDGET:
        parts.append(budget)
    return "__".join(parts)


def _expand_methods(value: Any, where: str) -> list[MethodSpec]:
    """Method entries: ``"name:k=v"`` strings, or tables, where ``sweep = {opt = [values]}`` expands."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list of methods (e.g. [\"full\", \"last_layer:k=2\"]); "
                          f"got {value!r}.")
    out = []
    for entry in value:
        if isinstance(entry, Mapping) and "sweep" in entry:
            table = dict(entry)
            sweep = table.pop("sweep")
            if not isinstance(sweep, Mapping) or not sweep or not all(isinstance(v, list) and v
                                                                    for v in sweep.values()):
                raise ConfigError(f"{where}: 'sweep' must map option names to non-empty lists of values; "
                                  f"got {sweep!r}.")
            template = table.pop("label", None)
            if template is not None and not all("{" + key + "}" in template for key in sweep):
                raise ConfigError(f"{where}: the label of a swept method must name every swept option as a "
                                  f"placeholder, e.g. 'last_layer-k{{k}}'; got {template!r} for {sorted(sweep)}.")
            for combo in itertools.product(*sweep.values()):
                values = dict(zip(sweep, combo))
                label = template.format(**values) if template is not None else None
                out.append(MethodSpec.from_value({**table, **values, **({"label": label} if label else {})}))
        else:
            out.append(MethodSpec.from_value(entry))
    labels = [m.resolved_label for m in out]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"{where} names the method variant(s) {duplicates} more than once.")
    return out


def _int_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          and v >= 0 for v in value):
        raise ConfigError(f"{where} must be a non-empty list of integers >= 0; got {value!r}.")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} repeats a value: {value!r}.")
    return list(value)


def _check_keys(mapping: Any, valid: set[str], where: str) -> dict:
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where} must be a table; got {mapping!r}.")
    unknown = sorted(set(mapping) - valid, key=str)
    if unknown:
        raise ConfigError(f"Unknown key(s) {', '.join(map(repr, unknown))} in {where}. Valid: {', '.join(sorted(valid))}.")
    return dict(mapping)


@dataclass(frozen=True)
class StudySpec:
    """A study: its name, the expanded runs, and the spec mapping they came from (for the record)."""

    name: str
    runs: tuple[StudyRun, ...]
    spec: Mapping[str, Any]
    description: str = ""

    @classmethod
    def from_file(cls, path: str | Path, *, data_dir: str | None = None) -> StudySpec:
        """Read a ``.toml``/``.yaml`` spec; relative paths in ``base`` are relative to the file."""
        path = Path(path)
        data = load_config_file(path)
        return cls.from_mapping(data, default_name=path.stem, base_dir=path.parent, data_dir=data_dir)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, default_name: str = "study", base_dir: Path | None = None,
                     data_dir: str | None = None) -> StudySpec:
        """Expand a spec mapping into runs; ``data_dir`` (from the command line) overrides ``base``'s."""
        data = _check_keys(data, _SPEC_KEYS, "the study spec")
        name = str(data.get("name", default_name))
        if not _NAME.match(name):
            raise ConfigError(f"study name must be letters, digits, '_', '-' or '.'; got {name!r}.")
        base_map = _check_keys(data.get("base", {}), {f.name for f in dataclasses.fields(RunConfig)}, "[base]")
        if "methods" in base_map or "seed" in base_map or "order_seed" in base_map:
            raise ConfigError("[base] must not set methods, seed or order_seed: a study sweeps them in [grid] "
                              "or [[runs]].")
        if base_dir is not None:
            base_map = anchor_paths(base_map, base_dir)  # data_dir and custom task files: relative to the spec
        if data_dir is not None:
            base_map["data_dir"] = data_dir
        base = RunConfig.from_dict(base_map)
        budgets = {DEFAULT_BUDGET: base.budget}
        named = data.get("budgets", {})
        if not isinstance(named, Mapping):
            raise ConfigError(f"[budgets] must be a table of named budget tables; got {named!r}.")
        for budget_name, overrides in named.items():
            if not _NAME.match(budget_name):
                raise ConfigError(f"budget name must be letters, digits, '_', '-' or '.'; got {budget_name!r}.")
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"[budgets.{budget_name}] must be a table of budget fields; got {overrides!r}.")
            budgets[budget_name] = base.budget.updated(dict(overrides))

        def budget_named(value: Any, where: str) -> str:
            if value not in budgets:
                raise ConfigError(f"{where} names budget {value!r}; defined: {', '.join(budgets)}.")
            return value

        points: list[tuple[MethodSpec, int, OrderSpec, str]] = []
        if "grid" in data:
            grid = _check_keys(data["grid"], _GRID_KEYS, "[grid]")
            if "methods" not in grid:
                raise ConfigError("[grid] needs 'methods' (a list such as [\"full\", \"last_layer:k=2\"]).")
            methods = _expand_methods(grid["methods"], "[grid].methods")
            seeds = _int_list(grid.get("seeds", [0]), "[grid].seeds")
            orders = [OrderSpec.parse(v, base.tasks, "[grid].orders entry") for v in grid.get("orders", [GIVEN_ORDER])]
            names = grid.get("budgets", list(budgets) if len(budgets) == 1 else [b for b in budgets
                                                                                 if b != DEFAULT_BUDGET])
            if not isinstance(names, list) or not names:
                raise ConfigError(f"[grid].budgets must be a non-empty list of budget names; got {names!r}.")
            chosen = [budget_named(b, "[grid].budgets") for b in names]
            # Seed-major: the first runs to finish already compare every method on the same data.
            for seed, order, budget, method in itertools.product(seeds, orders, chosen, methods):
                points.append((method, seed, order, budget))
        explicit = data.get("runs", [])
        if not isinstance(explicit, list):
            raise ConfigError(f"[[runs]] must be a list of tables; got {explicit!r}.")
        for number, entry in enumerate(explicit, 1):
            where = f"[[runs]] entry {number}"
            entry = _check_keys(entry, _POINT_KEYS, where)
            if "method" not in entry:
                raise ConfigError(f"{where} needs 'method'.")
            method = _expand_methods([entry["method"]], where)
            if len(method) != 1:
                raise ConfigError(f"{where}: 'method' must be one method variant (no sweep).")
            seed = _int_list([entry.get("seed", 0)], f"{where}.seed")[0]
            order = OrderSpec.parse(entry.get("order", GIVEN_ORDER), base.tasks, f"{where}.order")
            points.append((method[0], seed, order, budget_named(entry.get("budget", DEFAULT_BUDGET), where)))
        if not points:
            raise ConfigError("The study spec defines no runs: add a [grid] with 'methods' or [[runs]] entries.")
        runs: dict[str, StudyRun] = {}
        for method, seed, order, budget in points:
            config = order.apply(dataclasses.replace(base, methods=(method,), seed=seed, budget=budgets[budget]))
            run = StudyRun(_run_id(method, seed, order, budget), method, seed, order, budget, config)
            if run.run_id in runs and runs[run.run_id].config != config:
                raise ConfigError(f"Two runs of the study share the id {run.run_id!r} with different configs.")
            runs[run.run_id] = run
        return cls(name=name, runs=tuple(runs.values()), spec=_plain(data),
                   description=str(data.get("description", "")))


def _plain(value: Any) -> Any:
    """A JSON-able copy of a parsed spec (TOML dates and tuples become strings and lists)."""
    return json.loads(json.dumps(value, default=str))


# ----------------------------------------------------------------------------------------------------
# The study directory


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON so that readers never see a half-written file (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StudyDirectory:
    """Reads and writes the records of one study directory (see the module docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def run_dir(self, run_id: str) -> Path:
        return self.root / RUNS_DIR / run_id

    def status_path(self, run_id: str) -> Path:
        return self.root / STATUS_DIR / f"{run_id}.json"

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's status record (``{"state": "pending"}`` when none was written yet)."""
        try:
            return json.loads(self.status_path(run_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"run_id": run_id, "state": "pending"}

    def write_status(self, run_id: str, state: str, **fields: Any) -> None:
        atomic_write_json(self.status_path(run_id), {"run_id": run_id, "state": state,
                                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields})

    def record_spec(self, spec: StudySpec, spec_file: Path | None) -> dict[str, Any]:
        """Write ``study.json`` (and a verbatim copy of the spec file) for this launch's spec; return it."""
        self.root.mkdir(parents=True, exist_ok=True)
        record = {"schema": STUDY_SCHEMA, "name": spec.name, "description": spec.description,
                  "spec": spec.spec, "spec_file": None, "runs": [run.record() for run in spec.runs]}
        if spec_file is not None:
            text = Path(spec_file).read_bytes()
            copy = self.root / f"spec{Path(spec_file).suffix}"
            copy.write_bytes(text)
            record["spec_file"] = copy.name
            record["spec_sha256"] = hashlib.sha256(text).hexdigest()
        atomic_write_json(self.root / STUDY_FILE, record)
        return record

    def record_launch(self, **fields: Any) -> None:
        """Append one line to ``launches.jsonl`` (who ran what, where, with which versions)."""
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), **fields}
        with open(self.root / LAUNCHES_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")


def completed_steps(run_dir: Path, method: str) -> int:
    """How many steps of ``method`` the run's ledger holds completely (0 before it has a ledger)."""
    if not (Path(run_dir) / LEDGER_FILE).is_file():
        return 0
    return len({row["step"] for row in read_ledger(run_dir) if row["method"] == method})


def is_complete(study_dir: StudyDirectory, run: StudyRun) -> bool:
    """A run is complete when its ledger holds every step of its stream."""
    return completed_steps(study_dir.run_dir(run.run_id), run.method.resolved_label) == len(run.config.tasks)
