"""Study specs: expansion into runs, validation messages, and the study directory's constants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import analysis.tables
import stream.engine.study
from stream.core.errors import ConfigError
from stream.engine.study import StudySpec
from stream.engine.sweep import resolve_parallelism

BASE = {"tasks": ["sst2", "rte", "stsb"], "device": "cpu", "budget": {"max_train_examples": 50}}


def spec(**sections) -> StudySpec:
    return StudySpec.from_mapping({"name": "s", "base": BASE, **sections})


def test_grid_is_one_run_per_method_seed_and_order_in_seed_major_order():
    study = spec(grid={"methods": ["full", "last_layer:k=2"], "seeds": [0, 1], "orders": [0, 1]})
    ids = [run.run_id for run in study.runs]
    assert ids == ["full__seed0__order0", "last_layer-k2__seed0__order0", "full__seed0__order1",
                   "last_layer-k2__seed0__order1", "full__seed1__order0", "last_layer-k2__seed1__order0",
                   "full__seed1__order1", "last_layer-k2__seed1__order1"]
    run = study.runs[3]
    assert (run.config.seed, run.config.order_seed, run.config.budget.max_train_examples) == (0, 1, 50)
    assert [m.resolved_label for m in run.config.methods] == ["last_layer-k2"]
    assert sorted(run.arrival_order) == sorted(BASE["tasks"])


def test_method_sweep_orders_and_budgets_expand():
    study = spec(grid={"methods": [{"name": "last_layer", "sweep": {"k": [1, 2]}}],
                       "orders": ["given", ["stsb", "rte", "sst2"], "rte,sst2,stsb"]},
                 budgets={"tiny": {"epochs": 1}, "big": {"epochs": 3}})
    ids = {run.run_id for run in study.runs}
    assert "last_layer-k1__seed0__given__tiny" in ids
    assert "last_layer-k2__seed0__order-stsb.rte.sst2__big" in ids
    assert len(ids) == 2 * 3 * 2
    explicit = next(r for r in study.runs if r.order.tasks == ("rte", "sst2", "stsb"))
    assert explicit.arrival_order == ("rte", "sst2", "stsb") and explicit.config.order_seed is None
    assert {r.config.budget.epochs for r in study.runs} == {1, 3}


def test_a_swept_method_may_carry_options_and_a_label_template():
    study = spec(grid={"methods": [{"name": "last_layer", "head_learning_rate": 1e-3, "sweep": {"k": [1, 2]},
                                    "label": "ll-k{k}"}]})
    assert [r.method.resolved_label for r in study.runs] == ["ll-k1", "ll-k2"]
    assert dict(study.runs[1].method.options) == {"head_learning_rate": 1e-3, "k": 2}
    with pytest.raises(ConfigError, match="must name every swept option"):
        spec(grid={"methods": [{"name": "last_layer", "sweep": {"k": [1, 2]}, "label": "ll"}]})


def test_explicit_runs_add_points():
    study = spec(grid={"methods": ["full"]}, runs=[{"method": "last_layer:k=2", "seed": 3, "order": 2}])
    assert [r.run_id for r in study.runs] == ["full__seed0__given", "last_layer-k2__seed3__order2"]


@pytest.mark.parametrize("sections, message", [
    ({"grid": {"methods": ["full"], "orders": [["sst2", "rte"]]}}, "ordering of exactly the study's tasks"),
    ({"grid": {"methods": ["ful"]}}, "Unknown method 'ful'"),
    ({"grid": {"methods": ["full"], "seeds": [0, 0]}}, "repeats a value"),
    ({"grid": {"methods": ["full"], "budgets": ["nope"]}}, "names budget 'nope'"),
    ({"grid": {"methods": ["full"]}, "extra": 1}, "Unknown key(s) 'extra' in the study spec"),
    ({"grid": {"method": ["full"]}}, "Unknown key(s) 'method' in [grid]"),
    ({}, "defines no runs"),
    ({"grid": {"methods": ["full", "full"]}}, "more than once"),
    ({"grid": {"methods": [{"name": "last_layer", "sweep": {"k": 2}}]}}, "non-empty lists"),
    ({"budgets": {"tiny": 3}, "grid": {"methods": ["full"]}}, "[budgets.tiny] must be a table"),
])
def test_bad_specs_name_the_problem(sections, message):
    with pytest.raises(ConfigError) as error:
        spec(**sections)
    assert message in str(error.value)


def test_base_may_not_sweep_axes():
    with pytest.raises(ConfigError, match="must not set methods, seed or order_seed"):
        StudySpec.from_mapping({"base": {**BASE, "seed": 1}, "grid": {"methods": ["full"]}})


def test_toml_and_yaml_specs_agree_and_relative_data_dir_is_the_files(tmp_path):
    (tmp_path / "glue").mkdir()
    toml = tmp_path / "study.toml"
    toml.write_text('name = "demo"\n[base]\ntasks = ["sst2", "rte"]\ndata_dir = "glue"\n'
                    '[grid]\nmethods = ["full", "last_layer:k=1"]\nseeds = [0, 1]\n')
    yaml = tmp_path / "study.yaml"
    yaml.write_text("name: demo\nbase:\n  tasks: [sst2, rte]\n  data_dir: glue\n"
                    "grid:\n  methods: [full, 'last_layer:k=1']\n  seeds: [0, 1]\n")
    a, b = StudySpec.from_file(toml), StudySpec.from_file(yaml)
    assert [r.record() for r in a.runs] == [r.record() for r in b.runs]
    assert a.runs[0].config.data_dir == str((tmp_path / "glue").resolve())
    assert StudySpec.from_file(toml, data_dir="/elsewhere").runs[0].config.data_dir == "/elsewhere"
    json.dumps([r.record() for r in a.runs])  # the study record is plain JSON


def test_the_study_file_name_has_one_meaning():
    assert analysis.tables.STUDY_FILE == stream.engine.study.STUDY_FILE
    assert analysis.tables.DEFAULT_BUDGET == stream.engine.study.DEFAULT_BUDGET


def test_parallelism_defaults():
    assert resolve_parallelism(None, None, cores=2) == (1, 2)
    assert resolve_parallelism(2, None, cores=2) == (2, 1)
    assert resolve_parallelism(None, 1, cores=8) == (8, 1)
    assert resolve_parallelism(3, None, cores=2) == (3, 1)
    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        resolve_parallelism(0, None)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "bench" / "studies").glob("*.toml")),
                         ids=lambda path: path.stem)
def test_every_committed_study_file_is_a_valid_spec(path):
    spec = StudySpec.from_file(path)
    assert spec.name == path.stem  # the README and bench scripts find a study's folder by its file name
    assert spec.runs
