"""bench/reproduction_settings.py: the reproduction's spec from a selection study's per-task choices."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from analysis.tables import read_study
from bench import reproduction_settings as settings
from stream.engine.study import StudySpec
from stream.engine.sweep import run_study

STUDIES = Path(__file__).resolve().parents[1] / "bench" / "studies"
SELECTION_SPEC = """
name = "selection"
[base]
tasks = ["sst2", "rte"]
backbone = "{model}"
data_dir = "{data}"
device = "cpu"
pooling = "cls"
[base.budget]
max_train_examples = 32
batch_size = 16
max_eval_examples = 16
max_dev_examples = 16
[base.task_budgets.rte]
max_steps = 3
[grid]
methods = [{{ name = "linear_probe", search = {{ learning_rate = [1e-4, 3e-2] }} }}]
"""
PLAN = (settings.Planned({"name": "linear_probe"}, (0, 1), "linear_probe"),
        settings.Planned({"name": "linear_probe", "label": "probe-again", "weight_decay": 0.5}, (1,),
                         "linear_probe"))


@pytest.fixture(scope="module")
def selection_dir(tmp_path_factory, tiny_model_dir, glue_dir) -> Path:
    spec_file = tmp_path_factory.mktemp("spec") / "selection.toml"
    spec_file.write_text(SELECTION_SPEC.format(model=tiny_model_dir, data=glue_dir))
    study_dir = tmp_path_factory.mktemp("selection")
    run_study(StudySpec.from_file(spec_file), study_dir, workers=1, threads=1, spec_file=spec_file)
    return study_dir


def test_the_written_spec_fixes_each_tasks_chosen_options_and_keeps_the_selection_budget(selection_dir, tmp_path):
    study = read_study(selection_dir)
    chosen = settings.chosen_options(selection_dir)
    sidecars = {}
    for sidecar in (selection_dir / "runs").rglob("artifacts/**/*.json"):
        record = json.loads(sidecar.read_text())
        sidecars[sidecar.stem.split("-", 1)[1]] = record["selection"]["chosen"]
    assert chosen == {"linear_probe": sidecars} and set(sidecars) == {"sst2", "rte"}

    text = settings.spec_text(study, settings.planned_methods(study, chosen, PLAN), "runs/selection")
    spec = StudySpec.from_mapping(tomllib.loads(text))
    assert [(r.method.resolved_label, r.seed) for r in spec.runs] == [
        ("linear_probe", 0), ("linear_probe", 1), ("probe-again", 1)]
    selection_config = StudySpec.from_file(selection_dir / "spec.toml").runs[0].config
    for run in spec.runs:
        assert run.config.budget == selection_config.budget
        assert run.config.task_budgets == selection_config.task_budgets
        assert (run.config.pooling, run.config.tasks) == ("cls", ("sst2", "rte"))
        for task in ("sst2", "rte"):
            assert run.method.config(task).learning_rate == sidecars[task]["learning_rate"]
            assert not run.method.search
    assert spec.runs[2].method.config("rte").weight_decay == 0.5


def test_an_unfinished_selection_is_refused_with_what_is_missing(selection_dir):
    study = read_study(selection_dir)
    chosen = settings.chosen_options(selection_dir)
    del chosen["linear_probe"]["rte"]
    plan = PLAN + (settings.Planned({"name": "full"}, (0,), "full"),)
    with pytest.raises(settings.SelectionIncomplete) as error:
        settings.planned_methods(study, chosen, plan)
    assert "3 (method, task) pair(s): full/rte, full/sst2, linear_probe/rte." in str(error.value)


def test_the_committed_plan_names_only_methods_the_selection_study_tunes():
    selection = StudySpec.from_file(STUDIES / "reproduction_lr.toml")
    tuned = {run.method.resolved_label: run.method for run in selection.runs}
    assert {planned.settings_from for planned in settings.PLAN} <= set(tuned)
    assert all(dict(method.search).keys() == {"learning_rate"} for method in tuned.values())
    # The spec written from the committed selection study is one the sweep accepts (every planned method
    # takes the options it is given, on every task).
    tasks = list(selection.runs[0].config.tasks)
    study = {"spec": tomllib.loads((STUDIES / "reproduction_lr.toml").read_text()),
             "runs": [{"config": {"tasks": tasks}}]}
    chosen = {label: {task: {"learning_rate": 1e-4} for task in tasks} for label in tuned}
    written = StudySpec.from_mapping(tomllib.loads(settings.spec_text(study, settings.planned_methods(study, chosen),
                                                                      "runs/reproduction_lr")))
    assert len(written.runs) == sum(len(planned.seeds) for planned in settings.PLAN)
    assert {run.config.budget for run in written.runs} == {selection.runs[0].config.budget}


def test_table1_lists_each_methods_settings_per_task(selection_dir):
    from bench.reproduce import settings_lines

    study = read_study(selection_dir)
    chosen = settings.chosen_options(selection_dir)
    spec = StudySpec.from_mapping(tomllib.loads(settings.spec_text(study, settings.planned_methods(study, chosen, PLAN),
                                                                   "runs/selection")))
    lines = settings_lines({"runs": [{"config": run.config.to_dict()} for run in spec.runs]})
    header, rule, *rows = [line for line in "\n".join(lines).splitlines() if line.startswith("|")]
    assert header == "| method | sst2 | rte |"
    lr = {task: f"learning_rate {chosen['linear_probe'][task]['learning_rate']:g}" for task in ("sst2", "rte")}
    assert rows == [f"| linear_probe | {lr['sst2']} | {lr['rte']} |", f"| probe-again | {lr['sst2']} | {lr['rte']} |"]
    assert settings_lines(read_study(selection_dir)) == []  # searched, none fixed
