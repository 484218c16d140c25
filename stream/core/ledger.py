"""The run ledger: one JSON line per (method, step, evaluated task), plus the storage arithmetic.

A step's rows are appended in one write and fsynced. Every row carries ``rows_in_step``, so a step cut
short by a kill (a torn last line, or some of its rows missing) is recognised and dropped on the next
open; the run then redoes that step from its artifact, which is never rewritten.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.core.errors import RunDirectoryError

logger = logging.getLogger(__name__)


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


class Ledger:
    """Append-only JSON-lines ledger of one run directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._rows = self._load_and_repair()

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def completed(self, method: str, step: int) -> bool:
        """Whether every row of (method, step) is in the ledger."""
        return any(r["method"] == method and r["step"] == step for r in self._rows)

    def step_rows(self, method: str, step: int) -> list[dict[str, Any]]:
        return [r for r in self._rows if r["method"] == method and r["step"] == step]

    def append_step(self, rows: list[dict[str, Any]]) -> None:
        """Append all rows of one (method, step) in a single write, then fsync."""
        assert rows and all(r["rows_in_step"] == len(rows) for r in rows), "rows_in_step must match"
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self._rows.extend(rows)

    def _load_and_repair(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        rows: list[dict[str, Any]] = []
        torn = False
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                # Only a run killed mid-write leaves a bad line, and only as the last one.
                later = raw.split(b"\n")[number:]
                if any(rest.strip() for rest in later):
                    raise RunDirectoryError(f"{self.path}: line {number} is not valid JSON and is not the last line; "
                                     "the ledger was edited by hand. Restore it or start a new run directory.")
                torn = True
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault((row["method"], row["step"]), []).append(row)
        complete = [r for r in rows if len(groups[(r["method"], r["step"])]) == r["rows_in_step"]]
        if torn or len(complete) != len(rows):
            logger.warning("%s: dropping %d row(s) of a step cut short by an interrupted run; that step is redone.",
                           self.path, len(rows) - len(complete) + int(torn))
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in complete)
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        return complete
