"""bench/sanity_floor.py: full finetuning's runs against the reproduction's floor, from committed files."""

from __future__ import annotations

from bench.sanity_floor import FLOOR, floor_rows
from tests.conftest import REPO

RESULTS = REPO / "bench" / "results"


def test_each_run_and_task_is_a_row_with_what_the_run_varied():
    rows = floor_rows([RESULTS / "floor_pooling", RESULTS / "floor_lr"])
    pooled = [r for r in rows if r["study"] == "floor_pooling"]
    assert {r["task"] for r in pooled} == {"cola", "sst2"} and {r["pooling"] for r in pooled} == {"cls"}
    assert {r["learning_rate"] for r in rows if r["study"] == "floor_lr"} == {5e-5, 2e-4}
    assert all(r["met"] == (r["test"] >= FLOOR[r["task"]]) for r in rows)
    assert [r["task"] for r in rows] == sorted((r["task"] for r in rows), key=list(FLOOR).index)


def test_a_searched_learning_rate_is_read_as_the_dev_chosen_one():
    from bench.sanity_floor import _learning_rate
    from stream.engine.config import MethodSpec

    spec = MethodSpec.parse("full:learning_rate=5e-5|1e-4|2e-4")
    assert _learning_rate({"task": "rte", "chosen_options": {"learning_rate": 2e-4}}, spec) == 2e-4
    assert _learning_rate({"task": "rte", "chosen_options": None}, MethodSpec.parse("full:learning_rate=3e-5")) == 3e-5
