"""The run ledger: its row schema, the one reader every command uses, the writer, and the storage arithmetic.

The ledger (``ledger.jsonl`` in a run directory) holds one JSON object per line, one row per (method, step,
evaluated task); :data:`ROW_FIELDS` is the row schema. A step's rows are appended in one write and fsynced,
and every row carries ``rows_in_step``, so a step cut short is recognised.

:func:`read_ledger` is the one reader: the runner's :class:`Ledger`, analysis tables, serving and sweep
progress all see the same rows. They are the rows of complete steps, in file order, each once. Damage is
handled the same way everywhere:

- a torn last line (a write cut short), or any other last line that is not a row: left out;
- a step with fewer rows than its ``rows_in_step``, or whose rows disagree: left out (the run redoes it,
  from its artifact, which is never rewritten);
- a row that appears twice: kept once;
- a line that is not a row anywhere but at the end (the file was edited), or a row of a newer schema:
  :class:`~stream.core.errors.RunDirectoryError`, naming the line and the fix.

Readers never change the file. The runner's :class:`Ledger`, which appends to it, first rewrites it without
what was left out (and says so), so a resumed run continues from its last complete step.
"""

from __future__ import annotations

import enum
import json
import logging
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.errors import RunDirectoryError
from stream.core.rundir import LEDGER_FILE

logger = logging.getLogger(__name__)

#: The schema version written on every new row. Rows without the field (written before it was recorded)
#: are version 1. Version 2 added ``numerics``, ``chosen_options``, ``chance_score``, ``noise_band`` and
#: ``test_rows`` (and later ``backbone_bytes_counted``); readers treat them as absent (None) on older rows.
SCHEMA_VERSION = 2

#: The row schema: every field the runner writes, and what it means. The fields down to ``seconds`` are
#: the same on every row of a (method, step); the rest describe the evaluated task.
ROW_FIELDS: dict[str, str] = {
    "schema_version": "version of this schema the row follows",
    "method": "the method's label (its artifacts folder)",
    "method_name": "the registered method the label is a variant of",
    "sharing": "the method's Sharing rule: shared_backbone, standalone or evolving",
    "seed": "the run seed",
    "step": "the arrival step, from 1",
    "task": "the task that arrived at this step",
    "artifact_bytes": "bytes of the step's artifact: tensor file plus sidecar",
    "tensor_bytes": "bytes of the artifact's safetensors file",
    "sidecar_bytes": "bytes of the artifact's JSON sidecar",
    "artifact_sha256": "sha256 of the artifact's safetensors file",
    "artifact_path": "the safetensors file, relative to the run directory",
    "breakdown": "tensor bytes by tensor-name prefix (head, the method's own tensors)",
    "lower_bound_bytes": "information-theoretic lower bound of the method's tensors, or null",
    "new_params": "parameters the artifact adds (the papers' new params per task)",
    "new_params_fraction": "new_params / backbone_params",
    "backbone_params": "parameters of the shared backbone",
    "backbone_bytes": "bytes of the shared backbone: the files it was loaded from (weights, config, tokenizer)",
    "backbone_bytes_counted": "what backbone_bytes counts: each file and its bytes, or parameters x element size "
                              "for an encoder built in memory",
    "shared_bytes": "backbone bytes this method counts once (0 unless it shares the backbone)",
    "cumulative_bytes": "storage S(t) after this step (cumulative_bytes)",
    "total_params_multiplier": "the papers' total params multiplier after this step (params_multiplier)",
    "dev_score": "the dev score of the state the step's training kept",
    "train_steps": "optimizer steps of the step's training",
    "numerics": "what decided the training numerics: device, precision (fp32/bf16/fp16), torch threads",
    "chosen_options": "the options a method spec's search chose on the dev split for this task, or null",
    "seconds": "wall seconds per phase: prepare, train, store, load, eval, wall",
    "eval_task": "the task this row scores",
    "eval_step": "the step at which eval_task arrived",
    "score": "eval_task's score, its GLUE metric x 100",
    "metrics": "split -> metric -> value for eval_task",
    "reused": "true when the score was carried over: the task's file and the backbone cannot have changed",
    "chance_score": "eval_task's score when always answering its majority training label (mean, for regression)",
    "noise_band": "two standard errors of a guessing score on eval_task's test rows, in score points",
    "test_rows": "rows of eval_task's test split(s)",
    "rows_in_step": "rows of this step (one per task seen), so that a step cut short is recognised",
}

# What the reader needs of a row to place it: field -> the type it must have.
_KEY_FIELDS = {"method": str, "step": numbers.Integral, "eval_task": str, "rows_in_step": numbers.Integral}


class Sharing(str, enum.Enum):
    """How a method's per-task files relate to the shared backbone; decides cumulative storage S(t).

    - ``shared_backbone``: a frozen backbone (counted once) plus one small file per task:
      S(t) = backbone + sum of task files. Earlier tasks' files never change.
    - ``standalone``: each task file is a whole model and nothing is shared: S(t) = sum of task files.
    - ``evolving``: one shared model evolves across tasks; the file written after task t holds all
      that must be kept (model, every head, buffers) and supersedes earlier ones: S(t) = file t.
      Earlier tasks are re-evaluated from the newest file, which is how forgetting shows.
    """

    SHARED_BACKBONE = "shared_backbone"
    STANDALONE = "standalone"
    EVOLVING = "evolving"


def cumulative_bytes(sharing: Sharing, backbone_bytes: int, artifact_bytes: Sequence[int]) -> int:
    """Storage S(t) after the tasks whose artifact sizes are ``artifact_bytes`` (in arrival order).

    Shared-backbone methods pay the backbone once plus every task file; standalone methods (full
    finetuning) pay every task file and share nothing; evolving methods keep only their newest file.
    """
    if not artifact_bytes:
        return backbone_bytes if sharing is Sharing.SHARED_BACKBONE else 0
    if sharing is Sharing.SHARED_BACKBONE:
        return backbone_bytes + sum(artifact_bytes)
    if sharing is Sharing.STANDALONE:
        return sum(artifact_bytes)
    return artifact_bytes[-1]


def params_multiplier(sharing: Sharing, backbone_params: int, new_params: Sequence[int]) -> float:
    """The papers' "total params" multiplier after these tasks: 1 + sum of per-task fractions.

    Full finetuning (standalone) has no shared 1 and comes out near T; an evolving model counts its
    newest file only.
    """
    fractions = [n / backbone_params for n in new_params]
    if sharing is Sharing.SHARED_BACKBONE:
        return 1.0 + sum(fractions)
    if sharing is Sharing.STANDALONE:
        return sum(fractions)
    return fractions[-1] if fractions else 0.0


@dataclass(frozen=True)
class LedgerContents:
    """What :func:`parse_ledger` found in a ledger file.

    Attributes:
        rows: the rows of complete steps, in file order, each once, with ``schema_version`` filled in.
        left_out: why lines or rows were left out (a torn last line, an incomplete step, a duplicate),
            one entry per cause; empty for an undamaged file.
    """

    rows: list[dict[str, Any]]
    left_out: list[str]


def _as_row(line: bytes) -> dict[str, Any] | None:
    """The row a line holds, or None when it is not one (not JSON, not an object, key fields missing)."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(row, dict):
        return None
    for name, kind in _KEY_FIELDS.items():
        if not isinstance(row.get(name), kind) or isinstance(row.get(name), bool):
            return None
    return row


def parse_ledger(path: Path) -> LedgerContents:
    """Read the ledger file at ``path`` (absent: empty) without changing it; see the module doc for damage."""
    path = Path(path)
    if not path.exists():
        return LedgerContents([], [])
    numbered = [(number, line) for number, line in enumerate(path.read_bytes().split(b"\n"), 1) if line.strip()]
    rows: list[dict[str, Any]] = []
    left_out: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    for index, (number, line) in enumerate(numbered):
        row = _as_row(line)
        if row is None:
            if index == len(numbered) - 1:
                left_out.append(f"line {number} is not a complete row (a write cut short)")
                continue
            raise RunDirectoryError(f"{path}: line {number} is not a ledger row (a JSON object with method, step, "
                                    "eval_task and rows_in_step), and it is not the last line: the ledger was "
                                    "edited. Restore it, or start a new run directory.")
        version = row.setdefault("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
            raise RunDirectoryError(f"{path}: line {number} has ledger schema_version {version!r}; this taskstream "
                                    f"reads versions 1 to {SCHEMA_VERSION}. Upgrade taskstream to read this run.")
        text = json.dumps(row, sort_keys=True)
        if text in seen:
            duplicates += 1
            continue
        seen.add(text)
        rows.append(row)
    if duplicates:
        left_out.append(f"{duplicates} duplicated row(s)")
    steps: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        steps.setdefault((row["method"], row["step"]), []).append(row)
    incomplete = {key for key, group in steps.items()
                  if {r["rows_in_step"] for r in group} != {len(group)}
                  or len({r["eval_task"] for r in group}) != len(group)}
    if incomplete:
        left_out.append("incomplete step(s) " + ", ".join(f"{method} {step}" for method, step in sorted(incomplete)))
    return LedgerContents([r for r in rows if (r["method"], r["step"]) not in incomplete], left_out)


def read_ledger(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of complete steps of a run directory's ledger, read without changing the file.

    Every command reads ledgers through this (the runner through :class:`Ledger`, which also repairs).
    A run directory without a ledger is refused with the command that makes one.
    """
    path = Path(run_dir) / LEDGER_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{path} does not exist: {run_dir} is not a taskstream run directory "
                                "(run `taskstream run --run-dir DIR` first).")
    contents = parse_ledger(path)
    if contents.left_out:
        # A reader can catch a run mid-write, so this is news, not an alarm; the run's own repair warns.
        logger.info("%s: reading complete steps only; left out: %s.", path, "; ".join(contents.left_out))
    return contents.rows


class Ledger:
    """The ledger of one run as its runner sees it: complete steps to resume from, and appends.

    Opening it reads the file with :func:`parse_ledger` and, if anything was left out, rewrites the file
    without it, so that the step cut short is redone and appended after the complete ones.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        contents = parse_ledger(self.path)
        # A write cut off just before its final newline leaves complete rows, but the next append would
        # run on into the last of them.
        unterminated = self.path.exists() and self.path.read_bytes()[-1:] not in (b"", b"\n")
        if contents.left_out or unterminated:
            logger.warning("%s: rewriting the ledger without what an interrupted run left (%s); the run redoes "
                           "any step that was cut short.", self.path,
                           "; ".join(contents.left_out) or "a missing final newline")
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in contents.rows)
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        self._rows = contents.rows

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def completed(self, method: str, step: int) -> bool:
        """Whether every row of (method, step) is in the ledger."""
        return any(r["method"] == method and r["step"] == step for r in self._rows)

    def step_rows(self, method: str, step: int) -> list[dict[str, Any]]:
        return [r for r in self._rows if r["method"] == method and r["step"] == step]

    def append_step(self, rows: list[dict[str, Any]]) -> None:
        """Append all rows of one (method, step) in a single write, then fsync; each row gets the schema version."""
        assert rows and all(r["rows_in_step"] == len(rows) for r in rows), "rows_in_step must match"
        rows = [{**r, "schema_version": SCHEMA_VERSION} for r in rows]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self._rows.extend(rows)
