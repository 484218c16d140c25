"""Task registry: the nine GLUE tasks as the Hub has them, registration, and custom task validation."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import re
from pathlib import Path

import pytest

from stream.core import tasks
from stream.core.errors import ConfigError
from stream.core.sources import CustomFileSource
from stream.core.tasks import CustomTaskSpec, TaskSpec, get_task, register_task

GLUE_README = Path(__file__).resolve().parents[2] / "shared" / "glue" / "README.md"

# nyu-mll/glue's features (dataset card): text columns and ClassLabel names in id order.
HUB_GLUE = {
    "cola": (("sentence",), ("unacceptable", "acceptable")),
    "sst2": (("sentence",), ("negative", "positive")),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "stsb": (("sentence1", "sentence2"), None),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate")),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment")),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": (("sentence1", "sentence2"), ("not_entailment", "entailment")),
}


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so registering in a test leaves no trace."""
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))


@pytest.mark.parametrize("name", sorted(HUB_GLUE))
def test_glue_task_matches_hub(name):
    task = get_task(name)
    text_columns, label_names = HUB_GLUE[name]
    assert task.name == name
    assert task.text_columns == text_columns
    assert task.label_names == label_names
    assert task.label_column == "label"
    assert task.train_split == "train"
    assert task.is_regression == (label_names is None)
    assert task.num_outputs == (1 if label_names is None else len(label_names))


def test_all_nine_glue_tasks_registered_in_canonical_order():
    assert tasks.GLUE_TASK_NAMES == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
    assert tasks.registered_tasks()[:9] == tasks.GLUE_TASK_NAMES


def test_glue_metrics_and_splits():
    assert get_task("cola").metrics == ("matthews_correlation",)
    assert get_task("mrpc").metrics == ("f1", "accuracy")
    assert get_task("qqp").metrics == ("f1", "accuracy")
    assert get_task("stsb").metrics == ("pearson", "spearman")
    for name in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert get_task(name).metrics == ("accuracy",)
    assert get_task("mnli").test_splits == ("validation_matched", "validation_mismatched")
    assert get_task("rte").test_splits == ("validation",)


@pytest.mark.skipif(not GLUE_README.is_file(), reason="offline GLUE copy not present")
def test_label_ids_match_offline_glue_readme():
    """The offline copy's README lists "0 entailment, 1 not_entailment" per config: hold the registry to it."""
    rows = re.findall(r"^\| (\w+) \| ([\w, ]+) \| ([^|]+) \|", GLUE_README.read_text(), flags=re.M)
    checked = 0
    for config, columns, labels in rows:
        if config == "config":
            continue
        task = get_task(config)
        assert task.text_columns == tuple(c.strip() for c in columns.split(","))
        if task.is_regression:
            assert "regression" in labels
        else:
            pairs = [item.strip().split(" ", 1) for item in labels.split(",")]
            assert tuple(name for _, name in pairs) == task.label_names
            assert [int(i) for i, _ in pairs] == list(range(task.num_outputs))
        checked += 1
    assert checked == 8  # every config but qqp


def test_unknown_task_suggests_close_name():
    with pytest.raises(ConfigError, match=r"Unknown task 'rtee'\. Registered: cola, .*Did you mean 'rte'\?"):
        get_task("rtee")


def test_register_task_and_reject_duplicates(registry):
    spec = TaskSpec(name="toxic", text_columns=["comment"], label_names=["ok", "toxic"], metrics=["f1"])
    assert spec.text_columns == ("comment",) and spec.label_names == ("ok", "toxic")  # lists become tuples
    register_task(spec)
    assert get_task("toxic") is spec
    with pytest.raises(ConfigError, match="'toxic' is already registered"):
        register_task(spec)
    with pytest.raises(ConfigError, match="'rte' is already registered"):
        register_task(get_task("rte"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "a b"}, r"TaskSpec\.name must be"),
    ({"text_columns": ("a", "b", "c")}, r"TaskSpec\.text_columns must have between 1 and 2 entries"),
    ({"text_columns": ()}, r"TaskSpec\.text_columns must have between 1 and 2"),
    ({"label_names": ("only",)}, r"TaskSpec\.label_names must have at least 2"),
    ({"label_names": ("a", "a")}, r"TaskSpec\.label_names must not repeat"),
    ({"metrics": ("accuarcy",)}, r"TaskSpec\.metrics must be one of .*got 'accuarcy'\. Did you mean 'accuracy'\?"),
    ({"metrics": ("pearson",)}, r"TaskSpec\.metrics must be one of 'accuracy'"),
    ({"label_names": ("a", "b", "c"), "metrics": ("f1",)}, r"'f1' only for two labels"),
    ({"label_names": None, "metrics": ("accuracy",)}, r"must be one of 'pearson', 'spearman'"),
    ({"test_splits": ("train",)}, r"TaskSpec\.test_splits must not contain the train split"),
    ({"label_column": "text"}, r"TaskSpec\.label_column must differ"),
])
def test_taskspec_validation_names_field_rule_value(kwargs, message):
    base = {"name": "t", "text_columns": ("text",), "label_names": ("a", "b"), "metrics": ("accuracy",)}
    with pytest.raises(ConfigError, match=message):
        TaskSpec(**{**base, **kwargs})


def _files(tmp_path, *names):
    paths = {}
    for name in names:
        path = tmp_path / name
        path.write_text("text,label\nhello,a\n")
        paths[path.stem.split(".")[0]] = path
    return paths


def test_custom_task_defaults_and_conversion(tmp_path):
    files = _files(tmp_path, "train.csv", "dev.jsonl.gz", "test.parquet")
    custom = CustomTaskSpec(name="mine", files=files, text_columns=["text"], label_names=["a", "b"])
    assert custom.metrics == ("accuracy",)
    assert custom.test_splits == ("dev", "test")  # every non-train split, in the order given
    spec = custom.to_task_spec()
    assert spec == TaskSpec(name="mine", text_columns=("text",), label_names=("a", "b"), metrics=("accuracy",),
                            test_splits=("dev", "test"))
    source = CustomFileSource(custom.name, custom.files)
    assert source.files == custom.files
    regression = CustomTaskSpec(name="score", files=files, text_columns=("text",), metrics=None,
                                test_splits=["test"])
    assert regression.metrics == ("pearson", "spearman") and regression.to_task_spec().is_regression
    assert CustomTaskSpec(name="m", files=files, text_columns=("text",), label_names=("a", "b"),
                          metrics="f1").metrics == ("f1",)
    hash(custom)  # usable as a dict key despite holding a mapping


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"files": {}}, r"CustomTaskSpec\.files must be a non-empty mapping"),
    ({"files": {"train": "x.xlsx"}},
     r"CustomTaskSpec\.files\['train'\] must end in one of \.jsonl\.gz, .*got 'x\.xlsx'"),
    ({"files": {"train": "missing.csv", "test": "missing.csv"}},
     r"CustomTaskSpec\.files\['train'\] must be an existing file; got 'missing\.csv'"),
    ({"train_split": "training"}, r"CustomTaskSpec\.train_split must be one of the splits in files \(train, test\); "
                                  r"got 'training'"),
    ({"test_splits": ("dev",)}, r"CustomTaskSpec\.test_splits must be one of 'train', 'test'; got 'dev'"),
    ({"metrics": "acc"}, r"CustomTaskSpec\.metrics must be one of"),
    ({"text_columns": "text"}, r"CustomTaskSpec\.text_columns must be a list of strings; got 'text'"),
    ({"label_names": ("a", "b", "c"), "metrics": ("f1",)}, r"CustomTaskSpec\.metrics may include 'f1' only"),
])
def test_custom_task_validation(tmp_path, kwargs, message):
    base = {"name": "mine", "files": _files(tmp_path, "train.csv", "test.csv"), "text_columns": ("text",),
            "label_names": ("a", "b")}
    with pytest.raises(ConfigError, match=message):
        CustomTaskSpec(**{**base, **kwargs})


def test_custom_task_needs_a_split_to_score_on(tmp_path):
    with pytest.raises(ConfigError, match="at least one split besides train_split 'train'"):
        CustomTaskSpec(name="mine", files=_files(tmp_path, "train.csv"), text_columns=("text",),
                       label_names=("a", "b"))
