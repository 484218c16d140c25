"""LoRA (Hu et al. 2021) through the ``peft`` library, with per-task heads kept outside peft.

Each targeted linear layer W (d_out x d_in) gains a trainable low-rank update: it computes
``W x + (alpha / rank) * B A dropout(x)`` with A (rank x d_in) and B (d_out x rank); B starts at zero,
so the model starts as the backbone. Injection, the artifact (the A/B tensors under ``lora.`` plus the
head), loading and serving are :class:`~methods.core.peft_tuner.PeftTuner`'s.
"""

from __future__ import annotations

from typing import Any

import peft
from peft.tuners.lora import LoraLayer

from methods.configs.lora import LoraConfig
from methods.core.peft_tuner import PeftTuner
from methods.registry import register_method


@register_method
class LoraMethod(PeftTuner):
    """LoRA on chosen linear layers via peft; the A/B tensors and the head are stored per task."""

    name = "lora"
    config_class = LoraConfig
    peft_config_class = peft.LoraConfig
    layer_class = LoraLayer
    tensor_prefix = "lora."
    display_name = "LoRA"

    @classmethod
    def peft_settings(cls, config: LoraConfig) -> dict[str, Any]:
        return {"r": config.rank, "lora_alpha": config.alpha, "lora_dropout": config.lora_dropout,
                "target_modules": list(config.target_modules), "bias": "none", "fan_in_fan_out": False,
                "use_rslora": False, "use_dora": False}

