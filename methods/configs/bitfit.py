"""Options of BitFit (:mod:`methods.bitfit`)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import MethodConfig


@dataclass(frozen=True, kw_only=True)
class BitFitConfig(MethodConfig):
    """Options of :class:`~methods.bitfit.BitFitMethod`: the shared ones, with a large learning rate (see
    :mod:`methods.bitfit`)."""

    learning_rate: float = 3e-3
