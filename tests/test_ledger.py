"""Ledger arithmetic (storage rules, the papers' multiplier) and repair after an interrupted write."""

from __future__ import annotations

import json

import pytest

from stream.core.errors import RunDirectoryError
from stream.core.ledger import Ledger, Sharing, cumulative_bytes, params_multiplier


def test_cumulative_bytes_follows_each_sharing_rule():
    sizes = [100, 120, 90]
    assert cumulative_bytes(Sharing.SHARED_BACKBONE, 1000, sizes) == 1310
    assert cumulative_bytes(Sharing.STANDALONE, 1000, sizes) == 310
    assert cumulative_bytes(Sharing.EVOLVING, 1000, sizes) == 90
    assert cumulative_bytes(Sharing.SHARED_BACKBONE, 1000, []) == 1000


def test_params_multiplier_matches_the_papers_convention():
    # Diff pruning at 0.5% per task on 9 tasks: 1.045x; full finetuning on 9 tasks: 9x.
    assert params_multiplier(Sharing.SHARED_BACKBONE, 1000, [5] * 9) == pytest.approx(1.045)
    assert params_multiplier(Sharing.STANDALONE, 1000, [1000] * 9) == pytest.approx(9.0)
    assert params_multiplier(Sharing.EVOLVING, 1000, [1010, 1020]) == pytest.approx(1.02)


def _rows(method, step):
    return [{"method": method, "step": step, "eval_task": f"t{i}", "rows_in_step": step}
            for i in range(1, step + 1)]


def test_append_and_reload(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.append_step(_rows("a", 1))
    ledger.append_step(_rows("a", 2))
    again = Ledger(tmp_path / "ledger.jsonl")
    assert again.completed("a", 2) and not again.completed("a", 3)
    assert len(again.rows) == 3


def test_torn_last_line_and_partial_step_are_dropped(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.append_step(_rows("a", 1))
    with open(path, "a") as f:  # step 2 cut short: one of its two rows, then half a line
        f.write(json.dumps(_rows("a", 2)[0]) + "\n")
        f.write('{"method": "a", "st')
    repaired = Ledger(path)
    assert repaired.completed("a", 1) and not repaired.completed("a", 2)
    assert len(repaired.rows) == 1
    assert len(path.read_text().splitlines()) == 1


def test_bad_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text(json.dumps(_rows("a", 1)[0]) + "\nnot json\n" + json.dumps(_rows("b", 1)[0]) + "\n")
    with pytest.raises(RunDirectoryError, match="line 2"):
        Ledger(path)
