"""The options every method has: the base class of each method's ``XxxConfig``, and of every peft tuner's.

The shared training loop (:func:`methods.core.training.fit`) reads these fields, which is why they live below
both the loop and the method interface. Nothing here imports torch, so a run's options are checked before
torch loads (the names of learning-rate schedules and stored value dtypes are here for the same reason; the
loop and the codecs implement them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream.core.errors import ConfigError
from stream.core.validation import check_real

#: Learning-rate schedules a parameter group may ask for with its ``schedule`` key (methods.core.training).
SCHEDULES = ("linear", "constant")
#: Precisions a sparse codec can store values in (methods.core.codecs maps them to torch dtypes).
VALUE_DTYPE_NAMES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Options every method has. Subclasses add their own fields and defaults.

    Attributes:
        learning_rate: peak AdamW learning rate for the method's own parameters.
        head_learning_rate: learning rate of the freshly initialised task head (None: same as above).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: fraction of the steps spent in linear warm-up before linear decay to zero.
        max_grad_norm: gradient clipping norm (0 disables clipping).
        head_dropout: dropout before the task head's linear layer.
    """

    learning_rate: float = 5e-5
    head_learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    head_dropout: float = 0.1

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_real(owner, "learning_rate", self.learning_rate, minimum=0.0, exclusive_minimum=True)
        check_real(owner, "head_learning_rate", self.head_learning_rate, minimum=0.0,
                   exclusive_minimum=True, allow_none=True)
        check_real(owner, "weight_decay", self.weight_decay, minimum=0.0)
        check_real(owner, "warmup_ratio", self.warmup_ratio, minimum=0.0, maximum=1.0, exclusive_maximum=True)
        check_real(owner, "max_grad_norm", self.max_grad_norm, minimum=0.0)
        check_real(owner, "head_dropout", self.head_dropout, minimum=0.0, maximum=1.0, exclusive_maximum=True)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values (saved in every artifact sidecar)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MethodConfig:
        """Build from user options, refusing unknown keys with the valid ones listed."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"Unknown option(s) {', '.join(map(repr, unknown))} for {cls.__name__}. "
                              f"Valid: {', '.join(sorted(valid))}.")
        return cls(**options)


def module_names(owner: str, field: str, value: Any) -> tuple[str, ...]:
    """Normalise a list of module names, or a ``"query+value"`` string, to a tuple; ConfigError otherwise.

    The error names ``owner.field``; names must be non-empty, must not start or end with a dot, and must not
    repeat.
    """
    names = value.split("+") if isinstance(value, str) else value
    names = (tuple(n.strip() for n in names)
             if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names) else None)
    if not names or any(not n or n.startswith(".") or n.endswith(".") for n in names):
        raise ConfigError(f"{owner}.{field} must be one or more module names, as a list or joined "
                          f"with '+' (for example 'query+value'); got {value!r}.")
    if len(set(names)) != len(names):
        raise ConfigError(f"{owner}.{field} must not repeat a name; got {list(names)}.")
    return names


@dataclass(frozen=True, kw_only=True)
class PeftTunerConfig(MethodConfig):
    """Options every peft tuner has.

    Attributes:
        target_modules: names of the encoder's linear layers to adapt: a module path or its last
            components (``query`` matches every block's ``attention.self.query``;
            ``attention.output.dense`` only the attention output projections). In a run's option
            string, join several with ``+`` (``lora:target_modules=query+key+value``). Checked against
            the encoder's module names when the method is built.
    """

    target_modules: tuple[str, ...] = ("query", "value")

    def __post_init__(self) -> None:
        super().__post_init__()
        # normalised once; the dataclass stays frozen
        object.__setattr__(self, "target_modules",
                           module_names(type(self).__name__, "target_modules", self.target_modules))
