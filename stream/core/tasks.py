"""Task registry: what a task is (text columns, labels, metrics, splits) and the nine GLUE tasks.

A task's single score (the number that goes into the accuracy matrix R[t, i] and the GLUE average) is formed
the way the GLUE leaderboard forms it:

1. on each evaluated split, the mean of all of the task's ``metrics`` (MRPC and QQP: mean of F1 and accuracy;
   STS-B: mean of Pearson and Spearman; CoLA: Matthews correlation; the others: accuracy);
2. the mean of that over the evaluated test splits (MNLI: mean of matched and mismatched when both were
   evaluated; only matched when the mismatched split is not available).

The arithmetic lives in :func:`stream.core.metrics.task_score`; this module defines which metrics a task has.
Metric values are percentages (x100), see :mod:`stream.core.metrics`.

Custom tasks from the user's own files are described by :class:`CustomTaskSpec`, which turns into a
:class:`TaskSpec`; :class:`stream.core.sources.CustomFileSource` serves its files.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError
from stream.core.validation import check_choice, check_str_tuple, unknown_name_error

#: Metrics for classification tasks. ``f1`` is binary F1 of label id 1, as GLUE reports it for MRPC and QQP.
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews_correlation")
#: Metrics for regression tasks (STS-B style).
REGRESSION_METRICS = ("pearson", "spearman")
#: File extensions (formats) a task's files may have: what the local and custom data sources read.
SUPPORTED_EXTENSIONS = ("jsonl.gz", "jsonl", "json", "parquet", "csv", "tsv")

# Task names become directory and file names in run directories, so keep them path-safe.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def file_format(path: str | Path) -> str | None:
    """The format (one of :data:`SUPPORTED_EXTENSIONS`) implied by ``path``'s name, or ``None``."""
    name = Path(path).name.lower()
    return next((ext for ext in SUPPORTED_EXTENSIONS if name.endswith("." + ext)), None)


def _check_name(owner: str, field_name: str, value: Any) -> None:
    if not isinstance(value, str) or not _NAME_PATTERN.match(value):
        raise ConfigError(f"{owner}.{field_name} must be a non-empty name of letters, digits, '_', '.' or '-' "
                          f"starting with a letter or digit; got {value!r}.")


def _check_metrics(owner: str, metrics: tuple[str, ...], label_names: tuple[str, ...] | None) -> None:
    allowed = REGRESSION_METRICS if label_names is None else CLASSIFICATION_METRICS
    for metric in metrics:
        check_choice(owner, "metrics", metric, allowed)
    if "f1" in metrics and label_names is not None and len(label_names) != 2:
        raise ConfigError(f"{owner}.metrics may include 'f1' only for two labels (it is the binary F1 of label "
                          f"id 1, as in GLUE); got label_names={label_names!r}.")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What the simulator needs to know about one task.

    Attributes:
        name: registry key; for GLUE exactly the Hub's config name (``"rte"``, ``"sst2"``, ...).
        text_columns: one or two text columns, fed to the tokenizer as a single text or a pair.
        label_names: class names in label-id order, or ``None`` for a regression task.
        metrics: metrics reported for the task, primary first; the task's score is their mean (see module doc).
        train_split: split used for training (a dev split for model selection is carved out of it).
        test_splits: splits the task is scored on; GLUE's ``validation`` plays the test set.
        label_column: column holding the label in the data.
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    train_split: str = "train"
    test_splits: tuple[str, ...] = ("validation",)
    label_column: str = "label"

    def __post_init__(self) -> None:
        owner = "TaskSpec"
        _check_name(owner, "name", self.name)
        # Frozen dataclass: normalise list inputs (from YAML) to tuples via object.__setattr__.
        object.__setattr__(self, "text_columns", check_str_tuple(owner, "text_columns", self.text_columns, max_len=2))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", check_str_tuple(owner, "label_names", self.label_names, min_len=2))
        object.__setattr__(self, "metrics", check_str_tuple(owner, "metrics", self.metrics))
        _check_metrics(owner, self.metrics, self.label_names)
        if not isinstance(self.train_split, str) or not self.train_split:
            raise ConfigError(f"{owner}.train_split must be a non-empty string; got {self.train_split!r}.")
        object.__setattr__(self, "test_splits", check_str_tuple(owner, "test_splits", self.test_splits))
        if self.train_split in self.test_splits:
            raise ConfigError(f"{owner}.test_splits must not contain the train split {self.train_split!r}; "
                              f"got {self.test_splits!r}.")
        if not isinstance(self.label_column, str) or not self.label_column:
            raise ConfigError(f"{owner}.label_column must be a non-empty string; got {self.label_column!r}.")
        if self.label_column in self.text_columns:
            raise ConfigError(f"{owner}.label_column must differ from the text columns; got {self.label_column!r}.")

    @property
    def is_regression(self) -> bool:
        """True when the label is a real number (``label_names is None``)."""
        return self.label_names is None

    @property
    def num_outputs(self) -> int:
        """Width of the task head: 1 for regression, else the number of classes."""
        return 1 if self.label_names is None else len(self.label_names)


def _glue(name: str, text_columns: tuple[str, ...], label_names: tuple[str, ...] | None,
          metrics: tuple[str, ...], **kwargs: Any) -> TaskSpec:
    return TaskSpec(name=name, text_columns=text_columns, label_names=label_names, metrics=metrics, **kwargs)


# Column names, label names and label-id order exactly as nyu-mll/glue on the Hub has them.
GLUE_TASKS: tuple[TaskSpec, ...] = (
    _glue("cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",)),
    _glue("sst2", ("sentence",), ("negative", "positive"), ("accuracy",)),
    _glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy")),
    _glue("stsb", ("sentence1", "sentence2"), None, ("pearson", "spearman")),
    _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy")),
    _glue("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
          test_splits=("validation_matched", "validation_mismatched")),
    _glue("qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",)),
    _glue("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",)),
    _glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
)
GLUE_TASK_NAMES: tuple[str, ...] = tuple(task.name for task in GLUE_TASKS)

_REGISTRY: dict[str, TaskSpec] = {task.name: task for task in GLUE_TASKS}


def get_task(name: str) -> TaskSpec:
    """Return the registered task called ``name``; an unknown name lists the registered ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise unknown_name_error("task", str(name), _REGISTRY) from None


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry and return it; a name that is already registered is rejected."""
    if not isinstance(spec, TaskSpec):
        raise ConfigError(f"register_task expects a TaskSpec; got {type(spec).__name__}. "
                          "Use CustomTaskSpec.to_task_spec() for a custom task.")
    if spec.name in _REGISTRY:
        raise ConfigError(f"A task named {spec.name!r} is already registered; choose another name.")
    _REGISTRY[spec.name] = spec
    return spec


def registered_tasks() -> tuple[str, ...]:
    """Names of all registered tasks, GLUE first, then custom ones in registration order."""
    return tuple(_REGISTRY)


@dataclass(frozen=True, kw_only=True)
class CustomTaskSpec:
    """A task defined by the user's own files, validated at construction.

    Attributes:
        name: task name (path-safe; must not collide with a registered task when registered).
        files: split name -> file path. Formats by extension: ``.csv`` (header row, standard CSV quoting),
            ``.tsv`` (header row, tab-separated, no quoting: quotes are literal text, as in GLUE),
            ``.jsonl`` / ``.jsonl.gz`` (one JSON object per line), ``.json`` (JSON lines, or one JSON array of
            objects), ``.parquet``. Every file must exist.
        text_columns: one or two text columns.
        label_column: the label column.
        label_names: class names in id order, or ``None`` for regression. Labels in the files may be names
            (strings in ``label_names``) or integer ids; a string that is a label name is read as that name
            even if it also looks like a number.
        metrics: one metric name or several, primary first; default accuracy (classification) or Pearson and
            Spearman (regression).
        train_split: the split to train on; must be a key of ``files``.
        test_splits: splits to score on; default every split in ``files`` other than ``train_split``.
        override_glue: a custom task may take the name of a GLUE task (``sst2``) only when this is true: the
            run then scores the user's rows under the GLUE name, and its config and report say so. Without it
            the clash is refused, since tables would show "sst2" for data that is not SST-2.
    """

    name: str
    files: Mapping[str, str | Path] = field(hash=False)
    text_columns: tuple[str, ...]
    label_column: str = "label"
    label_names: tuple[str, ...] | None = None
    metrics: tuple[str, ...] | str | None = None
    train_split: str = "train"
    test_splits: tuple[str, ...] | None = None
    override_glue: bool = False

    def __post_init__(self) -> None:
        owner = "CustomTaskSpec"
        _check_name(owner, "name", self.name)
        if not isinstance(self.override_glue, bool):
            raise ConfigError(f"{owner}.override_glue must be true or false; got {self.override_glue!r}.")
        if self.name in GLUE_TASK_NAMES and not self.override_glue:
            raise ConfigError(f"Custom task {self.name!r} has the name of the GLUE task {self.name!r}: its scores "
                              f"would be reported as GLUE {self.name} on your rows. Rename it (for example "
                              f"'my_{self.name}'), or set override_glue = true on it to replace GLUE's "
                              f"{self.name} in this run (the run's config and report then say so).")
        if self.override_glue and self.name not in GLUE_TASK_NAMES:
            raise ConfigError(f"{owner}.override_glue applies only to a custom task named like a GLUE task "
                              f"({', '.join(GLUE_TASK_NAMES)}); {self.name!r} is not one. Remove it.")
        if not isinstance(self.files, Mapping) or not self.files:
            raise ConfigError(f"{owner}.files must be a non-empty mapping of split name to file path; "
                              f"got {self.files!r}.")
        files: dict[str, Path] = {}
        for split, path in self.files.items():
            if not isinstance(split, str) or not split:
                raise ConfigError(f"{owner}.files keys must be non-empty split names; got {split!r}.")
            if not isinstance(path, (str, Path)):
                raise ConfigError(f"{owner}.files[{split!r}] must be a file path; got {path!r}.")
            path = Path(path).expanduser()
            if file_format(path) is None:
                listed = ", ".join("." + ext for ext in SUPPORTED_EXTENSIONS)
                raise ConfigError(f"{owner}.files[{split!r}] must end in one of {listed}; got {str(path)!r}.")
            # Checked now rather than at load time so a typo fails before hours of training on earlier tasks.
            if not path.is_file():
                raise ConfigError(f"{owner}.files[{split!r}] must be an existing file; got {str(path)!r}.")
            files[split] = path
        object.__setattr__(self, "files", files)
        if self.metrics is None:
            object.__setattr__(self, "metrics", REGRESSION_METRICS if self.label_names is None else ("accuracy",))
        elif isinstance(self.metrics, str):
            object.__setattr__(self, "metrics", (self.metrics,))
        if not isinstance(self.train_split, str) or self.train_split not in files:
            raise ConfigError(f"{owner}.train_split must be one of the splits in files ({', '.join(files)}); "
                              f"got {self.train_split!r}.")
        if self.test_splits is None:
            object.__setattr__(self, "test_splits", tuple(s for s in files if s != self.train_split))
            if not self.test_splits:
                raise ConfigError(f"{owner}.files must name at least one split besides train_split "
                                  f"{self.train_split!r} to score on; got splits {list(files)!r}.")
        else:
            object.__setattr__(self, "test_splits", check_str_tuple(owner, "test_splits", self.test_splits))
            for split in self.test_splits:
                check_choice(owner, "test_splits", split, list(files))
        # The remaining rules (columns, labels, metrics) are TaskSpec's; run them now, under this class's name.
        try:
            spec = self.to_task_spec()
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("TaskSpec.", f"{owner}.", 1)) from None
        for name in ("text_columns", "label_names", "metrics", "test_splits"):  # the normalised tuples
            object.__setattr__(self, name, getattr(spec, name))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (file paths as absolute strings), accepted back by :meth:`from_dict`.
        ``override_glue`` appears only when set, so configs saved before it existed compare equal."""
        record = {"name": self.name, "files": {k: str(Path(v).resolve()) for k, v in self.files.items()},
                  "text_columns": list(self.text_columns), "label_column": self.label_column,
                  "label_names": None if self.label_names is None else list(self.label_names),
                  "metrics": list(self.metrics), "train_split": self.train_split,
                  "test_splits": list(self.test_splits)}
        if self.override_glue:
            record["override_glue"] = True
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CustomTaskSpec:
        """Build from a config-file table; unknown keys are refused with the valid ones listed."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"A custom task must be a table (name, files, text_columns, ...); got {data!r}.")
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - valid))
        if unknown:
            raise ConfigError(f"Unknown custom task field(s) {', '.join(unknown)}. Valid: {', '.join(sorted(valid))}.")
        missing = [name for name in ("name", "files", "text_columns") if name not in data]
        if missing:
            raise ConfigError(f"A custom task needs {', '.join(missing)}; got the fields {', '.join(map(str, data))}.")
        return cls(**data)

    def to_task_spec(self) -> TaskSpec:
        """The :class:`TaskSpec` describing this task (register it with :func:`register_task` if wanted)."""
        return TaskSpec(name=self.name, text_columns=self.text_columns, label_names=self.label_names,
                        metrics=self.metrics, train_split=self.train_split, test_splits=self.test_splits,
                        label_column=self.label_column)
