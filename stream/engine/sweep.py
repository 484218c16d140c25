"""Running a study: skip what is complete, fan the other runs out over a backend, record every outcome.

:func:`run_study` is what ``taskstream sweep`` calls. Each run is executed by :func:`stream.engine.backends.execute_run` in a
worker (a local process or a Ray task): the ordinary :func:`stream.engine.runner.run_stream`, which itself
resumes a run directory after its last completed step. So a re-launch skips finished runs and continues
interrupted ones where they stopped; a failed run is recorded with its error and traceback in
``status/<run>.json`` and never stops the others; failed runs are tried again on the next launch.

Progress (runs done / total, and each busy worker's run, step and task) is read from the status files
and the runs' ledgers, so it works the same for every backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stream.core.errors import ConfigError, RunDirectoryError
from stream.core.rundir import CONFIG_FILE, read_run_config
from stream.engine.backends import RunJob, RunOutcome, make_backend
from stream.engine.config import config_differences
from stream.engine.runner import package_versions
from stream.engine.study import StudyDirectory, StudyRun, StudySpec, completed_steps, is_complete

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_parallelism(workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """Workers and torch threads per worker.

    Defaults: 2 threads per worker (small encoders gain little from more on CPU) and as many workers as
    that fills the cores; given only workers, threads = cores // workers; never fewer than 1 of each.
    """
    cores = cores or available_cores()
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"sweep {name} must be an integer >= 1; got {value!r}.")
    if workers is None:
        workers = max(1, cores // (threads or 2))
    if threads is None:
        threads = max(1, cores // workers)
    return workers, threads


@dataclass(frozen=True)
class ActiveRun:
    """A run a worker is executing now, and where it is in its stream."""

    run_id: str
    worker: str
    step: int
    steps: int
    task: str


@dataclass(frozen=True)
class SweepProgress:
    """A snapshot of a launch: runs done (including ones found complete) / total, and the busy workers."""

    total: int
    done: int
    failed: int
    active: tuple[ActiveRun, ...] = ()

    def line(self) -> str:
        head = f"runs {self.done}/{self.total} done" + (f", {self.failed} failed" if self.failed else "")
        busy = [f"{a.worker} {a.run_id}: step {a.step}/{a.steps} {a.task}" for a in self.active]
        return " | ".join([head, *busy])


@dataclass
class StudyOutcome:
    """What a launch did."""

    study_dir: Path
    total: int
    skipped: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class _Tracker:
    """Records outcomes in the status files and reports progress while a backend runs the jobs."""

    def __init__(self, directory: StudyDirectory, runs: list[StudyRun], total: int, skipped: int,
                 on_progress: Callable[[SweepProgress], None] | None) -> None:
        self.directory = directory
        self.runs = {run.run_id: run for run in runs}
        self.unfinished = set(self.runs)
        self.total, self.done, self.failed = total, skipped, 0
        self.on_progress = on_progress
        self.outcomes: list[RunOutcome] = []
        self._last: SweepProgress | None = None

    def finish(self, outcome: RunOutcome) -> None:
        self.unfinished.discard(outcome.run_id)
        self.outcomes.append(outcome)
        if outcome.ok:
            self.done += 1
            self.directory.write_status(outcome.run_id, "done", worker=outcome.worker, seconds=outcome.seconds)
            logger.info("run %s done in %.0fs", outcome.run_id, outcome.seconds)
        else:
            self.failed += 1
            self.directory.write_status(outcome.run_id, "failed", worker=outcome.worker, seconds=outcome.seconds,
                                        error=outcome.error, traceback=outcome.traceback)
            logger.error("run %s failed: %s (details: %s)", outcome.run_id, outcome.error,
                         self.directory.status_path(outcome.run_id))
        self.tick()

    def tick(self) -> None:
        active = []
        for run_id in sorted(self.unfinished):
            status = self.directory.status(run_id)
            if status.get("state") != "running":
                continue
            run = self.runs[run_id]
            order = run.arrival_order
            step = min(len(order), completed_steps(self.directory.run_dir(run_id), run.method.resolved_label) + 1)
            active.append(ActiveRun(run_id, status.get("worker", "?"), step, len(order), order[step - 1]))
        snapshot = SweepProgress(self.total, self.done, self.failed, tuple(active))
        if snapshot != self._last:
            self._last = snapshot
            if self.on_progress is not None:
                self.on_progress(snapshot)
            else:
                logger.info("%s", snapshot.line())


def _check_existing_runs(directory: StudyDirectory, runs: list[StudyRun]) -> None:
    """Refuse a launch whose runs would mix results with runs made by a different config."""
    problems = []
    for run in runs:
        path = directory.run_dir(run.run_id) / CONFIG_FILE
        if path.exists():
            differences = config_differences(read_run_config(path.parent), run.config.to_dict())
            if differences:
                problems.append(f"{run.run_id}: " + "; ".join(differences))
    if problems:
        raise RunDirectoryError(
            f"Study directory {directory.root} holds runs made by a different spec; refusing to mix results:\n  "
            + "\n  ".join(problems) + "\nUse a new --study-dir, or restore the spec these runs were made with.")


@contextlib.contextmanager
def _study_lock(directory: StudyDirectory) -> Iterator[None]:
    """Hold an exclusive lock on the study directory for the whole launch."""
    directory.root.mkdir(parents=True, exist_ok=True)
    with open(directory.root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryError(f"Another sweep is running in {directory.root}; wait for it to finish "
                                    "(two launches would write the same run directories).") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_study(spec: StudySpec, study_dir: str | Path, *, backend: str = "local", workers: int | None = None,
              threads: int | None = None, address: str | None = None, spec_file: str | Path | None = None,
              on_progress: Callable[[SweepProgress], None] | None = None,
              poll_seconds: float = 1.0) -> StudyOutcome:
    """Run (or resume) every run of ``spec`` under ``study_dir``.

    Args:
        spec: the expanded study.
        study_dir: the study directory (created if needed; an existing one is resumed).
        backend: ``local`` (a pool of worker processes) or ``ray`` (needs the optional ``ray`` extra).
        workers / threads: parallel runs and torch threads per run (see :func:`resolve_parallelism`).
            The thread count is recorded: CPU results are reproducible for the same count.
        address: Ray cluster address (``ray`` backend; default: start a local Ray instance).
        spec_file: the spec file, copied verbatim into the study directory.
        on_progress: called with a :class:`SweepProgress` whenever progress changes (default: logged).
        poll_seconds: how often progress is refreshed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"sweep backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if address is not None and backend != "ray":
        raise ConfigError("--address is for the ray backend; add --backend ray.")
    directory = StudyDirectory(study_dir)
    runs = list(spec.runs)
    with _study_lock(directory):
        _check_existing_runs(directory, runs)
        record = directory.record_spec(spec, Path(spec_file) if spec_file else None)
        todo = [run for run in runs if not is_complete(directory, run)]
        outcome = StudyOutcome(directory.root, len(runs), skipped=[r.run_id for r in runs if r not in todo])
        for run_id in outcome.skipped:
            if directory.status(run_id).get("state") != "done":
                directory.write_status(run_id, "done", note="found complete")
        workers, threads = resolve_parallelism(workers, threads)
        workers = min(workers, max(1, len(todo)))
        directory.record_launch(backend=backend, address=address, workers=workers, threads=threads,
                                runs_total=len(runs), runs_to_do=[r.run_id for r in todo],
                                spec_sha256=record.get("spec_sha256"),
                                versions=package_versions())
        logger.info("study %s: %d runs, %d already complete, %d to run on %s (%d worker(s) x %d thread(s))",
                    spec.name, len(runs), len(outcome.skipped), len(todo), backend, workers, threads)
        if not todo:
            return outcome
        for run in todo:
            directory.write_status(run.run_id, "pending")
        jobs = [RunJob(run.run_id, str(directory.run_dir(run.run_id)), str(directory.status_path(run.run_id)),
                       run.config, threads) for run in todo]
        tracker = _Tracker(directory, todo, len(runs), len(outcome.skipped), on_progress)
        tracker.tick()
        make_backend(backend, workers=workers, threads=threads, address=address,
                     poll_seconds=poll_seconds).run(jobs, tracker.finish, tracker.tick)
        for result in tracker.outcomes:
            if result.ok:
                outcome.completed.append(result.run_id)
            else:
                outcome.failed[result.run_id] = result.error or "failed"
    return outcome
