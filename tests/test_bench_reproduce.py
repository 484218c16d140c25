"""bench/reproduce.py --tables-only: Table 1 redrawn from the committed reproduction's files alone."""

from __future__ import annotations

import json
import shutil

from bench.reproduce import main
from tests.conftest import REPO

COMMITTED = REPO / "bench" / "results" / "reproduction"


def test_table1_is_redrawn_from_the_files_with_the_paired_difference_and_the_chance_row(tmp_path):
    out = tmp_path / "reproduction"
    shutil.copytree(COMMITTED, out)
    (out / "table1.md").unlink()
    result = main(["--tables-only", "--out", str(out)])
    methods = [record["method"] for record in result["methods"]]
    assert "full" in methods and "chance (majority class)" not in methods
    assert all(record["delta_vs_full"]["pairs"] == 1 for record in result["methods"] if record["method"] != "full")
    text = (out / "table1.md").read_text()
    assert "Δ vs full [95% CI]" in text and "(1 seed)" in text and "| chance (majority class) |" in text
    assert json.loads((out / "table1.json").read_text())["seeds"] == [0]
