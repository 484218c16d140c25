"""What the bench scripts share: offline Hugging Face defaults, the checkout's root, local GLUE data, result files.

The scripts run as modules from the repository root with the package installed (``make setup``):
``python -m bench.step_cost ...``. Import this module before anything that may import a Hugging Face
library (they read the environment when they are imported).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

# The benchmarks read the bundled backbone and local GLUE copies: a missing file should fail at once, not
# wait on the network. setdefault, so a caller can still opt in to the Hub. Tokenizers' thread pool does not
# survive the fork of the scripts' timed children and would compete with torch for the few cores anyway.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
"""The root of the checkout these scripts belong to."""


def default_glue_dir() -> Path | None:
    """Local GLUE data: $TASKSTREAM_DATA_DIR, else the nearest ``shared/glue`` beside an ancestor of the checkout.

    Walking up every ancestor covers a clone with ``../shared`` and a worktree under ``/work/wt/`` with
    ``/work/wt/shared`` (or ``/work/shared`` one level higher). None when there is no such folder.
    """
    if os.environ.get("TASKSTREAM_DATA_DIR"):
        return Path(os.environ["TASKSTREAM_DATA_DIR"])
    return next((p / "shared" / "glue" for p in REPO.parents if (p / "shared" / "glue").is_dir()), None)


def write_results(out: Path | None, text: str, record: dict) -> None:
    """Write ``text`` to ``<out>.md`` and ``record`` as JSON to ``<out>.json``; nothing when ``out`` is None.

    The suffixes replace any suffix ``out`` has (``with_suffix``); the parent directory is created.
    """
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """How to repeat this bench, as a result file records it: ``python -m bench.NAME ARGS`` (relative to the
    checkout, so no path of the machine that ran it leaks in); ``argv`` defaults to this process's arguments."""
    return " ".join(["python", "-m", module, shlex.join(sys.argv[1:] if argv is None else argv)]).rstrip()


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages as ``"2.5/2.7/2.7"`` (``"n/a"`` where the system has none)."""
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
