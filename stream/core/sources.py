"""Data sources: where a run reads a task's splits from, chosen once per run.

Every source implements one method, ``load_split(task, split) -> SplitData``:

- :class:`HubSource` loads ``nyu-mll/glue`` (or any Hub-layout repository, remote or a local folder) with
  ``datasets.load_dataset``; without a network it fails at once with a message saying how to use local files.
- :class:`LocalDirSource` reads the Hub's file layout on disk, ``<root>/<config>/<split>.<ext>`` (also the
  sharded ``<split>-00000-of-00001.<ext>`` names of a cloned Hub repository), as in ``../shared/glue``.
- :class:`GlueTsvSource` reads the classic ``glue_data/`` folder of the original GLUE download script.
- :class:`CustomFileSource` serves the files of a :class:`~stream.core.tasks.CustomTaskSpec`.

:func:`resolve_source` picks one from ``--data-dir`` / ``TASKSTREAM_DATA_DIR`` / the Hub.

Files are parsed here rather than by ``datasets`` so that every problem (missing split or column, unknown
label, empty file, bad JSON, wrong number of TSV fields, bad UTF-8) is reported with the file, the 1-based line
(or row) and the fix. No row is ever dropped silently; only blank lines are skipped.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import numbers
import os
import re
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream.core.errors import DataError
from stream.core.tasks import SUPPORTED_EXTENSIONS, TaskSpec, file_format

logger = logging.getLogger(__name__)

#: Environment variable naming a local data directory when ``--data-dir`` is not given.
DATA_DIR_ENV = "TASKSTREAM_DATA_DIR"

_LOCAL_DATA_HINT = (
    f"Point the run at local files: pass --data-dir DIR or set the environment variable {DATA_DIR_ENV}=DIR, "
    "where DIR holds either the Hub layout <config>/<split>.jsonl.gz (for example ../shared/glue) or a "
    "classic glue_data/ folder (CoLA/train.tsv, SST-2/dev.tsv, ...)."
)


@dataclass(frozen=True, eq=False)
class SplitData:
    """One split of one task, ready to tokenize.

    Attributes:
        task: task name.
        split: split name.
        texts: one list of strings per text column of the task, in the task's column order.
        labels: ``int64`` label ids, or ``float32`` targets for a regression task (read-only).
        origin: where the rows came from (file paths or a Hub id), for messages.
    """

    task: str
    split: str
    texts: tuple[list[str], ...]
    labels: np.ndarray
    origin: str

    def __post_init__(self) -> None:
        assert all(len(column) == len(self.labels) for column in self.texts), "text/label lengths differ"
        self.labels.flags.writeable = False

    def __len__(self) -> int:
        return len(self.labels)


class DataSource(Protocol):
    """Anything that can load one split of a task."""

    def load_split(self, task: TaskSpec, split: str) -> SplitData:
        """Return all rows of ``split`` for ``task``; raise :class:`DataError` saying what is wrong and the fix."""
        ...


# ----------------------------------------------------------------------------------------------------------
# Reading files into numbered records


@dataclass
class _Records:
    """Rows of one file (or Hub split), each numbered for messages, before task-specific checking."""

    origin: str
    unit: str  # "line", "row" or "record": what the row numbers count
    columns: tuple[str, ...] | None  # known up front (header, schema), or None (JSON lines: per record)
    rows: Iterable[tuple[int, Mapping[str, Any]]]


def _decoded_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a (possibly gzip-compressed) UTF-8 text file, naming the line of any decoding error."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path}, line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start} of "
                                    "the line). Fix: re-save the file with UTF-8 encoding.") from None
                # A byte-order mark (Windows editors, MRPC's original files) is not part of the first field.
                yield line.removeprefix("\ufeff") if number == 1 else line
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}, line {number + 1}: cannot decompress ({exc}). Fix: the .gz file is corrupt or "
                        "truncated; re-create it, or rename it if it is not compressed.") from None


def _json_object(path: Path, unit: str, number: int, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{path}, {unit} {number}: expected a JSON object with one field per column, got a JSON "
                        f"{type(value).__name__}. Fix: write each row as {{\"column\": value, ...}}.")
    return value


def _json_lines_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for number, line in enumerate(_decoded_lines(path), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno}). Fix: each "
                            "line must hold exactly one complete JSON object.") from None
        yield number, _json_object(path, "line", number, value)


def _read_json(path: Path) -> _Records:
    """``.json``: JSON lines, or one JSON array of objects (both are what ``datasets``' JSON loader accepts)."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"["):
        return _Records(str(path), "line", None, _json_lines_rows(path))
    data = path.read_bytes()
    try:
        values = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 ({exc.reason}). Fix: re-save the file with UTF-8 "
                        "encoding.") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}). Fix: "
                        "repair the JSON array, or write the file as JSON lines (one object per line).") from None
    rows = ((number, _json_object(path, "record", number, value)) for number, value in enumerate(values, 1))
    return _Records(str(path), "record", None, rows)


def _read_delimited(path: Path, *, delimiter: str, quoting: int,
                    fieldnames: tuple[str, ...] | None = None) -> _Records:
    """CSV/TSV with a header row (or the given ``fieldnames`` for headerless files such as CoLA's)."""
    # strict=True turns malformed quoting into an error instead of a silently merged field.
    reader = csv.reader(_decoded_lines(path), delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = fieldnames if fieldnames is not None else next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{path}, line 1: cannot parse the header ({exc}).") from None
    if header is None:
        raise DataError(f"{path}: the file is empty (no header row and no data). Fix: check that the file was "
                        "written completely, or point the task at the right file.")
    header = tuple(header)

    def rows() -> Iterator[tuple[int, Mapping[str, Any]]]:
        while True:
            # A quoted CSV field may span lines: report the line the record starts on.
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"{path}, line {start}: cannot parse the row ({exc}). Fix: repair the row's "
                                "quoting.") from None
            if not fields:
                continue  # blank line
            if len(fields) != len(header):
                quoting_note = (" Fields are split on every tab; quotes are literal text, so a tab inside a text "
                                "must be removed or replaced." if quoting == csv.QUOTE_NONE else "")
                raise DataError(f"{path}, line {start}: {len(fields)} fields, expected {len(header)} "
                                f"({', '.join(header)}). Fix: give the row exactly {len(header)} fields."
                                f"{quoting_note}")
            yield start, dict(zip(header, fields))

    return _Records(str(path), "line", header, rows())


def _read_parquet(path: Path) -> _Records:
    import pyarrow.parquet as pq  # only needed for parquet files

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable parquet file ({exc}). Fix: re-export the file.") from None
    columns = tuple(table.column_names)
    values = {name: table.column(name).to_pylist() for name in columns}
    rows = ((i + 1, {name: values[name][i] for name in columns}) for i in range(table.num_rows))
    return _Records(str(path), "row", columns, rows)


def _read_file(path: Path, *, tsv_fieldnames: tuple[str, ...] | None = None) -> _Records:
    """Open ``path`` by its extension. TSV is GLUE-style (no quoting); CSV uses standard quoting."""
    if not path.is_file():
        raise DataError(f"{path}: file not found. Fix: check the path.")
    fmt = file_format(path)
    if fmt in ("jsonl", "jsonl.gz"):
        return _Records(str(path), "line", None, _json_lines_rows(path))
    if fmt == "json":
        return _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "csv":
        return _read_delimited(path, delimiter=",", quoting=csv.QUOTE_MINIMAL)
    if fmt == "tsv":
        return _read_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE, fieldnames=tsv_fieldnames)
    raise DataError(f"{path}: unsupported file type. Fix: use one of "
                    f"{', '.join('.' + ext for ext in SUPPORTED_EXTENSIONS)}.")


def read_text_rows(path: str | Path, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The ``columns`` of every row of a data file (CSV, TSV with a header, JSON, JSON lines, parquet), read
    as training reads its files: the same decoding, quoting and row checks, so a file training refuses
    (an unterminated quote, bytes that are not UTF-8) is refused here too, naming the line.

    Files of any other extension are plain text, one row per non-blank line, the columns separated by tabs.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Fix: check the path.")
    if file_format(path) is None:
        return _plain_text_rows(path, columns)
    records = _read_file(path)
    if records.columns is not None:
        absent = [c for c in columns if c not in records.columns]
        if absent:
            raise DataError(f"{path}: missing column(s) {', '.join(map(repr, absent))}; its header is "
                            f"{list(records.columns)}. Fix: name the columns {', '.join(columns)}.")
    rows = []
    for number, record in records.rows:
        texts = tuple(record.get(c) for c in columns)
        bad = next((c for c, t in zip(columns, texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"{path}, {records.unit} {number}: column {bad!r} is "
                            f"{'missing' if record.get(bad) is None else 'not text'}. Fix: give every row the "
                            f"text column(s) {', '.join(columns)}.")
        rows.append(texts)
    return rows


def _plain_text_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    rows = []
    for number, line in enumerate(_decoded_lines(path), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if "\x00" in line:
            raise DataError(f"{path}, line {number}: a NUL byte; this looks like a binary file, not text. Fix: give "
                            "a text file, one example per line.")
        fields = tuple(line.split("\t"))
        if len(fields) != len(columns):
            raise DataError(f"{path}, line {number}: {len(fields)} tab-separated field(s), expected {len(columns)} "
                            f"({' and '.join(columns)}) per line.")
        rows.append(fields)
    return rows


# ----------------------------------------------------------------------------------------------------------
# Checking records against a task


class _BadValue(Exception):
    """A cell that cannot be used; the message says why (the caller adds file and row)."""


def _label_parser(task: TaskSpec) -> Callable[[Any], float]:
    """Return a function mapping one label cell to an id (or a float for regression), raising ``_BadValue``."""
    if task.label_names is None:
        def regression(value: Any) -> float:
            if isinstance(value, str):
                try:
                    number = float(value.strip())
                except ValueError:
                    raise _BadValue(f"regression label {value!r} is not a number") from None
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                number = float(value)
            else:
                raise _BadValue(f"regression label {value!r} is not a number")
            if not math.isfinite(number):
                raise _BadValue(f"regression label {value!r} is not a finite number")
            return number
        return regression

    names = {name: i for i, name in enumerate(task.label_names)}
    valid = f"one of the names {', '.join(task.label_names)} or an id 0..{len(names) - 1}"

    def classification(value: Any) -> int:
        if isinstance(value, str):
            text = value.strip()
            if text in names:  # a label name wins over an id that looks the same
                return names[text]
            try:
                number = float(text)  # "1" and also "1.0", as pandas writes ids of a column that had gaps
            except ValueError:
                raise _BadValue(f"label {value!r} is not {valid}") from None
            if not number.is_integer():
                raise _BadValue(f"label {value!r} is not {valid}")
            label = int(number)
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
            label = int(value)
        elif isinstance(value, float) and value.is_integer():  # ids stored as floats (pandas, parquet)
            label = int(value)
        else:
            raise _BadValue(f"label {value!r} is not {valid}")
        if not 0 <= label < len(names):
            hidden = (" (-1 marks a hidden label, as in GLUE test splits, which cannot be scored; use the "
                      "validation split as the test set)" if label == -1 else "")
            raise _BadValue(f"label {value!r} is not {valid}{hidden}")
        return label

    return classification


def _to_split_data(task: TaskSpec, split: str, records: _Records, *, fields: tuple[str, ...] | None = None,
                   label_field: str | None = None, column_fix: str) -> SplitData:
    """Check every record against ``task`` and collect texts and labels.

    ``fields``/``label_field`` are the record's names for the task's text and label columns when they differ
    (GLUE TSV files); ``column_fix`` is the advice given when a column is missing.
    """
    fields = fields or task.text_columns
    label_field = label_field or task.label_column
    needed = (*fields, label_field)

    def missing_error(where: str, present: Iterable[str]) -> DataError:
        absent = [name for name in needed if name not in present]
        return DataError(f"{records.origin}{where}: missing column(s) {', '.join(map(repr, absent))} needed by "
                         f"task {task.name!r}; columns present: {', '.join(map(repr, present)) or 'none'}. "
                         f"Fix: {column_fix}")

    if records.columns is not None and not set(needed) <= set(records.columns):
        where = ", line 1 (header)" if records.unit == "line" else ""
        raise missing_error(where, records.columns)

    parse_label = _label_parser(task)
    texts: tuple[list[str], ...] = tuple([] for _ in fields)
    labels: list[float] = []
    for number, record in records.rows:
        where = f", {records.unit} {number}"
        if records.columns is None and not set(needed) <= record.keys():
            raise missing_error(where, list(record))
        for column, name in zip(texts, fields):
            text = record[name]
            if not isinstance(text, str):
                raise DataError(f"{records.origin}{where}: column {name!r} holds {text!r}, not text. Fix: give "
                                "every row a string in this column (an empty string is allowed).")
            column.append(text)
        try:
            labels.append(parse_label(record[label_field]))
        except _BadValue as exc:
            raise DataError(f"{records.origin}{where}: {exc} (task {task.name!r}, column {label_field!r}). Fix: "
                            "correct the row, or the task's label_names if the file's label set is the "
                            "right one.") from None
    if not labels:
        raise DataError(f"{records.origin}: no data rows for task {task.name!r}, split {split!r}. Fix: check that "
                        "the file was written completely, or point the task at the right file.")
    dtype = np.float32 if task.is_regression else np.int64
    return SplitData(task=task.name, split=split, texts=texts, labels=np.asarray(labels, dtype=dtype),
                     origin=records.origin)


# ----------------------------------------------------------------------------------------------------------
# Local files in the Hub's layout


# "<split>.<ext>" or a shard of a cloned Hub repo, "<split>-00000-of-00002.<ext>".
_SPLIT_FILE = re.compile(r"^(?P<split>.+?)(?:-\d+-of-\d+)?\.(?P<ext>" +
                         "|".join(re.escape(ext) for ext in SUPPORTED_EXTENSIONS) + r")$")


def _split_files(directory: Path) -> dict[str, list[Path]]:
    """Split name -> its data file(s) in ``directory`` (several when sharded or stored twice)."""
    found: dict[str, list[Path]] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            match = _SPLIT_FILE.match(path.name)
            if match and path.is_file():
                found.setdefault(match["split"], []).append(path)
    return found


class LocalDirSource:
    """Local files in the Hub's layout: ``<root>/<config>/<split>.<ext>``, as in ``../shared/glue``.

    ``ext`` is one of :data:`SUPPORTED_EXTENSIONS`; the files have the Hub's columns (text columns and
    ``label`` with the Hub's label ids; label names are accepted too). A split may be sharded the way a cloned
    Hub repository stores it (``train-00000-of-00002.parquet``, ...); shards are read in name order.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"Data directory {self.root} does not exist. {_LOCAL_DATA_HINT}")

    def __repr__(self) -> str:
        return f"LocalDirSource({str(self.root)!r})"

    def available_splits(self, task: TaskSpec) -> tuple[str, ...]:
        """The splits of ``task`` present under the root."""
        return tuple(_split_files(self.root / task.name))

    def load_split(self, task: TaskSpec, split: str) -> SplitData:
        """Read ``<root>/<task>/<split>.<ext>``; see :class:`DataSource`."""
        directory = self.root / task.name
        found = _split_files(directory)
        paths = found.get(split)
        if not paths:
            raise DataError(self._missing_message(task, split, directory, found))
        formats = {file_format(path) for path in paths}
        if len(formats) > 1:
            raise DataError(f"Task {task.name!r}, split {split!r}: several files in {directory} could be the split "
                            f"({', '.join(p.name for p in paths)}). Fix: keep only one of them.")
        column_fix = (f"the files under {self.root} must have the Hub's columns for {task.name!r} "
                      f"({', '.join((*task.text_columns, task.label_column))}).")
        parts = [_to_split_data(task, split, _read_file(path), column_fix=column_fix) for path in paths]
        return _concat(parts) if len(parts) > 1 else parts[0]

    def _missing_message(self, task: TaskSpec, split: str, directory: Path, found: Mapping[str, list[Path]]) -> str:
        tried = f"{directory / split}.{{{','.join(SUPPORTED_EXTENSIONS)}}}"
        if not directory.is_dir():
            present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            where = f"there is no directory {directory}; task directories present: {', '.join(present) or 'none'}"
        else:
            where = f"splits present for {task.name!r}: {', '.join(found) or 'none'}"
        return (f"Task {task.name!r} has no {split!r} split under {self.root}: tried {tried} (or shards "
                f"{split}-NNNNN-of-NNNNN.<ext>); {where}. Fix: add that file, or leave this task/split out of the "
                "run.")


def _concat(parts: list[SplitData]) -> SplitData:
    first = parts[0]
    texts = tuple([text for part in parts for text in part.texts[i]] for i in range(len(first.texts)))
    return SplitData(task=first.task, split=first.split, texts=texts,
                     labels=np.concatenate([part.labels for part in parts]),
                     origin=", ".join(part.origin for part in parts))


# ----------------------------------------------------------------------------------------------------------
# The classic glue_data/ folder


@dataclass(frozen=True)
class _GlueTsvLayout:
    """Where one task lives in glue_data/ and which TSV columns hold its texts and label."""

    directory: str
    text_fields: tuple[str, ...]  # in the order of the task's (Hub) text columns
    label_field: str
    files: Mapping[str, str]  # Hub split name -> file name
    fieldnames: tuple[str, ...] | None = None  # for files without a header row


_TRAIN_DEV = {"train": "train.tsv", "validation": "dev.tsv"}

_GLUE_TSV: dict[str, _GlueTsvLayout] = {
    # CoLA has no header: source code, label, the original author's mark ("*" for unacceptable), sentence.
    "cola": _GlueTsvLayout("CoLA", ("sentence",), "label", _TRAIN_DEV,
                           fieldnames=("source", "label", "original_label", "sentence")),
    "sst2": _GlueTsvLayout("SST-2", ("sentence",), "label", _TRAIN_DEV),
    "mrpc": _GlueTsvLayout("MRPC", ("#1 String", "#2 String"), "Quality", _TRAIN_DEV),
    "stsb": _GlueTsvLayout("STS-B", ("sentence1", "sentence2"), "score", _TRAIN_DEV),
    "qqp": _GlueTsvLayout("QQP", ("question1", "question2"), "is_duplicate", _TRAIN_DEV),
    "mnli": _GlueTsvLayout("MNLI", ("sentence1", "sentence2"), "gold_label",
                           {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                            "validation_mismatched": "dev_mismatched.tsv"}),
    "qnli": _GlueTsvLayout("QNLI", ("question", "sentence"), "label", _TRAIN_DEV),
    "rte": _GlueTsvLayout("RTE", ("sentence1", "sentence2"), "label", _TRAIN_DEV),
    "wnli": _GlueTsvLayout("WNLI", ("sentence1", "sentence2"), "label", _TRAIN_DEV),
}


class GlueTsvSource:
    """The ``glue_data/`` folder written by the original GLUE download script (``CoLA/train.tsv``, ...).

    ``dev*.tsv`` files are the Hub's ``validation*`` splits. Files are read exactly as GLUE wrote them:
    tab-separated without quoting (a ``"`` is literal text), CoLA without a header, and string labels
    (``entailment``, ...) mapped to the Hub's label ids. ``test.tsv`` files are not served: they have no labels.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"Data directory {self.root} does not exist. {_LOCAL_DATA_HINT}")

    def __repr__(self) -> str:
        return f"GlueTsvSource({str(self.root)!r})"

    def available_splits(self, task: TaskSpec) -> tuple[str, ...]:
        """The splits of ``task`` present under the root."""
        layout = _GLUE_TSV.get(task.name)
        if layout is None:
            return ()
        return tuple(split for split, name in layout.files.items() if (self.root / layout.directory / name).is_file())

    def load_split(self, task: TaskSpec, split: str) -> SplitData:
        """Read ``<root>/<Task>/<file>.tsv``; see :class:`DataSource`."""
        layout = _GLUE_TSV.get(task.name)
        if layout is None:
            raise DataError(f"A glue_data/ folder ({self.root}) holds only the GLUE tasks "
                            f"({', '.join(_GLUE_TSV)}); task {task.name!r} is not one of them. Fix: give custom "
                            "tasks their own files (CustomTaskSpec).")
        if split not in layout.files:
            test_note = " (GLUE's test.tsv files have no labels; the validation split is the test set)" \
                if split.startswith("test") else ""
            raise DataError(f"glue_data/ has no {split!r} split for task {task.name!r}{test_note}. Splits it can "
                            f"hold: {', '.join(layout.files)}.")
        path = self.root / layout.directory / layout.files[split]
        if not path.is_file():
            available = self.available_splits(task)
            raise DataError(f"Task {task.name!r}, split {split!r}: {path} not found; splits present under "
                            f"{self.root / layout.directory}: {', '.join(available) or 'none'}. Fix: copy the "
                            "file from a complete glue_data download, or leave this task/split out of the run.")
        expected = ", ".join(layout.fieldnames or (*layout.text_fields, layout.label_field))
        column_fix = (f"this does not look like GLUE's {layout.directory}/{layout.files[split]} (columns expected: "
                      f"{expected}). Check that the directory is an unmodified glue_data/ folder.")
        records = _read_file(path, tsv_fieldnames=layout.fieldnames)
        return _to_split_data(task, split, records, fields=layout.text_fields, label_field=layout.label_field,
                              column_fix=column_fix)


def _looks_like_glue_data(root: Path) -> bool:
    return any(any((root / layout.directory / name).is_file() for name in layout.files.values())
               for layout in _GLUE_TSV.values())


def _looks_like_hub_layout(root: Path) -> bool:
    return any(child.is_dir() and _split_files(child) for child in root.iterdir())


# ----------------------------------------------------------------------------------------------------------
# Custom task files


class CustomFileSource:
    """Serves a custom task's own files: split -> path (see :class:`~stream.core.tasks.CustomTaskSpec` for formats)."""

    def __init__(self, task_name: str, files: Mapping[str, str | Path]) -> None:
        self.task_name = task_name
        self.files = {split: Path(path).expanduser() for split, path in files.items()}

    def __repr__(self) -> str:
        return f"CustomFileSource({self.task_name!r}, {{{', '.join(map(repr, self.files))}}})"

    def load_split(self, task: TaskSpec, split: str) -> SplitData:
        """Read the file given for ``split``; see :class:`DataSource`."""
        if task.name != self.task_name:
            raise DataError(f"This source serves the files of task {self.task_name!r}, not {task.name!r}.")
        path = self.files.get(split)
        if path is None:
            raise DataError(f"Custom task {task.name!r} has no file for split {split!r}; files are given for: "
                            f"{', '.join(self.files)}. Fix: add the split to the task's files.")
        column_fix = ("rename the column in the file, or set the task's text_columns/label_column to the file's "
                      "column names.")
        return _to_split_data(task, split, _read_file(path), column_fix=column_fix)


# ----------------------------------------------------------------------------------------------------------
# The Hugging Face Hub


class HubSource:
    """GLUE (or any Hub-layout dataset) through ``datasets.load_dataset(repo_id, task.name, split=...)``.

    ``repo_id`` may also be a local folder laid out like a Hub repository (README.md with ``configs:`` in its
    YAML header, plus data files). Before touching the network the source checks that the Hub is reachable
    (a HEAD request to ``huggingface_hub.constants.ENDPOINT`` answered within ``probe_timeout`` seconds
    in all), because a failed lookup inside ``datasets`` retries for about 20 s. With ``HF_HUB_OFFLINE=1``
    only the local ``datasets`` cache is used, which fails at once when the dataset is not in it.
    """

    def __init__(self, repo_id: str = "nyu-mll/glue", revision: str | None = None, *,
                 cache_dir: str | Path | None = None, probe_timeout: float = 0.8) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.probe_timeout = probe_timeout
        self._reachable = False  # a successful probe is remembered; a failed one is retried next time

    def __repr__(self) -> str:
        return f"HubSource({self.repo_id!r}, revision={self.revision!r})"

    def load_split(self, task: TaskSpec, split: str) -> SplitData:
        """Load ``split`` of config ``task.name``; see :class:`DataSource`."""
        where = f"{self.repo_id!r} (config {task.name!r}, split {split!r})"
        if not Path(self.repo_id).is_dir():
            self._check_reachable(where)
        import datasets  # imported here (after the probe, so failing stays fast): slow, and only needed here

        try:
            dataset = datasets.load_dataset(self.repo_id, task.name, split=split, revision=self.revision,
                                            cache_dir=self.cache_dir)
        except ConnectionError as exc:  # offline mode and not in the cache
            raise DataError(f"Cannot load {where} from the Hugging Face Hub: {exc}; offline mode (HF_HUB_OFFLINE) "
                            f"is on and the dataset is not in the datasets cache. {_LOCAL_DATA_HINT}") from None
        except (ValueError, OSError) as exc:  # unknown config or split, repository not found, HTTP errors
            raise DataError(f"Cannot load {where}: {exc}") from None
        return self._to_split_data(task, split, dataset, where)

    def _check_reachable(self, where: str) -> None:
        from huggingface_hub import constants  # read at call time: tests and users may toggle offline mode

        if self._reachable or constants.HF_HUB_OFFLINE:
            return
        problem = _probe(constants.ENDPOINT, self.probe_timeout)
        if problem is not None:
            raise DataError(
                f"Cannot load {where}: the Hugging Face Hub at {constants.ENDPOINT} is unreachable ({problem}). "
                f"{_LOCAL_DATA_HINT} If the dataset is already in your datasets cache, set HF_HUB_OFFLINE=1 "
                "before starting Python to use that copy.")
        self._reachable = True

    def _to_split_data(self, task: TaskSpec, split: str, dataset: Any, where: str) -> SplitData:
        # A ClassLabel whose names differ from the registry's would silently swap classes: refuse it.
        names = getattr(dataset.features.get(task.label_column), "names", None)
        if names is not None and task.label_names is not None and tuple(names) != task.label_names:
            raise DataError(f"{where}: the dataset's label names {tuple(names)} differ from task {task.name!r}'s "
                            f"{task.label_names}. Fix: use a dataset with the same label ids, or a custom task.")
        columns = tuple(dataset.column_names)
        needed = [name for name in (*task.text_columns, task.label_column) if name in columns]
        table = dataset.select_columns(needed).with_format("arrow")[:]  # (num_rows, needed) pyarrow table
        values = {name: table.column(name).to_pylist() for name in needed}
        rows = ((i + 1, {name: values[name][i] for name in needed}) for i in range(table.num_rows))
        column_fix = "use a dataset whose columns match the task, or define a custom task with these columns."
        return _to_split_data(task, split, _Records(where, "row", columns, rows), column_fix=column_fix)


def _probe(url: str, timeout: float) -> str | None:
    """``None`` if a server at ``url`` answers within ``timeout`` seconds in all, else why not."""
    outcome: list[str | None] = []

    def request() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # a server answered, so the network works; datasets reports real problems
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcome.append(str(getattr(exc, "reason", exc)))

    # The thread bounds the total time: urllib's timeout applies to each socket operation but not to DNS
    # resolution, which can hang for many seconds on a machine whose resolver is unreachable.
    thread = threading.Thread(target=request, name="taskstream-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout} s"


# ----------------------------------------------------------------------------------------------------------


def resolve_source(data_dir: str | Path | None = None, *, hub_repo: str = "nyu-mll/glue") -> DataSource:
    """Choose the run's data source: ``data_dir``, else ``$TASKSTREAM_DATA_DIR``, else the Hub (``hub_repo``).

    A directory is recognised as a classic ``glue_data/`` folder (``CoLA/train.tsv``, ...) or as the Hub's
    layout (``<config>/<split>.<ext>``); anything else is an error describing both.
    """
    given_by = "--data-dir"
    if data_dir is None or data_dir == "":
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        given_by = DATA_DIR_ENV
    if data_dir is None:
        logger.info("No data directory given: loading data from the Hugging Face Hub (%s).", hub_repo)
        return HubSource(hub_repo)
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"Data directory {root} (from {given_by}) does not exist or is not a directory. "
                        f"{_LOCAL_DATA_HINT}")
    if _looks_like_glue_data(root):
        logger.info("Reading GLUE TSV files from the glue_data folder %s.", root)
        return GlueTsvSource(root)
    if _looks_like_hub_layout(root):
        logger.info("Reading local files in the Hub layout from %s.", root)
        return LocalDirSource(root)
    nested = root / "glue_data"
    hint = f" Did you mean {nested}?" if nested.is_dir() else ""
    entries = sorted(p.name for p in root.iterdir())[:10]
    raise DataError(f"Data directory {root} (from {given_by}) holds neither the Hub layout "
                    "<config>/<split>.<ext> (e.g. rte/train.jsonl.gz) nor a glue_data/ folder (e.g. RTE/train.tsv); "
                    f"it contains: {', '.join(entries) or 'nothing'}.{hint}")


class RoutedSource:
    """Serves each task from its own source when it has one (custom tasks), else from ``default``."""

    def __init__(self, default: DataSource | None, per_task: Mapping[str, DataSource]) -> None:
        self.default = default
        self.per_task = dict(per_task)

    def load_split(self, task: TaskSpec, split: str) -> SplitData:
        """Load ``split`` of ``task`` from the task's own source or the default one."""
        return self.per_task.get(task.name, self.default).load_split(task, split)
