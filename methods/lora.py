"""LoRA (Hu et al. 2021) through the ``peft`` library, with per-task heads kept outside peft.

Each targeted linear layer W (d_out x d_in) gains a trainable low-rank update: it computes
``W x + (alpha / rank) * B A dropout(x)`` with A (rank x d_in) and B (d_out x rank); B starts at zero,
so the model starts as the backbone. Injection, the artifact (the A/B tensors under ``lora.`` plus the
head), loading and serving are :class:`~methods.core.peft_tuner.PeftTuner`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peft
from peft.tuners.lora import LoraLayer

from methods.core.base import register_method
from methods.core.peft_tuner import PeftTuner, PeftTunerConfig
from stream.core.validation import check_int, check_real


@dataclass(frozen=True, kw_only=True)
class LoraConfig(PeftTunerConfig):
    """LoRA of rank ``rank`` on the linear layers named by ``target_modules`` (see
    :class:`~methods.core.peft_tuner.PeftTunerConfig`).

    Attributes:
        rank: r, the rank of each update B A. The LoRA paper's GLUE setting is 8.
        alpha: the update is scaled by alpha / rank. Like the paper, alpha is set to the first rank
            tried (8) and kept when the rank changes, so a new rank needs no new learning rate.
        lora_dropout: dropout on the LoRA branch's input during training.
        learning_rate: 3e-3, for the stream's short budgets: the paper's 4e-4..5e-4 (with many
            epochs) and 1e-3 left MiniLM near a linear probe after 32 steps on SST-2, while 3e-3 and
            1e-2 scored alike (bench/results/adapters_lora_lr.md).
    """

    rank: int = 8
    alpha: float = 8.0
    lora_dropout: float = 0.0
    learning_rate: float = 3e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_int(owner, "rank", self.rank, minimum=1)
        check_real(owner, "alpha", self.alpha, minimum=0.0, exclusive_minimum=True)
        check_real(owner, "lora_dropout", self.lora_dropout, minimum=0.0, maximum=1.0, exclusive_maximum=True)


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

