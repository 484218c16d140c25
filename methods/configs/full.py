"""Options of full finetuning (:mod:`methods.full`)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import MethodConfig


@dataclass(frozen=True, kw_only=True)
class FullConfig(MethodConfig):
    """Full finetuning. The papers finetune BERT-large at 2e-5..5e-5; a 6-layer model wants a larger rate
    (published small-BERT finetuning chooses from 3e-5..3e-4), so the default is 1e-4, the middle of that
    range in log scale. Per-task rates are chosen on the dev split by a ``search`` in the method spec
    (``full:learning_rate=5e-5|1e-4|2e-4``), recorded in the sidecar and the ledger.

    The freshly initialised head gets its own, larger rate: at 2e-5 a random head barely leaves its
    initialisation in a short budget (bench/results/pooling_probe.md).
    """

    learning_rate: float = 1e-4
    head_learning_rate: float | None = 1e-3
