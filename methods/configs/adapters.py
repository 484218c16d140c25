"""Options of bottleneck adapters (:mod:`methods.adapters`)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import MethodConfig
from stream.core.errors import ConfigError
from stream.core.validation import check_int, check_real


@dataclass(frozen=True, kw_only=True)
class AdaptersConfig(MethodConfig):
    """Houlsby adapters of ``bottleneck`` units in every sublayer; LayerNorms and head train too.

    Attributes:
        bottleneck: adapter size m (the paper's sizes are 8, 64 and 256). 64 is the default: on
            all-MiniLM-L6-v2 (d = 384) it adds 2.6% parameters per task, near the paper's 3.6% average;
            on SST-2 at the small budget 8 scored clearly lower and 256 no better within noise for
            several times the bytes (bench/results/adapters_lora_lr.md).
        init_std: standard deviation of W_down's normal initialisation (W_up starts at zero).
        train_layer_norms: train (and store per task) every LayerNorm of the encoder, as Houlsby did.
        learning_rate: the top of Houlsby's 1e-4..1e-3 range; the lower rates barely moved the
            model in the stream's short budgets (bench/results/adapters_lora_lr.md).
    """

    bottleneck: int = 64
    init_std: float = 1e-2
    train_layer_norms: bool = True
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_int(owner, "bottleneck", self.bottleneck, minimum=1)
        # init_std = 0 with W_up = 0 gives every adapter weight a zero gradient forever.
        check_real(owner, "init_std", self.init_std, minimum=0.0, exclusive_minimum=True, maximum=1.0)
        if not isinstance(self.train_layer_norms, bool):
            raise ConfigError(f"{owner}.train_layer_norms must be true or false; got {self.train_layer_norms!r}.")
