"""Full finetuning: every encoder weight and the head train; the artifact is the whole model.

Nothing is shared (``Sharing.STANDALONE``): T tasks cost T full models, the papers' "T x" baseline.
``new_params`` is the encoder's parameter count plus the head's.
"""

from __future__ import annotations

from methods.configs.full import FullConfig
from methods.core.base import Method, TrainedTask
from methods.core.task_model import TaskModel, head_state, load_head
from methods.registry import register_method
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

ENCODER_PREFIX = "encoder."


@register_method
class FullMethod(Method):
    """Finetune the whole encoder and a task head."""

    name = "full"
    config_class = FullConfig
    sharing = Sharing.STANDALONE

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        model, result = self.finetune_whole_model(arrival, progress=progress)
        tensors = {ENCODER_PREFIX + name: p.detach().to("cpu").clone() for name, p in model.encoder.named_parameters()}
        tensors.update(head_state(model.head))
        new_params = sum(t.numel() for t in tensors.values())
        return TrainedTask(model=model, payload=ArtifactPayload(tensors=tensors, new_params=new_params), fit=result)

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        own = {k[len(ENCODER_PREFIX):]: v for k, v in artifact.tensors.items() if k.startswith(ENCODER_PREFIX)}
        missing = {name for name, _ in encoder.named_parameters()} - set(own)
        if missing:
            raise ValueError(f"full-finetuning artifact lacks {len(missing)} encoder tensors, e.g. {sorted(missing)[0]}")
        encoder.load_state_dict(own, strict=False)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()
