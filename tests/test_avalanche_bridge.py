"""The Avalanche bridge: a taskstream scenario as an Avalanche benchmark, and Avalanche's evaluation of runs.

- the exported streams hold exactly the run's rows, one experience and task label per arriving task;
- Avalanche's stock Naive and EWC train and evaluate on them through Avalanche's own train/eval, and for
  the same predictions Avalanche's accuracy equals taskstream's, and the GLUE score metric equals the task score;
- on a real run, the ledger's accuracy matrix equals Avalanche's accuracy matrix metric computed from the
  run's files, and the run's Avalanche loggers (CSV, TensorBoard, text) are written; TensorBoard is skipped
  with a clear message when it is not installed.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

pytest.importorskip("avalanche")

from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.evaluation.metrics.acc_matrix import accuracy_matrix_metrics  # noqa: E402
from avalanche.training import EWC, Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402

from methods.core.multitask import MultiTaskCriterion  # noqa: E402
from methods.core.training import evaluate  # noqa: E402
from stream.core.errors import ConfigError  # noqa: E402
from stream.core.scenario import ArrivalBuilder, Budget  # noqa: E402
from stream.engine import avalanche_log  # noqa: E402
from stream.engine.avalanche_bridge import glue_score_metrics, to_avalanche  # noqa: E402
from stream.engine.config import MethodSpec, RunConfig, resolve_tasks  # noqa: E402
from stream.engine.runner import run_stream  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

BUDGET = Budget(max_train_examples=32, epochs=1, batch_size=16, max_eval_examples=24, max_dev_examples=16)
TASKS = ("sst2", "rte", "stsb")


def _evaluator(bench, *metrics):
    with pytest.warns(UserWarning, match="No loggers"):
        return EvaluationPlugin(*metrics, *glue_score_metrics(bench))


def _exp_key(metric: str, label: int) -> str:
    return f"{metric}/eval_phase/test_stream/Task{label:03d}/Exp{label:03d}"


def test_exported_streams_hold_the_runs_rows(tiny_backbone, glue_dir):
    config = RunConfig(tasks=TASKS, data_dir=str(glue_dir), budget=BUDGET)
    bench = to_avalanche(config, tiny_backbone)
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={t: BUDGET for t in specs}, seed=0)
    builder.use_tokenizer(tiny_backbone.tokenizer, tiny_backbone.identity)
    assert bench.order == TASKS and bench.head_sizes == {0: 2, 1: 2, 2: 1} and bench.regression_labels == (2,)
    for label, name in enumerate(TASKS):
        arrival = builder.arrival(label + 1, name)
        for stream, split in ((bench.train_stream, arrival.train), (bench.valid_stream, arrival.dev),
                              (bench.test_stream, arrival.tests["validation"])):
            experience = stream[label]
            assert experience.task_label == label and len(experience.dataset) == len(split)
            features, labels, task_labels = bench.collator([experience.dataset[i] for i in range(len(split))])
            expected = split.batch(torch.arange(len(split)))
            assert features.keys() == {k for k in expected if k != "labels"}
            assert all(torch.equal(features[k], expected[k]) for k in features)
            assert torch.equal(labels, expected["labels"]) and bool((task_labels == label).all())
            targets = list(experience.dataset.targets)
            assert targets == ([0] * len(split) if arrival.task.is_regression else split.labels.tolist())


@pytest.mark.parametrize("strategy_class", [Naive, EWC], ids=["Naive", "EWC"])
def test_stock_strategies_train_on_the_export_and_agree_with_taskstream(strategy_class, tiny_backbone, glue_dir):
    bench = to_avalanche(RunConfig(tasks=TASKS, data_dir=str(glue_dir), budget=BUDGET), tiny_backbone)
    model = bench.multi_head_model()
    options = {"ewc_lambda": 10.0} if strategy_class is EWC else {}
    torch.manual_seed(0)
    strategy = strategy_class(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                              criterion=MultiTaskCriterion(), train_mb_size=16, train_epochs=1,
                              eval_mb_size=BUDGET.eval_batch_size,
                              evaluator=_evaluator(bench, *accuracy_metrics(experience=True)), **options)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    for experience in bench.train_stream:
        strategy.train(experience)
        results = strategy.eval(bench.test_stream[:experience.current_experience + 1])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))
    tiny_backbone.verify_unchanged()
    for label, task in enumerate(bench.tasks):
        split = bench.test_stream[label].dataset
        rows = [split[i] for i in range(len(split))]
        features, labels, _ = bench.collator(rows)
        # The same predictions, scored by taskstream from the model's TaskModel view of this task.
        tests = {"validation": _split_from(features, labels, task.name)}
        metrics, score = evaluate(model.task_model(label), tests, task, batch_size=BUDGET.eval_batch_size)
        assert results[_exp_key("GLUE_Score_Exp", label)] == pytest.approx(score, abs=1e-9)
        if not task.is_regression:
            assert 100 * results[_exp_key("Top1_Acc_Exp", label)] == pytest.approx(
                metrics["validation"]["accuracy"], abs=1e-9)


def _split_from(features, labels, task_name):
    from stream.core.tokenization import TokenizedSplit

    mask = features["attention_mask"]
    return TokenizedSplit(task=task_name, split="validation", input_ids=features["input_ids"], attention_mask=mask,
                          token_type_ids=features.get("token_type_ids"), lengths=mask.sum(dim=1), labels=labels)


@pytest.fixture(scope="module")
def logged_run(tiny_model_dir, glue_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("logged-run")
    methods = (MethodSpec(name="sequential", options=(("learning_rate", 1e-3),)), MethodSpec(name="last_layer"))
    config = RunConfig(tasks=TASKS, methods=methods, backbone=str(tiny_model_dir), data_dir=str(glue_dir),
                       budget=BUDGET, device="cpu", avalanche_loggers=("csv", "tensorboard", "text"))
    run_stream(config, run_dir, progress=False)
    return run_dir


@pytest.mark.parametrize("method", ["sequential-learning_rate0.001", "last_layer"])
def test_ledger_accuracy_matrix_equals_avalanches(method, logged_run, tiny_backbone):
    rows = [json.loads(line) for line in (logged_run / "ledger.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["method"] == method]
    per_step = avalanche_log.evaluate_run(logged_run, method, backbone=tiny_backbone,
                                          metrics=[*accuracy_matrix_metrics(), *glue_score_metrics(
                                              [resolve_tasks(RunConfig(tasks=TASKS))[0][t] for t in TASKS])])
    assert len(per_step) == len(TASKS)
    matrix = per_step[-1]["EvalStream/Acc_Matrix"]  # (steps, experiences), accuracies in 0..1
    for row in rows:
        t, i = row["step"], row["eval_step"] - 1
        assert per_step[t - 1][_exp_key("GLUE_Score_Exp", i)] == pytest.approx(row["score"], abs=1e-9)
        if "accuracy" in row["metrics"]["validation"]:
            assert 100 * float(matrix[t - 1, i]) == pytest.approx(row["metrics"]["validation"]["accuracy"], abs=1e-4)


def test_run_writes_avalanches_logs(logged_run):
    for label in ("sequential-learning_rate0.001", "last_layer"):
        folder = logged_run / "avalanche" / label
        eval_rows = (folder / "csv" / "eval_results.csv").read_text().splitlines()
        assert eval_rows[0] == "eval_exp,training_exp,eval_accuracy,eval_loss,forgetting"
        assert len(eval_rows) == 1 + sum(range(1, len(TASKS) + 1))  # one row per (step, seen task)
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
        assert "GLUE_Score_Exp" in (folder / "log.txt").read_text()


def test_missing_tensorboard_is_skipped_with_a_message(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(avalanche_log, "tensorboard_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        loggers = avalanche_log.make_loggers(["csv", "tensorboard"], tmp_path)
    assert [type(item).__name__ for item in loggers] == ["CSVLogger"]
    assert "pip install tensorboard" in caplog.text and (tmp_path / "csv" / "eval_results.csv").exists()
    avalanche_log.close_loggers(loggers)


def test_avalanche_loggers_option_is_validated_and_parsed():
    with pytest.raises(ConfigError, match="RunConfig.avalanche_loggers must be one of .*'tb'"):
        RunConfig(avalanche_loggers=("csv", "tb"))
    assert RunConfig.from_dict({"avalanche_loggers": "csv,tensorboard"}).avalanche_loggers == ("csv", "tensorboard")
    out = run_cli("run", "--help")
    assert out.returncode == 0 and "--avalanche-loggers" in out.stdout
