"""Ledger arithmetic (storage rules, the papers' multiplier), the one reader, and repair after an interrupted write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.tables import load_ledger
from stream.core.errors import RunDirectoryError
from stream.core.ledger import SCHEMA_VERSION, Ledger, Sharing, cumulative_bytes, params_multiplier, parse_ledger
from stream.core.rundir import LEDGER_FILE
from stream.engine.serving import TaskBank
from stream.engine.study import completed_steps
from tests.synthetic_ledgers import write_run


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


def test_a_last_row_without_its_newline_is_repaired_before_appending(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text(json.dumps(_rows("a", 1)[0]))  # the write stopped just before its final newline
    ledger = Ledger(path)
    assert ledger.completed("a", 1)
    ledger.append_step(_rows("a", 2))
    assert [r["step"] for r in Ledger(path).rows] == [1, 2, 2]


def test_new_rows_carry_the_schema_version_and_old_rows_read_as_version_1(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text(json.dumps(_rows("a", 1)[0]) + "\n")  # written before rows carried a version
    ledger = Ledger(path)
    ledger.append_step(_rows("a", 2))
    assert [r["schema_version"] for r in Ledger(path).rows] == [1, SCHEMA_VERSION, SCHEMA_VERSION]
    assert all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in path.read_text().splitlines()[1:])


# Every command reads a ledger through one reader: the same damaged file gives every entry point the same
# complete steps, read-only readers leave the file as it is, and the runner's repair agrees with them.
LABEL = "last_layer-k1"


def _synthetic_run(tmp_path: Path) -> Path:
    """A run directory of one shared-backbone method over three steps (1 + 2 + 3 rows)."""
    run_dir = tmp_path / "run"
    write_run(run_dir, LABEL, seed=0, order_id="order0")
    return run_dir


def _lines(run_dir: Path) -> list[str]:
    return (run_dir / LEDGER_FILE).read_text().splitlines()


def _write(run_dir: Path, lines: list[str], tail: str = "") -> None:
    (run_dir / LEDGER_FILE).write_text("".join(line + "\n" for line in lines) + tail)


def _torn_last_line(run_dir):
    _write(run_dir, _lines(run_dir), tail='{"method": "last_layer-k1", "st')


def _partial_last_step(run_dir):
    _write(run_dir, _lines(run_dir)[:-1])  # step 3 has two of its three rows


def _partial_step_then_torn_line(run_dir):
    _write(run_dir, _lines(run_dir)[:-1], tail=_lines(run_dir)[-1][:20])


def _duplicated_rows(run_dir):
    lines = _lines(run_dir)
    _write(run_dir, lines[:2] + lines[1:] + lines[1:3])  # a row twice in a row, and step 2 again at the end


def _not_an_object_last(run_dir):
    _write(run_dir, _lines(run_dir) + ["[1, 2]"])


def _versions_mixed(run_dir):
    lines = _lines(run_dir)
    _write(run_dir, lines[:3] + [json.dumps({**json.loads(line), "schema_version": 1}) for line in lines[3:]])


DAMAGE = {  # damage -> (how to do it, the complete steps every reader must see)
    "undamaged": (lambda run_dir: None, {1, 2, 3}),
    "torn last line": (_torn_last_line, {1, 2, 3}),
    "partial last step": (_partial_last_step, {1, 2}),
    "partial step then torn line": (_partial_step_then_torn_line, {1, 2}),
    "duplicated rows": (_duplicated_rows, {1, 2, 3}),
    "non-object last line": (_not_an_object_last, {1, 2, 3}),
    "version 1 with and without the field": (_versions_mixed, {1, 2, 3}),
}


def _steps_by_tables(run_dir):
    frame = load_ledger(run_dir)
    return {int(step) for method, step in zip(frame["method"], frame["step"]) if method == LABEL}


def _steps_by_serving(run_dir):
    return {served.key.step for (label, _), served in TaskBank(run_dir).served.items() if label == LABEL}


def _steps_by_study_progress(run_dir):
    return set(range(1, completed_steps(run_dir, LABEL) + 1))


def _steps_by_runner(run_dir):
    return {row["step"] for row in Ledger(run_dir / LEDGER_FILE).rows if row["method"] == LABEL}


READERS = {"analysis.tables.load_ledger": _steps_by_tables, "serving TaskBank": _steps_by_serving,
           "study progress": _steps_by_study_progress, "runner Ledger": _steps_by_runner}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_every_reader_sees_the_same_complete_steps(tmp_path, damage, reader):
    run_dir = _synthetic_run(tmp_path)
    damage_function, expected = DAMAGE[damage]
    damage_function(run_dir)
    before = (run_dir / LEDGER_FILE).read_bytes()
    assert READERS[reader](run_dir) == expected
    if reader != "runner Ledger":
        assert (run_dir / LEDGER_FILE).read_bytes() == before, f"{reader} changed the ledger"
    else:
        # The runner's repair leaves exactly what the read-only readers see, undamaged.
        assert all(read(run_dir) == expected for read in READERS.values())
        assert parse_ledger(run_dir / LEDGER_FILE).left_out == []


def _not_an_object_inside(run_dir):
    lines = _lines(run_dir)
    _write(run_dir, lines[:1] + ["[1, 2]"] + lines[1:])


def _not_json_inside(run_dir):
    lines = _lines(run_dir)
    _write(run_dir, lines[:1] + ["not json"] + lines[1:])


def _newer_schema(run_dir):
    lines = _lines(run_dir)
    _write(run_dir, lines[:1] + [json.dumps({**json.loads(lines[1]), "schema_version": SCHEMA_VERSION + 1})]
           + lines[2:])


REFUSED = {"non-object line inside": (_not_an_object_inside, "line 2 is not a ledger row"),
           "invalid JSON inside": (_not_json_inside, "line 2 is not a ledger row"),
           "row of a newer schema": (_newer_schema, "line 2 has ledger schema_version")}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("damage", REFUSED)
def test_every_reader_refuses_an_edited_ledger_alike(tmp_path, damage, reader):
    run_dir = _synthetic_run(tmp_path)
    damage_function, message = REFUSED[damage]
    damage_function(run_dir)
    before = (run_dir / LEDGER_FILE).read_bytes()
    with pytest.raises(RunDirectoryError, match=message):
        READERS[reader](run_dir)
    assert (run_dir / LEDGER_FILE).read_bytes() == before
