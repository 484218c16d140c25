"""The generic part of any method that wraps a ``peft`` tuner (LoRA, (IA)3, ...), so such a method is a short
module: its config, the peft settings it maps to, and its tensors' name prefix.

peft injects the tuner's layers into a private copy of the encoder (``inject_adapter_in_model``): the encoder
stays a plain transformers model, and the task head (1, 2 or 3 outputs across GLUE) lives in
:class:`~methods.core.task_model.TaskModel`, outside peft.

Artifact: only the tuner's tensors, as peft's ``get_peft_model_state_dict`` names them, under the method's
prefix (``lora.``, ``ia3.``), plus the head; the peft settings needed to rebuild go in the sidecar meta, with
behaviour-deciding peft defaults written out so a later peft with other defaults rebuilds the same model.
Loading injects the tuner with those settings into a fresh copy of the backbone and sets the tensors with
``set_peft_model_state_dict``. Nothing is pickled and nothing reaches the Hub. ``new_params`` counts every
stored tensor element (tuner tensors and head).

A new peft tuner subclasses :class:`~methods.core.config.PeftTunerConfig` and :class:`PeftTuner`, sets
``peft_config_class``, ``layer_class`` and ``tensor_prefix``, and writes :meth:`PeftTuner.peft_settings`.
"""

from __future__ import annotations

import abc
import difflib
import logging
from typing import Any, ClassVar

import peft
import torch
from torch import nn

from methods.core.backbone import transformer_blocks
from methods.core.base import Method, TrainedTask
from methods.core.config import PeftTunerConfig
from methods.core.patches import ServingPatch, SwapModules, shared_skeleton
from methods.core.task_model import HEAD_PREFIX, TaskModel, head_state, load_head
from methods.core.training import decay_groups
from stream.core.errors import ArtifactError, ConfigError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

logger = logging.getLogger(__name__)

# Added to the task's seed so a tuner's random init (LoRA's A) does not draw the head's numbers.
_INIT_SEED_OFFSET = 1_000_003


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


def resolve_targets(encoder: nn.Module, targets: tuple[str, ...], *, field: str = "target_modules") -> list[str]:
    """The paths of the encoder's modules that ``targets`` select (in module order), by peft's rule.

    A target selects every module whose path equals it or ends in ``"." + target`` (so
    ``output.dense`` also selects ``attention.output.dense``). Every target must select at least one
    module, and only linear layers; otherwise ConfigError, naming ``field``, lists the names that would work.
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
        raise ConfigError(f"{field} entry {target!r} {problem}. Linear layers of this "
                          f"encoder can be selected by: {', '.join(names)}.{hint}")
    return [path for path in modules if path in selected]


def inject_tuner(encoder: nn.Module, peft_config: peft.PeftConfig, *, seed: int = 0) -> nn.Module:
    """Inject the tuner layers ``peft_config`` describes into ``encoder`` (a private copy) in place.

    Only the tuner's tensors are left trainable. A random init is seeded and leaves the global RNG untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(peft_config, encoder)
    return encoder


class PeftTuner(Method):
    """A method that trains a peft tuner on a private encoder copy and a task head; stores both per task."""

    sharing = Sharing.SHARED_BACKBONE
    config: PeftTunerConfig
    #: the peft config class the settings build (``peft.LoraConfig``, ``peft.IA3Config``)
    peft_config_class: ClassVar[type]
    #: the peft layer class every adapted module becomes (checks that peft matched the resolved targets)
    layer_class: ClassVar[type]
    #: the artifact's tensor-name prefix for the tuner's tensors (``"lora."``)
    tensor_prefix: ClassVar[str]
    #: a label for messages (``"LoRA"``)
    display_name: ClassVar[str]
    #: False for tuners whose tensors start at 1 (multiplicative scalings): decay would pull them to 0
    decay_tuner_weights: ClassVar[bool] = True

    @classmethod
    @abc.abstractmethod
    def peft_settings(cls, config: PeftTunerConfig) -> dict[str, Any]:
        """The ``peft_config_class`` arguments of a method config, with behaviour-deciding peft defaults
        written out: what the sidecar keeps to rebuild the model."""

    def __init__(self, config, backbone) -> None:
        super().__init__(config, backbone)
        self.targets = resolve_targets(backbone.encoder, config.target_modules,
                                       field=f"{type(config).__name__}.target_modules")
        logger.info("%s on %d linear layers (%s, ...)", self.display_name, len(self.targets), self.targets[0])

    @classmethod
    def inject(cls, encoder: nn.Module, settings: dict[str, Any], *, seed: int = 0) -> nn.Module:
        """Inject this tuner with peft ``settings`` into ``encoder`` in place (see :func:`inject_tuner`)."""
        return inject_tuner(encoder, cls.peft_config_class(**settings), seed=seed)

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        seed = arrival.task_seed
        settings = self.peft_settings(self.config)
        encoder = self.inject(self.backbone.fresh_encoder(), settings, seed=seed + _INIT_SEED_OFFSET)
        adapted = [path for path, m in encoder.named_modules() if isinstance(m, self.layer_class)]
        assert adapted == self.targets, (adapted, self.targets)  # peft matched what resolve_targets promised
        head = self.task_head(arrival)
        model = TaskModel(encoder, head, self.backbone.pooling)
        trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        tuner_decay = self.config.weight_decay if self.decay_tuner_weights else 0.0
        groups = (decay_groups(trainable, self.config.learning_rate, tuner_decay)
                  + decay_groups(head.named_parameters(), self.head_lr(), self.config.weight_decay))
        result = self.fit(model, groups, arrival, progress=progress)
        state = peft.get_peft_model_state_dict(encoder, save_embedding_layers=False)
        tensors = {self.tensor_prefix + k: v.detach().to("cpu").clone() for k, v in state.items()}
        tensors.update(head_state(head))
        meta = {"peft": settings, "peft_version": peft.__version__, "modules": self.targets}
        payload = ArtifactPayload(tensors=tensors, meta=meta, new_params=sum(t.numel() for t in tensors.values()))
        return TrainedTask(model=model, payload=payload, fit=result)

    def _inject_stored(self, artifact, encoder: nn.Module) -> list[str]:
        """Inject the artifact's tuner layers into ``encoder`` and set their tensors; return the adapted paths."""
        settings = dict(artifact.meta["peft"])
        where = f"{self.display_name} artifact {artifact.record.tensor_path}"
        modules = resolve_targets(encoder, tuple(settings["target_modules"]),
                                  field=f"{type(self.config).__name__}.target_modules")
        if modules != artifact.meta["modules"]:
            raise ArtifactError(f"{where} adapted {artifact.meta['modules'][:3]}... but this backbone's "
                                f"matching modules are {modules[:3]}...: it belongs to another backbone.")
        self.inject(encoder, settings)
        prefix = self.tensor_prefix
        state = {k[len(prefix):]: v for k, v in artifact.tensors.items() if k.startswith(prefix)}
        expected = set(peft.get_peft_model_state_dict(encoder, save_embedding_layers=False))
        if set(state) != expected or any(not k.startswith((prefix, HEAD_PREFIX)) for k in artifact.tensors):
            raise ArtifactError(f"{where} does not hold exactly the {self.display_name} tensors its sidecar "
                                f"describes ({len(state)} stored, {len(expected)} expected).")
        try:
            peft.set_peft_model_state_dict(encoder, state)
        except RuntimeError as exc:  # a shape that disagrees with the sidecar's settings
            raise ArtifactError(f"{where} does not fit the {self.display_name} layers its sidecar "
                                f"describes: {exc}") from exc
        encoder.requires_grad_(False)
        return modules

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        self._inject_stored(artifact, encoder)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()

    def serving_patch(self, artifact, task) -> ServingPatch:
        """Swap the task's tuner layers in for the live encoder's target linear layers.

        peft injects them, as in :meth:`load`, into a skeleton sharing the live weights, so each tuner layer
        wraps a linear layer computing with the live weight and bias; only the tuner's tensors are the task's.
        """
        skeleton = shared_skeleton(self.backbone.encoder)
        modules = self._inject_stored(artifact, skeleton)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        swaps = SwapModules({path: skeleton.get_submodule(path) for path in modules})
        return ServingPatch([swaps], head.to(self.device), self.backbone.pooling)
