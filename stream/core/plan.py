"""What a run plans before any data or model is touched: each task's budget and the order tasks arrive in.

Torch-free (numpy only), so a config is validated before torch loads; :mod:`stream.core.scenario` builds the
arrivals from these.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stream.core.errors import ConfigError
from stream.core.validation import check_int, check_real

# Budget fields where None means "no limit".
_OPTIONAL_LIMITS = ("max_train_examples", "max_steps", "max_eval_examples", "eval_every_steps")


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
