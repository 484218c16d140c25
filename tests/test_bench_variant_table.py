"""bench/variant_table.py: the table a sweep study's results are read through, on the committed glue3 study."""

from __future__ import annotations

import json

import pytest

from analysis.tables import load_ledger
from bench.variant_table import main
from tests.conftest import REPO

GLUE3 = REPO / "bench" / "results" / "glue3"


def test_one_row_per_run_method_and_arrived_task_with_the_ledgers_numbers(tmp_path, capsys):
    assert main([str(GLUE3), "--meta", "l0_stage.density", "--out", str(tmp_path / "table")]) == 0
    rows = json.loads((tmp_path / "table.json").read_text())
    ledger = load_ledger(GLUE3)
    own = ledger[ledger["eval_task"] == ledger["task"]]
    assert len(rows) == len(own)
    first = own.iloc[0]
    assert rows[0]["test"] == pytest.approx(first["score"], rel=1e-12) and rows[0]["artifact bytes"] == first["artifact_bytes"]
    densities = [r["l0_stage.density"] for r in rows if r["method"].startswith("diff_pruning")]
    assert densities and all(0 < d < 1 for d in densities)
    assert all(r["l0_stage.density"] is None for r in rows if r["method"] == "full")
    assert "## stsb, seed 0, order order0" in (tmp_path / "table.md").read_text()
    assert capsys.readouterr().out.startswith("# Method variants of")
