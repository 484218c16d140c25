"""Scenario: the data each arrival brings (the order and the budgets are :mod:`stream.core.plan`'s).

Protocol (README, "What a run does"): a seeded dev split is carved out of ``train`` for model selection; GLUE
``validation`` splits are the test sets. The same rows go to every method of a run (the split depends on
the run seed and the task only), so methods are compared on identical data.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream.core.errors import DataError
from stream.core.metrics import chance_score, noise_band, undefined_metrics
from stream.core.plan import Budget
from stream.core.tasks import TaskSpec
from stream.core.tokenization import TokenCache, TokenizedSplit

logger = logging.getLogger(__name__)

# Held fixed so every seed, method and run evaluates the same capped test rows.
_EVAL_SUBSET_SEED = 0


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
