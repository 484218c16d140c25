"""GLUE metrics, a task's single score, and the GLUE average.

Convention: every metric is reported as a percentage, i.e. multiplied by 100 (accuracy 0..100, F1 0..100,
Matthews correlation, Pearson and Spearman -100..100), as GLUE tables print them. Task scores and GLUE averages
are means of these, so they are on the same scale.

Degenerate inputs do not crash:

- constant predictions give Matthews correlation 0.0 (scikit-learn's definition: the denominator is zero and
  a predictor that ignores its input carries no information);
- constant regression predictions (or constant labels, or fewer than two examples) give Pearson and
  Spearman 0.0 rather than scipy's nan, for the same reason, and because one nan would turn every average that
  includes the task into nan;
- F1 with no predicted and no true positives is 0.0 (``zero_division=0``).

Non-finite regression predictions (a diverged model) are not degenerate but broken: Pearson and Spearman
are nan then, so the failure stays visible in tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from stream.core.tasks import TaskSpec


def _correlation(statistic: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(predictions: np.ndarray, labels: np.ndarray) -> float:
        if not np.all(np.isfinite(predictions)):
            return math.nan
        # Undefined correlation (constant input, < 2 points): 0.0, see the module docstring.
        if len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
            return 0.0
        return 100.0 * float(statistic(predictions, labels))
    return metric


# scipy and scikit-learn are imported when a metric is computed, not with this module: commands that never
# score (predict, serve, methods) would otherwise spend seconds importing them.
def _f1(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    # GLUE's F1 for MRPC and QQP is the binary F1 of the positive class, label id 1.
    return 100.0 * float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))


def _matthews(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return 100.0 * float(matthews_corrcoef(y, p))


def _pearson(p: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    return stats.pearsonr(p, y).statistic


def _spearman(p: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    return stats.spearmanr(p, y).statistic


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda p, y: 100.0 * float(np.mean(p == y)),
    "f1": _f1,
    "matthews_correlation": _matthews,
    "pearson": _correlation(_pearson),
    "spearman": _correlation(_spearman),
}


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric of ``task``, in percent, keyed by metric name in the task's order.

    Args:
        task: the task, which names its metrics.
        predictions: label ids ``(n,)`` or class scores ``(n, num_classes)`` (argmax is taken) for
            classification; values ``(n,)`` or ``(n, 1)`` for regression.
        labels: true label ids, or true values for regression, ``(n,)``.
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if task.is_regression:
        if predictions.ndim == 2 and predictions.shape[1] == 1:  # (n, 1) regression head output
            predictions = predictions[:, 0]
        predictions = predictions.astype(np.float64)
        labels = labels.astype(np.float64)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)
    if predictions.ndim != 1 or labels.ndim != 1 or len(predictions) != len(labels):
        raise ValueError(f"compute_metrics for task {task.name!r} needs predictions and labels of the same length "
                         f"n, as (n,) arrays (or (n, k) scores); got shapes {predictions.shape} and {labels.shape}.")
    if len(labels) == 0:
        raise ValueError(f"compute_metrics for task {task.name!r} got no examples; a score needs at least one.")
    if not task.is_regression:
        for name, values in (("predictions", predictions), ("labels", labels)):
            if values.min() < 0 or values.max() >= task.num_outputs:
                raise ValueError(f"compute_metrics for task {task.name!r}: {name} must be label ids "
                                 f"0..{task.num_outputs - 1}; got values from {values.min()} to {values.max()}.")
    return {name: _METRICS[name](predictions, labels) for name in task.metrics}


def undefined_metrics(task: TaskSpec, labels: np.ndarray) -> list[str]:
    """The task's correlation metrics that are undefined on these labels: all of Pearson, Spearman and Matthews
    when every label is the same (or there are fewer than two). They are then reported as 0.0 whatever the
    model predicts (see the module doc), so a score on such a split measures nothing."""
    labels = np.asarray(labels)
    if len(labels) >= 2 and np.ptp(labels) != 0:
        return []
    return [m for m in task.metrics if m in ("pearson", "spearman", "matthews_correlation")]


def task_score(task: TaskSpec, metrics_by_split: Mapping[str, Mapping[str, float]]) -> float:
    """The task's single score, GLUE style: the mean of its metrics on each split, averaged over splits.

    ``metrics_by_split`` maps each evaluated split (normally the task's test splits, e.g. MNLI's matched and
    mismatched validation sets, or only those that were available) to :func:`compute_metrics` output.
    A nan metric makes the score nan.
    """
    if not metrics_by_split:
        raise ValueError(f"task_score for task {task.name!r} needs the metrics of at least one split; got none.")
    split_scores = []
    for split, metrics in metrics_by_split.items():
        missing = [name for name in task.metrics if name not in metrics]
        if missing:
            raise ValueError(f"task_score for task {task.name!r}: split {split!r} lacks metric(s) {missing}; "
                             f"the task's score averages {list(task.metrics)}.")
        split_scores.append(float(np.mean([metrics[name] for name in task.metrics])))
    return float(np.mean(split_scores))


def glue_average(scores: Mapping[str, float]) -> float:
    """The mean of the task scores (task name -> score), as the GLUE leaderboard's average."""
    if not scores:
        raise ValueError("glue_average needs at least one task score; got none.")
    return float(np.mean([float(score) for score in scores.values()]))


def chance_score(task: TaskSpec, train_labels: np.ndarray, test_labels: Mapping[str, np.ndarray]) -> float:
    """The score of a predictor that ignores its input: always the majority class of the training labels
    (classification), or always their mean (regression, whose correlations are then 0), on the test splits.

    The floor a trained model must clear: MRPC's is 74.8 (always "equivalent"), CoLA's and STS-B's 0.
    """
    train_labels = np.asarray(train_labels)
    if task.is_regression:
        constant = float(np.mean(train_labels)) if len(train_labels) else 0.0
    else:
        constant = int(np.bincount(train_labels.astype(np.int64), minlength=task.num_outputs).argmax())
    metrics = {split: compute_metrics(task, np.full(len(labels), constant), labels)
               for split, labels in test_labels.items()}
    return task_score(task, metrics)


def noise_band(task: TaskSpec, test_rows: int) -> float:
    """Two standard errors, in score points, of a guessing predictor's score on ``test_rows`` test rows.

    Accuracy and F1 at chance level have a standard error of at most 50 / sqrt(n) points; a Matthews or a
    correlation coefficient near 0 has about 100 / sqrt(n). A score less than this above the chance score
    cannot be told apart from guessing on this test set (RTE's 277 rows: 6.0 points; SST-2's 872: 3.4).
    """
    correlation = any(m in ("matthews_correlation", "pearson", "spearman") for m in task.metrics)
    return (200.0 if correlation else 100.0) / math.sqrt(max(1, test_rows))
