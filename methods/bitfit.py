"""BitFit (Ben Zaken et al. 2021): train only the encoder's bias terms and the head.

Every parameter of the encoder whose name ends in ``bias`` trains (query/key/value/attention-output,
intermediate and output biases, and the LayerNorm biases, as in the paper); every other weight stays
frozen. The bias positions are the same for every task, so the artifact needs no index: it is all bias
vectors concatenated into one dense tensor ``bias.values`` (in the encoder's parameter order, which the
backbone itself provides at load time) plus the head. The sidecar records the bias count and a short
hash of the bias names, so an artifact cannot be applied to a backbone with another layout.

``new_params`` = bias parameters + head parameters; ``lower_bound_bits`` is None (nothing sparse).

Learning rate: the paper uses a large one (up to 1e-3 for BERT-base, over many epochs). On
all-MiniLM-L6-v2 with a short budget (SST-2, 32 steps) 1e-3 under-trains and 1e-2 is no better than 3e-3
(the scores: bench/results/masking_bitfit_lr.md). The default is 3e-3, for head and biases alike.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from methods.configs.bitfit import BitFitConfig
from methods.core.base import Method, TrainedTask
from methods.core.patches import AssignValues, ServingPatch
from methods.core.task_model import TaskModel, head_state, load_head
from methods.core.training import decay_groups
from methods.registry import register_method
from stream.core.errors import ArtifactError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

BIAS_KEY = "bias.values"


def bias_parameters(encoder: nn.Module) -> dict[str, nn.Parameter]:
    """The encoder's bias parameters by name, in ``named_parameters`` order (the storage order)."""
    return {name: p for name, p in encoder.named_parameters() if name.endswith("bias")}


def bias_layout_hash(biases: dict[str, nn.Parameter]) -> str:
    """16 hex digits identifying the bias names and shapes, recorded in and checked against the sidecar."""
    text = "\n".join(f"{name}:{tuple(p.shape)}" for name, p in biases.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@register_method
class BitFitMethod(Method):
    """Train the encoder's biases and a task head; store the biases densely."""

    name = "bitfit"
    config_class = BitFitConfig
    sharing = Sharing.SHARED_BACKBONE

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        encoder = self.backbone.fresh_encoder()
        head = self.task_head(arrival)
        model = TaskModel(encoder, head, self.backbone.pooling)
        biases = bias_parameters(encoder)
        for param in biases.values():
            param.requires_grad_(True)
        groups = (decay_groups(biases.items(), self.config.learning_rate, self.config.weight_decay)
                  + decay_groups(head.named_parameters(), self.head_lr(), self.config.weight_decay))
        result = self.fit(model, groups, arrival, progress=progress)
        values = torch.cat([p.detach().reshape(-1) for p in biases.values()]).to("cpu")
        tensors = {BIAS_KEY: values, **head_state(head)}
        meta = {"bias_count": values.numel(), "bias_tensors": len(biases), "layout": bias_layout_hash(biases)}
        payload = ArtifactPayload(tensors=tensors, meta=meta,
                                  new_params=sum(t.numel() for t in tensors.values()))
        return TrainedTask(model=model, payload=payload, fit=result)

    def _bias_values(self, artifact, encoder: nn.Module) -> dict[str, torch.Tensor]:
        """The stored biases split per bias parameter of ``encoder`` (name -> tensor of its shape)."""
        biases = bias_parameters(encoder)
        values = artifact.tensors.get(BIAS_KEY)
        layout = bias_layout_hash(biases)
        count = sum(p.numel() for p in biases.values())
        if values is None or artifact.meta.get("layout") != layout or values.shape != (count,):
            raise ArtifactError(
                f"BitFit artifact {artifact.record.tensor_path} does not fit this backbone: it holds "
                f"{'no ' + BIAS_KEY if values is None else f'{values.numel()} bias values'} with layout "
                f"{artifact.meta.get('layout')!r}; the backbone has {count} in layout {layout!r}. "
                "Load it with the backbone it was trained on.")
        parts = torch.split(values, [p.numel() for p in biases.values()])
        return {name: part.reshape(p.shape).to(p.device, p.dtype)
                for (name, p), part in zip(biases.items(), parts)}

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        biases = bias_parameters(encoder)
        with torch.no_grad():
            for name, value in self._bias_values(artifact, encoder).items():
                biases[name].copy_(value)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()

    def serving_patch(self, artifact, task) -> ServingPatch:
        """Write the task's biases into the live encoder (the backbone's biases are kept and assigned back)."""
        values = self._bias_values(artifact, self.backbone.encoder)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return ServingPatch([AssignValues(values)], head.to(self.device), self.backbone.pooling)
