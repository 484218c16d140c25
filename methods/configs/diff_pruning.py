"""Options of diff pruning and its variants (:mod:`methods.diff_pruning`; its docstring explains the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.config import SCHEDULES, VALUE_DTYPE_NAMES, MethodConfig
from stream.core.errors import ConfigError
from stream.core.validation import check_choice, check_real

VARIANTS = ("structured", "unstructured", "nonadaptive")
STRUCTURED_PENALTIES = ("product", "additive")
STAGE_BUDGETS = ("paper", "split")
L0_CONTROLS = ("schedule", "fixed")
DEFAULT_STRUCTURED_PENALTY = "additive"  # see "Defaults" in methods.diff_pruning's docstring


def _require_variant(config: DiffPruningConfig, variant: str, alias: str) -> None:
    if config.variant != variant:
        raise ConfigError(f"{type(config).__name__}.variant must be {variant!r} (method {alias!r} is diff "
                          f"pruning's {variant} variant); got {config.variant!r}. Use method 'diff_pruning' "
                          f"with variant={config.variant!r} instead.")


@dataclass(frozen=True, kw_only=True)
class DiffPruningConfig(MethodConfig):
    """Options of diff pruning (:mod:`methods.diff_pruning`: what each stage does, and how the defaults were chosen).

    Attributes:
        variant: ``structured`` (per-tensor group gates), ``unstructured`` or ``nonadaptive``.
        structured_penalty: ``additive`` (the official code's, default) or ``product`` (the paper's
            formula); structured variant only.
        target_density: fraction of the backbone's parameters kept as nonzeros (paper: 0.5%).
        stage_budget: ``paper`` (default): stage 1 and stage 3 each get the arrival's whole budget, as the
            paper gives each a finetuning-length run (so diff pruning trains twice as many steps as full
            finetuning, which its training seconds show); ``split``: the budget is divided between them by
            ``finetune_fraction``.
        finetune_fraction: with ``stage_budget="split"``, the fraction of the steps given to fixed-mask
            finetuning (stage 3); 0 skips stage 3 (an ablation: the paper found it crucial).
        learning_rate: AdamW learning rate of the dense diff ``w`` in stage 1 (paper 1e-5; default 1e-4).
        alpha_learning_rate: learning rate of the gates' log-alpha in stage 1 (paper 0.1), held constant
            (``alpha_schedule``) as in the official code, not warmed up and decayed with ``w``'s.
        alpha_schedule: ``constant`` (default) or ``linear`` (the shared warm-up/decay schedule).
        alpha_eps: Adam epsilon of the log-alpha group (default 1e-8, the paper's).
        l0_control: ``schedule`` (default): after every step the open gates with the lowest log-alpha are
            closed so that the fraction of open gates follows a cubic schedule from 1 to ``target_density``
            over the first ``l0_schedule_fraction`` of stage 1, then stays there
            (:class:`~methods.diff_pruning.DensityController`);
            ``fixed``: the paper's penalty ``l0_penalty * expected L0`` in the loss.
        l0_penalty: lambda, the weight of the fixed penalty (paper 1.25e-7 on BERT-large).
        l0_schedule_fraction: the share of stage 1 over which the scheduled density falls to the target;
            model selection in stage 1 only considers states after it (all at the target density).
        alpha_init: initial log-alpha of every gate (paper 5: gates start open, P(z != 0) = 0.993).
        gate_lower / gate_upper: the hard-concrete stretch interval (paper -1.5, 1.5).
        finetune_learning_rate: learning rate of the surviving values in stage 3 (paper 5e-5; default 5e-4).
        head_learning_rate: learning rate of the dense task head in both stages (default 1e-3).
        value_dtype: precision of the stored values: ``float32``, ``float16`` or ``bfloat16``.
    """

    variant: str = "structured"
    structured_penalty: str = DEFAULT_STRUCTURED_PENALTY
    target_density: float = 0.005
    stage_budget: str = "paper"
    finetune_fraction: float = 0.5
    learning_rate: float = 1e-4
    alpha_learning_rate: float = 0.1
    alpha_schedule: str = "constant"
    alpha_eps: float = 1e-8
    l0_control: str = "schedule"
    l0_penalty: float = 1.25e-7
    l0_schedule_fraction: float = 0.7
    alpha_init: float = 5.0
    gate_lower: float = -1.5
    gate_upper: float = 1.5
    finetune_learning_rate: float = 5e-4
    head_learning_rate: float | None = 1e-3
    value_dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_choice(owner, "variant", self.variant, VARIANTS)
        check_choice(owner, "structured_penalty", self.structured_penalty, STRUCTURED_PENALTIES)
        if self.variant != "structured" and self.structured_penalty != DEFAULT_STRUCTURED_PENALTY:
            raise ConfigError(f"{owner}.structured_penalty applies only to variant='structured'; got "
                              f"structured_penalty={self.structured_penalty!r} with variant={self.variant!r}.")
        check_real(owner, "target_density", self.target_density, minimum=0.0, maximum=1.0, exclusive_minimum=True)
        check_choice(owner, "stage_budget", self.stage_budget, STAGE_BUDGETS)
        check_real(owner, "finetune_fraction", self.finetune_fraction, minimum=0.0, maximum=1.0,
                   exclusive_maximum=True)
        if self.stage_budget == "paper" and self.finetune_fraction != 0.5:
            raise ConfigError(f"{owner}.finetune_fraction applies only to stage_budget='split' (with 'paper' each "
                              f"stage gets the whole budget); got finetune_fraction={self.finetune_fraction!r} with "
                              "stage_budget='paper'. Add stage_budget=split.")
        check_choice(owner, "alpha_schedule", self.alpha_schedule, SCHEDULES)
        check_choice(owner, "l0_control", self.l0_control, L0_CONTROLS)
        check_real(owner, "l0_schedule_fraction", self.l0_schedule_fraction, minimum=0.0, maximum=1.0,
                   exclusive_minimum=True)
        check_real(owner, "alpha_learning_rate", self.alpha_learning_rate, minimum=0.0, exclusive_minimum=True)
        check_real(owner, "alpha_eps", self.alpha_eps, minimum=0.0, exclusive_minimum=True)
        check_real(owner, "l0_penalty", self.l0_penalty, minimum=0.0)
        if self.l0_control == "schedule" and self.structured_penalty != DEFAULT_STRUCTURED_PENALTY:
            raise ConfigError(f"{owner}.structured_penalty={self.structured_penalty!r} shapes the fixed penalty in "
                              "the loss; with l0_control='schedule' the controller closes the weights' gates only. "
                              "Add l0_control=fixed to use it.")
        check_real(owner, "alpha_init", self.alpha_init, minimum=-20.0, maximum=20.0)
        check_real(owner, "gate_lower", self.gate_lower, maximum=0.0, exclusive_maximum=True)
        check_real(owner, "gate_upper", self.gate_upper, minimum=1.0, exclusive_minimum=True)
        check_real(owner, "finetune_learning_rate", self.finetune_learning_rate, minimum=0.0,
                   exclusive_minimum=True)
        check_choice(owner, "value_dtype", self.value_dtype, VALUE_DTYPE_NAMES)


@dataclass(frozen=True, kw_only=True)
class DiffPruningUnstructuredConfig(DiffPruningConfig):
    """``diff_pruning`` with ``variant="unstructured"``: one gate per weight, no group gates."""

    variant: str = "unstructured"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_variant(self, "unstructured", "diff_pruning_unstructured")


@dataclass(frozen=True, kw_only=True)
class DiffPruningNonadaptiveConfig(DiffPruningConfig):
    """The non-adaptive baseline: magnitude-prune a full finetuning's diff, then fixed-mask finetune.

    Its stage 1 is a full finetuning at full finetuning's settings, so ``learning_rate`` defaults to full
    finetuning's 1e-4 (give it the same per-task rate as ``full`` when comparing the two).
    """

    variant: str = "nonadaptive"
    learning_rate: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_variant(self, "nonadaptive", "diff_pruning_nonadaptive")
