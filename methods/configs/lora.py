"""Options of LoRA (:mod:`methods.lora`)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import PeftTunerConfig
from stream.core.validation import check_int, check_real


@dataclass(frozen=True, kw_only=True)
class LoraConfig(PeftTunerConfig):
    """LoRA of rank ``rank`` on the linear layers named by ``target_modules`` (see
    :class:`~methods.core.config.PeftTunerConfig`).

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
