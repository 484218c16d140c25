"""Train one task of a run again, keeping the run consistent: ``taskstream retrain RUN --method M --task T``.

What a refused artifact (changed, truncated or deleted since it was written) needs: its files, and everything
that was derived from them, are set aside, and the run is resumed, which trains the task again.

- The task's artifact files are moved to ``RUN/forgotten/<time>/`` (nothing is deleted).
- The ledger rows of that method from the task's step on are moved there too: later steps carry the task's
  score and bytes (reused scores, cumulative storage), so they are recomputed. A frozen-backbone method's
  later artifacts do not depend on the task and are kept (the resumed run re-scores them from their files);
  an evolving method's later artifacts were trained from the task's state, so they are set aside as well.
- The ledger is rewritten atomically, under the run's lock.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from methods.registry import method_info
from stream.core.errors import RunDirectoryError
from stream.core.ledger import Sharing, parse_ledger
from stream.core.locks import exclusive_lock
from stream.core.plan import resolve_order
from stream.core.rundir import (ARTIFACTS_DIR, LEDGER_FILE, LOCK_FILE, ArtifactKey, check_run_dir_path,
                               read_run_config)
from stream.core.validation import unknown_name_error
from stream.engine.config import RunConfig

logger = logging.getLogger(__name__)

FORGOTTEN_DIR = "forgotten"


@dataclass(frozen=True)
class Forgotten:
    """What :func:`forget_task` set aside: the folder, the artifact files moved and the ledger rows removed."""

    folder: Path
    files: tuple[Path, ...]
    rows: int


def forget_task(run_dir: str | Path, method: str, task: str) -> tuple[RunConfig, Forgotten]:
    """Set aside ``task``'s artifact of method label ``method`` and the ledger rows that depend on it (see the
    module doc); return the run's config (to resume it with) and what was moved."""
    run_dir = check_run_dir_path(run_dir)
    config = RunConfig.from_dict(read_run_config(run_dir))
    labels = {spec.resolved_label: spec for spec in config.methods}
    if method not in labels:
        raise unknown_name_error("method label", method, labels)
    order = resolve_order(config.tasks, config.order_seed)
    if task not in order:
        raise unknown_name_error("task", task, order)
    sharing = method_info(labels[method].name).sharing
    step = order.index(task) + 1
    busy = (f"Another taskstream process (pid {{pid}}) is writing to {run_dir}; wait for it to finish before "
            "retraining a task.")
    with exclusive_lock(run_dir / LOCK_FILE, busy):
        folder = run_dir / FORGOTTEN_DIR / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        steps = range(step, len(order) + 1) if sharing is Sharing.EVOLVING else (step,)
        moved = []
        for s in steps:
            for path in ArtifactKey(method, s, order[s - 1]).paths(run_dir / ARTIFACTS_DIR):
                if path.exists():
                    target = folder / ARTIFACTS_DIR / method / path.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
                    moved.append(target)
        ledger_path = run_dir / LEDGER_FILE
        rows = parse_ledger(ledger_path).rows
        dropped = [r for r in rows if r["method"] == method and r["step"] >= step]
        if dropped:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / LEDGER_FILE, "a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, sort_keys=True) + "\n" for r in dropped)
            kept = [r for r in rows if not (r["method"] == method and r["step"] >= step)]
            tmp = ledger_path.with_suffix(".jsonl.tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, ledger_path)
    if not moved and not dropped:
        raise RunDirectoryError(f"{run_dir} has neither an artifact nor ledger rows of {method} on {task}: there is "
                                "nothing to retrain. Re-run the run to train it.")
    logger.info("Set aside %d file(s) and %d ledger row(s) of %s from step %d (%s) in %s.", len(moved),
                len(dropped), method, step, task, folder)
    return config, Forgotten(folder, tuple(moved), len(dropped))
