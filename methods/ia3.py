"""(IA)3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning") through the ``peft`` library, with per-task heads kept outside peft.

Each targeted linear layer is rescaled elementwise by a learned vector that starts at ones, so the model
starts as the backbone: ``l * (W x + b)`` on its output (keys and values), or ``W (l * x) + b`` on its input
for the feed-forward modules (the FFN's hidden activation, 4 x hidden wide). Injection, the artifact (the
vectors under ``ia3.`` plus the head), loading and serving are :class:`~methods.core.peft_tuner.PeftTuner`'s.
"""

from __future__ import annotations

from typing import Any

import peft
from peft.tuners.ia3 import IA3Layer

from methods.configs.ia3 import Ia3Config
from methods.core.peft_tuner import PeftTuner
from methods.registry import register_method


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
