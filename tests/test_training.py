"""The shared training loop's protocol: heads, clipping, schedules, model selection, batching, precision.

Each test pins one rule that decides how fairly methods are compared (tiny random BERT, synthetic rows).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from methods.core.task_model import TaskModel
from methods.core.training import decay_groups, evaluate, fit, predict
from methods.registry import build_method
from stream.core.scenario import ArrivalBuilder, Budget, eval_rows
from stream.core.tasks import get_task
from stream.engine.config import RunConfig, resolve_tasks

BUDGET = Budget(max_train_examples=64, epochs=1, batch_size=8, max_dev_examples=16)


def _arrival(backbone, glue_dir, task="stsb", budget=BUDGET, precision="fp32"):
    config = RunConfig(tasks=(task,), data_dir=str(glue_dir), budget=budget)
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={task: budget}, seed=0, precision=precision)
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    return builder.arrival(1, task)


def _full_model(method, arrival):
    encoder = method.backbone.fresh_encoder().requires_grad_(True)
    head = method.task_head(arrival)
    return TaskModel(encoder, head, method.backbone.pooling), encoder, head


def test_a_regression_head_starts_at_the_mean_training_label(tiny_backbone, glue_dir):
    arrival = _arrival(tiny_backbone, glue_dir, "stsb")
    head = build_method("full", {}, tiny_backbone).task_head(arrival)
    assert head.out.bias.item() == pytest.approx(arrival.train.labels.double().mean().item(), rel=1e-6)
    assert arrival.train.labels.mean() > 0.3  # the offset a head at 0 would first have to learn
    classification = build_method("full", {}, tiny_backbone).task_head(_arrival(tiny_backbone, glue_dir, "sst2"))
    assert torch.equal(classification.out.bias, torch.zeros(2))


def test_gradients_are_clipped_per_role(tiny_backbone, glue_dir, monkeypatch):
    arrival = _arrival(tiny_backbone, glue_dir)
    method = build_method("full", {}, tiny_backbone)
    model, encoder, head = _full_model(method, arrival)
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, norm: calls.append({id(p) for p in params}) or real(params, norm))
    groups = (decay_groups(encoder.named_parameters(), 1e-4, 0.01, role="encoder")
              + decay_groups(head.named_parameters(), 1e-3, 0.01, role="head"))
    fit(model, groups, arrival.train, arrival.dev, arrival.task, config=method.config, budget=arrival.budget,
        seed=0, device=method.device, steps=2)
    assert calls[:2] == [{id(p) for p in encoder.parameters()}, {id(p) for p in head.parameters()}]
    assert len(calls) == 4  # two roles, two steps


def test_a_constant_group_keeps_its_rate_while_the_others_warm_up_and_decay(tiny_backbone, glue_dir, monkeypatch):
    arrival = _arrival(tiny_backbone, glue_dir)
    method = build_method("full", {}, tiny_backbone)
    model, encoder, head = _full_model(method, arrival)
    seen = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    groups = [{"params": list(encoder.parameters()), "lr": 1e-4},
              {"params": list(head.parameters()), "lr": 0.1, "schedule": "constant"}]
    fit(model, groups, arrival.train, arrival.dev, arrival.task, config=method.config, budget=arrival.budget,
        seed=0, device=method.device, steps=6)
    assert [lrs[1] for lrs in seen] == [0.1] * 6
    assert len({lrs[0] for lrs in seen}) == 6 and seen[-1][0] < seen[1][0]


def test_model_selection_sees_the_dev_split_ten_times_per_stage(tiny_backbone, glue_dir):
    arrival = _arrival(tiny_backbone, glue_dir)
    method = build_method("full", {}, tiny_backbone)
    model, encoder, head = _full_model(method, arrival)
    groups = decay_groups(model.named_parameters(), 1e-4, 0.01)
    result = fit(model, groups, arrival.train, arrival.dev, arrival.task, config=method.config,
                 budget=arrival.budget, seed=0, device=method.device, steps=30)
    assert [step for step, _ in result.dev_history] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    late = fit(model, groups, arrival.train, arrival.dev, arrival.task, config=method.config,
               budget=dataclasses.replace(arrival.budget, dev_evaluations=4), seed=0, device=method.device,
               steps=30, select_from=20)
    assert [step for step, _ in late.dev_history] == [20, 23, 26, 29, 30] and late.best_step >= 20


def test_test_sets_are_whole_validation_splits_unless_capped():
    assert Budget().max_eval_examples is None
    assert len(eval_rows(1500, Budget())) == 1500
    assert len(eval_rows(1500, Budget(max_eval_examples=1000))) == 1000
    assert Budget().updated({"max_train_examples": "all"}).max_train_examples is None


def test_length_grouped_batches_cover_every_row_once_and_pad_less(tiny_backbone, glue_dir):
    split = _arrival(tiny_backbone, glue_dir, "rte", dataclasses.replace(BUDGET, max_train_examples=None)).train
    generator = torch.Generator().manual_seed(0)
    grouped = list(split.batches(8, generator=generator, group_by_length=True))
    assert sum(len(batch["labels"]) for batch in grouped) == len(split)
    plain = list(split.batches(8, generator=torch.Generator().manual_seed(0)))

    def padding(batches):
        return sum(int((batch["attention_mask"] == 0).sum()) for batch in batches)

    assert padding(grouped) < padding(plain)
    again = list(split.batches(8, generator=torch.Generator().manual_seed(0), group_by_length=True))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(grouped, again))
    labels = sorted(float(v) for batch in grouped for v in batch["labels"])
    assert labels == sorted(float(v) for v in split.labels)


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_length_ordered_prediction_returns_the_rows_in_split_order(task, tiny_backbone, glue_dir):
    # RTE's rows for both (the synthetic STS-B rows share one length); the head decides class or value.
    split = _arrival(tiny_backbone, glue_dir, "rte", dataclasses.replace(BUDGET, max_train_examples=None)).train
    model, _, _ = _full_model(build_method("full", {}, tiny_backbone), _arrival(tiny_backbone, glue_dir, task))
    assert not torch.equal(split.lengths, split.lengths.sort().values)  # the order differs from the split's
    plain = predict(model, split, get_task(task), batch_size=8)
    ordered = predict(model, split, get_task(task), batch_size=8, by_length=True)
    one_by_one = np.concatenate([predict(model, split.select(torch.tensor([row])), get_task(task), batch_size=1)
                                 for row in range(len(split))])
    assert ordered.shape == plain.shape == (len(split),)
    if get_task(task).is_regression:  # the same rows up to float summation order
        np.testing.assert_allclose(ordered, one_by_one, rtol=0, atol=1e-5)
        np.testing.assert_allclose(plain, one_by_one, rtol=0, atol=1e-5)
    else:
        assert np.array_equal(ordered, plain) and np.array_equal(ordered, one_by_one)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_runs_and_is_recorded_on_the_arrival(precision, tiny_backbone, glue_dir):
    arrival = _arrival(tiny_backbone, glue_dir, "sst2", precision=precision)
    assert arrival.precision == precision
    trained = build_method("full", {}, tiny_backbone).train(arrival)
    assert trained.fit.steps == 8 and trained.fit.best_dev_score == trained.fit.best_dev_score
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())


def test_evaluation_shows_a_progress_bar_only_when_asked(tiny_backbone, glue_dir, capsys):
    arrival = _arrival(tiny_backbone, glue_dir, "sst2")
    model, _, _ = _full_model(build_method("full", {}, tiny_backbone), arrival)
    quiet = evaluate(model, arrival.tests, arrival.task, batch_size=16)
    assert capsys.readouterr().err == ""
    shown = evaluate(model, arrival.tests, arrival.task, batch_size=16, progress=True, desc="full 1:sst2 test")
    rows = sum(len(split) for split in arrival.tests.values())
    err = capsys.readouterr().err
    assert "full 1:sst2 test:" in err and f"/{rows} [" in err  # a bar over every test row, cleared at the end
    assert shown == quiet
