"""Data sources: the Hub code path (on a local Hub-layout folder), offline failure speed, local files in the
Hub layout (the real offline GLUE copy), classic glue_data/ TSVs, custom files, and every malformed-input error."""

import os

# Must precede any import of datasets/huggingface_hub, or a failed Hub lookup retries for ~20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import csv
import gzip
import json
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream.core.errors import DataError
from stream.core.sources import (DATA_DIR_ENV, CustomFileSource, GlueTsvSource, HubSource, LocalDirSource, SplitData,
                                 resolve_source)
from stream.core.tasks import CustomTaskSpec, TaskSpec, get_task

GLUE = Path(__file__).resolve().parents[2] / "shared" / "glue"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="offline GLUE copy not present")


def glue_rows(config, split, n=None):
    """The first ``n`` rows of the offline GLUE copy (Hub columns and label ids)."""
    rows = []
    with gzip.open(GLUE / config / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if n is not None and len(rows) == n:
                break
    return rows


def assert_matches(data: SplitData, task: TaskSpec, rows):
    assert len(data) == len(rows)
    for column, texts in zip(task.text_columns, data.texts):
        assert texts == [row[column] for row in rows]
    dtype = np.float32 if task.is_regression else np.int64
    np.testing.assert_array_equal(data.labels, np.asarray([row["label"] for row in rows], dtype=dtype))
    assert data.labels.dtype == dtype


# ---------------------------------------------------------------------------------------------------------
# HubSource


def write_hub_repo(root: Path, config: str, splits: dict, label_names) -> Path:
    """A folder laid out like a Hub dataset repo: README.md with `configs:` YAML, parquet shards per split."""
    features = "\n".join(f"  - name: {name}\n    dtype: string" for name in get_task(config).text_columns)
    names = "\n".join(f"          '{i}': {name}" for i, name in enumerate(label_names))
    data_files = "\n".join(f"  - split: {split}\n    path: {config}/{split}-*" for split in splits)
    (root / config).mkdir(parents=True)
    for split, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows), root / config / f"{split}-00000-of-00001.parquet")
    (root / "README.md").write_text(
        f"---\ndataset_info:\n- config_name: {config}\n  features:\n{features}\n  - name: label\n    dtype:\n"
        f"      class_label:\n        names:\n{names}\n  - name: idx\n    dtype: int32\n"
        f"configs:\n- config_name: {config}\n  data_files:\n{data_files}\n---\n# A tiny GLUE look-alike\n")
    return root


@needs_glue
def test_hub_source_loads_a_hub_layout_repo(tmp_path):
    rte = get_task("rte")
    rows = {"train": glue_rows("rte", "train", 12), "validation": glue_rows("rte", "validation", 7)}
    repo = write_hub_repo(tmp_path / "glue", "rte", rows, rte.label_names)
    source = HubSource(repo_id=str(repo), cache_dir=tmp_path / "cache")
    for split in ("train", "validation"):
        data = source.load_split(rte, split)
        assert_matches(data, rte, rows[split])
        assert (data.task, data.split) == ("rte", split)
    with pytest.raises(DataError, match=r"config 'rte', split 'test'.*Unknown split"):
        source.load_split(rte, "test")
    with pytest.raises(DataError, match=r"config 'cola'.*'cola' not found"):
        source.load_split(get_task("cola"), "train")


@needs_glue
def test_hub_source_refuses_different_label_names(tmp_path):
    rte = get_task("rte")
    repo = write_hub_repo(tmp_path / "glue", "rte", {"validation": glue_rows("rte", "validation", 3)},
                          ("not_entailment", "entailment"))
    with pytest.raises(DataError, match=r"label names \('not_entailment', 'entailment'\) differ"):
        HubSource(repo_id=str(repo), cache_dir=tmp_path / "cache").load_split(rte, "validation")


@needs_glue
def test_hub_source_reports_hidden_test_labels(tmp_path):
    rows = [{**row, "label": -1} for row in glue_rows("rte", "validation", 3)]
    repo = write_hub_repo(tmp_path / "glue", "rte", {"test": rows}, get_task("rte").label_names)
    with pytest.raises(DataError, match=r"row 1: label -1 .*hidden label.*use the validation split"):
        HubSource(repo_id=str(repo), cache_dir=tmp_path / "cache").load_split(get_task("rte"), "test")


def test_hub_source_offline_fails_fast_with_local_data_hint(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    # Independent of import order: force offline mode where huggingface_hub and datasets read it.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    source = HubSource(cache_dir=tmp_path / "empty-cache")
    start = time.perf_counter()
    with pytest.raises(DataError) as caught:
        source.load_split(get_task("rte"), "train")
    assert time.perf_counter() - start < 1.0
    message = str(caught.value)
    assert "'nyu-mll/glue'" in message and "--data-dir DIR" in message and DATA_DIR_ENV in message
    assert "glue_data/" in message and "<config>/<split>.jsonl.gz" in message


def test_hub_source_unreachable_endpoint_fails_fast_without_retrying(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    with socket.socket() as sock:  # a local port nobody listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not reach datasets"))
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"Hub at http://127.0.0.1:{port} is unreachable.*--data-dir DIR.*"
                                        r"HF_HUB_OFFLINE=1"):
        HubSource(cache_dir=tmp_path).load_split(get_task("rte"), "train")
    assert time.perf_counter() - start < 1.0


def test_hub_source_probe_is_bounded_even_when_dns_hangs(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")

    def unreachable_resolver(*args, **kwargs):
        time.sleep(2)
        raise socket.gaierror("Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable_resolver)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not reach datasets"))
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"unreachable \(no answer within 0\.8 s\)"):
        HubSource(cache_dir=tmp_path).load_split(get_task("rte"), "train")
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------------------------
# LocalDirSource on the real offline copy


@needs_glue
def test_local_dir_reads_real_rte_validation():
    rte = get_task("rte")
    data = LocalDirSource(GLUE).load_split(rte, "validation")
    assert len(data) == 277
    assert_matches(data, rte, glue_rows("rte", "validation"))
    assert data.origin == str(GLUE / "rte" / "validation.jsonl.gz")
    with pytest.raises(ValueError):
        data.labels[0] = 1  # read-only


@needs_glue
@pytest.mark.parametrize(("config", "split", "rows"), [
    ("cola", "validation", 1043), ("mrpc", "validation", 408), ("mrpc", "test", 1725), ("stsb", "validation", 1500),
    ("wnli", "train", 635), ("qnli", "validation", 5463), ("mnli", "validation_matched", 9815),
])
def test_local_dir_row_counts(config, split, rows):
    data = LocalDirSource(GLUE).load_split(get_task(config), split)
    assert len(data) == rows
    assert data.labels.dtype == (np.float32 if config == "stsb" else np.int64)


@needs_glue
@pytest.mark.parametrize(("config", "split", "available"), [
    ("qnli", "train", "validation"), ("mnli", "validation_mismatched", "validation_matched"),
])
def test_local_dir_missing_split_names_task_split_paths_and_available(config, split, available):
    with pytest.raises(DataError) as caught:
        LocalDirSource(GLUE).load_split(get_task(config), split)
    message = str(caught.value)
    assert f"Task {config!r} has no {split!r} split" in message
    assert f"{GLUE / config / split}.{{jsonl.gz,jsonl,json,parquet,csv,tsv}}" in message
    assert f"splits present for {config!r}: {available}" in message and "Fix:" in message


def test_local_dir_missing_task_directory(tmp_path):
    (tmp_path / "rte").mkdir()
    with pytest.raises(DataError, match=r"no directory .*qqp; task directories present: rte"):
        LocalDirSource(tmp_path).load_split(get_task("qqp"), "train")


@needs_glue
@pytest.mark.parametrize("fmt", ["jsonl", "json-array", "parquet", "csv", "tsv", "sharded-parquet"])
def test_local_dir_reads_every_format(tmp_path, fmt):
    rte = get_task("rte")
    rows = glue_rows("mrpc", "validation", 9)  # has literal double quotes in texts
    rows = [{"sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": r["label"]} for r in rows]
    folder = tmp_path / "rte"
    folder.mkdir()
    if fmt == "jsonl":
        (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    elif fmt == "json-array":
        (folder / "validation.json").write_text(json.dumps(rows, indent=1))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), folder / "validation.parquet")
    elif fmt == "sharded-parquet":
        pq.write_table(pa.Table.from_pylist(rows[:4]), folder / "validation-00000-of-00002.parquet")
        pq.write_table(pa.Table.from_pylist(rows[4:]), folder / "validation-00001-of-00002.parquet")
    else:
        write_delimited(folder / f"validation.{fmt}", rows, delimiter="," if fmt == "csv" else "\t")
    assert_matches(LocalDirSource(tmp_path).load_split(rte, "validation"), rte, rows)


def write_delimited(path, rows, *, delimiter):
    """CSV with standard quoting; TSV GLUE-style (no quoting: fields are written verbatim)."""
    if delimiter == "\t":
        write_tsv(path, list(rows[0]), [list(row.values()) for row in rows])
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_local_dir_refuses_two_files_for_one_split(tmp_path):
    (tmp_path / "rte").mkdir()
    for name in ("validation.jsonl", "validation.csv"):
        (tmp_path / "rte" / name).write_text("")
    with pytest.raises(DataError, match=r"several files .*validation\.csv, validation\.jsonl.*keep only one"):
        LocalDirSource(tmp_path).load_split(get_task("rte"), "validation")


# ---------------------------------------------------------------------------------------------------------
# GlueTsvSource on glue_data/ fixtures written in the original formats

# How the GLUE TSVs spell labels (independent of the registry, so the mapping is really tested).
TSV_LABELS = {"rte": ("entailment", "not_entailment"), "qnli": ("entailment", "not_entailment"),
              "mnli": ("entailment", "neutral", "contradiction")}
MNLI_TRAIN_HEADER = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
                     "sentence2_parse sentence1 sentence2 label1 gold_label").split()
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + "label2 label3 label4 label5 gold_label".split()
STSB_HEADER = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
QQP_ROWS = [  # synthetic: the offline copy has no qqp
    {"question1": "How do I learn Python?", "question2": 'What is the best way to learn "Python"?', "label": 1},
    {"question1": '"Why" is the sky blue?', "question2": "How tall is Everest?", "label": 0},
]


def tsv_line(fields):
    return "\t".join(str(field) for field in fields) + "\n"


def write_tsv(path: Path, header, rows, *, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("\ufeff" if bom else "") + (tsv_line(header) if header else "") + "".join(map(tsv_line, rows))
    path.write_text(text, encoding="utf-8")


def write_glue_data(root: Path, n: int = 6) -> Path:
    """A small glue_data/ folder in the exact formats of the GLUE download script."""
    cola = lambda rows: [("gj04", r["label"], "" if r["label"] else "*", r["sentence"]) for r in rows]  # noqa: E731
    write_tsv(root / "CoLA" / "train.tsv", None, cola(glue_rows("cola", "train", n)))
    write_tsv(root / "CoLA" / "dev.tsv", None, cola(glue_rows("cola", "validation", n)))
    for split, file in (("train", "train.tsv"), ("validation", "dev.tsv")):
        write_tsv(root / "SST-2" / file, ("sentence", "label"),
                  [(r["sentence"], r["label"]) for r in glue_rows("sst2", split, n)])
        # MSR's original MRPC file starts with a byte-order mark, which the download script copies.
        write_tsv(root / "MRPC" / file, ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                  [(r["label"], 1000 + i, 2000 + i, r["sentence1"], r["sentence2"])
                   for i, r in enumerate(glue_rows("mrpc", split, n))], bom=True)
        write_tsv(root / "STS-B" / file, STSB_HEADER,
                  [(i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", r["sentence1"],
                    r["sentence2"], f"{r['label']:.3f}") for i, r in enumerate(glue_rows("stsb", split, n))])
        write_tsv(root / "RTE" / file, ("index", "sentence1", "sentence2", "label"),
                  [(i, r["sentence1"], r["sentence2"], TSV_LABELS["rte"][r["label"]])
                   for i, r in enumerate(glue_rows("rte", split, n))])
        write_tsv(root / "WNLI" / file, ("index", "sentence1", "sentence2", "label"),
                  [(i, r["sentence1"], r["sentence2"], r["label"]) for i, r in enumerate(glue_rows("wnli", split, n))])
        write_tsv(root / "QQP" / file, ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                  [(i, 2 * i, 2 * i + 1, r["question1"], r["question2"], r["label"]) for i, r in enumerate(QQP_ROWS)])
    write_tsv(root / "QNLI" / "dev.tsv", ("index", "question", "sentence", "label"),
              [(i, r["question"], r["sentence"], TSV_LABELS["qnli"][r["label"]])
               for i, r in enumerate(glue_rows("qnli", "validation", n))])
    mnli = glue_rows("mnli", "validation_matched", 2 * n)

    def mnli_row(i, r, n_votes):
        gold = TSV_LABELS["mnli"][r["label"]]
        return (i, 1000 + i, f"{1000 + i}e", "fiction", "( parse )", "( parse )", "(ROOT parse)", "(ROOT parse)",
                r["premise"], r["hypothesis"], *([gold] * n_votes), gold)

    write_tsv(root / "MNLI" / "train.tsv", MNLI_TRAIN_HEADER, [mnli_row(i, r, 1) for i, r in enumerate(mnli[:n])])
    write_tsv(root / "MNLI" / "dev_matched.tsv", MNLI_DEV_HEADER, [mnli_row(i, r, 5) for i, r in enumerate(mnli[:n])])
    write_tsv(root / "MNLI" / "dev_mismatched.tsv", MNLI_DEV_HEADER,
              [mnli_row(i, r, 5) for i, r in enumerate(mnli[n:])])
    return root


@pytest.fixture(scope="module")
def glue_data(tmp_path_factory):
    if not GLUE.is_dir():
        pytest.skip("offline GLUE copy not present")
    return write_glue_data(tmp_path_factory.mktemp("fixtures") / "glue_data")


@pytest.mark.parametrize(("config", "split", "hub_split"), [
    ("cola", "train", "train"), ("cola", "validation", "validation"), ("sst2", "train", "train"),
    ("mrpc", "train", "train"), ("mrpc", "validation", "validation"), ("stsb", "validation", "validation"),
    ("rte", "validation", "validation"), ("wnli", "train", "train"), ("qnli", "validation", "validation"),
    ("mnli", "train", "validation_matched"), ("mnli", "validation_matched", "validation_matched"),
])
def test_glue_tsv_matches_hub_rows_and_label_ids(glue_data, config, split, hub_split):
    task = get_task(config)
    data = GlueTsvSource(glue_data).load_split(task, split)
    assert_matches(data, task, glue_rows(config, hub_split, 6))


def test_glue_tsv_mnli_mismatched_and_qqp(glue_data):
    source = GlueTsvSource(glue_data)
    mnli = get_task("mnli")
    mismatched = glue_rows("mnli", "validation_matched", 12)[6:]  # the fixture's dev_mismatched rows
    assert_matches(source.load_split(mnli, "validation_mismatched"), mnli, mismatched)
    qqp = get_task("qqp")
    assert_matches(source.load_split(qqp, "validation"), qqp, QQP_ROWS)
    assert source.available_splits(mnli) == ("train", "validation_matched", "validation_mismatched")
    assert source.available_splits(get_task("qnli")) == ("validation",)


def test_glue_tsv_keeps_literal_quotes_that_a_quoting_parser_mangles(glue_data):
    path = glue_data / "MRPC" / "dev.tsv"
    expected = glue_rows("mrpc", "validation", 6)
    assert expected[0]["sentence2"].startswith('" The foodservice')  # the quirk this test is about
    with open(path, encoding="utf-8-sig", newline="") as handle:
        mangled = list(csv.reader(handle, delimiter="\t"))  # default quoting: the field eats tabs and lines
    assert [row[4] for row in mangled[1:]] != [row["sentence2"] for row in expected]
    data = GlueTsvSource(glue_data).load_split(get_task("mrpc"), "validation")
    assert data.texts[1][0] == expected[0]["sentence2"]
    assert data.texts[1] == [row["sentence2"] for row in expected]


def test_glue_tsv_errors(glue_data, tmp_path):
    source = GlueTsvSource(glue_data)
    with pytest.raises(DataError, match=r"test\.tsv files have no labels; the validation split is the test set"):
        source.load_split(get_task("rte"), "test")
    with pytest.raises(DataError, match=r"'qnli', split 'train': .*QNLI/train\.tsv not found; splits present under "
                                        r".*QNLI: validation\. Fix:"):
        source.load_split(get_task("qnli"), "train")
    custom = TaskSpec(name="mine", text_columns=("text",), label_names=("a", "b"), metrics=("accuracy",))
    with pytest.raises(DataError, match=r"holds only the GLUE tasks .*'mine' is not one of them"):
        source.load_split(custom, "train")

    broken = write_glue_data(tmp_path / "glue_data", n=3)
    rte_dev = broken / "RTE" / "dev.tsv"
    lines = rte_dev.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(" ", "\t", 1)  # a tab inside a sentence: one field too many
    rte_dev.write_text("".join(lines))
    with pytest.raises(DataError, match=rf"{rte_dev}, line 3: 5 fields, expected 4 \(index, sentence1, sentence2, "
                                        r"label\)\. Fix: give the row exactly 4 fields\. .*quotes are literal"):
        GlueTsvSource(broken).load_split(get_task("rte"), "validation")
    sst_train = broken / "SST-2" / "train.tsv"
    sst_train.write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match=rf"{sst_train}, line 1 \(header\): missing column\(s\) 'sentence' .*"
                                        r"columns present: 'text', 'label'\. Fix: .*SST-2/train\.tsv"):
        GlueTsvSource(broken).load_split(get_task("sst2"), "train")
    mnli_dev = broken / "MNLI" / "dev_matched.tsv"
    lines = mnli_dev.read_text().splitlines(keepends=True)
    lines[3] = lines[3].rstrip("\n").rsplit("\t", 1)[0] + "\tneutrl\n"
    mnli_dev.write_text("".join(lines))
    with pytest.raises(DataError, match=rf"{mnli_dev}, line 4: label 'neutrl' is not one of the names entailment, "
                                        r"neutral, contradiction or an id 0\.\.2 .*column 'gold_label'.*Fix:"):
        GlueTsvSource(broken).load_split(get_task("mnli"), "validation_matched")


# ---------------------------------------------------------------------------------------------------------
# resolve_source


def test_resolve_source_detects_layouts(glue_data, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert isinstance(resolve_source(glue_data), GlueTsvSource)
    assert isinstance(resolve_source(str(GLUE)), LocalDirSource)
    hub = resolve_source(None)
    assert isinstance(hub, HubSource) and hub.repo_id == "nyu-mll/glue"
    monkeypatch.setenv(DATA_DIR_ENV, str(glue_data))
    assert isinstance(resolve_source(), GlueTsvSource)
    assert isinstance(resolve_source(GLUE), LocalDirSource)  # an explicit directory wins over the variable


def test_resolve_source_errors(glue_data, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match=r"nowhere \(from --data-dir\) does not exist.*--data-dir DIR"):
        resolve_source(tmp_path / "nowhere")
    parent = tmp_path / "downloads"
    (parent / "glue_data").mkdir(parents=True)
    (parent / "notes.txt").write_text("")
    monkeypatch.setenv(DATA_DIR_ENV, str(parent))
    with pytest.raises(DataError, match=rf"\(from {DATA_DIR_ENV}\) holds neither the Hub layout .* nor a "
                                        r"glue_data/ folder .*contains: glue_data, notes\.txt\. "
                                        r"Did you mean .*downloads/glue_data\?"):
        resolve_source()


# ---------------------------------------------------------------------------------------------------------
# Custom tasks

CUSTOM_ROWS = [
    {"review": 'Great, "really" great\tproduct', "stars": "good"},
    {"review": "Broke after a day, sadly", "stars": 0},
    {"review": "Okay-ish", "stars": "1"},
    {"review": "Ünïcödé ✓ works", "stars": "bad"},
]
CUSTOM_LABELS = [1, 0, 1, 0]


def write_custom(path: Path, rows, fmt):
    if fmt == "csv":
        write_delimited(path, rows, delimiter=",")
    elif fmt == "tsv":
        rows = [{**row, "review": row["review"].replace("\t", " ")} for row in rows]  # TSV texts cannot hold tabs
        write_delimited(path, rows, delimiter="\t")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif fmt == "jsonl.gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist([{**row, "stars": str(row["stars"])} for row in rows]), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "jsonl.gz", "parquet"])
def test_custom_task_in_every_format(tmp_path, fmt):
    train = write_custom(tmp_path / f"train.{fmt}", CUSTOM_ROWS, fmt)
    test = write_custom(tmp_path / f"test.{fmt}", CUSTOM_ROWS[:2], fmt)
    custom = CustomTaskSpec(name="reviews", files={"train": train, "test": test}, text_columns=("review",),
                            label_column="stars", label_names=("bad", "good"))
    task, source = custom.to_task_spec(), CustomFileSource(custom.name, custom.files)
    data = source.load_split(task, "train")
    expected = [row["review"] for row in CUSTOM_ROWS]
    if fmt == "tsv":
        expected = [text.replace("\t", " ") for text in expected]
    assert data.texts == (expected,)
    np.testing.assert_array_equal(data.labels, CUSTOM_LABELS)
    assert len(source.load_split(task, "test")) == 2
    with pytest.raises(DataError, match=r"no file for split 'dev'; files are given for: train, test\. Fix:"):
        source.load_split(task, "dev")


def test_custom_regression_task_and_label_name_precedence(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"a": "x", "b": "y", "score": 4.5}\n{"a": "x", "b": "z", "score": "0.25"}\n')
    task = TaskSpec(name="sim", text_columns=("a", "b"), label_names=None, metrics=("pearson",),
                    label_column="score", test_splits=("test",))
    data = CustomFileSource("sim", {"train": path}).load_split(task, "train")
    assert data.labels.dtype == np.float32
    np.testing.assert_allclose(data.labels, [4.5, 0.25])
    assert data.texts == (["x", "x"], ["y", "z"])
    # Label names that look like ids: a string that is a name is read as the name (star "1" is id 0).
    stars = tmp_path / "stars.csv"
    stars.write_text("text,label\nmeh,1\nwow,2\nby id,1.0\n")
    task = TaskSpec(name="stars", text_columns=("text",), label_names=("1", "2"), metrics=("accuracy",))
    data = CustomFileSource("stars", {"train": stars}).load_split(task, "train")
    np.testing.assert_array_equal(data.labels, [0, 1, 1])


# ---------------------------------------------------------------------------------------------------------
# Malformed input: every error names the file, the row and the fix

CLS = TaskSpec(name="mine", text_columns=("text",), label_names=("neg", "pos"), metrics=("accuracy",))
REG = TaskSpec(name="mine", text_columns=("text",), label_names=None, metrics=("pearson",))


def load(path, task=CLS):
    return CustomFileSource("mine", {"train": path}).load_split(task, "train")


@pytest.mark.parametrize(("name", "content", "task", "expected"), [
    ("bad.jsonl", b'{"text": "a", "label": 0}\n{"text": "b", "label": 1\n', CLS,
     r"line 2: not valid JSON \(.*\)\. Fix: each line must hold exactly one complete JSON object"),
    ("list.jsonl", b'{"text": "a", "label": 0}\n["b", 1]\n', CLS, r"line 2: expected a JSON object .*got a JSON list"),
    ("cols.jsonl", b'{"text": "a", "label": 0}\n\n{"txt": "b", "label": 1}\n', CLS,
     r"line 3: missing column\(s\) 'text' needed by task 'mine'; columns present: 'txt', 'label'\. Fix: rename"),
    ("cols.csv", b"sentence,label\na,neg\n", CLS, r"line 1 \(header\): missing column\(s\) 'text'.*Fix: rename"),
    ("label.jsonl", b'{"text": "a", "label": "pos"}\n{"text": "b", "label": "positive"}\n', CLS,
     r"line 2: label 'positive' is not one of the names neg, pos or an id 0\.\.1 \(task 'mine', column 'label'\)\. "
     r"Fix: correct the row"),
    ("label.csv", b"text,label\na,0\nb,2\n", CLS,
     r"line 3: label '2' is not one of the names neg, pos or an id 0\.\.1"),
    ("bool.jsonl", b'{"text": "a", "label": true}\n', CLS, r"line 1: label True is not one of"),
    ("reg.csv", b"text,label\na,0.5\nb,high\n", REG, r"line 3: regression label 'high' is not a number.*Fix:"),
    ("nan.jsonl", b'{"text": "a", "label": NaN}\n', REG, r"line 1: regression label nan is not a finite number"),
    ("null.jsonl", b'{"text": null, "label": 0}\n', CLS, r"line 1: column 'text' holds None, not text\. Fix:"),
    ("empty.jsonl", b"", CLS, r"no data rows for task 'mine', split 'train'\. Fix: check that the file"),
    ("blank.jsonl", b"\n\n", CLS, r"no data rows for task 'mine'"),
    ("empty.csv", b"", CLS, r"the file is empty \(no header row and no data\)\. Fix:"),
    ("header.tsv", b"text\tlabel\n", CLS, r"no data rows for task 'mine'"),
    ("utf8.csv", b"text,label\nok,0\nbad \xff byte,1\n", CLS,
     r"line 3: not valid UTF-8 \(invalid start byte at byte 4 of the line\)\. Fix: re-save the file with UTF-8"),
    ("utf8.jsonl.gz", gzip.compress(b'{"text": "a", "label": 0}\n{"text": "\xc3", "label": 0}\n', mtime=0), CLS,
     r"line 2: not valid UTF-8"),
    ("corrupt.jsonl.gz", b"this is not gzip", CLS, r"line 1: cannot decompress .*Fix: the \.gz file is corrupt"),
    ("fields.csv", b"text,label\na,0\nb,1,extra\n", CLS, r"line 3: 3 fields, expected 2 \(text, label\)\. Fix: give"),
    ("quote.csv", b'text,label\n"unclosed,0\n', CLS, r"line 2: cannot parse the row .*Fix: repair the row's quoting"),
    ("array.json", b'[{"text": "a", "label": 0},\n {"text": "b", "label": }]', CLS,
     r"line 2: not valid JSON .*Fix: repair the JSON array"),
    ("array2.json", b'[{"text": "a", "label": 0}, {"text": "b", "label": 7}]', CLS, r"record 2: label 7 is not"),
    ("broken.parquet", b"PAR1 nonsense", CLS, r"not a readable parquet file .*Fix: re-export the file"),
])
def test_malformed_input_errors_name_file_row_and_fix(tmp_path, name, content, task, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as caught:
        load(path, task)
    assert str(caught.value).startswith(str(path))


def test_parquet_errors_name_the_row(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 5]}), path)
    with pytest.raises(DataError, match=rf"{path}, row 3: label 5 is not one of"):
        load(path)
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}), path)
    with pytest.raises(DataError, match=rf"{path}: no data rows"):
        load(path)


def test_missing_file_at_load_time(tmp_path):
    with pytest.raises(DataError, match=r"gone\.csv: file not found"):
        load(tmp_path / "gone.csv")
    with pytest.raises(DataError, match="serves the files of task 'mine', not 'rte'"):
        CustomFileSource("mine", {"train": tmp_path / "x.csv"}).load_split(get_task("rte"), "train")
