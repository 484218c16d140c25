"""What a run directory can serve, read from its files alone: no torch, so a wrong task or method name, or a bad
example, is refused at once, before ``predict`` or ``serve`` loads the backbone (:class:`~stream.engine.serving.TaskBank`
builds on this)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError, DataError, RunDirectoryError
from stream.core.ledger import Sharing, read_ledger
from stream.core.plan import Budget
from stream.core.rundir import CONFIG_FILE, LEDGER_FILE, ArtifactKey
from stream.core.rundir import read_run_config as read_saved_config
from stream.core.sources import read_text_rows
from stream.core.tasks import CustomTaskSpec, TaskSpec, get_task


@dataclass(frozen=True)
class ServedTask:
    """Where the bank serves one (method label, task) from.

    Attributes:
        method: the method label (the run's artifacts folder and ledger name).
        method_name: the registered method it is a variant of.
        task: the task's name.
        sharing: the method's sharing rule (``evolving`` methods serve every task from their newest file).
        key: the artifact read for this task.
        sha256: the artifact's sha256 as the ledger recorded it.
    """

    method: str
    method_name: str
    task: str
    sharing: str
    key: ArtifactKey
    sha256: str


def read_served_config(run_dir: Path) -> dict[str, Any]:
    """The saved config of a run directory (``config.json``, as :meth:`stream.engine.config.RunConfig.to_dict` wrote
    it). Kept as plain data: a method's spec is validated, and its module imported, only when it is served."""
    path = run_dir / CONFIG_FILE
    if not path.is_file() or not (run_dir / LEDGER_FILE).is_file():
        raise RunDirectoryError(f"{run_dir} is not a taskstream run directory (it lacks {CONFIG_FILE} or "
                                f"{LEDGER_FILE}): give a run directory made by `taskstream run`.")
    return read_saved_config(run_dir)


def served_tasks(run_dir: Path) -> dict[tuple[str, str], ServedTask]:
    """Every (method label, task) a finished (or partly finished) run can serve, from its ledger."""
    steps: dict[str, dict[int, dict]] = {}
    for row in read_ledger(run_dir):
        steps.setdefault(row["method"], {})[row["step"]] = row
    served = {}
    for label, by_step in steps.items():
        newest = by_step[max(by_step)]
        for step, row in sorted(by_step.items()):
            source = newest if row["sharing"] == Sharing.EVOLVING.value else row
            key = ArtifactKey(label, source["step"], source["task"])
            served[(label, row["task"])] = ServedTask(label, row["method_name"], row["task"], row["sharing"], key,
                                                      source["artifact_sha256"])
    return served


def _task_specs(config: dict[str, Any]) -> dict[str, TaskSpec]:
    custom = {c["name"]: CustomTaskSpec.from_dict(c) for c in config.get("custom_tasks", [])}
    return {name: custom[name].to_task_spec() if name in custom else get_task(name) for name in config["tasks"]}


def as_examples(task: TaskSpec, examples: Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    """Each example as a tuple of the task's texts (a string for one-text tasks, a pair for pair tasks)."""
    if isinstance(examples, str):
        examples = [examples]
    width = len(task.text_columns)
    out = []
    for number, example in enumerate(examples, 1):
        texts = (example,) if isinstance(example, str) else tuple(example)
        if len(texts) != width or not all(isinstance(t, str) for t in texts):
            wanted = " and ".join(task.text_columns)
            hint = (" Give both texts (on the command line: two quoted arguments; in a file: a tab between them)."
                    if width == 2 else "")
            raise DataError(f"Task {task.name!r} takes {width} text{'s' * (width > 1)} per example ({wanted}); "
                            f"example {number} has {len(texts)}: {texts!r}.{hint}")
        out.append(texts)
    if not out:
        raise DataError(f"No examples to predict for task {task.name!r}.")
    return out


def read_examples(path: str | Path, task: TaskSpec) -> list[tuple[str, ...]]:
    """Examples from a file, read by the reader training uses (:func:`stream.core.sources.read_text_rows`): a
    data file (``.csv``, ``.tsv``, ``.json``, ``.jsonl``, ``.parquet``) whose columns include the task's text
    columns, or plain text with one example per line (a tab between the two texts of a pair task; blank
    lines are skipped)."""
    return as_examples(task, read_text_rows(path, task.text_columns))


class RunIndex:
    """A run's servable (method label, task) pairs and task specs, from ``config.json`` and the ledger.

    Args:
        run_dir: a run directory (config, ledger, artifacts) written by :func:`stream.engine.runner.run_stream`.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.config = read_served_config(self.run_dir)
        self.served = served_tasks(self.run_dir)
        if not self.served:
            raise RunDirectoryError(f"Run {self.run_dir} has no completed step to serve yet.")
        self.task_specs = _task_specs(self.config)
        self._method_entries: dict[str, dict] = {m["label"]: m for m in self.config["methods"]}

    @property
    def methods(self) -> tuple[str, ...]:
        """The method labels the bank serves, in the run's order."""
        present = {label for label, _ in self.served}
        return tuple(label for label in self._method_entries if label in present)

    def tasks(self, method: str | None = None) -> tuple[str, ...]:
        """The tasks served for ``method`` (default: the run's only method), in arrival order."""
        label = self._label(method)
        return tuple(task for lab, task in self.served if lab == label)

    def _label(self, method: str | None) -> str:
        labels = self.methods
        if method is None:
            if len(labels) == 1:
                return labels[0]
            raise ConfigError(f"Run {self.run_dir} has several methods ({', '.join(labels)}); choose one "
                              "(--method LABEL).")
        if method not in labels:
            if method in self._method_entries:
                raise RunDirectoryError(f"Method {method!r} of run {self.run_dir} has no completed step yet; "
                                        "resume the run first.")
            raise self._unknown("method", method, labels)
        return method

    def entry(self, task: str, method: str | None = None) -> ServedTask:
        """Where ``task`` (of ``method``) is served from; unknown names are refused with the valid ones."""
        label = self._label(method)
        self.task_spec(task)
        served = self.served.get((label, task))
        if served is None:
            raise RunDirectoryError(f"Method {label!r} of run {self.run_dir} has not finished task {task!r} yet "
                                    f"(finished: {', '.join(self.tasks(label))}); resume the run first.")
        return served

    def max_seq_length(self, task: str) -> int:
        """The maximum token length the run trained and evaluated ``task`` with (its budget's)."""
        overrides = self.config.get("task_budgets", {}).get(task, {})
        return Budget(**self.config["budget"]).updated(overrides).max_seq_length

    def task_spec(self, task: str) -> TaskSpec:
        """The spec of one of the run's tasks; an unknown name is refused with the run's tasks listed."""
        if task not in self.task_specs:
            raise self._unknown("task", task, tuple(self.task_specs))
        return self.task_specs[task]

    def _unknown(self, kind: str, name: str, known: tuple[str, ...]) -> ConfigError:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"Run {self.run_dir} has no {kind} {name!r}; its {kind}s: {', '.join(known)}.{hint}")
