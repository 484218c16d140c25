"""Last-layer tuning (the top k transformer blocks plus the head) and the linear probe (head only).

``last_layer`` with k=1 is the diff pruning paper's "last layer" baseline; ``linear_probe`` is the k=0
case, registered under its own name. Both freeze everything below the tuned blocks, so they share the
backbone: storage grows as backbone + T x (k blocks + head).
"""

from __future__ import annotations

import torch

from methods.configs.last_layer import LastLayerConfig, LinearProbeConfig
from methods.core.backbone import transformer_blocks
from methods.core.base import Method, TrainedTask
from methods.core.patches import AssignValues, ServingPatch, parameter_names
from methods.core.task_model import HEAD_PREFIX, TaskModel, head_state, load_head
from methods.core.training import decay_groups
from methods.registry import register_method
from stream.core.errors import ArtifactError, ConfigError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

BLOCK_PREFIX = "block."


@register_method
class LastLayerMethod(Method):
    """Train the top ``k`` transformer blocks and a task head; store those blocks and the head."""

    name = "last_layer"
    config_class = LastLayerConfig
    sharing = Sharing.SHARED_BACKBONE

    def __init__(self, config, backbone) -> None:
        super().__init__(config, backbone)
        if self.k > backbone.num_blocks:
            raise ConfigError(f"LastLayerConfig.k must be <= {backbone.num_blocks} (the backbone's blocks); "
                              f"got {self.k}.")

    @property
    def k(self) -> int:
        return self.config.k

    def _tuned_blocks(self, encoder) -> dict[int, object]:
        blocks = transformer_blocks(encoder)
        return {i: blocks[i] for i in range(len(blocks) - self.k, len(blocks))}

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        encoder = self.backbone.fresh_encoder()
        head = self.task_head(arrival)
        model = TaskModel(encoder, head, self.backbone.pooling)
        groups = decay_groups(head.named_parameters(), self.head_lr(), self.config.weight_decay)
        tensors = {}
        for index, block in self._tuned_blocks(encoder).items():
            block.requires_grad_(True)
            groups += decay_groups(block.named_parameters(), self.config.learning_rate, self.config.weight_decay)
        result = self.fit(model, groups, arrival, progress=progress)
        for index, block in self._tuned_blocks(encoder).items():
            for name, param in block.named_parameters():
                tensors[f"{BLOCK_PREFIX}{index}.{name}"] = param.detach().to("cpu").clone()
        tensors.update(head_state(head))
        payload = ArtifactPayload(tensors=tensors, meta={"blocks": sorted(self._tuned_blocks(encoder))},
                                  new_params=sum(t.numel() for t in tensors.values()))
        return TrainedTask(model=model, payload=payload, fit=result)

    def _block_values(self, artifact, encoder) -> dict[str, torch.Tensor]:
        """The artifact's tuned-block tensors under ``encoder``'s parameter names, checked against its blocks."""
        names = parameter_names(encoder)
        values, expected = {}, set()
        for index, block in self._tuned_blocks(encoder).items():
            for name, param in block.named_parameters():
                stored = artifact.tensors.get(f"{BLOCK_PREFIX}{index}.{name}")
                expected.add(f"{BLOCK_PREFIX}{index}.{name}")
                if stored is None or stored.shape != param.shape:
                    found = "missing" if stored is None else f"of shape {tuple(stored.shape)}"
                    raise ArtifactError(f"{self.name} artifact {artifact.record.tensor_path} has block tensor "
                                        f"{BLOCK_PREFIX}{index}.{name} {found}; this backbone's is "
                                        f"{tuple(param.shape)}. Was it written with another k or backbone?")
                values[names[id(param)]] = stored.to(param.device, param.dtype)
        extra = sorted(k for k in artifact.tensors if not k.startswith(HEAD_PREFIX) and k not in expected)
        if extra:
            raise ArtifactError(f"{self.name} artifact {artifact.record.tensor_path} holds tensors of blocks this "
                                f"method does not tune (k={self.k}), e.g. {extra[0]!r}.")
        return values

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        params = dict(encoder.named_parameters())
        with torch.no_grad():
            for name, value in self._block_values(artifact, encoder).items():
                params[name].copy_(value)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()

    def serving_patch(self, artifact, task) -> ServingPatch:
        """Write the task's blocks into the live encoder's top blocks (kept and assigned back on revert)."""
        values = self._block_values(artifact, self.backbone.encoder)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return ServingPatch([AssignValues(values)] if values else [], head.to(self.device), self.backbone.pooling)


@register_method
class LinearProbeMethod(LastLayerMethod):
    """Head only (k=0): a linear probe on the frozen backbone's pooled output."""

    name = "linear_probe"
    config_class = LinearProbeConfig

    @property
    def k(self) -> int:
        return 0
