"""Full finetuning: every encoder weight and the head train; the artifact is the whole model.

Nothing is shared (``Sharing.STANDALONE``): T tasks cost T full models, the papers' "T x" baseline.
``new_params`` is the encoder's parameter count plus the head's.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.base import Method, TrainedTask, register_method
from methods.core.config import MethodConfig
from methods.core.task_model import TaskModel, head_state, load_head
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

ENCODER_PREFIX = "encoder."


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
