"""The notebooks' shared settings (stream/engine/demo.py): environment variables and where things are found."""

from __future__ import annotations

import pytest

from methods.core.backbone import DEFAULT_BACKBONE
from stream.core.errors import DataError
from stream.core.sources import DATA_DIR_ENV
from stream.engine import demo


def test_smoke_mode_and_run_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv(demo.SMOKE_ENV, raising=False)
    monkeypatch.setenv(demo.RUNS_ENV, str(tmp_path))
    assert not demo.smoke_mode() and demo.demo_run_dir("nb") == tmp_path / "nb"
    for value in ("1", "true", "YES"):
        monkeypatch.setenv(demo.SMOKE_ENV, value)
        assert demo.smoke_mode() and demo.demo_run_dir("nb") == tmp_path / "nb-smoke"
    monkeypatch.setenv(demo.SMOKE_ENV, "0")
    assert not demo.smoke_mode()
    monkeypatch.delenv(demo.RUNS_ENV)
    monkeypatch.chdir(tmp_path)
    assert demo.demo_run_dir("nb") == tmp_path / "runs" / "nb"


def test_data_dir_from_the_environment_else_the_nearest_shared_glue(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, "/data/glue")
    assert demo.demo_data_dir() == "/data/glue"
    monkeypatch.delenv(DATA_DIR_ENV)
    (tmp_path / "shared" / "glue").mkdir(parents=True)
    notebooks = tmp_path / "repo" / "notebooks"
    notebooks.mkdir(parents=True)
    assert demo.demo_data_dir(notebooks) == str(tmp_path / "shared" / "glue")
    assert demo.demo_data_dir(tmp_path / "repo" / "notebooks") == str((tmp_path / "shared" / "glue").resolve())


def test_backbone_and_source(monkeypatch, tmp_path):
    monkeypatch.delenv(demo.BACKBONE_ENV, raising=False)
    assert demo.demo_backbone() == DEFAULT_BACKBONE
    monkeypatch.setenv(demo.BACKBONE_ENV, "/models/tiny")
    assert demo.demo_backbone() == "/models/tiny"
    monkeypatch.delenv(demo.SOURCE_ENV, raising=False)
    assert demo.demo_source() is None
    monkeypatch.setenv(demo.SOURCE_ENV, str(tmp_path))
    with pytest.raises(DataError, match="neither a run directory"):
        demo.demo_source()
    (tmp_path / "ledger.jsonl").write_text("")
    assert demo.demo_source() == tmp_path


def test_check_claim_enforces_claims_outside_smoke_mode_and_structural_ones_always(monkeypatch, capsys):
    monkeypatch.delenv(demo.SMOKE_ENV, raising=False)
    demo.check_claim("gates close", True)
    assert "checked: gates close" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="'gates close'.*does not bear it out"):
        demo.check_claim("gates close", False)
    monkeypatch.setenv(demo.SMOKE_ENV, "1")
    demo.check_claim("gates close", False)
    assert "not checked in smoke mode" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="never cross"):
        demo.check_claim("two shared-backbone lines never cross", False, any_settings=True)
