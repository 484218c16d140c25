"""GLUE metrics against hand-computed values, GLUE score averaging, and degenerate inputs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import math
import warnings

import numpy as np
import pytest

from stream.core import metrics
from stream.core.metrics import compute_metrics, glue_average, task_score
from stream.core.tasks import CLASSIFICATION_METRICS, REGRESSION_METRICS, TaskSpec, get_task

# Binary case used below: TP = 2 (rows 0, 3), FP = 1 (row 1), FN = 1 (row 4), TN = 1 (row 2).
BIN_PRED = [1, 1, 0, 1, 0]
BIN_TRUE = [1, 0, 0, 1, 1]


def test_every_declared_metric_is_implemented():
    assert set(metrics._METRICS) == set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS)


def test_mrpc_f1_and_accuracy_by_hand():
    result = compute_metrics(get_task("mrpc"), BIN_PRED, BIN_TRUE)
    assert list(result) == ["f1", "accuracy"]  # primary first
    assert result["f1"] == pytest.approx(100 * 2 / 3)  # precision = recall = 2/3
    assert result["accuracy"] == pytest.approx(60.0)


def test_cola_matthews_by_hand():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    assert compute_metrics(get_task("cola"), BIN_PRED, BIN_TRUE) == {
        "matthews_correlation": pytest.approx(100 / 6)}


def test_stsb_pearson_and_spearman_by_hand():
    stsb = get_task("stsb")
    # Deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 14/3).
    result = compute_metrics(stsb, [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert result["pearson"] == pytest.approx(100 * 3 / math.sqrt(28 / 3))
    assert result["spearman"] == pytest.approx(100.0)  # same ranks
    # Ranks (1, 2, 3) vs (3, 1, 2): rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 36 / 24 = -0.5.
    assert compute_metrics(stsb, np.array([[1.0], [2.0], [3.0]]), [3.0, 1.0, 2.0])["spearman"] == pytest.approx(-50.0)


def test_accuracy_from_class_scores_takes_argmax():
    scores = np.array([[0.1, 0.7, 0.2], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [0.3, 0.3, 0.4]])  # argmax 1, 0, 2, 2
    assert compute_metrics(get_task("mnli"), scores, [1, 0, 2, 0]) == {"accuracy": 75.0}


def test_degenerate_inputs_do_not_crash_or_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Constant predictions: Matthews 0 (no information), F1 0 when nothing is predicted positive.
        assert compute_metrics(get_task("cola"), [1, 1, 1, 1], [0, 1, 1, 0]) == {"matthews_correlation": 0.0}
        assert compute_metrics(get_task("mrpc"), [0, 0, 0], [0, 0, 0]) == {"f1": 0.0, "accuracy": 100.0}
        stsb = get_task("stsb")
        assert compute_metrics(stsb, [2.5, 2.5, 2.5], [1.0, 2.0, 4.0]) == {"pearson": 0.0, "spearman": 0.0}
        assert compute_metrics(stsb, [1.0, 2.0, 3.0], [3.0, 3.0, 3.0]) == {"pearson": 0.0, "spearman": 0.0}
        assert compute_metrics(stsb, [1.0], [3.0]) == {"pearson": 0.0, "spearman": 0.0}
    # A diverged model is not degenerate but broken: nan stays visible.
    result = compute_metrics(get_task("stsb"), [1.0, np.nan, 3.0], [1.0, 2.0, 4.0])
    assert math.isnan(result["pearson"]) and math.isnan(result["spearman"])


@pytest.mark.parametrize(("task", "predictions", "labels", "message"), [
    ("rte", [0, 1], [0, 1, 1], r"same length"),
    ("rte", [], [], r"got no examples"),
    ("rte", [0, 2], [0, 1], r"predictions must be label ids 0\.\.1; got values from 0 to 2"),
    ("rte", [0, 1], [-1, 1], r"labels must be label ids 0\.\.1"),
    ("stsb", np.zeros((3, 2)), [1.0, 2.0, 3.0], r"same length"),
])
def test_bad_shapes_and_ids_raise(task, predictions, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(get_task(task), predictions, labels)


def test_task_score_glue_averaging():
    assert task_score(get_task("mrpc"), {"validation": {"f1": 90.0, "accuracy": 86.0}}) == pytest.approx(88.0)
    assert task_score(get_task("stsb"), {"validation": {"pearson": 89.0, "spearman": 88.0}}) == pytest.approx(88.5)
    assert task_score(get_task("cola"), {"validation": {"matthews_correlation": 55.0}}) == 55.0
    mnli = get_task("mnli")
    both = {"validation_matched": {"accuracy": 84.0}, "validation_mismatched": {"accuracy": 83.0}}
    assert task_score(mnli, both) == pytest.approx(83.5)
    assert task_score(mnli, {"validation_matched": {"accuracy": 84.0}}) == 84.0  # mismatched not evaluated
    assert math.isnan(task_score(get_task("rte"), {"validation": {"accuracy": math.nan}}))


def test_task_score_errors():
    with pytest.raises(ValueError, match=r"split 'validation' lacks metric\(s\) \['accuracy'\]"):
        task_score(get_task("mrpc"), {"validation": {"f1": 90.0}})
    with pytest.raises(ValueError, match="at least one split"):
        task_score(get_task("rte"), {})


def test_glue_average_and_end_to_end_percentages():
    assert glue_average({"rte": 70.0, "mrpc": 88.0, "cola": 52.0}) == pytest.approx(70.0)
    with pytest.raises(ValueError, match="at least one task score"):
        glue_average({})
    # Perfect predictions give 100 on every metric, as GLUE tables print them.
    custom = TaskSpec(name="perfect", text_columns=("t",), label_names=("a", "b"),
                      metrics=("accuracy", "f1", "matthews_correlation"))
    labels = [0, 1, 1, 0, 1]
    assert compute_metrics(custom, labels, labels) == {"accuracy": 100.0, "f1": 100.0, "matthews_correlation": 100.0}
