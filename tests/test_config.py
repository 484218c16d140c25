"""Run config: method specs, config files (TOML and YAML), validation, and difference reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.core.errors import ConfigError
from stream.engine.config import DEFAULT_METHODS, MethodSpec, RunConfig, config_differences, load_config_file
from stream.engine.study import StudySpec


def test_method_spec_parses_options_and_labels_variants():
    spec = MethodSpec.parse("last_layer:k=2:learning_rate=3e-4")
    assert spec.name == "last_layer" and dict(spec.options) == {"k": 2, "learning_rate": 3e-4}
    assert spec.resolved_label == "last_layer-k2-learning_rate0.0003"
    assert MethodSpec.from_value({"name": "last_layer", "k": 2, "label": "ll2"}).resolved_label == "ll2"


@pytest.mark.parametrize("text, message", [
    ("lora2", "Unknown method 'lora2'. Registered:"),
    ("last_layer:kk=2", "Unknown option(s) 'kk' for LastLayerConfig. Valid:"),
    ("last_layer:k=0", "LastLayerConfig.k must be >= 1; got 0."),
    ("last_layer:k", "must look like key=value"),
])
def test_bad_method_specs_are_explained(text, message):
    with pytest.raises(ConfigError) as info:
        MethodSpec.parse(text)
    assert message in str(info.value)


def test_a_method_spec_builds_its_configs_once_and_hands_them_over_whole(tiny_backbone):
    spec = MethodSpec.from_value({"name": "lora", "rank": 4, "search": {"learning_rate": [1e-3, 3e-3]},
                                  "per_task": {"rte": {"rank": 2}}})
    sst2 = spec.candidate_configs("sst2")
    assert [(options["learning_rate"], config.learning_rate, config.rank) for options, config in sst2] == [
        (1e-3, 1e-3, 4), (3e-3, 3e-3, 4)]
    assert [config.rank for _, config in spec.candidate_configs("rte")] == [2, 2]
    assert spec.candidate_configs("sst2") is sst2  # built once, at construction, not per call
    assert spec.config().rank == 4 and spec.config("rte").rank == 2
    method = spec.build(tiny_backbone, "rte")
    assert method.config is spec.config("rte")
    assert MethodSpec.parse("lora:rank=4") == MethodSpec(name="lora", options=(("rank", 4),))


def test_run_config_validation():
    with pytest.raises(ConfigError, match="Unknown task 'rtee'.*Did you mean 'rte'"):
        RunConfig(tasks=("rtee",))
    with pytest.raises(ConfigError, match="must not repeat"):
        RunConfig(tasks=("rte", "rte"))
    with pytest.raises(ConfigError, match="duplicate labels"):
        RunConfig(methods=(MethodSpec(name="full"), MethodSpec(name="full")))
    with pytest.raises(ConfigError, match="task_budgets names 'cola'"):
        RunConfig(tasks=("rte",), task_budgets=(("cola", (("epochs", 1),)),))


def test_toml_and_yaml_files_say_what_flags_say(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('''
tasks = ["rte", "mrpc"]
seed = 3
data_dir = "data"
methods = ["full", {name = "last_layer", k = 2, label = "ll2"}]
[budget]
max_train_examples = 100
[task_budgets.rte]
epochs = 5
''')
    yaml = tmp_path / "run.yaml"
    yaml.write_text('''
tasks: [rte, mrpc]
seed: 3
data_dir: data
methods: [full, {name: last_layer, k: 2, label: ll2}]
budget: {max_train_examples: 100}
task_budgets: {rte: {epochs: 5}}
''')
    from_toml = RunConfig.from_dict(load_config_file(toml))
    from_yaml = RunConfig.from_dict(load_config_file(yaml))
    assert from_toml == from_yaml
    assert from_toml.data_dir == str((tmp_path / "data").resolve())
    assert from_toml.budget_for("rte").epochs == 5
    assert from_toml.budget_for("mrpc").epochs == RunConfig().budget.epochs  # the default's, not rte's override
    assert [m.resolved_label for m in from_toml.methods] == ["full", "ll2"]


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("tasks = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("epochs = 3\n")
    with pytest.raises(ConfigError, match="Unknown config key.*epochs.*Valid:"):
        RunConfig.from_dict(load_config_file(unknown))
    ini = tmp_path / "run.ini"
    ini.write_text("")
    with pytest.raises(ConfigError, match="must end in .toml"):
        load_config_file(ini)


def test_config_differences_name_the_fields():
    a = RunConfig(tasks=("rte",)).to_dict()
    b = RunConfig(tasks=("rte",), seed=1, device="cpu").to_dict()
    assert config_differences(a, b) == ["seed: 0 -> 1"]


def test_the_paper_scale_preset_is_the_default_methods_at_the_reproductions_budget():
    repo = Path(__file__).resolve().parents[1]
    config = RunConfig.from_dict(load_config_file(repo / "configs" / "paper_stream.toml"))
    assert config.tasks == ("cola", "sst2", "mrpc", "stsb", "rte")
    assert tuple(m.name for m in config.methods) == DEFAULT_METHODS
    assert all(config.budget_for(t).max_steps == 400 for t in config.tasks if t != "sst2")
    sst2 = config.budget_for("sst2")
    assert sst2.max_steps is None and sst2.epochs == 1 and sst2.total_steps(66_849) == 2090
    assert all(config.budget_for(t).max_train_examples is None for t in config.tasks)
    reproduction = StudySpec.from_file(repo / "bench" / "studies" / "reproduction_lr.toml").runs[0].config
    assert all(config.budget_for(t) == reproduction.budget_for(t) for t in config.tasks)
