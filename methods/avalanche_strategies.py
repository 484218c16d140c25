"""Avalanche strategies run on one arrival of taskstream's stream, with their state carried through files.

:func:`train_arrival` is what the methods of :mod:`methods.continual` do on each arriving task:

1. rebuild the shared model (encoder plus every earlier head) from ``previous``, the artifact the method
   wrote at the previous step, and add a freshly initialised head for the arriving task;
2. build the Avalanche strategy (Naive, EWC, LwF or Replay, each subclassed only to keep taskstream's
   optimizer and to save and restore its own state as tensors) and restore that state from ``previous``:
   EWC's importances and anchors, LwF's teacher (the previous model itself), Replay's buffer;
3. train on a one-experience Avalanche stream holding the task's training rows, under taskstream's protocol
   (:class:`FitControl`: warm-up and linear decay, clipping, the budget's steps, best-dev-score selection);
4. return the payload: the shared model, every head, and the strategy's state as tensors.

Nothing survives between arrivals except through the artifact file; Avalanche's own checkpointing (which
pickles) is never used. Restoring relies on a few Avalanche 0.6 internals (the EWC plugin's dicts, the
replay buffer's groups and reservoir weights, the clock's experience counter); the pinned version and the
round-trip tests in ``tests/test_continual.py`` hold them in place.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from avalanche.models import avalanche_forward
from avalanche.training import EWC, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin, EWCPlugin, LwFPlugin, ReplayPlugin, SupervisedPlugin
from avalanche.training.regularization import LearningWithoutForgetting
from avalanche.training.storage_policy import ReservoirSamplingBuffer
from avalanche.training.utils import ParamData
from torch.nn import functional as F
from tqdm.auto import tqdm

from methods.core.base import Method, TrainedTask
from methods.core.evolving import (ENCODER_PREFIX, HEADS_PREFIX, heads_meta, load_encoder, load_task_head,
                                   tuned_encoder_names)
from methods.core.multitask import (MultiHeadEncoder, MultiTaskCriterion, TokenCollator, collator_for,
                                    single_experience, task_dataset)
from methods.core.training import FitResult, autocast, decay_groups, evaluate, linear_schedule
from stream.core.errors import ArtifactError
from stream.core.store import ArtifactPayload
from stream.core.tokenization import TokenizedSplit

if TYPE_CHECKING:
    from stream.core.scenario import Arrival
    from stream.core.store import LoadedArtifact


class FitControl(SupervisedPlugin):
    """Taskstream's training protocol inside an Avalanche strategy.

    Linear warm-up and decay of the learning rate per optimizer step, gradient clipping, and a stop after
    the budget's steps. The arriving task's dev score is measured at the end (the fit record's score), and,
    with ``select=True``, also every ``interval`` steps, the trained state with the best score being
    restored when the experience ends (as :func:`methods.core.training.fit` selects: among trained states only).
    It must be the strategy's first plugin: its ``after_training_exp`` restores the selected state before
    EWC computes importances from it or Replay samples its buffer.
    """

    def __init__(self, *, view, arrival: Arrival, params: list[torch.nn.Parameter], total_steps: int,
                 interval: int, select: bool, warmup_ratio: float, max_grad_norm: float, progress: bool,
                 desc: str) -> None:
        super().__init__()
        self.view, self.arrival, self.params, self.select = view, arrival, params, select
        self.total_steps, self.interval = total_steps, interval
        self.warmup_ratio, self.max_grad_norm = warmup_ratio, max_grad_norm
        self.progress, self.desc = progress, desc
        self.step = 0
        self.losses: list[float] = []
        self.history: list[tuple[int, float]] = []
        self.best, self.best_step, self.best_state = float("-inf"), 0, None
        self._scheduler = None
        self._bar = None
        self._autocast = None

    def _dev_score(self) -> float:
        budget = self.arrival.budget
        _, score = evaluate(self.view, {"dev": self.arrival.dev}, self.arrival.task,
                            batch_size=budget.eval_batch_size, by_length=True)
        return score

    def _select(self, strategy) -> None:
        score = self._dev_score()
        strategy.model.train()  # evaluate() left the view's modules in the view's own mode
        self.history.append((self.step, score))
        if not self.select or self.best_state is None or score > self.best:
            self.best, self.best_step = score, self.step
            if self.select:
                self.best_state = [p.detach().clone() for p in self.params]

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(
            strategy.optimizer, linear_schedule(self.total_steps, self.warmup_ratio))
        self._bar = tqdm(total=self.total_steps, desc=self.desc, disable=not self.progress, leave=False,
                         dynamic_ncols=True)

    def before_forward(self, strategy, **kwargs) -> None:
        # The run's training precision, as methods.training.fit applies it: autocast around the forward only.
        self._autocast = autocast(torch.device(strategy.device), self.arrival.precision)
        self._autocast.__enter__()

    def after_forward(self, strategy, **kwargs) -> None:
        self._autocast.__exit__(None, None, None)

    def before_backward(self, strategy, **kwargs) -> None:
        # Runs before EWC's and LwF's before_backward add their terms: this is the task loss alone.
        self.losses.append(float(strategy.loss.detach()))

    def before_update(self, strategy, **kwargs) -> None:
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)

    def after_update(self, strategy, **kwargs) -> None:
        self._scheduler.step()

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.step += 1
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{np.mean(self.losses[-20:]):.4f}",
                              dev="-" if not self.history else f"{self.best:.1f}")
        if self.step == self.total_steps or (self.select and self.step % self.interval == 0):
            self._select(strategy)
        if self.step >= self.total_steps:
            strategy.stop_training()

    def after_training_exp(self, strategy, **kwargs) -> None:
        self._bar.close()
        with torch.no_grad():
            for param, saved in zip(self.params, self.best_state or []):
                param.copy_(saved)

    def result(self, seconds: float) -> FitResult:
        """The run as taskstream's :class:`FitResult`."""
        steps_per_epoch = max(1, math.ceil(len(self.arrival.train) / self.arrival.budget.batch_size))
        mean_loss = float(np.mean(self.losses[-steps_per_epoch:])) if self.losses else float("nan")
        return FitResult(steps=self.step, best_dev_score=self.best, best_step=self.best_step,
                         dev_history=self.history, mean_loss=mean_loss, seconds=seconds)


class RegressionAwareLwF(LearningWithoutForgetting):
    """Avalanche's LwF penalty, with regression heads distilled by mean squared error.

    Stock LwF distils softmax outputs over the class units seen; a one-output regression head has no
    softmax (the KL divergence over one unit is always zero), so its previous outputs are matched directly.
    """

    def __init__(self, alpha: float, temperature: float, regression: frozenset[int]) -> None:
        super().__init__(alpha=alpha, temperature=temperature)
        self.regression = regression

    def _lwf_penalty(self, out, x, curr_model):
        if self.prev_model is None:
            return 0
        with torch.no_grad():
            previous = avalanche_forward(self.prev_model, x, None)  # task label -> (batch, outputs)
        current = avalanche_forward(curr_model, x, None)
        loss = 0
        for label, prev_out in previous.items():
            if label not in self.prev_classes_by_task:
                continue
            if label in self.regression:
                loss = loss + F.mse_loss(current[label], prev_out)
            else:
                loss = loss + self._distillation_loss(current[label], prev_out, self.prev_classes_by_task[label])
        return loss


class _ArrivalStrategy:
    """Mixin for an Avalanche strategy trained on one arrival: keeps its optimizer; saves its state as tensors."""

    def make_optimizer(self, **kwargs) -> None:
        # Avalanche's default re-collects every model.named_parameters() entry into the optimizer, frozen
        # ones included, in one parameter group. The optimizer given to this strategy was built from the
        # trainable parameters only, in taskstream's groups (no decay on biases and LayerNorms, the head
        # learning rate), and the model is complete before training starts: there is nothing to add.
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        trainable = {id(p) for p in self.model.parameters() if p.requires_grad}
        assert held == trainable, "the strategy's optimizer must hold exactly the model's trainable parameters"

    @classmethod
    def options(cls, config) -> dict[str, Any]:
        """Constructor arguments of the Avalanche strategy from the method's config."""
        return {}

    def restore_state(self, previous: LoadedArtifact | None, *, new_label: int, collator: TokenCollator) -> None:
        """Restore the strategy's own state (beyond the model) from the previous artifact."""

    def state_tensors(self, trained: set[str], collator: TokenCollator
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The strategy's own state as (tensors, metadata) for the artifact."""
        return {}, {}


class SequentialStrategy(_ArrivalStrategy, Naive):
    """Avalanche's Naive (sequential finetuning) on one arrival: no state beyond the model."""


class EWCStrategy(_ArrivalStrategy, EWC):
    """Avalanche's EWC on one arrival; importances and anchors go through the artifact.

    Only trained parameters are stored; a frozen parameter's importance is zero and its anchor is its value.
    """

    @classmethod
    def options(cls, config) -> dict[str, Any]:
        online = config.ewc_mode == "online"
        return {"ewc_lambda": config.ewc_lambda, "mode": config.ewc_mode,
                "decay_factor": config.decay_factor if online else None}

    @property
    def plugin(self) -> EWCPlugin:
        return next(p for p in self.plugins if isinstance(p, EWCPlugin))

    def restore_state(self, previous, *, new_label, collator) -> None:
        if previous is None:
            return
        experiences = previous.meta["ewc"]["experiences"]
        for experience in experiences:
            for kind, store in (("importance", self.plugin.importances), ("anchor", self.plugin.saved_params)):
                store[experience] = self._param_dict(previous.tensors, f"ewc.{experience}.{kind}.", kind)

    def _param_dict(self, tensors: dict[str, torch.Tensor], prefix: str, kind: str) -> dict[str, ParamData]:
        # In the model's parameter order (online EWC pairs old and new importances by position); a head
        # added after that experience is absent, as it was in Avalanche's own dict.
        out = {}
        for name, param in self.model.named_parameters():
            stored = tensors.get(prefix + name)
            if stored is None and param.requires_grad:
                continue
            if stored is None:
                stored = torch.zeros_like(param) if kind == "importance" else param.detach().clone()
            out[name] = ParamData(name, init_tensor=stored.to(param.device), device=param.device)
        return out

    def state_tensors(self, trained, collator):
        tensors = {}
        for kind, store in (("importance", self.plugin.importances), ("anchor", self.plugin.saved_params)):
            for experience, params in store.items():
                for name, data in params.items():
                    if name in trained:
                        tensors[f"ewc.{experience}.{kind}.{name}"] = data.data.detach().to("cpu").clone()
        meta = {"ewc": {"experiences": sorted(self.plugin.saved_params), "mode": self.plugin.mode}}
        return tensors, meta


class LwFStrategy(_ArrivalStrategy, LwF):
    """Avalanche's LwF on one arrival; the teacher is the previous artifact's model, so nothing extra is stored.

    The teacher runs in eval mode (no dropout). Stock LwF deep-copies the model at the end of training,
    still in training mode, so its teacher's targets carry dropout noise.
    """

    @classmethod
    def options(cls, config) -> dict[str, Any]:
        return {"alpha": config.alpha, "temperature": config.temperature}

    def restore_state(self, previous, *, new_label, collator) -> None:
        plugin = next(p for p in self.plugins if isinstance(p, LwFPlugin))
        model: MultiHeadEncoder = self.model
        plugin.lwf = RegressionAwareLwF(plugin.lwf.alpha, plugin.lwf.temperature, model.regression)
        if previous is None:
            return
        teacher = copy.deepcopy(model)
        del teacher.heads[str(new_label)]
        teacher.regression = teacher.regression - {new_label}
        plugin.lwf.prev_model = teacher.eval()
        # Every unit of an earlier head was trained (a regression head's one unit counts as class 0).
        plugin.lwf.prev_classes_by_task.update(
            {label: set(range(model.heads[str(label)].out.out_features)) for label in teacher.task_labels})
        plugin.lwf.expcount = new_label


class ReplayStrategy(_ArrivalStrategy, Replay):
    """Avalanche's Replay on one arrival; the buffer's rows and reservoir weights go through the artifact."""

    @classmethod
    def options(cls, config) -> dict[str, Any]:
        return {"mem_size": config.mem_size}

    @property
    def plugin(self) -> ReplayPlugin:
        return next(p for p in self.plugins if isinstance(p, ReplayPlugin))

    def restore_state(self, previous, *, new_label, collator) -> None:
        if previous is None:
            return
        policy = self.plugin.storage_policy
        groups = previous.meta["replay"]["groups"]
        lengths = policy.get_group_lengths(len(groups))
        regression = {h["label"]: h["regression"] for h in heads_meta(previous)}
        for size, group in zip(lengths, groups):
            prefix = f"replay.{group}."
            rows = _rows_from_tensors(previous.tensors, prefix)
            buffer = ReservoirSamplingBuffer(size)
            buffer.buffer = task_dataset(rows, group, collator, regression=regression[group])
            buffer._buffer_weights = previous.tensors[prefix + "weights"].clone()
            policy.buffer_groups[group] = buffer
        policy._num_exps = len(groups)

    def state_tensors(self, trained, collator):
        tensors = {}
        groups = sorted(self.plugin.storage_policy.buffer_groups.items())
        for group, buffer in groups:
            samples = [buffer.buffer[i] for i in range(len(buffer.buffer))]
            features, labels, task_labels = collator(samples)
            assert bool((task_labels == group).all()), "experience-balanced groups hold one task each"
            prefix = f"replay.{group}."
            # Token ids fit int32 for any real vocabulary; token types are 0/1. Attention masks are not
            # stored: rows are right-padded, so a row's mask is its first `length` positions.
            tensors[prefix + "input_ids"] = features["input_ids"].to(torch.int32)
            tensors[prefix + "lengths"] = features["attention_mask"].sum(dim=1).to(torch.int32)
            if "token_type_ids" in features:
                tensors[prefix + "token_type_ids"] = features["token_type_ids"].to(torch.uint8)
            tensors[prefix + "labels"] = labels
            tensors[prefix + "weights"] = buffer._buffer_weights.detach().to("cpu").clone()
        return tensors, {"replay": {"groups": [group for group, _ in groups], "mem_size": self.plugin.mem_size}}


def _rows_from_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> TokenizedSplit:
    """Buffered rows stored under ``prefix`` as a TokenizedSplit (attention masks rebuilt from lengths)."""
    input_ids = tensors[prefix + "input_ids"].to(torch.int64)  # (rows, longest)
    lengths = tensors[prefix + "lengths"].to(torch.int64)
    mask = (torch.arange(input_ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.int64)
    token_types = tensors.get(prefix + "token_type_ids")
    return TokenizedSplit(task=prefix.rstrip("."), split="replay", input_ids=input_ids, attention_mask=mask,
                          token_type_ids=None if token_types is None else token_types.to(torch.int64),
                          lengths=lengths, labels=tensors[prefix + "labels"].clone())


STRATEGIES: dict[str, type[_ArrivalStrategy]] = {
    "Naive": SequentialStrategy, "EWC": EWCStrategy, "LwF": LwFStrategy, "Replay": ReplayStrategy,
}


def _check_previous(method: Method, previous: LoadedArtifact, arrival: Arrival) -> list[dict]:
    meta = previous.meta
    for key, expected in (("strategy", method.strategy), ("tuned_blocks", method.config.tuned_blocks)):
        if meta.get(key) != expected:
            raise ArtifactError(f"The previous artifact {previous.record.tensor_path} has {key}={meta.get(key)!r} "
                                f"but this {method.name} method has {expected!r}; it belongs to another method.")
    records = heads_meta(previous)
    if [h["label"] for h in records] != list(range(len(records))):
        raise ArtifactError(f"The previous artifact {previous.record.tensor_path} has heads for task labels "
                            f"{[h['label'] for h in records]}; expected 0..{len(records) - 1}.")
    if any(h["task"] == arrival.task.name for h in records):
        raise ArtifactError(f"Task {arrival.task.name!r} already has a head in {previous.record.tensor_path}; "
                            "a task arrives once per stream.")
    return records


def _silent_evaluator() -> EvaluationPlugin:
    # Training inside the arrival loop reports through taskstream's ledger, not Avalanche's loggers.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin()


@dataclass
class PreparedArrival:
    """An Avalanche strategy ready to train on one arrival, its state restored from the previous artifact.

    Attributes:
        strategy: the strategy (its ``model`` is the shared :class:`MultiHeadEncoder`).
        experience: the one-experience stream's experience holding the arrival's training rows.
        control: the training-protocol plugin (its ``result`` is the fit's record).
        label: the arriving task's task label.
        records: the ``heads`` records of every head, the new one last.
        tuned: names of the encoder parameters that train.
        collator: the collate function of the arrival's rows and of the replay buffer.
    """

    strategy: _ArrivalStrategy
    experience: Any
    control: FitControl
    label: int
    records: list[dict]
    tuned: set[str]
    collator: TokenCollator

    @property
    def model(self) -> MultiHeadEncoder:
        return self.strategy.model


def prepare_arrival(method: Method, arrival: Arrival, previous: LoadedArtifact | None, *,
                    progress: bool = False) -> PreparedArrival:
    """Rebuild the model and the strategy's state from ``previous`` and set up training on ``arrival``."""
    config, backbone, task = method.config, method.backbone, arrival.task
    records = _check_previous(method, previous, arrival) if previous is not None else []
    label = len(records)
    if previous is None:
        encoder = backbone.fresh_encoder()
        heads = {}
    else:
        encoder = load_encoder(backbone, previous.tensors, config.tuned_blocks)
        heads = {h["label"]: load_task_head(previous.tensors, h, backbone.hidden_size, config.head_dropout)
                 for h in records}
    model = MultiHeadEncoder(encoder, heads, pooling=backbone.pooling,
                             regression=[h["label"] for h in records if h["regression"]],
                             trained_tasks=[h["label"] for h in records])
    model.add_head(label, method.task_head(arrival), regression=task.is_regression)
    model.to(method.device)
    tuned = set(tuned_encoder_names(encoder, config.tuned_blocks))
    for name, param in encoder.named_parameters():
        param.requires_grad_(name in tuned)
    model.heads.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        decay_groups(((n, p) for n, p in encoder.named_parameters() if n in tuned), config.learning_rate,
                     config.weight_decay)
        + decay_groups(model.heads.named_parameters(), method.head_lr(), config.weight_decay))

    budget = arrival.budget
    steps_per_epoch = max(1, math.ceil(len(arrival.train) / budget.batch_size))
    total = budget.total_steps(len(arrival.train))
    control = FitControl(view=model.task_model(label), arrival=arrival,
                         params=[p for p in model.parameters() if p.requires_grad], total_steps=total,
                         interval=budget.eval_interval(total), select=config.model_selection,
                         warmup_ratio=config.warmup_ratio,
                         max_grad_norm=config.max_grad_norm, progress=progress,
                         desc=f"{method.name} {arrival.step}:{task.name}")
    collator = collator_for(backbone.tokenizer)
    strategy_class = STRATEGIES[method.strategy]
    strategy = strategy_class(model=model, optimizer=optimizer, criterion=MultiTaskCriterion(),
                              train_mb_size=budget.batch_size, train_epochs=math.ceil(total / steps_per_epoch),
                              eval_mb_size=budget.eval_batch_size, device=method.device, plugins=[control],
                              evaluator=_silent_evaluator(), eval_every=-1, **strategy_class.options(config))
    if isinstance(strategy, ReplayStrategy):
        strategy.plugin.batch_size_mem = config.batch_size_mem
    # Avalanche counts experiences on the strategy's clock (EWC reads it): this is experience `label`.
    strategy.clock.train_exp_counter = label
    strategy.restore_state(previous, new_label=label, collator=collator)
    experience = single_experience(task_dataset(arrival.train, label, collator, regression=task.is_regression))
    record = {"task": task.name, "label": label, "num_outputs": task.num_outputs, "regression": task.is_regression}
    return PreparedArrival(strategy=strategy, experience=experience, control=control, label=label,
                           records=records + [record], tuned=tuned, collator=collator)


def train_arrival(method: Method, arrival: Arrival, previous: LoadedArtifact | None, *,
                  progress: bool = False) -> TrainedTask:
    """Train ``method``'s Avalanche strategy on one arrival, continuing from ``previous`` (see module doc).

    ``method`` is one of :mod:`methods.continual`'s methods: its ``strategy`` names the Avalanche strategy and
    its config is a ``ContinualConfig`` (or a subclass with the strategy's own options).
    """
    start = time.perf_counter()
    prepared = prepare_arrival(method, arrival, previous, progress=progress)
    strategy, model = prepared.strategy, prepared.model
    torch.manual_seed(arrival.task_seed)  # shuffling, dropout, reservoir sampling
    with warnings.catch_warnings():  # Avalanche's deprecation helper rewrites the global warning filters
        strategy.train(prepared.experience, eval_streams=[])

    tensors = {ENCODER_PREFIX + name: p.detach().to("cpu").clone() for name, p in model.encoder.named_parameters()
               if name in prepared.tuned}
    tensors.update({HEADS_PREFIX + name: t.detach().to("cpu").clone()
                    for name, t in model.heads.state_dict().items()})
    trained = {ENCODER_PREFIX + name for name in prepared.tuned} | {
        HEADS_PREFIX + name for name, _ in model.heads.named_parameters()}
    state, state_meta = strategy.state_tensors(trained, prepared.collator)
    new_params = sum(t.numel() for t in tensors.values()) + sum(
        t.numel() for name, t in state.items() if name.startswith("ewc."))
    tensors.update(state)
    meta = {"strategy": method.strategy, "avalanche_version": metadata.version("avalanche-lib"),
            "tuned_blocks": method.config.tuned_blocks, "heads": prepared.records, **state_meta}
    view = model.task_model(prepared.label).eval()
    return TrainedTask(model=view, payload=ArtifactPayload(tensors=tensors, meta=meta, new_params=new_params),
                       fit=prepared.control.result(time.perf_counter() - start))
