"""(IA)3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning") through the ``peft`` library, with per-task heads kept outside peft.

Each targeted linear layer is rescaled elementwise by a learned vector that starts at ones, so the model
starts as the backbone: ``l * (W x + b)`` on its output (keys and values), or ``W (l * x) + b`` on its input
for the feed-forward modules (the FFN's hidden activation, 4 x hidden wide). Injection, the artifact (the
vectors under ``ia3.`` plus the head), loading and serving are :class:`~methods.core.peft_tuner.PeftTuner`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peft
from peft.tuners.ia3 import IA3Layer

from methods.core.base import register_method
from methods.core.peft_tuner import PeftTuner, PeftTunerConfig, module_names
from stream.core.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Ia3Config(PeftTunerConfig):
    """(IA)3 scaling vectors on the linear layers named by ``target_modules`` (see
    :class:`~methods.core.peft_tuner.PeftTunerConfig`).

    Attributes:
        target_modules: peft's own default for BERT-style encoders: keys, values and ``output.dense``.
            By peft's suffix rule ``output.dense`` also selects each block's attention output projection,
            so its input (the attention context) gets a vector too.
        feedforward_modules: the targets whose input, not output, is rescaled; a subset of
            ``target_modules`` (the paper rescales the feed-forward activation, which is the input of
            ``output.dense``).
        learning_rate: 3e-3, the (IA)3 paper's setting; not tuned on MiniLM.
    """

    target_modules: tuple[str, ...] = ("key", "value", "output.dense")
    feedforward_modules: tuple[str, ...] = ("output.dense",)
    learning_rate: float = 3e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        feedforward = module_names(owner, "feedforward_modules", self.feedforward_modules)
        outside = [name for name in feedforward if name not in self.target_modules]
        if outside:
            raise ConfigError(f"{owner}.feedforward_modules must be a subset of target_modules "
                              f"{list(self.target_modules)}; {outside} are not in it. Add them to "
                              "target_modules or remove them here.")
        object.__setattr__(self, "feedforward_modules", feedforward)


@register_method
class Ia3Method(PeftTuner):
    """(IA)3 via peft: learned rescaling vectors on chosen linear layers; the vectors and the head are stored."""

    name = "ia3"
    config_class = Ia3Config
    peft_config_class = peft.IA3Config
    layer_class = IA3Layer
    tensor_prefix = "ia3."
    display_name = "(IA)3"
    # The vectors start at ones: weight decay would pull them towards zero, i.e. away from the backbone.
    decay_tuner_weights = False

    @classmethod
    def peft_settings(cls, config: Ia3Config) -> dict[str, Any]:
        return {"target_modules": list(config.target_modules),
                "feedforward_modules": list(config.feedforward_modules),
                "fan_in_fan_out": False, "init_ia3_weights": True}
