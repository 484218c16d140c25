"""Continual-learning baselines that forget: Avalanche strategies keeping one shared model across tasks.

Registered methods, all ``Sharing.EVOLVING`` with one head per task:

- ``sequential``: sequential finetuning (Avalanche's ``Naive``): the shared encoder keeps training on each
  new task; nothing protects earlier tasks.
- ``ewc``: Elastic Weight Consolidation (Avalanche's ``EWC``): a quadratic penalty, weighted by each
  weight's Fisher importance, holds weights near their values after earlier tasks. Default ``online`` mode
  (one decayed importance and one anchor; ``separate`` keeps one pair per earlier task).
- ``lwf``: Learning without Forgetting (Avalanche's ``LwF``): earlier heads' outputs on the new task's data
  are distilled from the model as it was before the task (regression heads by mean squared error).
- ``replay``: experience replay (Avalanche's ``Replay``): each minibatch is joined by one drawn from a buffer of
  ``mem_size`` earlier examples, balanced over earlier tasks by reservoir sampling.

Training runs Avalanche's own strategy classes (:mod:`methods.avalanche_strategies`, imported on the first
``train`` call so that other runs never import Avalanche) on a one-experience stream per arrival, under
taskstream's protocol (AdamW with warm-up and linear decay, clipping, the budget), keeping the state at the
end of the budget as Avalanche does (``model_selection=True`` selects on the dev score instead).
Everything that carries over to the next task comes only from ``previous``, the artifact written after the
previous arrival and read back from disk; nothing is kept in memory and nothing is unpickled.

The artifact after task t holds all the method must keep, and supersedes the earlier ones (S(t) = newest file):

- ``encoder.<name>``: the shared encoder's trained tensors (all of them; with ``tuned_blocks=k`` only the top
  k blocks, the frozen rest being the backbone);
- ``heads.<label>.out.{weight,bias}``: every head so far (task label = arrival index);
- EWC: ``ewc.<experience>.importance.<param>`` and ``ewc.<experience>.anchor.<param>`` for every trained
  parameter (the Fisher importances and the saved values the penalty needs);
- replay: ``replay.<experience>.{input_ids,token_type_ids,lengths,labels,weights}``, the buffered rows as
  token ids plus their reservoir-sampling weights, so the buffer evolves exactly as Avalanche's would.

``new_params`` counts the encoder, head and EWC tensors (parameter-shaped state); replayed rows are data.
"""

from __future__ import annotations

from typing import ClassVar

from methods.configs.continual import ContinualConfig, EWCConfig, LwFConfig, ReplayConfig
from methods.core.base import Method, TrainedTask
from methods.core.config import MethodConfig
from methods.core.evolving import heads_meta, load_encoder, load_task_head
from methods.core.task_model import TaskModel
from methods.registry import register_method
from stream.core.errors import ArtifactError, ConfigError
from stream.core.ledger import Sharing

class ContinualMethod(Method):
    """Base of the Avalanche-strategy methods: one evolving encoder plus one head per task."""

    sharing = Sharing.EVOLVING
    config_class: ClassVar[type[MethodConfig]] = ContinualConfig
    #: the Avalanche strategy class this method runs (documentation and the artifact's metadata).
    strategy: ClassVar[str]

    def __init__(self, config, backbone) -> None:
        super().__init__(config, backbone)
        if config.tuned_blocks is not None and config.tuned_blocks > backbone.num_blocks:
            raise ConfigError(f"{type(config).__name__}.tuned_blocks must be <= {backbone.num_blocks} (the "
                              f"backbone's blocks); got {config.tuned_blocks}.")

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        from methods.avalanche_strategies import train_arrival

        return train_arrival(self, arrival, previous, progress=progress)

    def load(self, artifact, task) -> TaskModel:
        record = next((h for h in heads_meta(artifact) if h["task"] == task.name), None)
        if record is None:
            raise ArtifactError(f"The {self.name} artifact {artifact.record.tensor_path.name} has no head for task "
                                f"{task.name!r}; it has heads for {[h['task'] for h in heads_meta(artifact)]}.")
        encoder = load_encoder(self.backbone, artifact.tensors, self.config.tuned_blocks)
        head = load_task_head(artifact.tensors, record, self.backbone.hidden_size, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()


@register_method
class SequentialMethod(ContinualMethod):
    """Sequential finetuning of one shared encoder (Avalanche's Naive), one head per task."""

    name = "sequential"
    strategy = "Naive"


@register_method
class EWCMethod(ContinualMethod):
    """Elastic Weight Consolidation (Avalanche's EWC) on one shared encoder, one head per task."""

    name = "ewc"
    config_class = EWCConfig
    strategy = "EWC"


@register_method
class LwFMethod(ContinualMethod):
    """Learning without Forgetting (Avalanche's LwF) on one shared encoder, one head per task."""

    name = "lwf"
    config_class = LwFConfig
    strategy = "LwF"


@register_method
class ReplayMethod(ContinualMethod):
    """Experience replay (Avalanche's Replay) on one shared encoder, one head per task."""

    name = "replay"
    config_class = ReplayConfig
    strategy = "Replay"
