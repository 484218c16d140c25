"""Masking (Zhao et al. 2020): learn one binary mask per task over frozen pretrained weights.

Every covered weight matrix ``W`` gets a real-valued score per weight; the forward pass uses
``W * 1[score > threshold]`` and the straight-through estimator passes the gradient with respect to the
binary mask on to the scores unchanged (``dL/dscore = dL/dmask = W * dL/dW_masked``). Scores train with
Adam (no weight decay: decay would pull every score below the threshold and mask its weight out).

What is covered
    The query, key, value, attention-output, intermediate and output weight matrices (``targets``) of
    blocks ``first_block`` .. top, and the pooler's dense weight when the backbone keeps a pooler
    (``pooling="pooler"``; the default mean pooling drops it). The paper masks BERT-base blocks 2-11 of 12
    and the pooler, leaving the bottom sixth of the stack, whose low-level features are the least
    task-specific, unmasked. ``first_block=None`` keeps that
    proportion, ``num_blocks // 6``: 2 for a 12-block BERT (the paper's choice), 1 for the 6-block
    all-MiniLM-L6-v2. On MiniLM, masking every block (first_block=0) was no better within seed noise and
    costs more bytes, so the paper's proportion stays (bench/results/masking_bitfit_lr.md).

Initialisation
    Scores are drawn uniformly from ``[threshold - s * w, threshold + (1 - s) * w]`` (``s`` =
    ``initial_sparsity``, ``w`` = ``init_width``), conditioned so that exactly ``round(s * numel)`` scores of
    every covered matrix lie at or below the threshold: that many weights start masked out, at a random
    set of positions. With the defaults (0.05, 0.01, 0.2) the interval is [0, 0.2]. Adam moves a score by
    about ``learning_rate`` per step, so ``init_width / learning_rate`` (200 steps by default) is the
    number of steps a score at the top of the range needs to reach the threshold; only that ratio
    matters, which is why the width is fixed and the learning rate tuned. The paper's 1e-3 was also
    best of 1e-4 / 1e-3 / 1e-2 on MiniLM (SST-2, 32 steps; bench/results/masking_bitfit_lr.md); at 1e-3
    training flips as many bits to masked-out as back, so the masked-out fraction stays near its start and
    so does the entropy-coded file's size.

The head
    By default a dense head trains beside the scores (``head_learning_rate``, weight decay as usual).
    ``train_head=False`` is the paper's alternative: the head keeps its random initialisation (regenerated
    at load time from the seed stored in the sidecar) and its weight matrix is masked like the others; its
    bias stays at its start (zero, or the mean training label for regression; stored in the sidecar). A
    frozen random head cannot rescale outputs, so it is a poor fit for regression
    (STS-B); a warning says so.

Artifact
    The masks packed with :func:`methods.core.codecs.pack_masks` into ``mask.positions`` (the default,
    ``entropy_coded=True``: the positions of each mask's minority symbol, each mask in its cheapest
    position code, near ``numel * H2(density)`` bits) or, with ``entropy_coded=False``, ``mask.bits`` (the
    paper's 1 bit per covered weight), plus ``head.*`` for a trained head. Entropy coding is the default
    because at the 5% masked-out fraction training keeps, the bound is H2(0.05) = 0.29 bits per weight, so
    1 bit per weight is about 3.5x it, while the coded file stays close to it (the measured ratios of
    trained artifacts: bench/results/artifact_bounds.md); the
    minority-position code falls back to a bitmap for a dense mask, so it is never larger than the bits
    (beyond a few bytes of metadata), and decoding is vectorised.
    ``lower_bound_bits`` is ``sum(log2 C(numel, ones))`` over the masks plus 32 bits per trained-head
    parameter. ``new_params`` convention: one mask bit is 1/32 of an fp32 parameter, so
    ``new_params = ceil(covered weights / 32) + trained-head parameters``.

The trained model in memory and the model rebuilt from the file both apply the binary masks with
:func:`apply_masks` to a private copy of the backbone, so they predict bit for bit the same.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from methods.configs.masking import TARGET_PATHS, MaskingConfig
from methods.core.backbone import transformer_blocks
from methods.core.base import Method, TrainedTask
from methods.core.codecs import mask_lower_bound_bits, pack_masks, unpack_masks
from methods.core.patches import ServingPatch, ZeroAtPositions, parameter_names
from methods.core.task_model import TaskHead, TaskModel, head_state, load_head
from methods.core.training import decay_groups
from methods.registry import register_method
from stream.core.errors import ArtifactError, ConfigError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

logger = logging.getLogger(__name__)

MASK_KEY = "mask"
POOLER_MASK = "pooler.dense"
HEAD_MASK = "head.out"
HEAD_TRAINED, HEAD_FROZEN = "trained", "frozen_random"


def binarize(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The binary mask of ``scores``: True (keep) where the score is above ``threshold``.

    The threshold is cast to the scores' dtype first, so initialisation, training and export agree on
    which side of it every stored score falls.
    """
    return scores > torch.tensor(threshold, dtype=scores.dtype)


def init_scores(shape: torch.Size | tuple[int, ...], *, threshold: float, sparsity: float, width: float,
                generator: torch.Generator) -> torch.Tensor:
    """fp32 scores of ``shape``, uniform on the init interval, exactly ``round(sparsity * numel)`` masked out.

    A random permutation picks which weights start masked out; those draw uniformly from
    ``(threshold - sparsity * width, threshold]`` and the rest from ``(threshold, threshold + (1 -
    sparsity) * width]``, so the whole is uniform on the interval given the exact count. Values are
    computed in float64 and clamped after the cast to fp32 so that rounding cannot move one across.
    """
    numel = math.prod(shape)
    masked = round(sparsity * numel)
    order = torch.randperm(numel, generator=generator)
    draws = torch.rand(numel, generator=generator, dtype=torch.float64)  # [0, 1)
    tau = torch.tensor(threshold, dtype=torch.float32)
    low = (threshold - sparsity * width * draws[:masked]).float().clamp(max=tau)
    above = torch.nextafter(tau, torch.tensor(math.inf))
    high = (threshold + (1.0 - sparsity) * width * (1.0 - draws[masked:])).float().clamp(min=above)
    scores = torch.empty(numel, dtype=torch.float32)
    scores[order[:masked]] = low
    scores[order[masked:]] = high
    assert int((~binarize(scores, threshold)).sum()) == masked
    return scores.reshape(shape)


class _StraightThroughStep(torch.autograd.Function):
    """``1[score > threshold]`` forward; the incoming gradient passes to the scores unchanged."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        return binarize(scores, threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class ScoreMask(nn.Module):
    """A parametrization of a weight ``W`` (out, in): ``W * 1[mask_scores > threshold]``."""

    def __init__(self, scores: torch.Tensor, threshold: float) -> None:
        super().__init__()
        self.mask_scores = nn.Parameter(scores)
        self.threshold = threshold

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _StraightThroughStep.apply(self.mask_scores, self.threshold).to(weight.dtype)

    def mask(self) -> torch.Tensor:
        """The current binary mask (bool, CPU), as it is stored."""
        return binarize(self.mask_scores.detach(), self.threshold).cpu()


@torch.no_grad()
def apply_masks(modules: dict[str, nn.Linear], masks: dict[str, torch.Tensor]) -> None:
    """Multiply every module's weight in place by its binary mask (one vectorised op per matrix)."""
    for name, module in modules.items():
        module.weight.mul_(masks[name].to(device=module.weight.device, dtype=module.weight.dtype))


@register_method
class MaskingMethod(Method):
    """Learn a binary mask over frozen weights of the upper blocks; store the masks (and the head)."""

    name = "masking"
    config_class = MaskingConfig
    sharing = Sharing.SHARED_BACKBONE

    def __init__(self, config, backbone) -> None:
        super().__init__(config, backbone)
        num_blocks = backbone.num_blocks
        first = num_blocks // 6 if config.first_block is None else config.first_block
        if first >= num_blocks:
            raise ConfigError(f"MaskingConfig.first_block must be < {num_blocks} (the backbone's blocks); "
                              f"got {first}.")
        self.blocks = tuple(range(first, num_blocks))
        self.paths = self._resolve_paths(transformer_blocks(backbone.encoder)[first])

    def _resolve_paths(self, block: nn.Module) -> dict[str, str]:
        """Target name -> module path inside a block, for this backbone's layout."""
        modules = dict(block.named_modules())
        paths = {}
        for target in self.config.targets:
            found = [p for p in TARGET_PATHS[target] if isinstance(modules.get(p), nn.Linear)]
            if not found:
                linears = sorted(n for n, m in modules.items() if isinstance(m, nn.Linear))
                raise ConfigError(f"MaskingConfig.targets: cannot find the {target!r} matrix of a "
                                  f"{type(block).__name__} (looked for {', '.join(TARGET_PATHS[target])}; "
                                  f"its linear layers are {', '.join(linears)}). Use a BERT-like backbone.")
            paths[target] = found[0]
        return paths

    def masked_modules(self, encoder: nn.Module, head: TaskHead) -> dict[str, nn.Linear]:
        """Mask name -> the linear layer it covers, in a fixed order: ``block.<i>.<path>``, the pooler, the head."""
        blocks = transformer_blocks(encoder)
        modules = {f"block.{i}.{path}": blocks[i].get_submodule(path)
                   for i in self.blocks for path in self.paths.values()}
        pooler = getattr(encoder, "pooler", None)
        if isinstance(getattr(pooler, "dense", None), nn.Linear):
            modules[POOLER_MASK] = pooler.dense
        if not self.config.train_head:
            modules[HEAD_MASK] = head.out
        return modules

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        config = self.config
        seed = arrival.task_seed
        if not config.train_head and arrival.task.is_regression:
            logger.warning("masking with train_head=False on regression task %r: a frozen random head cannot "
                           "rescale its output to the label range; expect a poor score.", arrival.task.name)
        encoder = self.backbone.fresh_encoder()
        head = self.task_head(arrival)
        head.requires_grad_(config.train_head)
        model = TaskModel(encoder, head, self.backbone.pooling)
        modules = self.masked_modules(encoder, head)
        # Backbone parameter name of each covered matrix, for the placement record (the head is not one).
        names = {id(param): name for name, param in encoder.named_parameters()}
        weight_names = {mask: names[id(module.weight)] for mask, module in modules.items() if mask != HEAD_MASK}
        generator = torch.Generator().manual_seed(seed)
        parametrizations = {}
        for name, module in modules.items():
            scores = init_scores(module.weight.shape, threshold=config.threshold,
                                 sparsity=config.initial_sparsity, width=config.init_width, generator=generator)
            parametrizations[name] = ScoreMask(scores.to(module.weight.device), config.threshold)
            parametrize.register_parametrization(module, "weight", parametrizations[name])
        groups = [{"params": [p.mask_scores for p in parametrizations.values()], "lr": config.learning_rate,
                   "weight_decay": 0.0}]
        if config.train_head:
            groups += decay_groups(head.named_parameters(), self.head_lr(), config.weight_decay)
        initial = {name: p.mask() for name, p in parametrizations.items()}
        result = self.fit(model, groups, arrival, progress=progress)
        masks = {name: p.mask() for name, p in parametrizations.items()}
        flipped = sum(int((masks[name] != initial[name]).sum()) for name in masks)
        for module in modules.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        apply_masks(modules, masks)
        payload = self._payload(masks, head, seed, flipped, weight_names)
        logger.info("masking %s: %.2f%% of %d covered weights masked out, %.3f%% flipped by training",
                    arrival.task.name, 100 * payload.meta["masked_out_fraction"], payload.meta["covered_weights"],
                    100 * payload.meta["flipped_fraction"])
        return TrainedTask(model=model.eval(), payload=payload, fit=result)

    def _payload(self, masks: dict[str, torch.Tensor], head: TaskHead, seed: int, flipped: int,
                 weight_names: dict[str, str]) -> ArtifactPayload:
        tensors, masks_meta = pack_masks(masks, entropy_coded=self.config.entropy_coded, key=MASK_KEY)
        covered = sum(m.numel() for m in masks.values())
        kept = sum(int(m.sum()) for m in masks.values())
        bound = sum(mask_lower_bound_bits(m.numel(), int(m.sum())) for m in masks.values())
        new_params = math.ceil(covered / 32)
        if self.config.train_head:
            head_tensors = head_state(head)
            tensors.update(head_tensors)
            bound += sum(8 * t.numel() * t.element_size() for t in head_tensors.values())
            new_params += sum(t.numel() for t in head_tensors.values())
        meta = {"masks": masks_meta, "blocks": list(self.blocks), "targets": list(self.config.targets),
                "threshold": self.config.threshold,
                "head": HEAD_TRAINED if self.config.train_head else HEAD_FROZEN,
                "head_seed": None if self.config.train_head else seed,
                # A frozen head is regenerated from its seed at load time; its bias (a regression head starts
                # at the mean label) is stored beside the seed.
                "head_bias": None if self.config.train_head else head.out.bias.detach().cpu().tolist(),
                "covered_weights": covered, "masked_out_fraction": 1.0 - kept / covered,
                "flipped_fraction": flipped / covered,
                # analysis.placement's contract: backbone tensor -> [entries masked out, entries].
                "placement": {weight_names[name]: [m.numel() - int(m.sum()), m.numel()]
                              for name, m in masks.items() if name in weight_names}}
        return ArtifactPayload(tensors=tensors, meta=meta, new_params=new_params, lower_bound_bits=bound)

    def _stored(self, artifact, task, encoder: nn.Module
                ) -> tuple[TaskHead, dict[str, nn.Linear], dict[str, torch.Tensor]]:
        """The task's head, the covered modules of ``encoder`` and that head, and their stored masks (checked)."""
        meta = artifact.meta
        expected = HEAD_TRAINED if self.config.train_head else HEAD_FROZEN
        if meta.get("head") != expected:
            raise ArtifactError(f"masking artifact {artifact.record.tensor_path} has a {meta.get('head')!r} head "
                                f"but this method is configured for a {expected!r} one (train_head).")
        masks = unpack_masks(artifact.tensors, meta["masks"])
        if self.config.train_head:
            head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs,
                             self.config.head_dropout).to(self.device)
        else:
            head = self.new_head(task, int(meta["head_seed"])).requires_grad_(False)
            if meta.get("head_bias") is not None:
                with torch.no_grad():
                    head.out.bias.copy_(torch.tensor(meta["head_bias"], dtype=head.out.bias.dtype))
        modules = self.masked_modules(encoder, head)
        if list(masks) != list(modules):
            raise ArtifactError(f"masking artifact {artifact.record.tensor_path} masks {len(masks)} matrices "
                                f"({next(iter(masks), 'none')}, ...) but this config covers {len(modules)} "
                                f"({next(iter(modules))}, ...): it was written with other blocks or targets.")
        for name, module in modules.items():
            if masks[name].shape != module.weight.shape:
                raise ArtifactError(f"masking artifact: mask {name!r} has shape {tuple(masks[name].shape)}, "
                                    f"the backbone's weight {tuple(module.weight.shape)}.")
        return head, modules, masks

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        head, modules, masks = self._stored(artifact, task, encoder)
        apply_masks(modules, masks)
        return TaskModel(encoder, head, self.backbone.pooling).eval()

    def serving_patch(self, artifact, task) -> ServingPatch:
        """Multiply the live encoder's masked-out weights by zero; the k originals are kept and assigned back.

        Only the masked-out positions change (``w * 1 == w`` exactly), so the patch holds their flat
        positions (about 5% of the covered weights) rather than the dense masks. A masked random head is
        the task's own and is masked once, here.
        """
        encoder = self.backbone.encoder
        head, modules, masks = self._stored(artifact, task, encoder)
        if HEAD_MASK in modules:
            apply_masks({HEAD_MASK: modules.pop(HEAD_MASK)}, masks)
        names = parameter_names(encoder)
        positions = {names[id(module.weight)]: torch.nonzero(~masks[name].reshape(-1)).reshape(-1).to(self.device)
                     for name, module in modules.items()}
        return ServingPatch([ZeroAtPositions(positions)], head, self.backbone.pooling)
