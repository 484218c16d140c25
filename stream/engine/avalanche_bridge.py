"""The bridge to Avalanche: any taskstream scenario as an Avalanche benchmark.

:func:`to_avalanche` turns the stream a :class:`~stream.engine.config.RunConfig` describes (its tasks, arrival order,
budgets and seed) into an Avalanche benchmark with one experience per arriving task:

- ``train_stream``: the training rows of each task (the same rows every taskstream method trains on);
- ``valid_stream``: the dev rows carved out of ``train`` for model selection;
- ``test_stream``: the scored rows (GLUE ``validation``; MNLI's two test splits are concatenated).

Experience ``i`` carries task label ``i`` (the arrival index). Samples, their collate function, the
multi-head model (:meth:`AvalancheStream.multi_head_model`) and the loss for mixed classification and
regression heads (:class:`~methods.core.multitask.MultiTaskCriterion`) are those of
:mod:`methods.core.multitask`, the same the continual methods train with. Avalanche's
accuracy and forgetting metrics are meaningless on a regression experience: add :func:`glue_score_metrics`,
which reports each experience's GLUE score exactly as taskstream's ledger does (Pearson/Spearman for STS-B,
Matthews correlation for CoLA, mean of F1 and accuracy for MRPC, ...).

Example (stock Avalanche Naive on a three-task GLUE stream)::

    import torch
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.evaluation.metrics import accuracy_metrics
    from methods.core.multitask import MultiTaskCriterion
    from stream.engine.avalanche_bridge import glue_score_metrics, to_avalanche
    from stream.engine.config import RunConfig

    bench = to_avalanche(RunConfig(tasks=("sst2", "rte", "stsb"), data_dir="../shared/glue"))
    model = bench.multi_head_model()
    strategy = Naive(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=5e-5),
                     criterion=MultiTaskCriterion(), train_mb_size=32, train_epochs=1,
                     evaluator=EvaluationPlugin(accuracy_metrics(experience=True),
                                                glue_score_metrics(bench)))
    for experience in bench.train_stream:
        strategy.train(experience)
        strategy.eval(bench.test_stream[: experience.current_experience + 1])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name

from methods.core.backbone import Backbone, load_backbone
from methods.core.multitask import MultiHeadEncoder, TokenCollator, collator_for, task_dataset
from methods.core.task_model import TaskHead
from stream.core.metrics import compute_metrics, task_score
from stream.core.plan import resolve_order
from stream.core.scenario import ArrivalBuilder
from stream.core.tasks import TaskSpec
from stream.engine.config import RunConfig, resolve_tasks


class GlueScorePluginMetric(PluginMetric[float]):
    """Each evaluated experience's task score, computed exactly as taskstream's ledger computes it.

    Emits ``GLUE_Score_Exp/eval_phase/<stream>_stream/Task<label>/Exp<id>`` (a percentage, like the
    ledger's scores) after each evaluation experience; the task is looked up by the experience's task label.
    """

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self._predictions: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._score: float | None = None

    def __str__(self) -> str:
        return "GLUE_Score_Exp"

    def reset(self) -> None:
        self._predictions, self._labels, self._score = [], [], None

    def result(self) -> float | None:
        return self._score

    def before_eval_exp(self, strategy) -> None:
        self.reset()

    def after_eval_iteration(self, strategy) -> None:
        task = self._task(strategy)
        logits = strategy.mb_output.detach().float()
        preds = logits[:, 0] if task.is_regression else logits[:, :task.num_outputs].argmax(dim=-1)
        self._predictions.append(preds.cpu().numpy())
        self._labels.append(strategy.mb_y.detach().cpu().numpy())

    def after_eval_exp(self, strategy) -> list[MetricValue]:
        task = self._task(strategy)
        labels = np.concatenate(self._labels)
        metrics = compute_metrics(task, np.concatenate(self._predictions),
                                  labels.astype(np.float64 if task.is_regression else np.int64))
        self._score = task_score(task, {"test": metrics})
        name = get_metric_name(self, strategy, add_experience=True, add_task=True)
        return [MetricValue(self, name, self._score, strategy.clock.train_iterations)]

    def _task(self, strategy) -> TaskSpec:
        labels = strategy.experience.task_labels
        if len(labels) != 1:
            raise ValueError(f"GLUE_Score_Exp needs single-task experiences; got task labels {labels}.")
        return self.tasks[int(labels[0])]


def glue_score_metrics(stream: AvalancheStream | Sequence[TaskSpec]) -> list[PluginMetric]:
    """The GLUE score metric for an EvaluationPlugin (one score per evaluated experience)."""
    tasks = stream.tasks if isinstance(stream, AvalancheStream) else stream
    return [GlueScorePluginMetric(tasks)]


@dataclass
class AvalancheStream:
    """A taskstream scenario exported to Avalanche.

    Attributes:
        benchmark: the Avalanche scenario (``train_stream``, ``valid_stream``, ``test_stream``).
        order: task names in arrival order; ``order[i]`` has task label ``i``.
        tasks: the task specs in task-label order.
        backbone: the backbone whose tokenizer tokenised the rows (and whose encoder models copy).
        collator: the collate function of every dataset of the benchmark.
    """

    benchmark: Any
    order: tuple[str, ...]
    tasks: tuple[TaskSpec, ...]
    backbone: Backbone
    collator: TokenCollator

    @property
    def train_stream(self):
        return self.benchmark.train_stream

    @property
    def valid_stream(self):
        return self.benchmark.valid_stream

    @property
    def test_stream(self):
        return self.benchmark.test_stream

    @property
    def head_sizes(self) -> dict[int, int]:
        """Task label -> head width (1 for regression)."""
        return {label: task.num_outputs for label, task in enumerate(self.tasks)}

    @property
    def regression_labels(self) -> tuple[int, ...]:
        return tuple(label for label, task in enumerate(self.tasks) if task.is_regression)

    def multi_head_model(self, *, head_dropout: float = 0.1, seed: int = 0) -> MultiHeadEncoder:
        """A trainable copy of the backbone's encoder with one freshly initialised head per task label."""
        encoder = self.backbone.fresh_encoder().requires_grad_(True)
        heads = {}
        for label, task in enumerate(self.tasks):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + label + 1)
                heads[label] = TaskHead(self.backbone.hidden_size, task.num_outputs, head_dropout)
        model = MultiHeadEncoder(encoder, heads, pooling=self.backbone.pooling, regression=self.regression_labels)
        return model.to(self.backbone.device)


def stream_from_builder(builder: ArrivalBuilder, order: Sequence[str], backbone: Backbone) -> AvalancheStream:
    """Export the arrivals of ``builder`` in ``order`` (its tokenizer must already be set)."""
    collator = collator_for(backbone.tokenizer)
    train, valid, test, tasks = [], [], [], []
    for label, name in enumerate(order):
        arrival = builder.arrival(label + 1, name)
        tasks.append(arrival.task)
        regression = arrival.task.is_regression
        train.append(task_dataset(arrival.train, label, collator, regression=regression))
        valid.append(task_dataset(arrival.dev, label, collator, regression=regression))
        tests = [task_dataset(split, label, collator, regression=regression) for split in arrival.tests.values()]
        test.append(functools.reduce(lambda a, b: a.concat(b), tests))
    benchmark = with_task_labels(benchmark_from_datasets(train=train, valid=valid, test=test))
    return AvalancheStream(benchmark=benchmark, order=tuple(order), tasks=tuple(tasks), backbone=backbone,
                           collator=collator)


def to_avalanche(config: RunConfig, backbone: Backbone | None = None) -> AvalancheStream:
    """Export the scenario of ``config`` (tasks, order, budgets, seed) as an Avalanche benchmark.

    The rows are exactly those a taskstream run of ``config`` trains, selects and scores on.

    Args:
        config: the run config; only its scenario fields (tasks, order, data, budgets, seed) are used.
        backbone: an already loaded backbone (its tokenizer tokenises the rows); default ``config.backbone``.
    """
    tasks, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=tasks, budgets={t: config.budget_for(t) for t in tasks},
                             seed=config.seed)
    if backbone is None:
        backbone = load_backbone(config.backbone, pooling=config.pooling, device=config.device)
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    return stream_from_builder(builder, resolve_order(config.tasks, config.order_seed), backbone)
