"""The hard-concrete gate of Louizos, Welling & Kingma (2018), as diff pruning uses it.

A gate ``z`` in [0, 1] with a learned location ``log_alpha``. A training sample draws logistic noise
``eps = logit(u)``, ``u ~ U(0, 1)``, and computes

    s = sigmoid(eps + log_alpha)          (temperature 1: diff pruning uses none)
    z = clamp(s * (r - l) + l, 0, 1)      (stretched to (l, r), then clipped)

so ``z`` is exactly 0 or 1 with positive probability and differentiable in ``log_alpha`` in between.
``P(z != 0) = sigmoid(log_alpha - log(-l / r))``, the expected-L0 term that the penalty sums. At
evaluation the gate is deterministic: ``clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1)``.

Everything works on flat tensors of any shape (one entry per gated weight), with autograd. The sample
is written to keep memory low: the noise buffer is turned into ``s`` in place, and autograd keeps only
``s`` (shared by the sigmoid and the clamp) plus the gate itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Keeps logit(u) finite: u in [1e-6, 1 - 1e-6] bounds the logistic noise to about +-13.8.
_NOISE_CLIP = 1e-6


@dataclass(frozen=True)
class HardConcrete:
    """A hard-concrete gate with stretch interval (``lower``, ``upper``), ``lower < 0 < 1 < upper``."""

    lower: float = -1.5
    upper: float = 1.5

    def __post_init__(self) -> None:
        if not (self.lower < 0.0 and self.upper > 1.0):
            raise ValueError(f"HardConcrete needs lower < 0 < 1 < upper; got lower={self.lower}, upper={self.upper}.")

    @property
    def log_ratio(self) -> float:
        """``log(-l / r)``: the shift between ``log_alpha`` and the logit of ``P(z != 0)`` (0 when l = -r)."""
        return math.log(-self.lower / self.upper)

    def sample(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """A training sample of the gates (fresh noise from torch's global generator)."""
        noise = torch.empty_like(log_alpha)
        with torch.no_grad():
            noise.uniform_(_NOISE_CLIP, 1.0 - _NOISE_CLIP).logit_()
        # The noise buffer becomes s in place: one (N,) allocation per sample, nothing kept between steps.
        return self._stretch_and_clip(noise.add_(log_alpha).sigmoid_())

    def deterministic(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """The evaluation-time gate: the clipped, stretched ``sigmoid(log_alpha)``; no noise."""
        return self._stretch_and_clip(torch.sigmoid(log_alpha))

    def _stretch_and_clip(self, s: torch.Tensor) -> torch.Tensor:
        # clamp(s * (r - l) + l, 0, 1) == (clamp(s, s0, s1) - s0) / (s1 - s0), with s0 and s1 the values of
        # s that stretch to 0 and 1. Clamping s first lets autograd keep one tensor (s, which the sigmoid
        # keeps anyway) instead of two, and the scalar steps run in place: one (N,) allocation. s0, s1 and
        # their difference are taken in s's dtype, so the clipped ends come out exactly 0 and exactly 1.
        span = self.upper - self.lower
        s0 = torch.tensor(-self.lower / span, dtype=s.dtype)
        s1 = torch.tensor((1.0 - self.lower) / span, dtype=s.dtype)
        return torch.clamp(s, s0.item(), s1.item()).sub_(s0.item()).div_((s1 - s0).item())

    def prob_nonzero(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """``P(z != 0)`` per gate, differentiable in ``log_alpha``."""
        return torch.sigmoid(log_alpha - self.log_ratio) if self.log_ratio else torch.sigmoid(log_alpha)
