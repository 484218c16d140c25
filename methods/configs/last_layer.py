"""Options of last-layer tuning and the linear probe (:mod:`methods.last_layer`)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import MethodConfig
from stream.core.validation import check_int


@dataclass(frozen=True, kw_only=True)
class LastLayerConfig(MethodConfig):
    """Tune the top ``k`` blocks (k >= 1) and the head.

    One block adapts to the task alone, so it needs a larger rate than full finetuning: on SST-2 (2000
    examples, 2 epochs) the top block scored best at 5e-4 of 2e-5 / 1e-4 / 5e-4
    (bench/results/pooling_probe.md). The fresh head gets 1e-3, the rate the probe found for a head.
    """

    k: int = 1
    learning_rate: float = 5e-4
    head_learning_rate: float | None = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(type(self).__name__, "k", self.k, minimum=1)


@dataclass(frozen=True, kw_only=True)
class LinearProbeConfig(MethodConfig):
    """Head-only training on the frozen backbone; a linear head from scratch needs a large rate.

    On an SST-2 linear probe (2 epochs of 2000 examples, mean pooling) the score rose with the rate up to
    1e-2, close to a tuned logistic regression on the same features (bench/results/pooling_probe.md); the
    stream's budgets are short, so 1e-2.
    """

    learning_rate: float = 1e-2
