"""Options of (IA)3 (:mod:`methods.ia3`)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import PeftTunerConfig, module_names
from stream.core.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Ia3Config(PeftTunerConfig):
    """(IA)3 scaling vectors on the linear layers named by ``target_modules`` (see
    :class:`~methods.core.config.PeftTunerConfig`).

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
