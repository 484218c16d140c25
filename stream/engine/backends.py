"""Where a study's runs execute: a pool of local worker processes, or Ray tasks.

Both take a list of :class:`RunJob`, run each with :func:`execute_run` (the ordinary arrival loop, in a
worker), and call ``on_finish`` with one :class:`RunOutcome` per job (never raising for a failed run) and
``on_tick`` about every ``poll_seconds`` so progress can be shown.

Local: worker processes start once and run job after job, so the heavy imports (torch, transformers) and
the backbone load are paid once per worker, not once per run. Workers come from a ``forkserver`` (which
imports the run code once; workers fork from it in milliseconds) where the platform has one and it would
load this same source tree, else ``spawn`` (each worker imports for itself, ~10 s); never plain ``fork``
of a process that may already run torch threads. A worker that dies
(killed, out of memory) fails only its current run; a new worker takes its place.

Ray: each run is one Ray task asking for ``threads`` CPUs. Ray is an optional extra
(``pip install 'taskstream[ray]'``) imported only here. Every node must see the study directory at the
same path (one machine, or a shared filesystem), since runs write their files there.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import site
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from methods.core.backbone import load_backbone
from stream.core.errors import ConfigError, TaskstreamError
from stream.engine.config import RunConfig
from stream.engine.runner import run_stream
from stream.engine.study import atomic_write_json

logger = logging.getLogger(__name__)

# Environment variables a Ray worker needs from the driver when the cluster did not inherit them.
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "TASKSTREAM_DATA_DIR")
# Imported once by the forkserver, so every worker forked from it starts with them loaded (they take
# seconds each; a missing one is skipped by multiprocessing).
_PRELOAD = ["stream.engine.backends", "transformers.modeling_utils", "transformers.models.auto.modeling_auto",
            "transformers.models.auto.tokenization_auto"]

RUN_LOG = "run.log"


@dataclass(frozen=True)
class RunJob:
    """What a worker needs to execute one run (picklable: sent to worker processes and Ray tasks)."""

    run_id: str
    run_dir: str
    status_path: str
    config: RunConfig
    threads: int


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended: ``ok``, or the error and its traceback."""

    run_id: str
    ok: bool
    seconds: float
    worker: str
    error: str | None = None
    traceback: str | None = None


OnFinish = Callable[[RunOutcome], None]
OnTick = Callable[[], None]


def configure_worker_threads(threads: int) -> None:
    """Limit torch (and the tokenizers' thread pool) to ``threads`` in this worker process."""
    import torch

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


# One backbone per worker process, reused by its successive runs (loading it costs seconds, and it is
# verified unchanged after every step of every run, so sharing it between runs is safe).
_BACKBONE_CACHE: dict[tuple[str, str, str], object] = {}


def _backbone_for(config: RunConfig):
    key = (config.backbone, config.pooling, config.device)
    if key not in _BACKBONE_CACHE:
        _BACKBONE_CACHE.clear()
        _BACKBONE_CACHE[key] = load_backbone(config.backbone, pooling=config.pooling, device=config.device)
    return _BACKBONE_CACHE[key]


@contextlib.contextmanager
def _run_log(run_dir: Path) -> Iterator[None]:
    """Send this process's log records to ``run_dir/run.log`` while the run executes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / RUN_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    if previous > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def execute_run(job: RunJob, worker: str | None = None) -> RunOutcome:
    """Run (or resume) one study run in this process; every exception becomes a failed outcome."""
    worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    configure_worker_threads(job.threads)
    atomic_write_json(Path(job.status_path), {"run_id": job.run_id, "state": "running", "worker": worker,
                                              "host": socket.gethostname(), "pid": os.getpid(),
                                              "threads": job.threads,
                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    start = time.perf_counter()
    run_dir = Path(job.run_dir)
    try:
        with _run_log(run_dir):
            run_stream(job.config, run_dir, progress=False, backbone=_backbone_for(job.config))
    except Exception as exc:  # recorded, never raised: one failed run must not stop the others
        return RunOutcome(job.run_id, False, time.perf_counter() - start, worker,
                          error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    return RunOutcome(job.run_id, True, time.perf_counter() - start, worker)


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            cause = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            cause = f"was killed by signal {-exitcode}"
        if exitcode == -signal.SIGKILL:
            cause += " (out of memory, or killed by hand)"
    else:
        cause = f"exited with code {exitcode} (its error output is in the sweep's stderr)"
    return (f"WorkerDied: the worker process running this run {cause}; the next launch resumes the run "
            "from its last completed step")


def _exit_when_orphaned(parent_pid: int) -> None:
    """Stop this worker soon after the sweep process dies, so no stale worker writes into the study."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass  # the pid exists but is not ours to signal: the parent is still alive

    threading.Thread(target=watch, name="orphan-watchdog", daemon=True).start()


def _worker_loop(conn, threads: int, name: str, parent_pid: int) -> None:
    """A local worker: receive a job, execute it, send its outcome back; ``None`` or EOF ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the sweep stops us
    _exit_when_orphaned(parent_pid)
    configure_worker_threads(threads)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(execute_run(job, worker=name))


def _forkserver_imports_this_package() -> bool:
    """Whether a forkserver would import this very source tree.

    The forkserver starts as a fresh interpreter whose path is the current directory, $PYTHONPATH and
    site-packages (Python 3.11 ignores the parent's sys.path changes there), so an uninstalled checkout
    run from elsewhere, or another checkout in the current directory, would load the wrong code.
    """
    root = Path(__file__).resolve().parents[2]  # stream/engine/backends.py -> the source tree
    cwd = Path.cwd().resolve()
    if cwd != root and (cwd / "stream").is_dir():
        return False
    paths = [cwd, *(Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p),
             *(Path(p) for p in site.getsitepackages())]
    return root in {p.resolve() for p in paths}


def _process_context():
    if "forkserver" in multiprocessing.get_all_start_methods() and _forkserver_imports_this_package():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


class _Worker:
    """One worker process and the pipe to it."""

    def __init__(self, context, name: str, threads: int) -> None:
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_loop, args=(child, threads, name, os.getpid()),
                                       name=f"taskstream-{name}", daemon=True)
        self.process.start()
        child.close()
        self.started_job = 0.0
        self.jobs_done = 0

    def give(self, job: RunJob) -> bool:
        try:
            self.conn.send(job)
        except OSError:
            return False
        self.started_job = time.perf_counter()
        return True

    def outcome(self, job: RunJob) -> RunOutcome | None:
        """The job's outcome if it ended (a dead worker fails it), else None."""
        if self.conn.poll():
            try:
                outcome = self.conn.recv()
                self.jobs_done += 1
                return outcome
            except (EOFError, OSError):
                pass  # the worker died mid-send: fall through and fail the job with its exit status
        elif self.process.is_alive():
            return None
        self.process.join(timeout=10)
        if self.jobs_done == 0 and (self.process.exitcode or 0) > 0:
            raise TaskstreamError(
                f"Sweep worker processes fail to start (exit code {self.process.exitcode}; the error is above). "
                "A script that calls run_study() must guard it with `if __name__ == \"__main__\":`, as "
                "multiprocessing requires, and workers must be able to import taskstream.")
        return RunOutcome(job.run_id, False, time.perf_counter() - self.started_job, self.name,
                          error=_death_message(self.process.exitcode))

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass  # the pipe is already closed: the worker has gone, join below reaps it
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()


class LocalBackend:
    """Run jobs on ``workers`` local processes, each with ``threads`` torch threads."""

    def __init__(self, workers: int, threads: int, poll_seconds: float = 1.0) -> None:
        self.workers, self.threads, self.poll_seconds = workers, threads, poll_seconds

    def run(self, jobs: Sequence[RunJob], on_finish: OnFinish, on_tick: OnTick) -> None:
        context = _process_context()
        pending = deque(jobs)
        slots: list[_Worker | None] = [None] * self.workers
        busy: dict[int, RunJob] = {}
        try:
            while pending or busy:
                for index in range(self.workers):
                    if not pending or index in busy:
                        continue
                    worker = slots[index]
                    if worker is None or not worker.process.is_alive():
                        worker = slots[index] = _Worker(context, f"w{index}", self.threads)
                    if worker.give(pending[0]):
                        busy[index] = pending.popleft()
                    else:
                        slots[index] = None
                waiting = [obj for index in busy for obj in (slots[index].conn, slots[index].process.sentinel)]
                wait(waiting, timeout=self.poll_seconds)
                for index, job in list(busy.items()):
                    outcome = slots[index].outcome(job)
                    if outcome is None:
                        continue
                    del busy[index]
                    if not slots[index].process.is_alive():
                        slots[index] = None
                    on_finish(outcome)
                on_tick()
        finally:
            for worker in slots:
                if worker is not None:
                    worker.stop()


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("The ray backend needs Ray, an optional extra: pip install 'taskstream[ray]' "
                          "(or run with the default --backend local).") from exc
    return ray


def _ray_worker_env(threads: int) -> dict[str, str]:
    """Thread limits, offline switches, and the path of this source tree (for uninstalled checkouts)."""
    source_root = str(Path(__file__).resolve().parents[2])
    paths = [source_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    env.update({name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ})
    return env


class RayBackend:
    """Run jobs as Ray tasks of ``threads`` CPUs each, on an existing cluster or a local Ray instance."""

    def __init__(self, workers: int, threads: int, address: str | None = None, poll_seconds: float = 1.0) -> None:
        self.workers, self.threads, self.address, self.poll_seconds = workers, threads, address, poll_seconds

    def run(self, jobs: Sequence[RunJob], on_finish: OnFinish, on_tick: OnTick) -> None:
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers * self.threads, include_dashboard=False, log_to_driver=False)
        task = ray.remote(execute_run).options(num_cpus=self.threads, max_retries=0,
                                               runtime_env={"env_vars": _ray_worker_env(self.threads)})
        refs = {task.remote(job): job for job in jobs}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.poll_seconds)
                for ref in ready:
                    job = refs.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # the task or its worker died: fail this run only
                        outcome = RunOutcome(job.run_id, False, 0.0, "ray",
                                             error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                                             traceback=str(exc))
                    on_finish(outcome)
                on_tick()
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


def make_backend(name: str, *, workers: int, threads: int, address: str | None = None,
                 poll_seconds: float = 1.0):
    """The backend called ``name`` (``local`` or ``ray``)."""
    if name == "ray":
        return RayBackend(workers, threads, address, poll_seconds)
    if name == "local":
        return LocalBackend(workers, threads, poll_seconds)
    raise ConfigError(f"sweep backend must be 'local' or 'ray'; got {name!r}.")
