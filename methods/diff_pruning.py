"""Diff pruning (Guo, Rush & Kim 2021): each task stores a sparse change to every backbone weight.

The task model is ``theta_task = theta_backbone + z * w``: ``w`` is a dense diff (initialised to 0) and
``z`` a hard-concrete gate per weight (:mod:`methods.core.hard_concrete`; stretch (-1.5, 1.5), no temperature,
log-alpha initialised to 5). Every encoder parameter is gated, embeddings included. The task head is
dense and task-owned. Training runs in three stages on one arrival:

1. **L0 stage**: train ``w`` (lr ``learning_rate``, paper 1e-5) and the gates' ``log_alpha`` (lr
   ``alpha_learning_rate``, paper 0.1, constant, Adam epsilon ``alpha_eps``) on the task loss, while the
   gates are closed. By default (``l0_control="schedule"``) a controller closes, after every step, the
   open gates whose learned log-alpha is lowest, so that the fraction of open gates follows a cubic
   schedule down to ``target_density`` (:class:`DensityController` says why it is not a penalty in the
   loss: under Adam no fixed lambda can steer it); ``l0_control="fixed"`` is the paper's penalty
   ``l0_penalty * sum_i P(z_i != 0)`` in the loss, ``P(z != 0) = sigmoid(log_alpha - log(-l/r))``, which in
   a stream's few hundred steps closes almost no gate. Gradients are clipped per role (the diff, the
   gates, the head), as the official code clips them separately.
2. **Projection**: the effective diff under the deterministic gate, ``zbar * w``, keeps its
   ``round(target_density * N)`` largest magnitudes (one global threshold over all N gated weights; ties
   at the threshold go to the lowest flat index) and drops the rest. With the controller, stage 1 ends
   near the target, so the projection only trims; if stage 1 leaves fewer nonzero entries than the
   target, those are stored as they are (never padded with untrained zeros).
3. **Fixed-mask finetuning** of the surviving values (lr ``finetune_learning_rate``, paper 5e-5), which
   the paper calls crucial. Only the k values (a small dense vector) and the head train here.

Budget (``stage_budget``): by default each of stage 1 and stage 3 gets the arrival's whole budget, as the
paper gives each a finetuning-length run, so a diff pruning task trains twice the steps of full
finetuning (the ledger's training seconds show it); ``stage_budget="split"`` divides one budget between
them by ``finetune_fraction``. Each stage runs the shared :func:`methods.core.training.fit` and restores its
best dev-score state; in stage 1 only states after the density schedule reaches the target compete.

Variants (``variant``; also registered under their own names):

- ``structured`` (``diff_pruning``, the default and the paper's best): a second hard-concrete gate per
  weight tensor multiplies every gate of that tensor. With the fixed penalty, ``structured_penalty=
  "additive"`` (default) is the official code's ``sum_i P(z_i != 0) + sum_g P(z_g != 0)`` (each group
  counted once) and ``"product"`` the penalty as the paper writes it, ``sum_g P(z_g != 0) * sum_{i in g}
  P(z_i != 0)``, whose tensor-sized gradient closes every tensor under Adam. The controller closes the
  weights' gates only; group gates follow the task.
- ``unstructured`` (``diff_pruning_unstructured``): one gate per weight only.
- ``nonadaptive`` (``diff_pruning_nonadaptive``): the paper's baseline. Stage 1 is a finished full
  finetuning at full finetuning's own settings (this config's shared options: learning rate, head
  learning rate, weight decay, warm-up, clipping; the same budget, head and seed as ``full``), whose
  difference from the backbone is projected the same way, then fixed-mask finetuned.

Evaluation always uses the deterministic gate, never a sample. The model returned by ``train`` is
rebuilt from the artifact's tensors by the same code as :meth:`DiffPruningMethod.load`, so it predicts
exactly what the stored file predicts (values stored in fp16/bf16 are rounded before that rebuild).

Artifact: the k positions and values packed by :func:`methods.core.codecs.pack_sparse_tensors` (one position
payload and one value tensor for all ~100 weight tensors, each tensor in its cheapest position code),
plus the dense head. ``new_params`` is k + the head's parameters. ``lower_bound_bits`` is
``log2 C(N, k)`` for the positions plus k values at the stored precision plus the head's dense bits. The
metadata records the nonzeros per tensor (in the codec's ``count`` column, named by parameter, and as
``placement``, the ``{name: [changed, total]}`` map :mod:`analysis.placement` reads) and per layer, and what
stage 1 did: its density under the deterministic gate, its open-gate fraction and expected density at the
end, the expected density along the way (``expected_density_trace``, at most ``TRACE_POINTS`` points
``[step, expected density, scheduled density, open fraction]`` from step 0; the last two with the
controller only) and what the projection saw (``projection``: a histogram of log10 |diff|, the exact zeros,
the threshold). :mod:`analysis.diff_stages` turns these into tables and figures (notebooks/02).

Serving: :meth:`DiffPruningMethod.serving_patch` scatter-adds the k stored values into a live shared
encoder's flat weights in place and, on revert, assigns the k overwritten weights back, so a server switches
tasks at the cost of k entries rather than a model copy (:mod:`stream.engine.serving`).

Defaults: learning rates are chosen per task on the dev split (a ``search`` in the method spec; the
committed choices and the study behind them are in bench/results/). How the controller's defaults were
checked, and stage 1's density against the target per task: bench/results/diff_pruning_density.md.

Memory and speed (autograd throughout, no hand-written gradients, no per-parameter loops in the step):
``w`` and ``log_alpha`` are one flat (N,) tensor each; the task weights are built out of place from the
shared backbone tensors with one multi-tensor add (:class:`~methods.core.flat_params.FlatLayout`) and run
through ``torch.func.functional_call``, so the backbone is never copied while training; a gate sample
costs one (N,) allocation and autograd keeps two (N,) tensors for it; the fixed penalty's expected L0 is
built before the encoder runs and checkpointed, so nothing (N,)-sized waits for its backward; the
controller's step is a few elementwise passes over the (N,) gates and a quantile of a strided sample;
the shared loop uses the fused AdamW kernel and releases gradients right after each optimizer step.
Stage 3 trains only the k values. bench/step_cost.py measures step time and peak memory against full finetuning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from methods.configs.diff_pruning import (DiffPruningConfig, DiffPruningNonadaptiveConfig,
                                         DiffPruningUnstructuredConfig)
from methods.core.base import Method, TrainedTask
from methods.core.codecs import VALUE_DTYPES, pack_sparse_tensors, positions_lower_bound_bits, unpack_sparse_tensors
from methods.core.flat_params import FlatLayout, FunctionalEncoder
from methods.core.hard_concrete import HardConcrete
from methods.core.patches import AddAtPositions, ServingPatch
from methods.core.task_model import HEAD_PREFIX, TaskModel, head_state, load_head
from methods.core.training import FitResult, decay_groups, evaluate
from methods.registry import register_method
from stream.core.errors import ArtifactError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

logger = logging.getLogger(__name__)

DIFF_KEY = "diff"  # tensor-name prefix of the packed diff: diff.positions, diff.values
# Training diagnostics kept in the sidecar (they cost its bytes, so they are short): at most TRACE_POINTS
# (step, expected density) pairs of stage 1, and a HISTOGRAM_BINS-bin histogram of |diff| at projection.
TRACE_POINTS = 25
HISTOGRAM_BINS = 40
# What the density controller sets a gate's log-alpha to when it closes it: P(z != 0) = sigmoid(-10) = 4.5e-5,
# so a closed gate is all but never sampled open, yet the task loss can still pull it back (Adam moves a
# log-alpha by at most about its learning rate per step).
CLOSED_LOG_ALPHA = -10.0
# The controller reads the open gates' quantile off a strided sample of about this many gates: deterministic,
# and an exact selection over all N (~22.6M for MiniLM) costs more than a training step.
QUANTILE_SAMPLE = 1_000_000


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
        self.gate = HardConcrete(config.gate_lower, config.gate_upper)
        self.structured = config.variant == "structured"
        self.penalty_form = config.structured_penalty
        self.with_penalty = config.l0_control == "fixed" and config.l0_penalty > 0
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
    def open_fraction(self) -> float:
        """The fraction of the N weights whose evaluation-time gate is open (its group's too, if structured)."""
        open_gates = self.diff_log_alpha > 0
        if self.structured:
            open_gates &= self._layout_expand(self.diff_group_log_alpha > 0)
        return float(open_gates.sum()) / open_gates.numel()

    @torch.no_grad()
    def close_lowest(self, keep_fraction: float) -> None:
        """Close the open weight gates with the lowest log-alpha (set it to ``CLOSED_LOG_ALPHA``) until at
        most ``keep_fraction`` of the N gates are open (``log_alpha > 0``); ties at the threshold close in
        flat-index order. The threshold is read off a strided sample of the gates, so the open fraction
        lands within that sample's quantile error of ``keep_fraction`` (a fraction of a percent of it)."""
        log_alpha = self.diff_log_alpha
        n = log_alpha.numel()
        open_gates = log_alpha > 0
        n_open = int(open_gates.sum())
        excess = n_open - max(1, round(keep_fraction * n))
        if excess <= 0:
            return
        sample = log_alpha[:: max(1, n // QUANTILE_SAMPLE)]
        open_sample = sample[sample > 0]
        if open_sample.numel() == 0:  # every open gate fell between the sample's strides
            threshold = log_alpha[open_gates].max()
        else:
            rank = min(open_sample.numel(), max(1, round(excess / n_open * open_sample.numel())))
            threshold = torch.kthvalue(open_sample, rank).values
        closing = open_gates & (log_alpha < threshold)
        short = excess - int(closing.sum())
        if short > 0:
            tied = torch.nonzero(open_gates & (log_alpha == threshold)).flatten()[:short]
            closing[tied] = True
        log_alpha.masked_fill_(closing, CLOSED_LOG_ALPHA)

    def _layout_expand(self, per_group: torch.Tensor) -> torch.Tensor:
        return per_group.repeat_interleave(self.group_sizes, output_size=self.diff_log_alpha.numel())

    @torch.no_grad()
    def closed_groups(self) -> list[int]:
        """Indices of the tensors whose deterministic group gate is exactly 0 (structured only)."""
        if not self.structured:
            return []
        return torch.nonzero(self.gate.deterministic(self.diff_group_log_alpha) == 0).flatten().tolist()


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
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=magnitude.device)
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


def stage_budget_steps(config: DiffPruningConfig, total: int) -> tuple[int, int]:
    """Stage 1 and stage 3 lengths for a budget of ``total`` steps (see ``DiffPruningConfig.stage_budget``)."""
    if config.stage_budget == "paper":
        return total, total
    return stage_steps(total, config.finetune_fraction)


def scheduled_density(step: int, ramp: int, start: float, target: float) -> float:
    """The cubic density schedule of gradual pruning (Zhu & Gupta 2017): ``start`` at step 0, falling fast
    at first and slowly near the end to ``target`` at step ``ramp``, then ``target``."""
    if step >= ramp:
        return target
    return target + (start - target) * (1.0 - step / ramp) ** 3


class DensityController:
    """Stage 1's pruning: closes gates, lowest learned log-alpha first, so that the open fraction follows a
    schedule.

    Why not the penalty in the loss: Adam divides every gradient by its own running size, so an L0 term
    in the loss either vanishes under Adam's epsilon (the paper's lambda at log-alpha 5: no gate closes in
    a stream's budget) or, once above it, moves every gate without task signal by the full learning rate
    whatever lambda is, which no lambda can steer. Nor does a decoupled L0 step with an adaptive strength
    work: every gate starts at the same log-alpha and the step moves equal gates equally, so they cross
    zero together and the open fraction falls from ~100% to ~0% within a few steps whatever the controller
    does (measured on SST-2 and STS-B: 29 and 155 entries left of the 112,827 the target allows). So the
    controller ranks instead: Adam moves the gates by the task loss alone (the gradient reaches a gate
    through ``z * w``, so the gates of weights whose change helps rise), and after every step the open
    gates with the lowest log-alpha are closed (:meth:`GatedDiff.close_lowest`) until the open fraction
    is at most the cubic schedule of gradual pruning (:func:`scheduled_density`), from 1 to
    ``target_density`` over ``l0_schedule_fraction`` of the stage. Which entries survive is the gates'
    choice, learned from the task, not the diff's magnitude (the non-adaptive baseline's rule). The open
    fraction is measured under the evaluation gates (``log_alpha > 0``, and the tensor's group gate open),
    the density the projection then sees. Group gates of the structured variant are never closed by the
    controller: closed like single weights they take whole tensors (2.6% of the parameters at a time)
    long before the task can hold them; they follow the task loss.

    With ``l0_control="fixed"`` nothing is closed: the paper's penalty ``l0_penalty * sum P(z != 0)`` is in
    the loss (:meth:`penalty`) and the controller only records the trace.
    """

    def __init__(self, source: GatedDiff, config: DiffPruningConfig, steps: int) -> None:
        self.source, self.config = source, config
        self.controlled = config.l0_control == "schedule"
        self.numel = source.diff_w.numel()
        self.ramp = max(1, round(config.l0_schedule_fraction * steps)) if self.controlled else 0
        self.every = max(1, math.ceil(steps / TRACE_POINTS))
        self.steps = steps
        self.trace: list[list[float]] = [self._point(0)]

    def target(self, step: int) -> float:
        return scheduled_density(step, self.ramp, 1.0, self.config.target_density)

    def _point(self, step: int) -> list[float]:
        point = [step, round(self.source.expected_nonzeros() / self.numel, 6)]
        if self.controlled:
            point += [round(self.target(step), 6), round(self.source.open_fraction(), 6)]
        return point

    def penalty(self) -> torch.Tensor:
        """The fixed penalty term of the loss (``l0_control="fixed"``): ``l0_penalty`` times the expected L0."""
        return self.config.l0_penalty * self.source.step_penalty()

    def after_step(self, step: int) -> None:
        if self.controlled:
            self.source.close_lowest(self.target(step))
        if step % self.every == 0 or step == self.steps:
            self.trace.append(self._point(step))


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
        l0_steps, finetune_steps = stage_budget_steps(config, arrival.budget.total_steps(len(arrival.train)))
        label = f"{self.name} {arrival.step}:{arrival.task.name}"
        if config.variant == "nonadaptive":
            effective, head, fit1, stage1 = self._dense_stage(arrival, progress)
        else:
            head = self.task_head(arrival)
            effective, fit1, stage1 = self._l0_stage(arrival, head, l0_steps, label, progress)
        positions, values = self._project(effective, stage1, label)
        sparse = SparseDiff(self.layout.numel, positions, values)
        fit3 = None
        if finetune_steps:
            model = TaskModel(DiffEncoder(self.backbone.encoder, self.layout, sparse), head, self.backbone.pooling)
            groups = decay_groups(head.named_parameters(), self.head_lr(), config.weight_decay, role="head")
            if positions.numel():
                groups.insert(0, {"params": [sparse.diff_values], "lr": config.finetune_learning_rate,
                                  "weight_decay": 0.0, "role": "diff"})
            fit3 = self.fit(model, groups, arrival, progress=progress, desc=f"{label} fixed-mask",
                            steps=finetune_steps)
        payload = self._payload(sparse.positions, sparse.diff_values.detach(), head, stage1,
                                None if fit3 is None else _stage_summary(fit3))
        final = self._model_from_tensors(payload.tensors, payload.meta, arrival.task)
        fit = _combine_fits(fit1, fit3)
        if config.value_dtype != "float32":
            # The stored values are rounded; the dev score reported is the rounded model's.
            _, fit.best_dev_score = evaluate(final, {"dev": arrival.dev}, arrival.task,
                                             batch_size=arrival.budget.eval_batch_size, device=self.device,
                                             by_length=True)
        return TrainedTask(model=final, payload=payload, fit=fit)

    def _l0_stage(self, arrival, head: nn.Module, steps: int, label: str, progress: bool
                  ) -> tuple[torch.Tensor, FitResult, dict[str, Any]]:
        """Stage 1 of the adaptive variants: train the gated diff under the (controlled) L0 penalty.

        Returns the effective diff (N,) under the deterministic gates, the stage's FitResult and summary.
        """
        config = self.config
        source = GatedDiff(self.layout, config)
        model = TaskModel(DiffEncoder(self.backbone.encoder, self.layout, source), head, self.backbone.pooling)
        controller = DensityController(source, config, steps)
        groups = [{"params": [source.diff_w], "lr": config.learning_rate, "weight_decay": 0.0, "role": "diff"},
                  {"params": [source.diff_log_alpha] + ([source.diff_group_log_alpha] if source.structured else []),
                   "lr": config.alpha_learning_rate, "eps": config.alpha_eps, "weight_decay": 0.0, "role": "gate",
                   "schedule": config.alpha_schedule}]
        groups += decay_groups(head.named_parameters(), self.head_lr(), config.weight_decay, role="head")
        fixed_penalty = not controller.controlled and config.l0_penalty > 0
        fit = self.fit(model, groups, arrival, progress=progress, desc=f"{label} L0", steps=steps,
                       extra_loss=controller.penalty if fixed_penalty else None,
                       after_step=controller.after_step, select_from=controller.ramp)
        summary = {**_stage_summary(fit), "expected_density": source.expected_nonzeros() / self.layout.numel,
                   "open_fraction": source.open_fraction(), "expected_density_trace": controller.trace,
                   "control": config.l0_control}
        if source.structured:
            summary["closed_tensors"] = source.closed_groups()
        return effective_diff(source, self.layout), fit, summary

    def _dense_stage(self, arrival, progress: bool) -> tuple[torch.Tensor, nn.Module, FitResult, dict[str, Any]]:
        """Stage 1 of the non-adaptive baseline: a finished full finetuning at full finetuning's own settings
        (this config's learning rates, the same budget, head and seed), written as a diff from the backbone.

        Returns the diff (N,), the finetuned head (stage 3 continues it), the FitResult and the summary.
        """
        model, fit = self.finetune_whole_model(arrival, progress=progress,
                                               desc=f"{self.name} {arrival.step}:{arrival.task.name} dense")
        with torch.no_grad():
            effective = torch.cat([(param.detach().reshape(-1) - base)
                                   for param, base in zip(model.encoder.parameters(), self.layout.flat_bases())])
        return effective, model.head, fit, _stage_summary(fit)

    def _project(self, effective: torch.Tensor, summary: dict[str, Any], label: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2: keep the ``nonzeros`` largest magnitudes of the (N,) diff; if stage 1 left fewer nonzero
        entries, keep just those (never pad with untrained zeros). Records the outcome in ``summary``."""
        nonzero = int(torch.count_nonzero(effective))
        summary["density"] = nonzero / self.layout.numel
        keep = min(self.nonzeros, nonzero)
        if keep < self.nonzeros:
            logger.info("%s: stage 1 left %d nonzero diff entries, fewer than the target's %d; storing those %d.",
                        label, nonzero, self.nonzeros, nonzero)
        positions = top_k_positions(effective, keep)
        summary["projection"] = magnitude_histogram(effective, positions)
        return positions, effective[positions]

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
