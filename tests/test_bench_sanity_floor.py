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
