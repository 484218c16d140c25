"""The single-run report's tables (analysis/report.py) on a synthetic run with known numbers."""

from __future__ import annotations

from analysis.report import storage_table, summary_table
from analysis.tables import load_ledger
from tests.synthetic_ledgers import ORDERS, write_run


def test_summary_table_shows_tasks_and_storage_not_run_columns(tmp_path):
    write_run(tmp_path / "run", "last_layer-k1", seed=0, order_id="order0")
    table = load_ledger(tmp_path / "run")
    summary = summary_table(table)
    assert list(summary.columns) == ["method", *ORDERS["order0"], "average", "new params / task", "total params",
                                     "bytes / task", "total bytes"]
    assert summary.iloc[0]["bytes / task"] == "6.8 MiB" and summary.iloc[0]["total params"] == "1.23x"
    assert list(storage_table(table).columns) == ["method", "after 1", "after 2", "after 3"]
