"""Avalanche's metrics and loggers on a taskstream run, computed from the run's files.

:class:`AvalancheRunLog` replays one method's completed steps through Avalanche's own event loop: for step t
an Avalanche strategy that trains nothing (the models are the method's, rebuilt from the artifact files by
``Method.load``, as the ledger's scores are) goes through the training events of experience t and then
evaluates ``test_stream[:t]``. Avalanche's metrics (accuracy, loss, the accuracy matrix, forgetting, plus
taskstream's GLUE score and storage) and loggers (CSV, TensorBoard, text) see the run as one of their own;
their x axis is the method's cumulative optimizer steps. It works for every method, not only Avalanche's.

Two ways in:

- live, during a run: ``RunConfig.avalanche_loggers`` (``--avalanche-loggers csv,tensorboard``) writes
  ``<run dir>/avalanche/<method label>/{csv,tensorboard,log.txt}`` after every step; a resumed run rewrites
  them from the files, so they are always complete;
- afterwards: :func:`evaluate_run` evaluates a finished run with any ``EvaluationPlugin``.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.evaluation.metrics.acc_matrix import accuracy_matrix_metrics
from avalanche.logging.csv_logger import CSVLogger
from avalanche.logging.text_logging import TextLogger
from avalanche.models import MultiTaskModule
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate

from methods.core.backbone import Backbone, load_backbone
from methods.core.base import Method
from methods.core.multitask import MultiTaskCriterion, route_rows, tag_rows
from methods.core.task_model import TaskModel
from stream.core.ledger import Ledger, Sharing
from stream.core.plan import resolve_order
from stream.core.rundir import ARTIFACTS_DIR, LEDGER_FILE, read_run_config
from stream.core.scenario import ArrivalBuilder
from stream.core.store import ArtifactKey, ArtifactStore
from stream.engine.avalanche_bridge import AvalancheStream, glue_score_metrics, stream_from_builder
from stream.engine.config import AVALANCHE_LOGGERS, RunConfig, resolve_tasks

logger = logging.getLogger(__name__)

LOG_DIR = "avalanche"


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by Avalanche's TensorBoard logger) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def make_loggers(names: Sequence[str], folder: Path) -> list:
    """Avalanche loggers writing under ``folder``; TensorBoard is skipped, with a warning, when not installed."""
    folder.mkdir(parents=True, exist_ok=True)
    loggers = []
    for name in names:
        if name == "csv":
            loggers.append(CSVLogger(str(folder / "csv")))
        elif name == "tensorboard":
            if not tensorboard_available():
                logger.warning("Avalanche TensorBoard logging skipped: the package 'tensorboard' is not installed "
                               "(pip install tensorboard). The other loggers still write to %s.", folder)
                continue
            from avalanche.logging.tensorboard_logger import TensorboardLogger

            loggers.append(TensorboardLogger(folder / "tensorboard"))
        elif name == "text":
            loggers.append(TextLogger(open(folder / "log.txt", "w", encoding="utf-8")))
        else:
            raise ValueError(f"unknown Avalanche logger {name!r}; known: {', '.join(AVALANCHE_LOGGERS)}")
    return loggers


def close_loggers(loggers: Sequence) -> None:
    """Flush and close the files of ``loggers``."""
    for item in loggers:
        if isinstance(item, CSVLogger):
            item.close()
        elif isinstance(item, TextLogger):
            item.file.close()
        elif hasattr(item, "writer"):
            item.writer.close()


class ArtifactModels(MultiTaskModule):
    """A multi-task model routing each task label to the task's model rebuilt from the artifact files.

    Models are loaded on first use and only one is kept at a time (evaluation goes experience by
    experience). They are held outside the module tree, so Avalanche never switches them to training mode.
    """

    def __init__(self, loaders: dict[int, Callable[[], TaskModel]], regression: Sequence[int]) -> None:
        super().__init__()
        self._loaders = dict(loaders)
        self._regression = frozenset(regression)
        self._cache: dict[int, TaskModel] = {}
        self.known_train_tasks_labels = set(loaders)

    def _model(self, label: int) -> TaskModel:
        if label not in self._cache:
            self._cache.clear()
            self._cache[label] = self._loaders[label]()
        return self._cache[label]

    def adaptation(self, experience) -> None:
        """Nothing to adapt: every model comes from the files."""

    def forward(self, x, task_labels):
        if task_labels is None:
            return self.forward_all_tasks(x)
        if isinstance(task_labels, int) or task_labels.unique().numel() == 1:
            label = int(task_labels) if isinstance(task_labels, int) else int(task_labels.flatten()[0])
            logits = self._model(label)(**x)
            rows = torch.full((len(logits),), label in self._regression, dtype=torch.bool, device=logits.device)
            return tag_rows(logits, rows)
        return route_rows(task_labels, self._loaders, self._regression,
                          lambda label, rows: self._model(label)(**{k: v[rows.to(v.device)] for k, v in x.items()}))

    def forward_single_task(self, x, task_label: int):
        return self.forward(x, int(task_label))

    def forward_all_tasks(self, x):
        return {label: self._model(label)(**x) for label in sorted(self._loaders)}


class _EvaluateOnly(SupervisedTemplate):
    """An Avalanche strategy that trains nothing: its ``train`` only fires the training events."""

    def make_optimizer(self, **kwargs) -> None:
        """No optimizer: the models were trained by taskstream and come from the files."""


class StepRecordMetric(PluginMetric[dict]):
    """Taskstream's per-step record as Avalanche metric values: storage bytes and the dev score.

    Emits ``Storage/artifact_bytes``, ``Storage/cumulative_bytes`` and
    ``Dev_Score/train_phase/train_stream/Task<label>`` after each (replayed) training experience.
    """

    def __init__(self) -> None:
        super().__init__()
        self.row: dict[str, Any] | None = None

    def reset(self) -> None:
        self.row = None

    def result(self) -> dict | None:
        return self.row

    def after_training_exp(self, strategy) -> list[MetricValue] | None:
        if self.row is None:
            return None
        x = strategy.clock.train_iterations
        label = strategy.experience.current_experience
        return [MetricValue(self, "Storage/artifact_bytes", float(self.row["artifact_bytes"]), x),
                MetricValue(self, "Storage/cumulative_bytes", float(self.row["cumulative_bytes"]), x),
                MetricValue(self, f"Dev_Score/train_phase/train_stream/Task{label:03d}", float(self.row["dev_score"]), x)]


def default_metrics(stream: AvalancheStream) -> list[PluginMetric]:
    """The metrics a run log records: accuracy, loss, forgetting, the accuracy matrix and the GLUE score."""
    return [*accuracy_metrics(experience=True, stream=True), *loss_metrics(experience=True, stream=True),
            *forgetting_metrics(experience=True, stream=True), *accuracy_matrix_metrics(),
            *glue_score_metrics(stream)]


class AvalancheRunLog:
    """Feeds one method's completed steps of a run to an Avalanche ``EvaluationPlugin`` (see module doc).

    Args:
        stream: the run's scenario exported to Avalanche (the same rows the run used).
        method: the method, whose ``load`` rebuilds each task's model from an artifact.
        store: the run's artifact store.
        method_label: the method's label (its artifacts folder and ledger rows).
        ledger: the run's ledger (step records: training steps, bytes, dev score).
        metrics: Avalanche plugin metrics; default :func:`default_metrics`.
        loggers: Avalanche loggers (see :func:`make_loggers`).
        eval_batch_size: evaluation minibatch size (the run budget's, so predictions match the ledger's).
    """

    def __init__(self, stream: AvalancheStream, method: Method, store: ArtifactStore, method_label: str,
                 ledger: Ledger, *, metrics: Sequence[PluginMetric] | None = None, loggers: Sequence = (),
                 eval_batch_size: int = 64) -> None:
        self.stream, self.method, self.store, self.ledger = stream, method, store, ledger
        self.method_label = method_label
        self.loggers = list(loggers)
        self.step_metric = StepRecordMetric()
        metrics = list(default_metrics(stream) if metrics is None else metrics) + [self.step_metric]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No loggers specified")
            self.evaluator = EvaluationPlugin(*metrics, loggers=self.loggers)
        self.strategy = _EvaluateOnly(model=ArtifactModels({}, ()), optimizer=None, criterion=MultiTaskCriterion(),
                                      train_epochs=0, eval_mb_size=eval_batch_size,
                                      device=stream.backbone.device, evaluator=self.evaluator, eval_every=-1)
        self.steps_recorded = 0

    def _loader(self, step: int, label: int) -> Callable[[], TaskModel]:
        # Evolving methods are scored from the newest file; the others from the file of the task's own step.
        source_step = step if self.method.sharing is Sharing.EVOLVING else label + 1
        key = ArtifactKey(self.method_label, source_step, self.stream.order[source_step - 1])

        def load() -> TaskModel:
            return self.method.load(self.store.read(key), self.stream.tasks[label])

        return load

    def record(self, step: int) -> dict[str, Any]:
        """Replay step ``step`` (1-based; steps must come in order) and return Avalanche's last metrics."""
        if step != self.steps_recorded + 1:
            raise ValueError(f"AvalancheRunLog.record expects step {self.steps_recorded + 1}; got {step}.")
        rows = [self.ledger.step_rows(self.method_label, s)[0] for s in range(1, step + 1)]
        self.strategy.model = ArtifactModels({label: self._loader(step, label) for label in range(step)},
                                             self.stream.regression_labels)
        self.strategy.clock.train_iterations = sum(int(r["train_steps"]) for r in rows)
        self.step_metric.row = rows[-1]
        with warnings.catch_warnings():  # Avalanche's deprecation helper rewrites the global warning filters
            self.strategy.train(self.stream.train_stream[step - 1], eval_streams=[])
            metrics = self.strategy.eval(self.stream.test_stream[:step])
        self.steps_recorded = step
        return metrics

    def close(self) -> None:
        close_loggers(self.loggers)


def run_log(run_dir: Path, method_label: str, names: Sequence[str], method: Method, builder: ArrivalBuilder,
            order: Sequence[str], store: ArtifactStore, ledger: Ledger, backbone: Backbone, *,
            eval_batch_size: int = 64) -> AvalancheRunLog:
    """The live log of one method of a run under ``<run_dir>/avalanche/<label>/`` (rewritten from scratch)."""
    folder = Path(run_dir) / LOG_DIR / method_label
    if folder.exists():
        shutil.rmtree(folder)  # derived from the files alone; a resumed run replays every step into it
    stream = stream_from_builder(builder, order, backbone)
    return AvalancheRunLog(stream, method, store, method_label, ledger, loggers=make_loggers(names, folder),
                           eval_batch_size=eval_batch_size)


def evaluate_run(run_dir: str | Path, label: str, *, metrics: Sequence[PluginMetric] | None = None,
                 loggers: Sequence = (), backbone: Backbone | None = None) -> list[dict[str, Any]]:
    """Evaluate every completed step of one method of a finished run with Avalanche; metrics per step.

    Args:
        run_dir: the run directory.
        label: the method's label in the run.
        metrics: Avalanche plugin metrics (default :func:`default_metrics`).
        loggers: Avalanche loggers to write to.
        backbone: an already loaded backbone (tests pass tiny models); default the run config's.
    """
    run_dir = Path(run_dir)
    config = RunConfig.from_dict(read_run_config(run_dir))
    spec = next((m for m in config.methods if m.resolved_label == label), None)
    if spec is None:
        raise ValueError(f"Run {run_dir} has no method labelled {label!r}; it has "
                         f"{[m.resolved_label for m in config.methods]}.")
    tasks, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=tasks, budgets={t: config.budget_for(t) for t in tasks}, seed=config.seed)
    backbone = backbone or load_backbone(config.backbone, pooling=config.pooling, device=config.device)
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    order = resolve_order(config.tasks, config.order_seed)
    ledger = Ledger(run_dir / LEDGER_FILE)
    method = spec.build(backbone)
    log = AvalancheRunLog(stream_from_builder(builder, order, backbone), method, ArtifactStore(run_dir / ARTIFACTS_DIR),
                          label, ledger, metrics=metrics, loggers=loggers,
                          eval_batch_size=config.budget.eval_batch_size)
    results = []
    for step in range(1, len(order) + 1):
        if not ledger.completed(label, step):
            break
        results.append(log.record(step))
    log.close()
    return results
