"""The one interface every method implements.

A method turns an arriving task into (a) a task model it can evaluate and (b) an artifact payload: the
tensors and metadata that, written to a file and read back, let :meth:`Method.load` rebuild that model
from the shared backbone alone. The arrival loop only ever evaluates models rebuilt by ``load``.

The registry of methods by name, and how to add one, is :mod:`methods.registry`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from methods.core.config import MethodConfig
from methods.core.task_model import TaskHead, TaskModel
from methods.core.training import FitResult, decay_groups, fit
from stream.core.errors import ConfigError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload, LoadedArtifact

if TYPE_CHECKING:
    from methods.core.backbone import Backbone
    from methods.core.patches import ServingPatch
    from stream.core.scenario import Arrival
    from stream.core.tasks import TaskSpec

@dataclass
class TrainedTask:
    """The result of training on one arrival: the in-memory model and what goes into its file."""

    model: TaskModel
    payload: ArtifactPayload
    fit: FitResult


class Method(abc.ABC):
    """Base class of every method; subclasses set ``name``, ``config_class`` and ``sharing``."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    sharing: ClassVar[Sharing] = Sharing.SHARED_BACKBONE

    def __init__(self, config: MethodConfig, backbone: Backbone) -> None:
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}; "
                              f"got {type(config).__name__}.")
        self.config = config
        self.backbone = backbone

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def new_head(self, task: TaskSpec, seed: int) -> TaskHead:
        """A freshly initialised head for ``task``, seeded so every method starts from the same head."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = TaskHead(self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return head.to(self.device)

    def task_head(self, arrival: Arrival) -> TaskHead:
        """The fresh head an arriving task starts from, seeded by the run seed and the task (never by the
        arrival position), so a task trains into the same file wherever it arrives.

        A regression head's bias starts at the mean training label: from 0, a short run spends its first
        steps learning STS-B's offset of ~2.7 instead of the task, which biases the comparison towards
        methods with large effective step sizes."""
        head = self.new_head(arrival.task, arrival.task_seed)
        if arrival.task.is_regression and len(arrival.train):
            with torch.no_grad():
                head.out.bias.fill_(float(arrival.train.labels.double().mean()))
        return head

    def head_lr(self) -> float:
        return self.config.head_learning_rate or self.config.learning_rate

    def finetune_whole_model(self, arrival: Arrival, *, progress: bool, desc: str | None = None
                             ) -> tuple[TaskModel, FitResult]:
        """Full finetuning of a private encoder copy and a fresh head with this config's shared options.

        The ``full`` method is this plus storing the model; diff pruning's non-adaptive baseline prunes the
        result, so the baseline starts from exactly the model ``full`` trains at the same options."""
        encoder = self.backbone.fresh_encoder().requires_grad_(True)
        head = self.task_head(arrival)
        model = TaskModel(encoder, head, self.backbone.pooling)
        groups = (decay_groups(encoder.named_parameters(), self.config.learning_rate, self.config.weight_decay)
                  + decay_groups(head.named_parameters(), self.head_lr(), self.config.weight_decay))
        return model, self.fit(model, groups, arrival, progress=progress, desc=desc)

    def fit(self, model: TaskModel, groups: list[dict], arrival: Arrival, *, progress: bool,
            desc: str | None = None, **overrides: Any) -> FitResult:
        """Run the shared training loop on ``arrival`` with its budget; ``overrides`` reach :func:`fit`."""
        options = dict(budget=arrival.budget, seed=arrival.task_seed, precision=arrival.precision)
        options.update(overrides)
        return fit(model, groups, arrival.train, arrival.dev, arrival.task, config=self.config,
                   device=self.device, progress=progress,
                   desc=desc or f"{self.name} {arrival.step}:{arrival.task.name}", **options)

    @abc.abstractmethod
    def train(self, arrival: Arrival, *, previous: LoadedArtifact | None = None,
              progress: bool = False) -> TrainedTask:
        """Train on one arriving task.

        ``previous`` is the artifact this method wrote at the previous step, read back from disk; only
        ``evolving`` methods use it (their state carries over through their file, never through memory).
        """

    @abc.abstractmethod
    def load(self, artifact: LoadedArtifact, task: TaskSpec) -> TaskModel:
        """Rebuild ``task``'s model from the shared backbone plus ``artifact`` alone, in eval mode."""

    def serving_patch(self, artifact: LoadedArtifact, task: TaskSpec) -> ServingPatch | None:
        """How a server switches the shared live encoder (``self.backbone.encoder``) to ``task`` in place.

        A method whose task model is the backbone plus a small change returns a
        :class:`~methods.core.patches.ServingPatch`: its ``apply`` turns the live encoder into exactly what
        :meth:`load` rebuilds from ``artifact`` (logits equal bit for bit) and its ``revert`` restores the
        encoder bit for bit. Called only while no other patch is applied. The default, None, means the
        server rebuilds the model with :meth:`load` at every switch (full finetuning, evolving methods).
        """
        return None
