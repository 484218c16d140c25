"""Last-layer tuning (the top k transformer blocks plus the head) and the linear probe (head only).

``last_layer`` with k=1 is the diff pruning paper's "last layer" baseline; ``linear_probe`` is the k=0
case, registered under its own name. Both freeze everything below the tuned blocks, so they share the
backbone: storage grows as backbone + T x (k blocks + head).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.backbone import transformer_blocks
from methods.base import ArtifactPayload, Method, MethodConfig, Sharing, TrainedTask, register_method
from methods.task_model import TaskModel, head_state, load_head
from methods.training import decay_groups
from stream.errors import ConfigError
from stream.validation import check_int

BLOCK_PREFIX = "block."


@dataclass(frozen=True, kw_only=True)
class LastLayerConfig(MethodConfig):
    """Tune the top ``k`` blocks (k >= 1) and the head.

    One block adapts to the task alone, so it needs a larger rate than full finetuning: on SST-2 (2000
    examples, 2 epochs) the top block reached 63.3 / 78.3 / 80.6 at 2e-5 / 1e-4 / 5e-4
    (bench/results/pooling_probe.md). The fresh head gets 1e-3, the rate the probe found for a head.
    """

    k: int = 1
    learning_rate: float = 5e-4
    head_learning_rate: float | None = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(type(self).__name__, "k", self.k, minimum=1)


@dataclass(frozen=True, kw_only=True)
class LinearProbeConfig(MethodConfig):
    """Head-only training on the frozen backbone; a linear head from scratch needs a large rate.

    SST-2 linear probe, 2 epochs of 2000 examples, mean pooling: 52.5 / 58.2 / 74.2 / 78.8 at
    2e-5 / 1e-4 / 1e-3 / 1e-2, against 79.4 for a tuned logistic regression on the same features
    (bench/results/pooling_probe.md); the stream's budgets are short, so 1e-2.
    """

    learning_rate: float = 1e-2


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
        head = self.new_head(arrival.task, arrival.task_seed)
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

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        for index, block in self._tuned_blocks(encoder).items():
            prefix = f"{BLOCK_PREFIX}{index}."
            own = {k[len(prefix):]: v for k, v in artifact.tensors.items() if k.startswith(prefix)}
            block.load_state_dict(own, strict=True)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()


@register_method
class LinearProbeMethod(LastLayerMethod):
    """Head only (k=0): a linear probe on the frozen backbone's pooled output."""

    name = "linear_probe"
    config_class = LinearProbeConfig

    @property
    def k(self) -> int:
        return 0
