"""Issue 13: every bad input a clear error, nothing silently wrong. One parametrised test per class of input
found by the battery, each failing on the code before the fix, plus a hypothesis fuzz over config files,
custom-task files and ledgers that must never end in a traceback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream.core.errors import ConfigError, TaskstreamError
from stream.core.ledger import parse_ledger
from stream.engine.config import MethodSpec, RunConfig, load_config_file

REPO = Path(__file__).resolve().parents[1]


def _config(model: Path, data: Path, **overrides) -> RunConfig:
    from stream.core.scenario import Budget

    base = dict(tasks=("sst2",), methods=(MethodSpec(name="linear_probe"),), backbone=str(model),
                data_dir=str(data), budget=Budget(max_train_examples=16, epochs=1, batch_size=8,
                                                  max_eval_examples=8, dev_evaluations=1), device="cpu")
    base.update(overrides)
    return RunConfig(**base)


def _custom_files(folder: Path, labels: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    labels = labels or ["pos", "neg"] * 4
    rows = "".join(f"good film {i},{label}\n" for i, label in enumerate(labels))
    (folder / "train.csv").write_text("text,label\n" + rows)
    (folder / "dev.csv").write_text("text,label\n" + rows)
    return folder


# ---------------------------------------------------------------------------------------------------------
# Tracebacks: config files of the wrong shape or not text at all


@pytest.mark.parametrize("name, content", [
    ("tasks.toml", "tasks = 5\n"),
    ("budget.yaml", "budget: 3\n"),
    ("methods.toml", "methods = 5\n"),
    ("custom.toml", "custom_tasks = [3]\n"),
    ("custom_missing.toml", "custom_tasks = [{ name = 'x' }]\n"),
    ("task_budgets.toml", "task_budgets = { sst2 = 3 }\n"),
    ("loggers.toml", "avalanche_loggers = 3\n"),
    ("data_dir.toml", "data_dir = 3\n"),
    ("backbone.yaml", "backbone: 3\n"),
    ("keys.yaml", "1: 2\n"),
    ("binary.toml", b"\x88\xff\x00tasks = 1"),
    ("binary.yaml", b"\xff\xfe\x00\x01"),
])
def test_config_file_of_the_wrong_shape_is_a_clear_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError):
        RunConfig.from_dict(load_config_file(path))


def test_config_path_that_is_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "c.toml").mkdir()
    with pytest.raises(ConfigError, match="not a file"):
        load_config_file(tmp_path / "c.toml")


# ---------------------------------------------------------------------------------------------------------
# Silently wrong


def test_custom_task_named_like_glue_is_refused_unless_overridden(tmp_path):
    files = _custom_files(tmp_path / "data")
    table = {"name": "sst2", "files": {"train": str(files / "train.csv"), "validation": str(files / "dev.csv")},
             "text_columns": ["text"], "label_names": ["neg", "pos"]}
    with pytest.raises(ConfigError, match="override_glue"):
        RunConfig.from_dict({"tasks": ["sst2"], "custom_tasks": [table]})
    config = RunConfig.from_dict({"tasks": ["sst2"], "custom_tasks": [{**table, "override_glue": True}]})
    assert config.to_dict()["custom_tasks"][0]["override_glue"] is True
    with pytest.raises(ConfigError, match="override_glue"):
        RunConfig.from_dict({"tasks": ["mine"], "custom_tasks": [{**table, "name": "mine", "override_glue": True}]})


@pytest.mark.parametrize("key", ["data_dir", "custom_tasks"])
def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path, monkeypatch, key):
    folder = tmp_path / "study"
    _custom_files(folder / "data")
    (folder / "c.toml").write_text(textwrap.dedent("""
        tasks = ["mine"]
        data_dir = "glue"
        [[custom_tasks]]
        name = "mine"
        files = { train = "data/train.csv", validation = "data/dev.csv" }
        text_columns = ["text"]
        label_names = ["neg", "pos"]
    """))
    monkeypatch.chdir(tmp_path)  # elsewhere than the file
    config = RunConfig.from_dict(load_config_file(folder / "c.toml"))
    if key == "data_dir":
        assert config.data_dir == str((folder / "glue").resolve())
    else:
        assert Path(config.custom_tasks[0].files["train"]) == (folder / "data" / "train.csv").resolve()


def test_backbone_bytes_are_its_files_on_disk(tiny_model_dir):
    from methods.core.backbone import load_backbone

    backbone = load_backbone(str(tiny_model_dir), device="cpu")
    on_disk = {p.name: p.stat().st_size for p in tiny_model_dir.iterdir()}
    assert backbone.files == on_disk  # config, weights and tokenizer: every file of this folder
    assert backbone.nbytes == sum(on_disk.values())
    assert "model.safetensors" in backbone.bytes_counted


@pytest.mark.parametrize("task, labels, metric", [("stsb", [2.5] * 40, "pearson"),
                                                  ("sst2", [1] * 40, None)])
def test_constant_test_labels_warn_that_correlation_is_undefined(tmp_path, caplog, task, labels, metric):
    from tests.conftest import synthetic_rows, write_jsonl_gz

    from stream.core.scenario import ArrivalBuilder, Budget
    from stream.core.sources import resolve_source
    from stream.core.tasks import get_task

    write_jsonl_gz(tmp_path / task / "train.jsonl.gz", synthetic_rows(task, 40, 1))
    write_jsonl_gz(tmp_path / task / "validation.jsonl.gz",
                   [{**row, "label": label} for row, label in zip(synthetic_rows(task, 40, 2), labels)])
    builder = ArrivalBuilder(resolve_source(tmp_path), tasks={task: get_task(task)}, budgets={task: Budget()}, seed=0)
    with caplog.at_level(logging.WARNING):
        builder.preload()
    warned = [r.getMessage() for r in caplog.records if "undefined" in r.getMessage() and "(test)" in r.getMessage()]
    assert bool(warned) == (metric is not None)  # accuracy is defined on constant labels
    if metric:
        assert "pearson and spearman are undefined" in warned[0] and "every label is 2.5" in warned[0]


# ---------------------------------------------------------------------------------------------------------
# Damaged run directories


@pytest.mark.parametrize("damage", ["truncated", "binary", "list", "folder"])
def test_damaged_config_json_is_a_clear_error_for_every_reader(tiny_model_dir, glue_dir, tmp_path, damage):
    from analysis.report import write_run_report
    from stream.engine.runner import run_stream
    from stream.engine.serving import TaskBank

    run_dir = tmp_path / "run"
    config = _config(tiny_model_dir, glue_dir)
    run_stream(config, run_dir, progress=False)
    path = run_dir / "config.json"
    text = path.read_bytes()
    path.unlink()
    if damage == "folder":
        path.mkdir()
    else:
        path.write_bytes({"truncated": text[:40], "binary": b"\xff\x00\x88", "list": b"[1, 2]"}[damage])
    for attempt in (lambda: run_stream(config, run_dir, progress=False), lambda: write_run_report(run_dir),
                    lambda: TaskBank(run_dir).task_spec("sst2")):
        with pytest.raises(TaskstreamError, match="config"):
            attempt()


@pytest.mark.parametrize("damage", ["torn_last_line", "partial_step", "duplicate_row", "not_an_object_last",
                                    "unterminated"])
def test_damaged_ledger_is_read_without_traceback_by_every_command(tiny_model_dir, glue_dir, tmp_path, damage):
    from analysis.report import write_run_report
    from stream.engine.runner import run_stream

    run_dir = tmp_path / "run"
    config = _config(tiny_model_dir, glue_dir, tasks=("sst2", "rte"))
    run_stream(config, run_dir, progress=False)
    path = run_dir / "ledger.jsonl"
    lines = path.read_text().splitlines()
    damaged = {"torn_last_line": lines + [lines[-1][:30]], "partial_step": lines[:-1],
               "duplicate_row": lines + [lines[0]], "not_an_object_last": lines + ["[1, 2, 3]"],
               "unterminated": lines}[damage]
    path.write_text("\n".join(damaged) + ("" if damage == "unterminated" else "\n"))
    write_run_report(run_dir)
    run_stream(config, run_dir, progress=False)
    rows = parse_ledger(path)
    assert not rows.left_out and len(rows.rows) == 3


def test_run_dir_that_is_a_file_is_a_clear_error(tiny_model_dir, glue_dir, tmp_path):
    from stream.engine.runner import run_stream

    (tmp_path / "afile").write_text("x")
    with pytest.raises(TaskstreamError, match="is a file"):
        run_stream(_config(tiny_model_dir, glue_dir), tmp_path / "afile", progress=False)


# ---------------------------------------------------------------------------------------------------------
# Errors that block the fix


@pytest.mark.parametrize("bad", ["method_option_vs_depth", "data", "backbone"])
def test_a_failed_validation_writes_nothing_and_the_corrected_run_proceeds(tiny_model_dir, glue_dir, tmp_path, bad):
    from stream.engine.runner import run_stream

    run_dir = tmp_path / "run"
    good = _config(tiny_model_dir, glue_dir, methods=(MethodSpec(name="linear_probe"),
                                                      MethodSpec.parse("last_layer:k=1")))
    broken = {"method_option_vs_depth": dict(methods=(MethodSpec(name="linear_probe"),
                                                      MethodSpec.parse("last_layer:k=100"))),
              "data": dict(data_dir=str(tmp_path / "nowhere")),
              "backbone": dict(backbone=str(tmp_path / "no-model"))}[bad]
    with pytest.raises(TaskstreamError):
        run_stream(_config(tiny_model_dir, glue_dir, **{**dict(methods=good.methods), **broken}), run_dir,
                   progress=False)
    assert not run_dir.exists() or not any(run_dir.iterdir()), "nothing is written before validation passes"
    run_stream(good, run_dir, progress=False)
    assert len(parse_ledger(run_dir / "ledger.jsonl").rows) == 2


def test_a_run_directory_without_finished_work_may_be_reconfigured(tiny_model_dir, glue_dir, tmp_path):
    from stream.engine.runner import prepare_run_dir, run_stream

    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, _config(tiny_model_dir, glue_dir, seed=5))  # a run that stopped before training
    run_stream(_config(tiny_model_dir, glue_dir), run_dir, progress=False)
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 0
    with pytest.raises(TaskstreamError, match="different config"):
        run_stream(_config(tiny_model_dir, glue_dir, seed=5), run_dir, progress=False)


@pytest.mark.parametrize("damage", ["tampered", "deleted", "sidecar_garbage"])
def test_retrain_brings_a_refused_artifact_back_and_keeps_the_ledger_consistent(tiny_model_dir, glue_dir, tmp_path,
                                                                                damage):
    from stream.core.errors import ArtifactError
    from stream.engine.retrain import forget_task
    from stream.engine.runner import run_stream

    run_dir = tmp_path / "run"
    config = _config(tiny_model_dir, glue_dir, tasks=("sst2", "rte"))
    run_stream(config, run_dir, progress=False)
    before = parse_ledger(run_dir / "ledger.jsonl").rows
    tensor = run_dir / "artifacts" / "linear_probe" / "001-sst2.safetensors"
    sidecar = tensor.with_suffix(".json")
    if damage == "tampered":
        tensor.write_bytes(tensor.read_bytes()[:-1] + b"\x00")
    elif damage == "deleted":
        tensor.unlink()
        sidecar.unlink()
    else:
        sidecar.write_text("[]")
    with pytest.raises(ArtifactError, match="taskstream retrain"):
        run_stream(config, run_dir, progress=False)
    resumed, forgotten = forget_task(run_dir, "linear_probe", "sst2")
    assert resumed.to_dict() == config.to_dict() and forgotten.rows == 3  # step 1 (one row) and step 2, which carries its score
    run_stream(resumed, run_dir, progress=False)
    after = parse_ledger(run_dir / "ledger.jsonl").rows
    assert [(r["step"], r["eval_task"], r["score"]) for r in after] == [(r["step"], r["eval_task"], r["score"])
                                                                         for r in before]


# ---------------------------------------------------------------------------------------------------------
# Concurrency


def test_a_second_process_on_a_locked_run_directory_exits_with_a_clear_message(tiny_model_dir, glue_dir, tmp_path):
    from stream.core.locks import exclusive_lock
    from stream.engine.runner import run_stream

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from stream.core.locks import exclusive_lock
        with exclusive_lock(Path({str(run_dir / '.lock')!r}), "busy"):
            print("locked", flush=True)
            time.sleep(60)
    """)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TaskstreamError, match=rf"Another taskstream process \(pid {holder.pid}\)"):
            run_stream(_config(tiny_model_dir, glue_dir), run_dir, progress=False)
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(run_dir / ".lock", "busy"):  # released when its process died
        pass


def test_stray_temporary_files_are_removed_on_start(tiny_model_dir, glue_dir, tmp_path):
    from stream.engine.runner import run_stream

    run_dir = tmp_path / "run"
    config = _config(tiny_model_dir, glue_dir)
    run_stream(config, run_dir, progress=False)
    stray = [run_dir / "artifacts" / "linear_probe" / ".001-sst2.safetensors.abc123.tmp", run_dir / "ledger.jsonl.tmp"]
    for path in stray:
        path.write_bytes(b"half written")
    run_stream(config, run_dir, progress=False)
    assert not any(path.exists() for path in stray)


# ---------------------------------------------------------------------------------------------------------
# Fuzz: no input ends in a traceback

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)
_KEYS = st.sampled_from(["tasks", "methods", "budget", "task_budgets", "custom_tasks", "data_dir", "seed",
                         "order_seed", "backbone", "pooling", "device", "threads", "precision", "reevaluate",
                         "avalanche_loggers", "hub_repo", "bogus"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=4))
@example(data={"avalanche_loggers": [[]]})  # once a TypeError: unhashable type 'list'
def test_fuzz_config_mappings_give_a_config_or_a_clear_error(data):
    with contextlib.suppress(TaskstreamError):  # a clear error is fine; a traceback is not
        RunConfig.from_dict(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from([".toml", ".yaml"]))
def test_fuzz_config_files_give_a_config_or_a_clear_error(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    with contextlib.suppress(TaskstreamError):  # a clear error is fine; a traceback is not
        RunConfig.from_dict(load_config_file(path))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=60), st.sampled_from([
    b'{"method": "m", "step": 1, "eval_task": "a", "rows_in_step": 1, "score": 1}',
    b'{"method": "m", "step": 2, "eval_task": "a", "rows_in_step": 2}', b"[1]", b"5", b'"x"', b"{}", b"\xff"])),
    max_size=6))
def test_fuzz_ledgers_read_without_traceback(tmp_path, lines):
    from stream.core.ledger import read_ledger

    (tmp_path / "ledger.jsonl").write_bytes(b"\n".join(lines))
    with contextlib.suppress(TaskstreamError):  # a clear error is fine; a traceback is not
        read_ledger(tmp_path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(["csv", "tsv", "jsonl", "json", "jsonl.gz", "parquet"]))
def test_fuzz_custom_task_files_give_rows_or_a_clear_error(tmp_path, content, ext):
    from stream.core.sources import CustomFileSource
    from stream.core.tasks import CustomTaskSpec

    path = tmp_path / f"train.{ext}"
    path.write_bytes(content)
    spec = CustomTaskSpec(name="mine", files={"train": path, "validation": path}, text_columns=("text",),
                          label_names=("neg", "pos"))
    with contextlib.suppress(TaskstreamError):  # a clear error is fine; a traceback is not
        CustomFileSource("mine", spec.files).load_split(spec.to_task_spec(), "train")
