"""Settings the teaching notebooks (``notebooks/``) share: where the data is, which backbone, where runs go,
and whether to run in smoke mode.

Environment variables:

- ``TASKSTREAM_NOTEBOOK_SMOKE=1``: the test suite's smoke mode (tens of examples, one epoch, short
  evaluation), so every notebook runs top to bottom in seconds. Figures then show noise, not results.
- ``TASKSTREAM_DATA_DIR``: local GLUE files (as for ``taskstream run``); without it, the offline copy
  ``shared/glue`` beside the repository (the nearest one above the working directory), else the Hub.
- ``TASKSTREAM_NOTEBOOK_BACKBONE``: a Hub id or local model folder instead of the bundled all-MiniLM-L6-v2.
- ``TASKSTREAM_NOTEBOOK_RUNS``: where the notebooks' run directories go (default ``runs/`` under the
  working directory, which is the notebook's folder in Jupyter).
- ``TASKSTREAM_NOTEBOOK_SOURCE``: a finished run or study directory for the notebooks that analyse one
  (03_storage_scaling) instead of running a small stream themselves.

A notebook's text states claims about its own run (a method beats chance, gates close); :func:`check_claim`
holds the text to the run, so a claim that stops being true fails the notebook instead of misleading a
reader.
"""

from __future__ import annotations

import os
from pathlib import Path

from methods.core.backbone import DEFAULT_BACKBONE
from stream.core.errors import DataError
from stream.core.rundir import LEDGER_FILE
from stream.core.sources import DATA_DIR_ENV
from stream.engine.study import STUDY_FILE

SMOKE_ENV = "TASKSTREAM_NOTEBOOK_SMOKE"
BACKBONE_ENV = "TASKSTREAM_NOTEBOOK_BACKBONE"
RUNS_ENV = "TASKSTREAM_NOTEBOOK_RUNS"
SOURCE_ENV = "TASKSTREAM_NOTEBOOK_SOURCE"
_TRUE = {"1", "true", "yes", "on"}


def smoke_mode() -> bool:
    """Whether ``TASKSTREAM_NOTEBOOK_SMOKE`` asks for the tiny smoke-test budgets."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in _TRUE


def check_claim(claim: str, holds: bool, *, any_settings: bool = False) -> None:
    """Check one claim a notebook's text makes about its run: print it as checked, or raise AssertionError
    naming it when the run does not bear it out.

    By default a claim is one that only the notebook's normal settings can make true (a score above chance
    needs the training budget; which method's file is larger needs the real backbone's shapes): in smoke
    mode, whose budgets train next to nothing on a tiny random model, the condition is still computed (so a
    renamed column or a broken table fails the smoke test) but only reported. ``any_settings=True`` marks a
    claim that holds at any budget and backbone (a structural fact), enforced in smoke mode too.
    """
    holds = bool(holds)
    if holds:
        print(f"checked: {claim}")
    elif smoke_mode() and not any_settings:
        print(f"not checked in smoke mode (tiny budgets and model): {claim}")
    else:
        raise AssertionError(f"The notebook's text claims: {claim!r}, and this run does not bear it out. "
                             "Correct the text (or the settings) so that it says what the run shows.")


def demo_data_dir(start: str | Path | None = None) -> str | None:
    """The GLUE data directory for a notebook: ``$TASKSTREAM_DATA_DIR``; else the first ``shared/glue``
    folder in ``start`` (default: the working directory) or one of its parents; else None (the Hub)."""
    if os.environ.get(DATA_DIR_ENV):
        return os.environ[DATA_DIR_ENV]
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "glue"
        if candidate.is_dir():
            return str(candidate)
    return None


def demo_backbone() -> str:
    """``$TASKSTREAM_NOTEBOOK_BACKBONE``, else the bundled all-MiniLM-L6-v2."""
    return os.environ.get(BACKBONE_ENV) or DEFAULT_BACKBONE


def demo_run_dir(name: str) -> Path:
    """The run directory of one notebook's run: ``<runs>/<name>`` (``-smoke`` appended in smoke mode, so a
    smoke run never meets a normal run's directory, which would refuse the different config)."""
    root = Path(os.environ.get(RUNS_ENV) or Path.cwd() / "runs")
    return root / (f"{name}-smoke" if smoke_mode() else name)


def demo_source() -> Path | None:
    """``$TASKSTREAM_NOTEBOOK_SOURCE`` as a path (a run or study directory), else None; a path that does not
    hold a ledger or a study record is refused with the fix."""
    value = os.environ.get(SOURCE_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not ((path / LEDGER_FILE).is_file() or (path / STUDY_FILE).is_file()):
        raise DataError(f"{SOURCE_ENV}={value} is neither a run directory (with {LEDGER_FILE}) nor a study directory "
                        f"(with {STUDY_FILE}). Point it at one, or unset it to run a small stream in the notebook.")
    return path
