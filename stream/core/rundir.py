"""The layout of a run directory: the names the runner writes and every reader looks for, and the small
readers and checks every command shares.

    config.json     the run's resolved config (``stream.engine.config.RunConfig.to_dict``)
    versions.json   Python, platform and package versions of the run
    ledger.jsonl    one row per (method, step, evaluated task): :mod:`stream.core.ledger`
    artifacts/      ``<method>/<step>-<task>.{safetensors,json}``: :mod:`stream.core.store`
    .lock           held (flock) by the one process writing the run: :mod:`stream.core.locks`
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.errors import RunDirectoryError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
VERSIONS_FILE = "versions.json"
LEDGER_FILE = "ledger.jsonl"
ARTIFACTS_DIR = "artifacts"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class ArtifactKey:
    """Which artifact: a method label (a method plus its options), the step and the arriving task."""

    method: str
    step: int
    task: str

    @property
    def stem(self) -> str:
        """The artifact's file name without suffix, under ``artifacts/<method>/``."""
        return f"{self.step:03d}-{self.task}"

    def paths(self, artifacts_dir: Path) -> tuple[Path, Path]:
        """The artifact's tensor file and JSON sidecar under ``artifacts_dir`` (a run's ``artifacts/``)."""
        folder = Path(artifacts_dir) / self.method
        return folder / f"{self.stem}.safetensors", folder / f"{self.stem}.json"


def check_run_dir_path(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, refused when something other than a folder is there."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is a file, not a run directory: give --run-dir a folder (a new one, "
                                "or one an earlier run wrote).")
    return run_dir


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is absent, unreadable, not JSON (truncated, binary) or not an object
    is a :class:`RunDirectoryError` naming ``what`` the file is."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"{path} does not exist: it is not a taskstream {what}.") from None
    except IsADirectoryError:
        raise RunDirectoryError(f"{path} is a folder, not the {what}.") from None
    except UnicodeDecodeError as exc:
        raise RunDirectoryError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): the {what} was "
                                "overwritten or damaged. Restore it, or start a new run directory.") from None
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}; "
                                f"truncated?): the {what} was cut short or edited. Restore it, or start a new run "
                                "directory.") from None
    if not isinstance(data, dict):
        raise RunDirectoryError(f"{path} holds a JSON {type(data).__name__}, not the object a {what} is. Restore "
                                "it, or start a new run directory.")
    return data


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's saved ``config.json`` as plain data (what ``RunConfig.to_dict`` wrote)."""
    return read_json_object(Path(run_dir) / CONFIG_FILE, "run config")


def has_finished_work(run_dir: str | Path) -> bool:
    """Whether a run directory holds anything a run finished: a complete artifact (its sidecar) or ledger rows."""
    run_dir = Path(run_dir)
    ledger = run_dir / LEDGER_FILE
    if ledger.is_file() and ledger.read_bytes().strip():
        return True
    return any((run_dir / ARTIFACTS_DIR).glob("*/*.json"))


def remove_stray_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete what a killed writer left: the store's ``.<name>.<random>.tmp`` files and the ledger's rewrite
    file. Called under the run's lock only, when no other process can be mid-write. Returns what was removed."""
    run_dir = Path(run_dir)
    stray = [*(run_dir / ARTIFACTS_DIR).glob("*/.*.tmp"), *run_dir.glob(".*.tmp"), run_dir / f"{LEDGER_FILE}.tmp"]
    removed = []
    for path in stray:
        if path.is_file():
            path.unlink()
            removed.append(path)
    if removed:
        logger.info("Removed %d temporary file(s) an interrupted run left in %s.", len(removed), run_dir)
    return removed


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON so that ``path`` is either its old content or complete, even after SIGKILL."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
