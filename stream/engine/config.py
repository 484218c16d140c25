"""Run configuration: one frozen dataclass that says everything a run does.

A run config comes from defaults, then a TOML or YAML file, then command-line flags (later wins). It is
validated at construction, saved in the run directory as ``config.json``, and compared field by field
when a run directory is reused.

Building one imports no torch, transformers, Avalanche or method module (method options are checked by the
torch-free config classes of :mod:`methods.registry`), so a bad value fails at once; what needs the backbone or
the data (a method's options against the backbone's depth, the data files) is checked by the runner before it
writes anything.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from methods.core.backbone_names import DEFAULT_BACKBONE, POOLINGS
from methods.core.config import MethodConfig
from methods.registry import config_class, get_method_class
from stream.core.errors import ConfigError
from stream.core.plan import Budget
from stream.core.sources import CustomFileSource, RoutedSource, resolve_source
from stream.core.tasks import CustomTaskSpec, TaskSpec, get_task
from stream.core.validation import check_choice, check_device, check_int, check_str_tuple

if TYPE_CHECKING:
    from methods.core.backbone import Backbone
    from methods.core.base import Method

# The default run (``taskstream run`` with no flags): the seed methods on the two tasks that every one of
# them learns clearly above chance within 100 steps, in under 20 minutes on a 2-core CPU
# (bench/results/budget_study.md chose the tasks and budget; bench/results/default_run.md measures the run).
# The paper-scale five-task stream is configs/paper_stream.toml.
DEFAULT_TASKS = ("sst2", "stsb")
DEFAULT_METHODS = ("full", "diff_pruning", "adapters", "last_layer", "masking")
DEFAULT_BUDGET = Budget(max_train_examples=3200, epochs=1, dev_evaluations=5)
DEFAULT_HUB_REPO = "nyu-mll/glue"
#: Avalanche loggers a run can write (see stream.engine.avalanche_log).
AVALANCHE_LOGGERS = ("csv", "tensorboard", "text")
#: Training precisions: ``auto`` is bf16 autocast where the hardware computes bf16 natively (a CPU with
#: AVX512-BF16 or AMX, a CUDA device with bf16), else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Fields that may change between a run and its resumption without changing what the run is (a different
# thread count can change the last bits of a result: the runner warns when it does).
RESUMABLE_FIELDS = frozenset({"device", "avalanche_loggers", "threads"})


def _parse_scalar(text: str) -> Any:
    """``"2"`` -> 2, ``"1e-4"`` -> 0.0001, ``"true"`` -> True, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _option_items(owner: str, value: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{owner} must be a table of option = value; got {value!r}.")
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in value.items()))


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """A method by registry name, with options for its config class and a label naming this variant.

    The label names the method's artifacts folder and its ledger rows; it defaults to the name plus
    its options (``last_layer-k2``), so two variants of a method can run side by side.

    The method's config objects (one per task with its own options, one per search candidate) are built and
    validated once, here, and handed whole to the method (:meth:`build`, :meth:`candidate_configs`): nothing
    downstream rebuilds a config from option pairs.

    Attributes:
        options: option -> value, for every task.
        per_task: task -> options overriding ``options`` on that task only (for example learning rates
            chosen per task by an earlier study).
        search: option -> candidate values. On every task each combination of candidates is trained and
            the one with the best dev score is kept (its file is the task's artifact); the grid, every
            candidate's dev score and the choice are recorded in the artifact sidecar and the ledger.
            Training time grows with the number of combinations and is counted in the ledger.
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    label: str | None = None
    per_task: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    search: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    # task (None: every task without per_task options) -> its config at the fixed options, and every search
    # candidate's (options, config); built in __post_init__, not compared (the fields above decide equality)
    _configs: dict[str | None, tuple[MethodConfig, tuple[tuple[dict[str, Any], MethodConfig], ...]]] = field(
        init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        options_class = config_class(self.name)
        object.__setattr__(self, "options", tuple(sorted(self.options)))
        object.__setattr__(self, "per_task", tuple(sorted((t, tuple(sorted(o))) for t, o in self.per_task)))
        object.__setattr__(self, "search", tuple(sorted((k, tuple(v)) for k, v in self.search)))
        for key, values in self.search:
            if not values or len(set(map(repr, values))) != len(values):
                raise ConfigError(f"Method {self.name!r}: search.{key} must list distinct candidate values; "
                                  f"got {list(values)!r}.")
            if key in dict(self.options):
                raise ConfigError(f"Method {self.name!r}: option {key!r} is both fixed ({dict(self.options)[key]!r}) "
                                  f"and searched ({list(values)!r}); give it one way.")
        configs = {}
        for task in (None, *(t for t, _ in self.per_task)):
            configs[task] = (options_class.from_options(self.task_options(task)),
                             tuple((options, options_class.from_options(options))
                                   for options in self.candidates(task)))
        object.__setattr__(self, "_configs", configs)
        if self.label is not None and (not isinstance(self.label, str) or not self.label
                                       or any(c in self.label for c in "/\\ :,")):
            raise ConfigError(f"method label must be non-empty without '/', '\\\\', ':', ',' or spaces; "
                              f"got {self.label!r}.")

    def task_options(self, task: str | None) -> dict[str, Any]:
        """The fixed options on ``task``: ``options`` with that task's ``per_task`` overrides."""
        return {**dict(self.options), **dict(dict(self.per_task).get(task, ()))}

    def config(self, task: str | None = None) -> MethodConfig:
        """The method's config on ``task`` (None: any task without per-task options) at the fixed options,
        searched options at their defaults; built once, at construction."""
        return self._configs[task if task in self._configs else None][0]

    def candidate_configs(self, task: str | None) -> tuple[tuple[dict[str, Any], MethodConfig], ...]:
        """Every config tried on ``task``, with the options it was built from (see :meth:`candidates`)."""
        return self._configs[task if task in self._configs else None][1]

    def build(self, backbone: Backbone, task: str | None = None) -> Method:
        """The method on ``backbone`` with :meth:`config` (``task``'s), passed whole."""
        return get_method_class(self.name)(self.config(task), backbone)

    def candidates(self, task: str | None) -> list[dict[str, Any]]:
        """Every option set tried on ``task``: the fixed options times each combination of ``search``."""
        fixed = self.task_options(task)
        grid = [(k, v) for k, v in self.search if k not in dict(dict(self.per_task).get(task, ()))]
        return [{**fixed, **dict(zip([k for k, _ in grid], combo))}
                for combo in itertools.product(*[values for _, values in grid])]

    @property
    def resolved_label(self) -> str:
        if self.label:
            return self.label
        parts = [self.name]
        for key, value in self.options:
            text = "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            # The label names a folder: keep it free of spaces, quotes and path separators.
            parts.append(key + re.sub(r"[^A-Za-z0-9._+=-]", "_", text))
        return "-".join(parts)

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        """Parse ``name`` or ``name:key=value:key=value`` (as in ``--methods full,last_layer:k=2``); a value
        ``a|b|c`` makes the option a search over those candidates (``full:learning_rate=5e-5|1e-4``)."""
        name, *pairs = text.strip().split(":")
        options, search = [], []
        for pair in pairs:
            if "=" not in pair:
                raise ConfigError(f"Method option {pair!r} in {text!r} must look like key=value "
                                  "(for example last_layer:k=2).")
            key, value = pair.split("=", 1)
            if "|" in value:
                search.append((key.strip(), tuple(_parse_scalar(v.strip()) for v in value.split("|"))))
            else:
                options.append((key.strip(), _parse_scalar(value.strip())))
        return cls(name=name, options=tuple(options), search=tuple(search))

    @classmethod
    def from_value(cls, value: Any) -> MethodSpec:
        """From a string (see :meth:`parse`) or a table ``{name = ..., label = ..., per_task = {...},
        search = {...}, <option> = ...}``."""
        if isinstance(value, MethodSpec):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            table = dict(value)
            if "name" not in table:
                raise ConfigError(f"A [[methods]] entry needs a 'name'; got {value!r}.")
            name, label = table.pop("name"), table.pop("label", None)
            if not isinstance(name, str):
                raise ConfigError(f"A method's name must be a string like 'full'; got {name!r}.")
            per_task = table.pop("per_task", {})
            search = table.pop("search", {})
            options = dict(table.pop("options", {}))
            options.update(table)
            if not isinstance(per_task, Mapping):
                raise ConfigError(f"Method {name!r}: per_task must be a table of task = {{option = value}}; "
                                  f"got {per_task!r}.")
            search_items = _option_items(f"Method {name!r}: search", search)
            for key, values in search_items:
                if not isinstance(values, tuple):
                    raise ConfigError(f"Method {name!r}: search.{key} must be a list of candidate values; "
                                      f"got {values!r}.")
            return cls(name=name, options=tuple(options.items()), label=label,
                       per_task=tuple((str(t), _option_items(f"Method {name!r}: per_task.{t}", o))
                                      for t, o in per_task.items()),
                       search=search_items)
        raise ConfigError(f"A method must be a name like 'last_layer:k=2' or a table; got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        record = {"name": self.name, "label": self.resolved_label, "options": dict(self.options)}
        if self.per_task:
            record["per_task"] = {t: dict(o) for t, o in self.per_task}
        if self.search:
            record["search"] = {k: list(v) for k, v in self.search}
        return record


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run does.

    Attributes:
        tasks: the tasks of the stream, in arrival order unless ``order_seed`` is set.
        order_seed: when set, the arrival order is a permutation of ``tasks`` drawn with this seed.
        methods: the methods that each see the whole stream.
        backbone: Hub id, local model folder, or the bundled default.
        pooling: how the task head reads the encoder (mean, cls, pooler).
        data_dir: local GLUE data (Hub layout or glue_data/); None: $TASKSTREAM_DATA_DIR, else the Hub.
        hub_repo: the Hub dataset used when no local data is given.
        custom_tasks: user tasks from their own files, usable by name in ``tasks``.
        budget: the default budget of every task; ``task_budgets`` overrides fields per task.
        seed: seeds dev splits, subsampling, head initialisation and training.
        device: auto (CUDA when present), cpu, cuda, cuda:N.
        reevaluate: re-evaluate earlier tasks from their files at every step even for methods whose
            files cannot have changed (slower; the test suite proves the scores are identical).
        avalanche_loggers: Avalanche loggers (``csv``, ``tensorboard``, ``text``) that record every method's
            steps, evaluated by Avalanche from the artifact files, under ``<run dir>/avalanche/<method>/``.
        precision: training precision (see ``PRECISIONS``); recorded, resolved, in every ledger row.
        threads: torch CPU threads (None: torch's default, the machine's cores); recorded in every ledger row.
    """

    tasks: tuple[str, ...] = DEFAULT_TASKS
    order_seed: int | None = None
    methods: tuple[MethodSpec, ...] = tuple(MethodSpec(name=m) for m in DEFAULT_METHODS)
    backbone: str = DEFAULT_BACKBONE
    pooling: str = "mean"
    data_dir: str | None = None
    hub_repo: str = DEFAULT_HUB_REPO
    custom_tasks: tuple[CustomTaskSpec, ...] = ()
    budget: Budget = DEFAULT_BUDGET
    task_budgets: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    seed: int = 0
    device: str = "auto"
    reevaluate: bool = False
    avalanche_loggers: tuple[str, ...] = ()
    precision: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if (not isinstance(self.tasks, tuple) or not self.tasks
                or not all(isinstance(name, str) for name in self.tasks)):
            raise ConfigError(f"RunConfig.tasks must be a non-empty list of task names; got {self.tasks!r}.")
        for name in ("backbone", "hub_repo"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"RunConfig.{name} must be a non-empty string; got {getattr(self, name)!r}.")
        if not isinstance(self.reevaluate, bool):
            raise ConfigError(f"RunConfig.reevaluate must be true or false; got {self.reevaluate!r}.")
        if not all(isinstance(c, CustomTaskSpec) for c in self.custom_tasks):
            raise ConfigError(f"RunConfig.custom_tasks must hold CustomTaskSpec entries; got {self.custom_tasks!r}.")
        custom = [c.name for c in self.custom_tasks]
        if len(set(custom)) != len(custom):
            raise ConfigError(f"RunConfig.custom_tasks must not define a task twice; got names {custom}.")
        for name in self.tasks:
            if name not in custom:
                get_task(name)
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"RunConfig.tasks must not repeat a task; got {list(self.tasks)}.")
        check_int("RunConfig", "order_seed", self.order_seed, minimum=0, allow_none=True)
        check_int("RunConfig", "seed", self.seed, minimum=0)
        check_choice("RunConfig", "pooling", self.pooling, POOLINGS)
        if not self.methods:
            raise ConfigError("RunConfig.methods must name at least one method.")
        labels = [m.resolved_label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"RunConfig.methods has duplicate labels {labels}; give variants distinct labels.")
        for task, overrides in self.task_budgets:
            if task not in self.tasks:
                raise ConfigError(f"task_budgets names {task!r}, which is not in tasks {list(self.tasks)}.")
            self.budget.updated(dict(overrides))
        for name in check_str_tuple("RunConfig", "avalanche_loggers", self.avalanche_loggers, min_len=0):
            check_choice("RunConfig", "avalanche_loggers", name, AVALANCHE_LOGGERS)
        for spec in self.methods:
            for task, _ in spec.per_task:
                if task not in self.tasks:
                    raise ConfigError(f"Method {spec.resolved_label!r}: per_task names {task!r}, which is not in "
                                      f"tasks {list(self.tasks)}.")
        check_choice("RunConfig", "precision", self.precision, PRECISIONS)
        check_int("RunConfig", "threads", self.threads, minimum=1, maximum=1024, allow_none=True)
        check_device("RunConfig", "device", self.device)

    def budget_for(self, task: str) -> Budget:
        """The budget of ``task``: the default with that task's overrides applied."""
        overrides = dict(self.task_budgets).get(task, ())
        return self.budget.updated(dict(overrides))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what ``config.json`` holds)."""
        return {
            "tasks": list(self.tasks), "order_seed": self.order_seed,
            "methods": [m.to_dict() for m in self.methods],
            "backbone": self.backbone, "pooling": self.pooling, "data_dir": self.data_dir,
            "hub_repo": self.hub_repo, "custom_tasks": [c.to_dict() for c in self.custom_tasks],
            "budget": dataclasses.asdict(self.budget),
            "task_budgets": {t: dict(o) for t, o in self.task_budgets},
            "seed": self.seed, "device": self.device, "reevaluate": self.reevaluate,
            "avalanche_loggers": list(self.avalanche_loggers),
            "precision": self.precision, "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
        """Build from a config-file mapping, on top of ``base`` (default: the defaults)."""
        base = base or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ConfigError(f"Unknown config key(s) {', '.join(unknown)}. Valid: {', '.join(sorted(known))}.")
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "tasks":
                value = tuple(value.split(",")) if isinstance(value, str) else _list_of(key, value, "task names")
            elif key == "avalanche_loggers":
                value = (tuple(v for v in value.split(",") if v) if isinstance(value, str)
                         else _list_of(key, value, "logger names"))
            elif key == "methods":
                items = value.split(",") if isinstance(value, str) else _list_of(key, value, "methods")
                value = tuple(MethodSpec.from_value(v) for v in items)
            elif key == "custom_tasks":
                value = tuple(v if isinstance(v, CustomTaskSpec) else CustomTaskSpec.from_dict(_table(key, v))
                              for v in _list_of(key, value, "[[custom_tasks]] tables"))
            elif key == "budget":
                value = value if isinstance(value, Budget) else base.budget.updated(_table(key, value))
            elif key == "task_budgets":
                value = tuple((t, tuple(sorted(_table(f"task_budgets.{t}", o).items())))
                              for t, o in _table(key, value).items())
            elif key == "data_dir" and value is not None:
                if not isinstance(value, (str, Path)):
                    raise ConfigError(f"RunConfig.data_dir must be a folder path; got {value!r}.")
                value = str(value)
            changes[key] = value
        return dataclasses.replace(base, **changes)


def _list_of(key: str, value: Any, what: str) -> tuple[Any, ...]:
    """``value`` as a tuple, when it is a list (a config file's array); otherwise a ConfigError naming ``key``."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"RunConfig.{key} must be a list of {what}; got {value!r}.")
    return tuple(value)


def _table(key: str, value: Any) -> dict[str, Any]:
    """``value`` as a dict, when it is a table (a mapping); otherwise a ConfigError naming ``key``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table of name = value; got {value!r}.")
    return dict(value)


def anchor_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Resolve the relative paths of a config mapping against ``base_dir`` (the config file's folder): ``data_dir``
    and every custom task's files, so a config means the same files whatever the caller's working directory.
    Values of the wrong type are left for :meth:`RunConfig.from_dict` to refuse."""
    data = dict(data)

    def anchored(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    if "data_dir" in data:
        data["data_dir"] = anchored(data["data_dir"])
    custom = data.get("custom_tasks")
    if isinstance(custom, list):
        data["custom_tasks"] = [
            {**task, "files": {split: anchored(path) for split, path in task["files"].items()}}
            if isinstance(task, Mapping) and isinstance(task.get("files"), Mapping) else task
            for task in custom]
    return data


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a mapping.

    Relative paths in it (``data_dir``, custom tasks' ``files``) are relative to the file (:func:`anchor_paths`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist." if not path.exists()
                          else f"Config file {path} is not a file.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}): give a "
                          "TOML or YAML file saved as UTF-8.") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from exc
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
    else:
        raise ConfigError(f"Config file {path} must end in .toml, .yaml or .yml.")
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings at the top level.")
    return anchor_paths(data, path.parent)


def config_differences(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Human-readable ``field: saved -> requested`` lines for every field that differs."""
    lines = []
    for key in sorted(set(saved) | set(requested)):
        if key in RESUMABLE_FIELDS:
            continue
        old, new = saved.get(key), requested.get(key)
        if json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
            lines.append(f"{key}: {json.dumps(old, sort_keys=True)} -> {json.dumps(new, sort_keys=True)}")
    return lines


def resolve_tasks(config: RunConfig) -> tuple[dict[str, TaskSpec], Any]:
    """The task specs of a run (GLUE or custom) and the data source that serves them."""
    custom = {c.name: c for c in config.custom_tasks if c.name in config.tasks}
    glue = [name for name in config.tasks if name not in custom]
    default = resolve_source(config.data_dir, hub_repo=config.hub_repo) if glue else None
    source = RoutedSource(default, {name: CustomFileSource(name, c.files) for name, c in custom.items()})
    specs = {name: custom[name].to_task_spec() if name in custom else get_task(name) for name in config.tasks}
    return specs, source
