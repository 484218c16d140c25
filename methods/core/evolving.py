"""The artifact layout of methods that evolve one shared encoder, with one head per task.

The file written after task t holds all such a method keeps (it supersedes the earlier files):

- ``encoder.<name>``: the shared encoder's trained tensors (all of them; with ``tuned_blocks=k`` only those of
  the top k blocks, the frozen rest being the backbone);
- ``heads.<label>.*``: every head so far (label = arrival index), and in the metadata one ``heads`` record per
  head (task, label, num_outputs, regression).

:mod:`methods.continual` rebuilds a task's model from such a file; :mod:`methods.avalanche_strategies` writes
the files and continues training from them.
"""

from __future__ import annotations

import torch
from torch import nn

from methods.core.backbone import Backbone, transformer_blocks
from methods.core.task_model import TaskHead
from stream.core.errors import ArtifactError

ENCODER_PREFIX = "encoder."
HEADS_PREFIX = "heads."


def tuned_encoder_names(encoder: nn.Module, tuned_blocks: int | None) -> list[str]:
    """Names of the encoder parameters that train: all of them, or those of the top ``tuned_blocks`` blocks."""
    names = [name for name, _ in encoder.named_parameters()]
    if tuned_blocks is None:
        return names
    blocks = transformer_blocks(encoder)
    tuned = {id(p) for block in list(blocks)[len(blocks) - tuned_blocks:] for p in block.parameters()}
    return [name for name, p in encoder.named_parameters() if id(p) in tuned]


def heads_meta(artifact) -> list[dict]:
    """The ``heads`` records of an artifact: task, label, num_outputs, regression, in label order."""
    return sorted(artifact.meta["heads"], key=lambda h: h["label"])


def load_encoder(backbone: Backbone, tensors: dict[str, torch.Tensor], tuned_blocks: int | None) -> nn.Module:
    """A fresh copy of the backbone's encoder with the artifact's ``encoder.*`` tensors loaded."""
    encoder = backbone.fresh_encoder()
    own = {k[len(ENCODER_PREFIX):]: v for k, v in tensors.items() if k.startswith(ENCODER_PREFIX)}
    expected = set(tuned_encoder_names(encoder, tuned_blocks))
    if set(own) != expected:
        missing, extra = sorted(expected - set(own)), sorted(set(own) - expected)
        raise ArtifactError(f"The artifact's encoder tensors do not match tuned_blocks={tuned_blocks}: "
                            f"{len(missing)} missing (e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]}).")
    encoder.load_state_dict(own, strict=False)
    return encoder


def load_task_head(tensors: dict[str, torch.Tensor], record: dict, hidden_size: int, dropout: float) -> TaskHead:
    """The head of one ``heads`` record from the artifact's ``heads.<label>.*`` tensors."""
    prefix = f"{HEADS_PREFIX}{record['label']}."
    head = TaskHead(hidden_size, record["num_outputs"], dropout)
    head.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    return head
