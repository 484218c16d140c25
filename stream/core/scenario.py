"""Scenario: the order tasks arrive in, each task's budget, and the data each arrival brings.

Protocol (README, "What a run does"): a seeded dev split is carved out of ``train`` for model selection; GLUE
``validation`` splits are the test sets. The same rows go to every method of a run (the split depends on
the run seed and the task only), so methods are compared on identical data.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stream.core.errors import ConfigError, DataError
from stream.core.metrics import chance_score, noise_band, undefined_metrics
from stream.core.tasks import TaskSpec
from stream.core.tokenization import TokenCache, TokenizedSplit
from stream.core.validation import check_int, check_real

logger = logging.getLogger(__name__)

# Budget fields where None means "no limit".
_OPTIONAL_LIMITS = ("max_train_examples", "max_steps", "max_eval_examples", "eval_every_steps")
# Held fixed so every seed, method and run evaluates the same capped test rows.
_EVAL_SUBSET_SEED = 0


@dataclass(frozen=True, kw_only=True)
class Budget:
    """How much a method may spend on one task, and how its training batches are formed.

    ``max_steps`` (when set) replaces ``epochs`` (:meth:`total_steps` is the one formula). Model selection
    scores the dev split ``dev_evaluations`` times per training stage, evenly spaced and always at the last
    step (or every ``eval_every_steps`` steps when that is set), and keeps the best state: one or two dev
    points per stage let a lucky early state or an unlucky last one decide. Test sets are whole GLUE
    validation splits unless ``max_eval_examples`` caps them (a fixed random subset, the same for every
    seed). ``group_by_length`` draws each batch from rows of similar length (shuffled in chunks, batch
    order shuffled too), which cuts the padding of pair tasks (``bench/train_speed.py`` measures it).
    """

    max_train_examples: int | None = 1000
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    max_seq_length: int = 128
    max_eval_examples: int | None = None
    dev_fraction: float = 0.1
    max_dev_examples: int = 300
    dev_evaluations: int = 10
    eval_every_steps: int | None = None
    group_by_length: bool = True

    def __post_init__(self) -> None:
        check_int("budget", "max_train_examples", self.max_train_examples, minimum=1, allow_none=True)
        check_int("budget", "epochs", self.epochs, minimum=1)
        check_int("budget", "max_steps", self.max_steps, minimum=1, allow_none=True)
        check_int("budget", "batch_size", self.batch_size, minimum=1)
        check_int("budget", "eval_batch_size", self.eval_batch_size, minimum=1)
        check_int("budget", "max_seq_length", self.max_seq_length, minimum=8, maximum=4096)
        check_int("budget", "max_eval_examples", self.max_eval_examples, minimum=1, allow_none=True)
        check_real("budget", "dev_fraction", self.dev_fraction, minimum=0.0, maximum=0.5,
                   exclusive_minimum=True)
        check_int("budget", "max_dev_examples", self.max_dev_examples, minimum=1)
        check_int("budget", "dev_evaluations", self.dev_evaluations, minimum=1)
        check_int("budget", "eval_every_steps", self.eval_every_steps, minimum=1, allow_none=True)
        if not isinstance(self.group_by_length, bool):
            raise ConfigError(f"budget.group_by_length must be true or false; got {self.group_by_length!r}.")

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps for ``n_train`` training rows: ``max_steps``, else ``epochs`` full passes."""
        if self.max_steps is not None:
            return self.max_steps
        return self.epochs * max(1, math.ceil(n_train / self.batch_size))

    def eval_interval(self, total_steps: int) -> int:
        """Steps between dev evaluations in a stage of ``total_steps`` steps (the last step is always one)."""
        if self.eval_every_steps is not None:
            return self.eval_every_steps
        return max(1, math.ceil(total_steps / self.dev_evaluations))

    def updated(self, overrides: Mapping[str, object]) -> Budget:
        """A copy with ``overrides`` applied; unknown keys are refused with the valid ones listed.

        Config files cannot write None, so the optional limits also accept ``"all"`` / ``"none"``
        (``max_train_examples = "all"``: every training row)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"Unknown budget field(s) {', '.join(unknown)}. Valid: {', '.join(sorted(known))}.")
        values = {key: None if key in _OPTIONAL_LIMITS and isinstance(value, str)
                  and value.lower() in ("all", "none") else value for key, value in overrides.items()}
        return dataclasses.replace(self, **values)


def resolve_order(tasks: Sequence[str], order_seed: int | None) -> tuple[str, ...]:
    """The arrival order: ``tasks`` as given, or a permutation drawn with ``order_seed``."""
    if order_seed is None:
        return tuple(tasks)
    permutation = np.random.default_rng(order_seed).permutation(len(tasks))
    return tuple(tasks[i] for i in permutation)


def _task_seed(seed: int, task: str) -> int:
    # zlib.crc32, unlike hash(), is stable across processes (PYTHONHASHSEED).
    return (seed * 1_000_003 + zlib.crc32(task.encode())) % (2**32)


def carve_dev(n_train: int, budget: Budget, seed: int, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n_train)`` into (train rows, dev rows), seeded by the run seed and the task.

    The dev split takes ``dev_fraction`` of train (at most ``max_dev_examples``, at least one row);
    the training rows are then capped at ``max_train_examples``.
    """
    if n_train < 2:
        raise DataError(f"Task {task!r}: the train split has {n_train} row(s); at least 2 are needed "
                        "to carve a dev split for model selection.")
    permutation = np.random.default_rng(_task_seed(seed, task)).permutation(n_train)
    n_dev = int(min(budget.max_dev_examples, max(1, round(budget.dev_fraction * n_train))))
    dev, train = permutation[:n_dev], permutation[n_dev:]
    if budget.max_train_examples is not None:
        train = train[:budget.max_train_examples]
    return train, np.sort(dev)


def eval_rows(n_rows: int, budget: Budget) -> np.ndarray:
    """Test rows: all of them, or a fixed random subset of ``max_eval_examples`` (same for every seed)."""
    if budget.max_eval_examples is None or n_rows <= budget.max_eval_examples:
        return np.arange(n_rows)
    rng = np.random.default_rng(_EVAL_SUBSET_SEED)
    return np.sort(rng.permutation(n_rows)[:budget.max_eval_examples])


@dataclass(frozen=True)
class Arrival:
    """Everything one arriving task brings: its spec, budget and tokenised splits, and the precision its
    training runs in (``fp32``, or ``bf16``/``fp16`` autocast; evaluation is always fp32)."""

    step: int
    task: TaskSpec
    budget: Budget
    seed: int
    train: TokenizedSplit
    dev: TokenizedSplit
    tests: dict[str, TokenizedSplit]
    precision: str = "fp32"

    @property
    def task_seed(self) -> int:
        """Seed of the head initialisation and training order of this task.

        It depends on the run seed and the task, not on the arrival step, so a frozen-backbone method
        trains the same model for a task whatever position the task arrives at.
        """
        return _task_seed(self.seed, self.task.name)


class ArrivalBuilder:
    """Loads, splits and tokenises tasks for a run; each split is read from its source once."""

    def __init__(self, source, *, tasks: Mapping[str, TaskSpec], budgets: Mapping[str, Budget], seed: int,
                 cache: TokenCache | None = None, precision: str = "fp32") -> None:
        self._source = source
        self._precision = precision
        self._tokenizer = None
        self._tokenizer_key = ""
        self._tasks = dict(tasks)
        self._budgets = dict(budgets)
        self._seed = seed
        self.cache = cache or TokenCache()
        self._raw: dict[tuple[str, str], object] = {}

    def use_tokenizer(self, tokenizer, key: str) -> None:
        """Tokenise with ``tokenizer``; ``key`` identifies it in the cache (the backbone's identity)."""
        self._tokenizer, self._tokenizer_key = tokenizer, key

    def preload(self) -> None:
        """Read every split the run needs now, so missing or malformed data fails before any training, and warn
        about a test or dev split on which the task's correlation metric is undefined (constant labels)."""
        for task in self._tasks.values():
            for split in (task.train_split, *task.test_splits):
                self._split(task, split)
            budget = self._budgets[task.name]
            train_labels = np.asarray(self._split(task, task.train_split).labels)
            _, dev_rows = carve_dev(len(train_labels), budget, self._seed, task.name)
            scored = {f"{split} (test)": np.asarray(self._split(task, split).labels) for split in task.test_splits}
            scored = {name: labels[eval_rows(len(labels), budget)] for name, labels in scored.items()}
            scored[f"{task.train_split} (the dev rows carved from it for model selection)"] = train_labels[dev_rows]
            for name, labels in scored.items():
                undefined = undefined_metrics(task, labels)
                if undefined:
                    value = (f"{float(labels[0]):g}" if task.is_regression else repr(task.label_names[int(labels[0])])
                             ) if len(labels) else "none"
                    logger.warning("Task %r, split %s: %s, so %s %s undefined; taskstream reports it as 0.0, "
                                   "which says nothing about the model. Give the split varied labels.", task.name,
                                   name, f"every label is {value}" if len(labels) else "no rows",
                                   " and ".join(undefined), "is" if len(undefined) == 1 else "are")

    def task(self, name: str) -> TaskSpec:
        """The spec of a task of this run."""
        return self._tasks[name]

    def _split(self, task: TaskSpec, split: str):
        key = (task.name, split)
        if key not in self._raw:
            self._raw[key] = self._source.load_split(task, split)
        return self._raw[key]

    def _tokenize(self, task: TaskSpec, split: str, rows: np.ndarray, budget: Budget) -> TokenizedSplit:
        assert self._tokenizer is not None, "call use_tokenizer() before building arrivals"
        data = self._split(task, split)
        return self.cache.get(self._tokenizer, self._tokenizer_key, texts=data.texts, labels=data.labels,
                              rows=rows, max_length=budget.max_seq_length, task=task.name, split=split)

    def tests(self, task_name: str) -> dict[str, TokenizedSplit]:
        """The tokenised test split(s) of a task (GLUE validation; MNLI has two)."""
        task, budget = self._tasks[task_name], self._budgets[task_name]
        out = {}
        for split in task.test_splits:
            n_rows = len(self._split(task, split).labels)
            out[split] = self._tokenize(task, split, eval_rows(n_rows, budget), budget)
        return out

    def chance(self, task_name: str) -> dict[str, float | int]:
        """What a trained model must clear on this task's test rows: ``chance_score`` (always the majority
        training label, or the mean for regression), ``noise_band`` (two standard errors of guessing) and
        ``test_rows``."""
        task, budget = self._tasks[task_name], self._budgets[task_name]
        n_train = len(self._split(task, task.train_split).labels)
        train_rows, _ = carve_dev(n_train, budget, self._seed, task.name)
        train_labels = np.asarray(self._split(task, task.train_split).labels)[train_rows]
        tests = {split: np.asarray(self._split(task, split).labels)[eval_rows(len(self._split(task, split).labels),
                                                                              budget)]
                 for split in task.test_splits}
        rows = sum(len(labels) for labels in tests.values())
        return {"chance_score": chance_score(task, train_labels, tests), "noise_band": noise_band(task, rows),
                "test_rows": rows}

    def arrival(self, step: int, task_name: str) -> Arrival:
        """The arrival of ``task_name`` at ``step`` (1-based)."""
        task, budget = self._tasks[task_name], self._budgets[task_name]
        n_train = len(self._split(task, task.train_split).labels)
        train_rows, dev_rows = carve_dev(n_train, budget, self._seed, task.name)
        return Arrival(
            step=step, task=task, budget=budget, seed=self._seed,
            train=self._tokenize(task, task.train_split, train_rows, budget),
            dev=self._tokenize(task, task.train_split, dev_rows, budget),
            tests=self.tests(task_name), precision=self._precision,
        )
