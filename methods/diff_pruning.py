"""Diff pruning (Guo, Rush & Kim 2021): each task stores a sparse change to every backbone weight.

The task model is ``theta_task = theta_backbone + z * w``: ``w`` is a dense diff (initialised to 0) and
``z`` a hard-concrete gate per weight (:mod:`methods.core.hard_concrete`; stretch (-1.5, 1.5), no temperature,
log-alpha initialised to 5). Every encoder parameter is gated, embeddings included. The task head is
dense and task-owned. Training runs in three stages on one arrival:

1. **L0 stage**: train ``w`` (lr ``learning_rate``, paper 1e-5) and the gates' ``log_alpha`` (lr
   ``alpha_learning_rate``, paper 0.1, Adam epsilon ``alpha_eps``) on the task loss plus the expected-L0
   penalty ``l0_penalty * sum_i P(z_i != 0)``, ``P(z != 0) = sigmoid(log_alpha - log(-l/r))``.
2. **Projection**: the effective diff under the deterministic gate, ``zbar * w``, keeps its
   ``round(target_density * N)`` largest magnitudes (one global threshold over all N gated weights; ties
   at the threshold go to the lowest flat index) and drops the rest.
3. **Fixed-mask finetuning** of the surviving values (lr ``finetune_learning_rate``, paper 5e-5), which
   the paper calls crucial. Only the k values (a small dense vector) and the head train here.

The arrival's budget (its epochs or ``max_steps``) is divided between stage 1 and stage 3:
``finetune_fraction`` of the steps (rounded, at least one) go to stage 3, the rest to stage 1, as in the
paper's equal split of epochs. Each stage runs the shared :func:`methods.core.training.fit`, so each restores
its best dev-score state; the projection starts from stage 1's restored state.

Variants (``variant``; also registered under their own names):

- ``structured`` (``diff_pruning``, the default and the paper's best): a second hard-concrete gate per
  weight tensor multiplies every gate of that tensor. ``structured_penalty="additive"`` (default) is the
  official code's ``sum_i P(z_i != 0) + sum_g P(z_g != 0)`` (each group counted once);
  ``"product"`` is the penalty as the paper writes it, ``sum_g P(z_g != 0) * sum_{i in g} P(z_i != 0)``.
- ``unstructured`` (``diff_pruning_unstructured``): one gate per weight only.
- ``nonadaptive`` (``diff_pruning_nonadaptive``): the paper's baseline. Stage 1 finetunes the dense diff
  ``w`` without gates or penalty (a full finetuning, lr ``learning_rate``; the registered name defaults
  it to full finetuning's 5e-5), then the same projection and fixed-mask finetuning.

Evaluation always uses the deterministic gate, never a sample. The model returned by ``train`` is
rebuilt from the artifact's tensors by the same code as :meth:`DiffPruningMethod.load`, so it predicts
exactly what the stored file predicts (values stored in fp16/bf16 are rounded before that rebuild).

Artifact: the k positions and values packed by :func:`methods.core.codecs.pack_sparse_tensors` (one position
payload and one value tensor for all ~100 weight tensors, each tensor in its cheapest position code),
plus the dense head. ``new_params`` is k + the head's parameters. ``lower_bound_bits`` is
``log2 C(N, k)`` for the positions plus k values at the stored precision plus the head's dense bits. The
metadata records the nonzeros per tensor (in the codec's ``count`` column, named by parameter, and as
``placement``, the ``{name: [changed, total]}`` map :mod:`analysis.placement` reads) and per layer, and what
stage 1 did: its density under the deterministic gate and its expected density at the end, the expected
density along the way (``expected_density_trace``, at most ``TRACE_POINTS`` ``[step, density]`` pairs from
step 0) and what the projection saw (``projection``: a histogram of log10 |diff|, the exact zeros, the
threshold). :mod:`analysis.diff_stages` turns these into tables and figures (notebooks/02).

Serving: :meth:`DiffPruningMethod.serving_patch` scatter-adds the k stored values into a live shared
encoder's flat weights in place and, on revert, assigns the k overwritten weights back, so a server switches
tasks at the cost of k entries rather than a model copy (:mod:`stream.engine.serving`,
bench/results/switch_latency.md).

Defaults and how they were chosen (bench/diff_pruning_sweep.py; tables in
bench/results/diff_pruning_sweep.md). SST-2 on all-MiniLM-L6-v2, 512 training examples, 4 epochs of
batch 32 (32 L0 + 32 fixed-mask steps), seed 0; test = GLUE validation scored from the stored file.
References on the same data: full finetuning 78.2, linear probe 65.5.

- Learning rates. With the paper's (w 1e-5, fixed-mask 5e-5) diff pruning scores 65.9, a linear probe's
  score: in tens of Adam steps a weight moves about lr per step, so a 1e-5 diff barely matters.
  ``learning_rate=1e-4`` gives 72.1 (dev 81 after stage 1, 71 right after projection, 74 after stage 3);
  adding ``finetune_learning_rate=5e-4`` gives 79.5 (dev 83) at 0.5% of the parameters. The paper's
  non-adaptive baseline (a 5e-5 full finetuning projected, fixed-mask 5e-5) scores 72.5.
- lambda and Adam's epsilon. The penalty's gradient on a log-alpha is ``lambda * p * (1 - p)``, about
  8e-10 at lambda 1.25e-7 and log-alpha 5, below Adam's epsilon 1e-8: Adam does not normalise it and a
  log-alpha drifts by ``lr * lambda * p(1-p) / eps`` per step (under 0.01). With ``alpha_eps=1e-12`` (or
  lambda 1.25e-5) Adam does normalise it, and every log-alpha without task signal falls by about its
  learning rate per step, whatever lambda. Either way, at the paper's alpha learning rate 0.1 a
  log-alpha moves at most ~0.05 per step on average over the warm-up/decay schedule, so in a stream's
  tens of L0 steps no gate closes (it needs log-alpha < 0 from 5): the stage-1 density is the fraction
  of weights that got any gradient (0.51; the word-embedding rows of tokens never seen stay exactly 0),
  the expected density 0.96-0.97, and the projection does the pruning. Scores: paper 65.9, eps 1e-12
  65.9, lambda 1.25e-5 65.3: the same within noise. The defaults keep the paper's lambda, epsilon and
  alpha learning rate. To make the L0 stage itself prune within a short budget, set ``alpha_eps=1e-12``
  and ``alpha_learning_rate`` to about 10 / (L0 steps): at 0.5 over 32 steps the stage-1 density fell to
  0.5% (unstructured) and 0.4% (structured, additive; 10 tensors closed).
- Structured penalty. In the product form a tensor gate's penalty gradient is ``lambda * p_g(1 - p_g) *
  sum_i P(z_i != 0)``, the single-gate gradient times the tensor's size (up to 11.7M), so Adam always
  normalises it and every tensor gate falls by its learning rate per step unless the task holds it: at
  alpha learning rate 0.5 all 101 tensors closed (stage-1 density 0, leaving the projection nothing to
  choose). The additive form, which produced the paper's numbers, keeps the tensor term one gate's
  size: it is the default, and ``"product"`` stays available.
- ``head_learning_rate=1e-3``: linear heads on MiniLM's mean-pooled features need ~1e-3
  (bench/pooling_probe.py); ``finetune_fraction=0.5``: the paper's equal split of epochs.
- Together (structured, additive, the defaults): test 80.7 (dev 80) against full finetuning's 78.2
  (dev 83), with 0.5% of the backbone's parameters per task in a 581 KB artifact (full: 90 MB). One
  seed and 872 test sentences: differences of 1-2 points are noise. The whole sweep took 29 CPU-minutes.

Memory and speed (autograd throughout, no hand-written gradients, no per-parameter loops in the step):
``w`` and ``log_alpha`` are one flat (N,) tensor each; the task weights are built out of place from the
shared backbone tensors with one multi-tensor add (:class:`~methods.core.flat_params.FlatLayout`) and run
through ``torch.func.functional_call``, so the backbone is never copied while training; a gate sample
costs one (N,) allocation and autograd keeps two (N,) tensors for it; the expected-L0 penalty is built
before the encoder runs and checkpointed, so nothing (N,)-sized waits for its backward; the shared loop
uses the fused AdamW kernel (about 5x faster than the default on CPU) and releases gradients right after
each optimizer step. Stage 3 trains only the k values. bench/step_cost.py measures step time
and peak memory against full finetuning (results in bench/results/step_cost.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from methods.core.base import Method, TrainedTask, register_method
from methods.core.codecs import VALUE_DTYPES, pack_sparse_tensors, positions_lower_bound_bits, unpack_sparse_tensors
from methods.core.config import MethodConfig
from methods.core.flat_params import FlatLayout, FunctionalEncoder
from methods.core.hard_concrete import HardConcrete
from methods.core.patches import AddAtPositions, ServingPatch
from methods.core.task_model import HEAD_PREFIX, TaskModel, head_state, load_head
from methods.core.training import FitResult, decay_groups, evaluate
from stream.core.errors import ArtifactError, ConfigError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload
from stream.core.validation import check_choice, check_real

logger = logging.getLogger(__name__)

VARIANTS = ("structured", "unstructured", "nonadaptive")
STRUCTURED_PENALTIES = ("product", "additive")
DEFAULT_STRUCTURED_PENALTY = "additive"  # see "Defaults" in the module docstring
DIFF_KEY = "diff"  # tensor-name prefix of the packed diff: diff.positions, diff.values
# Training diagnostics kept in the sidecar (they cost its bytes, so they are short): at most TRACE_POINTS
# (step, expected density) pairs of stage 1, and a HISTOGRAM_BINS-bin histogram of |diff| at projection.
TRACE_POINTS = 25
HISTOGRAM_BINS = 40


@dataclass(frozen=True, kw_only=True)
class DiffPruningConfig(MethodConfig):
    """Options of diff pruning (module docstring: what each stage does, and how the defaults were chosen).

    Attributes:
        variant: ``structured`` (per-tensor group gates), ``unstructured`` or ``nonadaptive``.
        structured_penalty: ``additive`` (the official code's, default) or ``product`` (the paper's
            formula); structured variant only.
        target_density: fraction of the backbone's parameters kept as nonzeros (paper: 0.5%).
        finetune_fraction: fraction of the arrival's training steps given to fixed-mask finetuning
            (stage 3); 0 skips stage 3 (an ablation: the paper found it crucial).
        learning_rate: AdamW learning rate of the dense diff ``w`` in stage 1 (paper 1e-5; default 1e-4).
        alpha_learning_rate: learning rate of the gates' log-alpha in stage 1 (paper 0.1).
        alpha_eps: Adam epsilon of the log-alpha group; against the penalty's tiny gradients it decides
            whether Adam normalises the L0 pressure (default 1e-8, the paper's).
        l0_penalty: lambda, the weight of the expected-L0 penalty (paper 1.25e-7 on BERT-large).
        alpha_init: initial log-alpha of every gate (paper 5: gates start open, P(z != 0) = 0.993).
        gate_lower / gate_upper: the hard-concrete stretch interval (paper -1.5, 1.5).
        finetune_learning_rate: learning rate of the surviving values in stage 3 (paper 5e-5; default 5e-4).
        head_learning_rate: learning rate of the dense task head in both stages (default 1e-3).
        value_dtype: precision of the stored values: ``float32``, ``float16`` or ``bfloat16``.
    """

    variant: str = "structured"
    structured_penalty: str = DEFAULT_STRUCTURED_PENALTY
    target_density: float = 0.005
    finetune_fraction: float = 0.5
    learning_rate: float = 1e-4
    alpha_learning_rate: float = 0.1
    alpha_eps: float = 1e-8
    l0_penalty: float = 1.25e-7
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
        check_real(owner, "finetune_fraction", self.finetune_fraction, minimum=0.0, maximum=1.0,
                   exclusive_maximum=True)
        check_real(owner, "alpha_learning_rate", self.alpha_learning_rate, minimum=0.0, exclusive_minimum=True)
        check_real(owner, "alpha_eps", self.alpha_eps, minimum=0.0, exclusive_minimum=True)
        check_real(owner, "l0_penalty", self.l0_penalty, minimum=0.0)
        check_real(owner, "alpha_init", self.alpha_init, minimum=-20.0, maximum=20.0)
        check_real(owner, "gate_lower", self.gate_lower, maximum=0.0, exclusive_maximum=True)
        check_real(owner, "gate_upper", self.gate_upper, minimum=1.0, exclusive_minimum=True)
        check_real(owner, "finetune_learning_rate", self.finetune_learning_rate, minimum=0.0,
                   exclusive_minimum=True)
        check_choice(owner, "value_dtype", self.value_dtype, VALUE_DTYPES)

    @property
    def gate(self) -> HardConcrete:
        return HardConcrete(self.gate_lower, self.gate_upper)


def _require_variant(config: DiffPruningConfig, variant: str, alias: str) -> None:
    if config.variant != variant:
        raise ConfigError(f"{type(config).__name__}.variant must be {variant!r} (method {alias!r} is diff "
                          f"pruning's {variant} variant); got {config.variant!r}. Use method 'diff_pruning' "
                          f"with variant={config.variant!r} instead.")


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

    Its stage 1 is full finetuning, so ``learning_rate`` defaults to full finetuning's 5e-5.
    """

    variant: str = "nonadaptive"
    learning_rate: float = 5e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_variant(self, "nonadaptive", "diff_pruning_nonadaptive")


# ------------------------------------------------------------------------------------ trainable diffs
class GatedDiff(nn.Module):
    """Stage 1 of the adaptive variants: ``delta = z * w``, times the tensor's group gate if structured.

    Parameters (flat, in :class:`~methods.core.flat_params.FlatLayout` order): ``diff_w`` (N,),
    ``diff_log_alpha`` (N,) and, when structured, ``diff_group_log_alpha`` (G,), one gate per tensor.
    Calling it returns ``(delta (N,), group gates (G,) or None)``: sampled gates in training mode,
    deterministic ones in eval mode.
    """

    def __init__(self, layout: FlatLayout, config: DiffPruningConfig) -> None:
        super().__init__()
        n, device = layout.numel, layout.device
        self.gate = config.gate
        self.structured = config.variant == "structured"
        self.penalty_form = config.structured_penalty
        self.with_penalty = config.l0_penalty > 0
        self._penalty: torch.Tensor | None = None
        kind = {"device": device, "dtype": layout.dtype}
        self.diff_w = nn.Parameter(torch.zeros(n, **kind))
        self.diff_log_alpha = nn.Parameter(torch.full((n,), float(config.alpha_init), **kind))
        if self.structured:
            groups = len(layout)
            self.diff_group_log_alpha = nn.Parameter(torch.full((groups,), float(config.alpha_init), **kind))
            self.register_buffer("group_sizes", torch.tensor(layout.sizes, device=device), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.training:
            if self.with_penalty:
                # Built here, before the encoder runs, so autograd runs its backward after the encoder's
                # (when activations are freed); checkpointed, so no (N,) tensor waits for it meanwhile.
                self._penalty = checkpoint(self.expected_l0, use_reentrant=False)
            z = self.gate.sample(self.diff_log_alpha)
            group = self.gate.sample(self.diff_group_log_alpha) if self.structured else None
        else:
            z = self.gate.deterministic(self.diff_log_alpha)
            group = self.gate.deterministic(self.diff_group_log_alpha) if self.structured else None
        return z * self.diff_w, group

    def step_penalty(self) -> torch.Tensor:
        """The expected-L0 sum of the last training forward pass (the training loop's extra loss)."""
        if self._penalty is None:
            raise RuntimeError("step_penalty() needs a training-mode forward pass first")
        penalty, self._penalty = self._penalty, None
        return penalty

    def expected_l0(self) -> torch.Tensor:
        """The L0 penalty's sum (scalar, differentiable); see the module docstring for the forms."""
        probs = self.gate.prob_nonzero(self.diff_log_alpha)  # (N,)
        if not self.structured:
            return probs.sum()
        group_probs = self.gate.prob_nonzero(self.diff_group_log_alpha)  # (G,)
        if self.penalty_form == "additive":
            return probs.sum() + group_probs.sum()
        per_group = torch.segment_reduce(probs, "sum", lengths=self.group_sizes)  # (G,)
        return (group_probs * per_group).sum()

    @torch.no_grad()
    def expected_nonzeros(self) -> float:
        """Expected number of nonzero gates, ``sum_i P(z_i != 0) [* P(z_g(i) != 0)]``, whatever the penalty."""
        probs = self.gate.prob_nonzero(self.diff_log_alpha).double()
        if not self.structured:
            return float(probs.sum())
        per_group = torch.segment_reduce(probs, "sum", lengths=self.group_sizes)
        return float((self.gate.prob_nonzero(self.diff_group_log_alpha).double() * per_group).sum())

    @torch.no_grad()
    def closed_groups(self) -> list[int]:
        """Indices of the tensors whose deterministic group gate is exactly 0 (structured only)."""
        if not self.structured:
            return []
        return torch.nonzero(self.gate.deterministic(self.diff_group_log_alpha) == 0).flatten().tolist()


class DenseDiff(nn.Module):
    """Stage 1 of the non-adaptive variant: ``delta = w``, a full finetuning written as a diff."""

    def __init__(self, layout: FlatLayout) -> None:
        super().__init__()
        self.diff_w = nn.Parameter(torch.zeros(layout.numel, device=layout.device, dtype=layout.dtype))

    def forward(self) -> tuple[torch.Tensor, None]:
        return self.diff_w, None


class SparseDiff(nn.Module):
    """Stage 3: fixed positions (k,) into the flat vector, trainable values ``diff_values`` (k,)."""

    def __init__(self, numel: int, positions: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.numel = numel
        self.register_buffer("positions", positions, persistent=False)
        self.diff_values = nn.Parameter(values.detach().clone())

    def forward(self) -> tuple[torch.Tensor, None]:
        return self.diff_values.new_zeros(self.numel).index_put((self.positions,), self.diff_values), None


def effective_diff(source: nn.Module, layout: FlatLayout) -> torch.Tensor:
    """The (N,) diff a source adds to the backbone in eval mode (deterministic gates), without autograd."""
    was_training = source.training
    source.eval()
    with torch.no_grad():
        delta, scale = source()
        if scale is not None:
            delta = delta * layout.expand(scale)
    source.train(was_training)
    return delta


class DiffEncoder(nn.Module):
    """The shared encoder run with weights ``backbone + source()``, computed out of place at each call.

    In eval mode without autograd (how :func:`methods.core.training.evaluate` runs), the weights are built
    once and reused until the source's parameters change, so dev evaluation costs what a plain
    encoder costs.
    """

    def __init__(self, encoder: nn.Module, layout: FlatLayout, source: nn.Module) -> None:
        super().__init__()
        self.layout = layout
        self.source = source
        self.functional = FunctionalEncoder(encoder)
        self._cache: tuple[tuple, dict[str, torch.Tensor]] | None = None

    def train(self, mode: bool = True) -> DiffEncoder:
        self._cache = None
        return super().train(mode)

    def _weights(self) -> dict[str, torch.Tensor]:
        if self.training or torch.is_grad_enabled():
            return self.layout.add_to_bases(*self.source())
        key = tuple((id(p), p._version) for p in self.source.parameters())
        if self._cache is None or self._cache[0] != key:
            self._cache = None  # free the old weights before building new ones
            self._cache = (key, self.layout.add_to_bases(*self.source()))
        return self._cache[1]

    def forward(self, **inputs: torch.Tensor):
        return self.functional(self._weights(), **inputs)


# ------------------------------------------------------------------------------------------ helpers
def target_nonzeros(numel: int, density: float) -> int:
    """The number of diff entries kept: ``round(density * numel)``, at least 1, at most ``numel``."""
    return min(numel, max(1, round(density * numel)))


def top_k_positions(values: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted flat positions (k,) of the ``k`` largest ``|values|``; ties at the threshold by lowest index.

    One global threshold over the whole (N,) vector, so the result is deterministic and has exactly
    ``k`` entries even when many magnitudes are equal (for example zeros, when fewer than ``k`` are
    nonzero).
    """
    magnitude = values.detach().abs()
    if k >= magnitude.numel():
        return torch.arange(magnitude.numel(), device=magnitude.device)
    threshold = torch.topk(magnitude, k, sorted=False).values.min()
    above = torch.nonzero(magnitude > threshold).flatten()
    ties = torch.nonzero(magnitude == threshold).flatten()[:k - above.numel()]
    return torch.cat([above, ties]).sort().values


def magnitude_histogram(effective: torch.Tensor, positions: torch.Tensor,
                        bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """What the projection saw: a histogram of ``log10 |diff|`` over the nonzero entries of the (N,)
    effective diff, the number of exact zeros, and the threshold (the smallest kept magnitude) and count of
    the kept ``positions``. ``log10_range`` is [low, high] of ``bins`` equal bins (None when all are zero)."""
    magnitude = effective.detach().abs()
    nonzero = magnitude[magnitude > 0]
    kept = magnitude[positions]
    record: dict[str, Any] = {"kept": int(positions.numel()), "zeros": int(magnitude.numel() - nonzero.numel()),
                              "threshold": float(kept.min()) if kept.numel() else 0.0,
                              "log10_range": None, "counts": []}
    if nonzero.numel():
        logs = torch.log10(nonzero.double())
        low, high = math.floor(float(logs.min()) * 10) / 10, math.ceil(float(logs.max()) * 10) / 10
        high = max(high, low + 0.1)
        record["log10_range"] = [low, high]
        record["counts"] = [int(c) for c in torch.histc(logs, bins=bins, min=low, max=high)]
    return record


def stage_steps(total: int, finetune_fraction: float) -> tuple[int, int]:
    """Split ``total`` training steps into (L0 stage, fixed-mask stage); each non-empty stage >= 1 step."""
    finetune = 0 if finetune_fraction == 0 else max(1, round(total * finetune_fraction))
    return max(1, total - finetune), finetune


def _budget_steps(arrival) -> int:
    budget = arrival.budget
    if budget.max_steps is not None:
        return budget.max_steps
    return budget.epochs * max(1, math.ceil(len(arrival.train) / budget.batch_size))


def _combine_fits(first: FitResult, second: FitResult | None) -> FitResult:
    """One FitResult for the sidecar: stage 3's model selection, with stage 1's history before it."""
    if second is None:
        return first
    offset = first.steps
    return FitResult(steps=first.steps + second.steps, best_dev_score=second.best_dev_score,
                     best_step=offset + second.best_step,
                     dev_history=first.dev_history + [(offset + s, score) for s, score in second.dev_history],
                     mean_loss=second.mean_loss, seconds=first.seconds + second.seconds)


def _stage_summary(fit: FitResult) -> dict[str, Any]:
    return {"steps": fit.steps, "best_step": fit.best_step, "best_dev_score": fit.best_dev_score}


# ------------------------------------------------------------------------------------------- method
@register_method
class DiffPruningMethod(Method):
    """Diff pruning: a sparse diff of every backbone weight per task (module docstring)."""

    name = "diff_pruning"
    config_class = DiffPruningConfig
    sharing = Sharing.SHARED_BACKBONE

    def __init__(self, config, backbone) -> None:
        super().__init__(config, backbone)
        self.layout = FlatLayout(backbone.encoder)
        self.nonzeros = target_nonzeros(self.layout.numel, config.target_density)

    # ---------------------------------------------------------------------------------------- train
    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        config = self.config
        l0_steps, finetune_steps = stage_steps(_budget_steps(arrival), config.finetune_fraction)
        head = self.task_head(arrival)
        label = f"{self.name} {arrival.step}:{arrival.task.name}"
        positions, values, fit1, stage1 = self._l0_stage(arrival, head, l0_steps, label, progress)
        sparse = SparseDiff(self.layout.numel, positions, values)
        fit3 = None
        if finetune_steps:
            model = TaskModel(DiffEncoder(self.backbone.encoder, self.layout, sparse), head, self.backbone.pooling)
            groups = ([{"params": [sparse.diff_values], "lr": config.finetune_learning_rate, "weight_decay": 0.0}]
                      + decay_groups(head.named_parameters(), self.head_lr(), config.weight_decay))
            fit3 = self.fit(model, groups, arrival, progress=progress, desc=f"{label} fixed-mask",
                            max_steps=finetune_steps)
        payload = self._payload(sparse.positions, sparse.diff_values.detach(), head, stage1,
                                None if fit3 is None else _stage_summary(fit3))
        final = self._model_from_tensors(payload.tensors, payload.meta, arrival.task)
        fit = _combine_fits(fit1, fit3)
        if config.value_dtype != "float32":
            # The stored values are rounded; the dev score reported is the rounded model's.
            _, fit.best_dev_score = evaluate(final, {"dev": arrival.dev}, arrival.task,
                                             batch_size=arrival.budget.eval_batch_size, device=self.device)
        return TrainedTask(model=final, payload=payload, fit=fit)

    def _l0_stage(self, arrival, head: nn.Module, steps: int, label: str, progress: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, FitResult, dict[str, Any]]:
        """Stages 1 and 2: train the gated (or dense) diff, then project it to the target nonzeros.

        Returns the kept flat positions (k,), their values (k,), the stage's FitResult and its summary.
        """
        adaptive = self.config.variant != "nonadaptive"
        source = GatedDiff(self.layout, self.config) if adaptive else DenseDiff(self.layout)
        model = TaskModel(DiffEncoder(self.backbone.encoder, self.layout, source), head, self.backbone.pooling)
        trace: list[list[float]] = []
        fit = self.fit(model, self._stage1_groups(source, head), arrival, progress=progress,
                       desc=f"{label} {'L0' if adaptive else 'dense'}", max_steps=steps,
                       extra_loss=self._extra_loss(source), after_step=_stage1_hook(source, steps, trace))
        effective = effective_diff(source, self.layout)  # (N,)
        nonzero = int(torch.count_nonzero(effective))
        if nonzero < self.nonzeros:
            logger.warning("%s: stage 1 ended with %d nonzero diff entries (best dev state at step %d), fewer than "
                           "the %d kept; the rest are chosen by lowest index and start at 0.", label, nonzero,
                           fit.best_step, self.nonzeros)
        summary = {**_stage_summary(fit), "density": nonzero / self.layout.numel}
        if adaptive:
            summary["expected_density"] = source.expected_nonzeros() / self.layout.numel
            summary["expected_density_trace"] = trace
            if source.structured:
                summary["closed_tensors"] = source.closed_groups()
        positions = top_k_positions(effective, self.nonzeros)
        summary["projection"] = magnitude_histogram(effective, positions)
        return positions, effective[positions], fit, summary

    def _stage1_groups(self, source: nn.Module, head: nn.Module) -> list[dict]:
        config = self.config
        groups = [{"params": [source.diff_w], "lr": config.learning_rate, "weight_decay": 0.0}]
        if isinstance(source, GatedDiff):
            alphas = [source.diff_log_alpha] + ([source.diff_group_log_alpha] if source.structured else [])
            groups.append({"params": alphas, "lr": config.alpha_learning_rate, "eps": config.alpha_eps,
                           "weight_decay": 0.0})
        return groups + decay_groups(head.named_parameters(), self.head_lr(), config.weight_decay)

    def _extra_loss(self, source: nn.Module):
        if not isinstance(source, GatedDiff) or self.config.l0_penalty == 0:
            return None
        strength = self.config.l0_penalty
        return lambda: strength * source.step_penalty()

    # -------------------------------------------------------------------------------------- storage
    def _payload(self, positions: torch.Tensor, values: torch.Tensor, head: nn.Module,
                 stage1: dict, stage3: dict | None) -> ArtifactPayload:
        positions, values = positions.cpu(), values.cpu()
        named, counts = {}, []
        start = 0
        for (name, local), numel in zip(self.layout.positions_per_parameter(positions), self.layout.sizes):
            named[name] = (local.numpy(), values[start:start + local.numel()], numel)
            counts.append(local.numel())
            start += local.numel()
        tensors, diff_meta = pack_sparse_tensors(named, self.config.value_dtype, key=DIFF_KEY)
        tensors.update(head_state(head))
        per_layer: dict[str, int] = {}
        for layer, count in zip(self.layout.layers(), counts):
            per_layer[layer] = per_layer.get(layer, 0) + count
        head_tensors = [t for name, t in tensors.items() if name.startswith(HEAD_PREFIX)]
        head_params = sum(t.numel() for t in head_tensors)
        value_bits = torch.finfo(VALUE_DTYPES[self.config.value_dtype]).bits
        stored = tensors[f"{DIFF_KEY}.values"]
        meta = {"variant": self.config.variant, "nonzeros": len(positions), "gated_params": self.layout.numel,
                "density": len(positions) / self.layout.numel, "zero_values": int((stored == 0).sum()),
                "nonzeros_per_layer": per_layer, "l0_stage": stage1, "finetune_stage": stage3,
                "placement": {name: [count, numel] for name, count, numel in
                              zip(self.layout.names, counts, self.layout.sizes)},
                DIFF_KEY: diff_meta}
        lower = (positions_lower_bound_bits(self.layout.numel, len(positions)) + len(positions) * value_bits
                 + sum(t.numel() * t.element_size() * 8 for t in head_tensors))
        return ArtifactPayload(tensors=tensors, meta=meta, new_params=len(positions) + head_params,
                               lower_bound_bits=lower)

    def _stored_diff(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], encoder: nn.Module
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The stored diff per parameter of ``encoder``: (flat positions (k_i,) int64, values (k_i,)), each on
        that parameter's device and in its dtype; parameters without nonzeros are left out."""
        if DIFF_KEY not in meta:
            raise ArtifactError(f"A diff pruning artifact needs {DIFF_KEY!r} in its metadata; found "
                                f"{', '.join(sorted(meta)) or 'none'}. Was it written by another method?")
        sparse = unpack_sparse_tensors(tensors, meta[DIFF_KEY])
        params = dict(encoder.named_parameters())
        sizes = dict(zip(meta[DIFF_KEY]["names"], meta[DIFF_KEY]["numel"]))
        mismatched = sorted(name for name in sparse if name not in params or params[name].numel() != sizes[name])
        if mismatched:
            raise ArtifactError(f"The artifact's diff names {len(mismatched)} tensor(s) this backbone lacks or has "
                                f"in another size, e.g. {mismatched[0]!r}: it was made for another backbone.")
        return {name: (torch.from_numpy(np.ascontiguousarray(local)).to(params[name].device),
                       values.to(params[name].device, params[name].dtype))
                for name, (local, values) in sparse.items() if local.size}

    def _model_from_tensors(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                            task) -> TaskModel:
        """Backbone + the stored diff, materialised as a plain encoder (the one rebuild path)."""
        encoder = self.backbone.fresh_encoder()
        params = dict(encoder.named_parameters())
        with torch.no_grad():
            for name, (index, values) in self._stored_diff(tensors, meta, encoder).items():
                params[name].view(-1).index_add_(0, index, values)
        head = load_head(tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()

    def load(self, artifact, task) -> TaskModel:
        return self._model_from_tensors(artifact.tensors, artifact.meta, task)

    def serving_patch(self, artifact, task) -> ServingPatch:
        """Scatter-add the k stored values into the live encoder's flat weights (``index_add_``, as ``load``
        adds them to its copy); the k overwritten originals are kept and assigned back on revert."""
        diff = self._stored_diff(artifact.tensors, artifact.meta, self.backbone.encoder)
        edit = AddAtPositions({name: index for name, (index, _) in diff.items()},
                              {name: values for name, (_, values) in diff.items()})
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return ServingPatch([edit], head.to(self.device), self.backbone.pooling)


def _stage1_hook(source: nn.Module, steps: int, trace: list[list[float]]):
    """The stage-1 after-step hook of gated diffs: append ``[step, expected density]`` to ``trace`` at step 0
    and at most :data:`TRACE_POINTS` evenly spaced steps."""
    if not isinstance(source, GatedDiff):
        return None
    numel = source.diff_w.numel()
    every = max(1, math.ceil(steps / TRACE_POINTS))
    trace.append([0, round(source.expected_nonzeros() / numel, 6)])

    def after_step(step: int) -> None:
        if step % every == 0 or step == steps:
            trace.append([step, round(source.expected_nonzeros() / numel, 6)])

    return after_step


@register_method
class DiffPruningUnstructuredMethod(DiffPruningMethod):
    """Diff pruning with one gate per weight and no group gates."""

    name = "diff_pruning_unstructured"
    config_class = DiffPruningUnstructuredConfig


@register_method
class DiffPruningNonadaptiveMethod(DiffPruningMethod):
    """The paper's non-adaptive baseline: prune a full finetuning's diff by magnitude, then finetune."""

    name = "diff_pruning_nonadaptive"
    config_class = DiffPruningNonadaptiveConfig
