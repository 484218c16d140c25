"""LoRA (Hu et al. 2021) through the ``peft`` library, with per-task heads kept outside peft.

Each targeted linear layer W (d_out x d_in) gains a trainable low-rank update: it computes
``W x + (alpha / rank) * B A dropout(x)`` with A (rank x d_in) and B (d_out x rank); B starts at zero,
so the model starts as the backbone. peft injects the LoRA layers into a private copy of the encoder
(``inject_adapter_in_model``): the encoder stays a plain transformers model, and the task head (1, 2 or 3
outputs across GLUE) lives in :class:`~methods.core.task_model.TaskModel`, outside peft.

Artifact: only the LoRA A/B tensors, as peft's ``get_peft_model_state_dict`` names them, under the
``lora.`` prefix, plus the head; the peft settings needed to rebuild go in the sidecar meta. Loading
injects LoRA with those settings into a fresh copy of the backbone and sets the tensors with
``set_peft_model_state_dict``. Nothing is pickled and nothing reaches the Hub. ``new_params`` counts
every stored tensor element (A, B and head).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

import peft
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from methods.core.backbone import transformer_blocks
from methods.core.base import Method, TrainedTask, register_method
from methods.core.config import MethodConfig
from methods.core.patches import ServingPatch, SwapModules, shared_skeleton
from methods.core.task_model import HEAD_PREFIX, TaskModel, head_state, load_head
from methods.core.training import decay_groups
from stream.core.errors import ArtifactError, ConfigError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload
from stream.core.validation import check_int, check_real

logger = logging.getLogger(__name__)

LORA_PREFIX = "lora."
# Added to the task's seed so the LoRA A draws are not the head's.
_INIT_SEED_OFFSET = 1_000_003


def _target_tuple(value: Any) -> tuple[str, ...] | None:
    """``("query", "value")`` from a list/tuple of names or a ``"query+value"`` string; None if neither."""
    if isinstance(value, str):
        value = value.split("+")
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value)
    return None


@dataclass(frozen=True, kw_only=True)
class LoraConfig(MethodConfig):
    """LoRA of rank ``rank`` on the linear layers named by ``target_modules``.

    Attributes:
        rank: r, the rank of each update B A. The LoRA paper's GLUE setting is 8.
        alpha: the update is scaled by alpha / rank. Like the paper, alpha is set to the first rank
            tried (8) and kept when the rank changes, so a new rank needs no new learning rate.
        lora_dropout: dropout on the LoRA branch's input during training.
        target_modules: names of the encoder's linear layers to adapt: a module path or its last
            components (``query`` matches every block's ``attention.self.query``;
            ``attention.output.dense`` only the attention output projections). In a run's option
            string, join several with ``+`` (``lora:target_modules=query+key+value``). Checked against
            the encoder's module names when the method is built.
        learning_rate: 3e-3, for the stream's short budgets: the paper's 4e-4..5e-4 (with many
            epochs) and 1e-3 left MiniLM near a linear probe after 32 steps on SST-2, while 3e-3 and
            1e-2 scored alike (bench/results/adapters_lora_lr.md).
    """

    rank: int = 8
    alpha: float = 8.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "value")
    learning_rate: float = 3e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_int(owner, "rank", self.rank, minimum=1)
        check_real(owner, "alpha", self.alpha, minimum=0.0, exclusive_minimum=True)
        check_real(owner, "lora_dropout", self.lora_dropout, minimum=0.0, maximum=1.0, exclusive_maximum=True)
        targets = _target_tuple(self.target_modules)
        if not targets or any(not t or t.startswith(".") or t.endswith(".") for t in targets):
            raise ConfigError(f"{owner}.target_modules must be one or more module names, as a list or joined "
                              f"with '+' (for example 'query+value'); got {self.target_modules!r}.")
        if len(set(targets)) != len(targets):
            raise ConfigError(f"{owner}.target_modules must not repeat a name; got {list(targets)}.")
        object.__setattr__(self, "target_modules", targets)  # normalised once; the dataclass stays frozen


def linear_layer_names(encoder: nn.Module) -> list[str]:
    """Names that select the encoder's linear layers: short names (``query``), paths inside a block
    (``attention.output.dense``), then full paths of linear layers outside the blocks."""
    blocks = transformer_blocks(encoder)
    in_blocks = {rel for block in blocks for rel, m in block.named_modules() if isinstance(m, nn.Linear)}
    block_members = {id(m) for block in blocks for m in block.modules()}
    outside = {path for path, m in encoder.named_modules()
               if isinstance(m, nn.Linear) and id(m) not in block_members}
    short = {rel.rsplit(".", 1)[-1] for rel in in_blocks}
    return sorted(short) + sorted(in_blocks - short) + sorted(outside)


def resolve_targets(encoder: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The paths of the encoder's modules that ``targets`` select (in module order), by peft's rule.

    A target selects every module whose path equals it or ends in ``"." + target`` (so
    ``output.dense`` also selects ``attention.output.dense``). Every target must select at least one
    module, and only linear layers; otherwise ConfigError lists the names that would work.
    """
    modules = dict(encoder.named_modules())
    selected: set[str] = set()
    for target in targets:
        hits = [path for path in modules if path == target or path.endswith("." + target)]
        bad = [path for path in hits if not isinstance(modules[path], nn.Linear)]
        if hits and not bad:
            selected.update(hits)
            continue
        names = linear_layer_names(encoder)
        close = difflib.get_close_matches(target, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        problem = (f"selects {bad[0]!r} ({type(modules[bad[0]]).__name__}), which is not a linear layer" if bad
                   else f"matches no module of {type(encoder).__name__}")
        raise ConfigError(f"LoraConfig.target_modules entry {target!r} {problem}. Linear layers of this "
                          f"encoder can be selected by: {', '.join(names)}.{hint}")
    return [path for path in modules if path in selected]


def peft_settings(config: LoraConfig) -> dict[str, Any]:
    """The peft ``LoraConfig`` arguments of a method config: what the sidecar keeps to rebuild the model.

    Behaviour-deciding peft defaults are written out, so a later peft with other defaults rebuilds the
    same model.
    """
    return {"r": config.rank, "lora_alpha": config.alpha, "lora_dropout": config.lora_dropout,
            "target_modules": list(config.target_modules), "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False}


def inject_lora(encoder: nn.Module, settings: dict[str, Any], *, seed: int = 0) -> nn.Module:
    """Inject LoRA layers with peft ``settings`` into ``encoder`` (a private copy) in place.

    Only the LoRA tensors are left trainable. The random init of A is seeded and leaves the global
    RNG untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(peft.LoraConfig(**settings), encoder)
    return encoder


@register_method
class LoraMethod(Method):
    """LoRA on chosen linear layers via peft; the A/B tensors and the head are stored per task."""

    name = "lora"
    config_class = LoraConfig
    sharing = Sharing.SHARED_BACKBONE

    def __init__(self, config, backbone) -> None:
        super().__init__(config, backbone)
        self.targets = resolve_targets(backbone.encoder, config.target_modules)
        logger.info("LoRA rank %d on %d linear layers (%s, ...)", config.rank, len(self.targets), self.targets[0])

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        seed = arrival.task_seed
        settings = peft_settings(self.config)
        encoder = inject_lora(self.backbone.fresh_encoder(), settings, seed=seed + _INIT_SEED_OFFSET)
        adapted = [path for path, m in encoder.named_modules() if isinstance(m, LoraLayer)]
        assert adapted == self.targets, (adapted, self.targets)  # peft matched what resolve_targets promised
        head = self.task_head(arrival)
        model = TaskModel(encoder, head, self.backbone.pooling)
        trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        groups = (decay_groups(trainable, self.config.learning_rate, self.config.weight_decay)
                  + decay_groups(head.named_parameters(), self.head_lr(), self.config.weight_decay))
        result = self.fit(model, groups, arrival, progress=progress)
        state = peft.get_peft_model_state_dict(encoder, save_embedding_layers=False)
        tensors = {LORA_PREFIX + k: v.detach().to("cpu").clone() for k, v in state.items()}
        tensors.update(head_state(head))
        meta = {"peft": settings, "peft_version": peft.__version__, "modules": self.targets}
        payload = ArtifactPayload(tensors=tensors, meta=meta, new_params=sum(t.numel() for t in tensors.values()))
        return TrainedTask(model=model, payload=payload, fit=result)

    def _inject_stored(self, artifact, encoder: nn.Module) -> list[str]:
        """Inject the artifact's LoRA layers into ``encoder`` and set their tensors; return the adapted paths."""
        settings = dict(artifact.meta["peft"])
        modules = resolve_targets(encoder, tuple(settings["target_modules"]))
        if modules != artifact.meta["modules"]:
            raise ArtifactError(f"LoRA artifact {artifact.record.tensor_path} adapted "
                                f"{artifact.meta['modules'][:3]}... but this backbone's matching modules are "
                                f"{modules[:3]}...: it belongs to another backbone.")
        inject_lora(encoder, settings)
        state = {k[len(LORA_PREFIX):]: v for k, v in artifact.tensors.items() if k.startswith(LORA_PREFIX)}
        expected = set(peft.get_peft_model_state_dict(encoder, save_embedding_layers=False))
        if set(state) != expected or any(not k.startswith((LORA_PREFIX, HEAD_PREFIX)) for k in artifact.tensors):
            raise ArtifactError(f"LoRA artifact {artifact.record.tensor_path} does not hold exactly the LoRA "
                                f"tensors its sidecar describes ({len(state)} stored, {len(expected)} expected).")
        try:
            peft.set_peft_model_state_dict(encoder, state)
        except RuntimeError as exc:  # a shape that disagrees with the sidecar's rank
            raise ArtifactError(f"LoRA artifact {artifact.record.tensor_path} does not fit the LoRA layers its "
                                f"sidecar describes: {exc}") from exc
        encoder.requires_grad_(False)
        return modules

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        self._inject_stored(artifact, encoder)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()

    def serving_patch(self, artifact, task) -> ServingPatch:
        """Swap the task's LoRA layers in for the live encoder's target linear layers.

        peft injects them, as in :meth:`load`, into a skeleton sharing the live weights, so each LoRA layer
        wraps a linear layer computing with the live weight and bias; only A and B are the task's own.
        """
        skeleton = shared_skeleton(self.backbone.encoder)
        modules = self._inject_stored(artifact, skeleton)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        swaps = SwapModules({path: skeleton.get_submodule(path) for path in modules})
        return ServingPatch([swaps], head.to(self.device), self.backbone.pooling)
