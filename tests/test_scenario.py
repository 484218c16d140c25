"""Scenario: budgets, task orders, seeded dev splits, fixed test subsets and the tokenisation cache."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.errors import ConfigError, DataError
from stream.core.plan import resolve_order
from stream.core.scenario import ArrivalBuilder, Budget, carve_dev, eval_rows
from stream.engine.config import RunConfig, resolve_tasks


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "budget.batch_size must be >= 1; got 0."),
    ("epochs", 1.5, "budget.epochs must be an integer; got 1.5."),
    ("dev_fraction", 0.0, "budget.dev_fraction must be > 0.0; got 0.0."),
    ("max_seq_length", 4, "budget.max_seq_length must be >= 8; got 4."),
])
def test_budget_validation_names_field_rule_and_value(field, value, message):
    with pytest.raises(ConfigError) as info:
        Budget(**{field: value})
    assert str(info.value) == message


def test_budget_overrides_refuse_unknown_fields():
    assert Budget().updated({"epochs": 3}).epochs == 3
    with pytest.raises(ConfigError, match="Unknown budget field.*epoch.*Valid:"):
        Budget().updated({"epoch": 3})


def test_order_is_given_or_drawn_by_seed():
    tasks = ("cola", "sst2", "mrpc", "stsb", "rte")
    assert resolve_order(tasks, None) == tasks
    drawn = resolve_order(tasks, 7)
    assert sorted(drawn) == sorted(tasks) and drawn == resolve_order(tasks, 7)
    assert len({resolve_order(tasks, s) for s in range(10)}) > 5


def test_dev_split_is_seeded_disjoint_and_capped():
    budget = Budget(max_train_examples=50, dev_fraction=0.2, max_dev_examples=30)
    train, dev = carve_dev(1000, budget, seed=3, task="rte")
    assert len(train) == 50 and len(dev) == 30 and not set(train) & set(dev)
    again_train, again_dev = carve_dev(1000, budget, seed=3, task="rte")
    assert np.array_equal(train, again_train) and np.array_equal(dev, again_dev)
    other_train, _ = carve_dev(1000, budget, seed=4, task="rte")
    assert not np.array_equal(train, other_train)
    with pytest.raises(DataError, match="at least 2"):
        carve_dev(1, budget, seed=0, task="rte")


def test_eval_rows_are_the_same_for_every_seed():
    budget = Budget(max_eval_examples=10)
    rows = eval_rows(100, budget)
    assert len(rows) == 10 and np.array_equal(rows, eval_rows(100, budget))
    assert np.array_equal(eval_rows(8, budget), np.arange(8))


def test_a_task_is_tokenised_once_whatever_the_number_of_methods(tiny_backbone, glue_dir):
    config = RunConfig(tasks=("sst2", "rte"), data_dir=str(glue_dir))
    specs, source = resolve_tasks(config)
    budget = Budget(max_train_examples=20)
    builder = ArrivalBuilder(source, tasks=specs, budgets={t: budget for t in specs}, seed=0)
    builder.use_tokenizer(tiny_backbone.tokenizer, tiny_backbone.identity)
    for _method in range(3):
        first = builder.arrival(1, "sst2")
        builder.arrival(2, "rte")
        builder.tests("sst2")
    assert builder.cache.calls == 6  # (train, dev, validation) x 2 tasks
    assert len(first.train) == 20 and first.train.input_ids.shape[0] == 20
    pair = builder.arrival(2, "rte").train
    assert pair.token_type_ids is not None and int(pair.token_type_ids.max()) == 1
