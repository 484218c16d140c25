"""Options of masking (:mod:`methods.masking`), and the weight matrices it can mask."""

from __future__ import annotations

import math
from dataclasses import dataclass

from methods.core.config import MethodConfig
from stream.core.errors import ConfigError
from stream.core.validation import check_choice, check_int, check_real

# Target name -> where that weight's nn.Linear sits inside a block, per supported layout
# (BERT / RoBERTa / MiniLM / ELECTRA first, DistilBERT second).
TARGET_PATHS: dict[str, tuple[str, ...]] = {
    "query": ("attention.self.query", "attention.q_lin"),
    "key": ("attention.self.key", "attention.k_lin"),
    "value": ("attention.self.value", "attention.v_lin"),
    "attention_output": ("attention.output.dense", "attention.out_lin"),
    "intermediate": ("intermediate.dense", "ffn.lin1"),
    "output": ("output.dense", "ffn.lin2"),
}


@dataclass(frozen=True, kw_only=True)
class MaskingConfig(MethodConfig):
    """Options of :class:`~methods.masking.MaskingMethod` (see :mod:`methods.masking` for the method).

    Attributes:
        learning_rate: Adam learning rate of the mask scores (never weight-decayed).
        head_learning_rate: learning rate of the trained head (default 1e-3, the linear probe's).
        threshold: a weight is kept while its score is above this value (the paper's tau).
        initial_sparsity: the fraction of every covered matrix that starts masked out, exactly.
        init_width: width of the uniform interval the scores are drawn from.
        first_block: lowest masked block; None: ``num_blocks // 6`` (2 of 12 as in the paper, 1 of 6).
        targets: which weight matrices of a block are masked; a tuple of names from ``TARGET_PATHS``, or
            one string joining them with ``+`` (``"query+value"``, usable on the command line).
        train_head: train a dense head (default), or keep a random head frozen and mask its weight.
        entropy_coded: store each mask's minority-symbol positions (default) instead of 1 bit per
            weight (False, the paper's format).
    """

    learning_rate: float = 1e-3
    head_learning_rate: float | None = 1e-3
    threshold: float = 0.01
    initial_sparsity: float = 0.05
    init_width: float = 0.2
    first_block: int | None = None
    targets: tuple[str, ...] = tuple(TARGET_PATHS)
    train_head: bool = True
    entropy_coded: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_real(owner, "threshold", self.threshold)
        if not math.isfinite(self.threshold):
            raise ConfigError(f"{owner}.threshold must be finite; got {self.threshold!r}.")
        check_real(owner, "initial_sparsity", self.initial_sparsity, minimum=0.0, maximum=1.0,
                   exclusive_maximum=True)
        check_real(owner, "init_width", self.init_width, minimum=0.0, exclusive_minimum=True)
        check_int(owner, "first_block", self.first_block, minimum=0, allow_none=True)
        for flag in ("train_head", "entropy_coded"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{owner}.{flag} must be true or false; got {getattr(self, flag)!r}.")
        targets = self.targets.split("+") if isinstance(self.targets, str) else self.targets
        if isinstance(targets, (list, tuple)):
            targets = tuple(targets)
        else:
            raise ConfigError(f"{owner}.targets must be a list of names or a '+'-joined string; got {targets!r}.")
        if not targets:
            raise ConfigError(f"{owner}.targets must name at least one of {', '.join(TARGET_PATHS)}; got none.")
        for target in targets:
            check_choice(owner, "targets", target, TARGET_PATHS)
        if len(set(targets)) != len(targets):
            raise ConfigError(f"{owner}.targets must not repeat a name; got {list(targets)}.")
        object.__setattr__(self, "targets", targets)
