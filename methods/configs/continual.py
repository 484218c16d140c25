"""Options of the continual-learning baselines (:mod:`methods.continual`)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import MethodConfig
from stream.core.errors import ConfigError
from stream.core.validation import check_choice, check_int, check_real

EWC_MODES = ("online", "separate")


@dataclass(frozen=True, kw_only=True)
class ContinualConfig(MethodConfig):
    """Options of every continual-learning baseline.

    Attributes:
        tuned_blocks: None trains the whole shared encoder (embeddings included); k trains only its top k
            transformer blocks, and only those are stored.
        model_selection: False (default, as in Avalanche's strategies) keeps the state reached at the end
            of the task's budget. True restores the trained state with the arriving task's best dev score,
            as the other methods do; for one shared model that is early stopping on the newest task, which
            also limits how far the model drifts from earlier tasks, so it is not part of these baselines.
    """

    learning_rate: float = 5e-5
    tuned_blocks: int | None = None
    model_selection: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(type(self).__name__, "tuned_blocks", self.tuned_blocks, minimum=1, allow_none=True)
        if not isinstance(self.model_selection, bool):
            raise ConfigError(f"{type(self).__name__}.model_selection must be true or false; "
                              f"got {self.model_selection!r}.")


@dataclass(frozen=True, kw_only=True)
class EWCConfig(ContinualConfig):
    """EWC: ``ewc_lambda`` weighs the penalty; ``ewc_mode`` is ``online`` (importances summed with
    ``decay_factor``, one anchor) or ``separate`` (one importance and anchor per earlier task).

    Fisher importances of a transformer's weights are tiny (squared gradients averaged over minibatches), so
    the useful ``ewc_lambda`` is far larger than for the small image models of Avalanche's examples.
    """

    ewc_lambda: float = 1e4
    ewc_mode: str = "online"
    decay_factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_real(owner, "ewc_lambda", self.ewc_lambda, minimum=0.0)
        check_choice(owner, "ewc_mode", self.ewc_mode, EWC_MODES)
        check_real(owner, "decay_factor", self.decay_factor, minimum=0.0, maximum=1.0)


@dataclass(frozen=True, kw_only=True)
class LwFConfig(ContinualConfig):
    """LwF: ``alpha`` weighs the distillation loss, computed at softmax ``temperature``."""

    alpha: float = 1.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_real(owner, "alpha", self.alpha, minimum=0.0)
        check_real(owner, "temperature", self.temperature, minimum=0.0, exclusive_minimum=True)


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(ContinualConfig):
    """Replay: a buffer of ``mem_size`` rows; each step adds ``batch_size_mem`` buffered rows (None: the
    budget's batch size) to the minibatch."""

    mem_size: int = 200
    batch_size_mem: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_int(owner, "mem_size", self.mem_size, minimum=1)
        check_int(owner, "batch_size_mem", self.batch_size_mem, minimum=1, allow_none=True)
