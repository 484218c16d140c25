"""The arrival loop: for every method, for every arriving task, train, store, reload, evaluate, record.

Honesty rule (README, "What a run does"): scores come only from models rebuilt from the shared backbone plus the artifact
file after it was written and read back; the in-memory model a method trained is dropped unseen.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from methods.core.backbone import Backbone, load_backbone, resolve_precision
from methods.core.base import Method
from methods.core.training import evaluate
from methods.registry import get_method_class
from stream.core.errors import ArtifactError, ConfigError, RunDirectoryError
from stream.core.ledger import Ledger, Sharing, cumulative_bytes, params_multiplier
from stream.core.locks import exclusive_lock
from stream.core.plan import resolve_order
from stream.core.rundir import (ARTIFACTS_DIR, CONFIG_FILE, LEDGER_FILE, LOCK_FILE, VERSIONS_FILE, check_run_dir_path,
                                has_finished_work, read_run_config, remove_stray_temp_files, write_json_atomic)
from stream.core.scenario import ArrivalBuilder
from stream.core.store import ArtifactKey, ArtifactStore
from stream.engine.allocator import keep_freed_memory
from stream.engine.config import MethodSpec, RunConfig, config_differences, resolve_tasks

logger = logging.getLogger(__name__)


def package_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages that decide a run's numbers."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("taskstream", "torch", "transformers", "datasets", "safetensors", "peft", "avalanche-lib",
                    "numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def check_run_dir(run_dir: Path, config: RunConfig) -> None:
    """Refuse, before anything is loaded or written, a run directory this config cannot use: a file, or a
    directory whose saved config differs while it holds finished work (artifacts or ledger rows). A directory
    with a different or damaged config but no finished work may be re-configured (see :func:`prepare_run_dir`)."""
    check_run_dir_path(run_dir)
    if not (run_dir / CONFIG_FILE).exists() or not has_finished_work(run_dir):
        return
    saved = read_run_config(run_dir)
    differences = config_differences(saved, config.to_dict())
    if differences:
        raise RunDirectoryError(
            f"Run directory {run_dir} was made by a different config; refusing to mix results. "
            "Differences (saved -> requested):\n  " + "\n  ".join(differences)
            + "\nUse a new --run-dir, or repeat the saved settings to resume.")


def prepare_run_dir(run_dir: Path, config: RunConfig) -> None:
    """Create a run directory, or check that an existing one was made by the same config (under the run's lock).

    A saved config that differs is replaced only while the directory holds no finished work: a run that stopped
    before its first artifact (bad data, a typo in an option) can be corrected and re-run in place."""
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_dir(run_dir, config)
    config_path = run_dir / CONFIG_FILE
    requested = config.to_dict()
    if config_path.exists():
        try:
            same = not config_differences(read_run_config(run_dir), requested)
        except RunDirectoryError:
            same = False
        if same:
            return
        logger.warning("%s: replacing the saved config (nothing was finished under it).", config_path)
    write_json_atomic(run_dir / VERSIONS_FILE, package_versions())
    write_json_atomic(config_path, requested)  # last: its presence means the directory is set up


@dataclass
class RunSummary:
    """Where a finished run's files are."""

    run_dir: Path
    ledger_path: Path
    order: tuple[str, ...]


def _step_info(sharing: Sharing, spec: MethodSpec, config: RunConfig, backbone: Backbone, ledger: Ledger,
               step: int, record, sidecar: dict) -> dict[str, Any]:
    """The per-step fields repeated on every ledger row of (method, step)."""
    label = spec.resolved_label
    earlier = [ledger.step_rows(label, s)[0] for s in range(1, step)]
    sizes = [r["artifact_bytes"] for r in earlier] + [record.total_bytes]
    new_params = [r["new_params"] for r in earlier] + [sidecar["new_params"]]
    shared = backbone.nbytes if sharing is Sharing.SHARED_BACKBONE else 0
    lower_bits = sidecar.get("lower_bound_bits")
    return {
        "method": label, "method_name": spec.name, "sharing": sharing.value, "seed": config.seed,
        "step": step, "task": record.key.task,
        "artifact_bytes": record.total_bytes, "tensor_bytes": record.tensor_bytes,
        "sidecar_bytes": record.sidecar_bytes, "artifact_sha256": record.sha256,
        "artifact_path": str(record.tensor_path.relative_to(record.tensor_path.parents[2])),
        "breakdown": sidecar["tensor_breakdown"],
        "lower_bound_bytes": None if lower_bits is None else lower_bits / 8,
        "new_params": sidecar["new_params"], "new_params_fraction": sidecar["new_params"] / backbone.num_parameters,
        "backbone_params": backbone.num_parameters, "backbone_bytes": backbone.nbytes,
        "backbone_bytes_counted": backbone.bytes_counted, "shared_bytes": shared,
        "cumulative_bytes": cumulative_bytes(sharing, backbone.nbytes, sizes),
        "total_params_multiplier": params_multiplier(sharing, backbone.num_parameters, new_params),
        "dev_score": sidecar["fit"]["best_dev_score"], "train_steps": sidecar["fit"]["steps"],
        "numerics": sidecar.get("numerics"),
        "chosen_options": (sidecar.get("selection") or {}).get("chosen"),
    }


def method_for_artifact(name: str, sidecar: dict[str, Any], backbone: Backbone) -> Method:
    """The method that rebuilds an artifact: ``name`` with the config its sidecar records (per-task options
    and searched values included), so a file is always read with the settings it was written with."""
    cls = get_method_class(name)
    return cls(cls.config_class.from_options(sidecar["config"]), backbone)


def _train_candidates(spec: MethodSpec, arrival, backbone: Backbone, previous, progress: bool
                      ) -> tuple[Method, Any, dict[str, Any] | None]:
    """Train every candidate option set of ``spec`` on ``arrival``; the best by dev score wins.

    Returns the winning method, its TrainedTask, and the selection record (None without a search).
    """
    cls = get_method_class(spec.name)
    candidates = spec.candidate_configs(arrival.task.name)
    best = None
    tried = []
    for options, method_config in candidates:
        method = cls(method_config, backbone)
        clock = time.perf_counter()
        trained = method.train(arrival, previous=previous, progress=progress)
        score = trained.fit.best_dev_score
        tried.append({"options": {k: options[k] for k, _ in spec.search}, "dev_score": score,
                      "train_seconds": round(time.perf_counter() - clock, 3)})
        if best is None or (score == score and not score <= best[2]):  # nan never wins over a number
            best = (method, trained, score)
        else:
            del trained
    if len(candidates) == 1:
        return best[0], best[1], None
    chosen = {k: best[0].config.to_dict()[k] for k, _ in spec.search}
    selection = {"search": {k: list(v) for k, v in spec.search}, "candidates": tried, "chosen": chosen}
    logger.info("%s %s: dev-selected %s from %d candidates", spec.resolved_label, arrival.task.name, chosen,
                len(candidates))
    return best[0], best[1], selection


def _check_recorded_artifact(store: ArtifactStore, ledger: Ledger, label: str, step: int, task: str) -> None:
    """Refuse to extend a run whose recorded artifacts were changed, removed or replaced since."""
    record = store.record(ArtifactKey(label, step, task))
    recorded = ledger.step_rows(label, step)[0]["artifact_sha256"]
    if record.sha256 != recorded:
        raise ArtifactError(f"Artifact {record.tensor_path} is not the file the ledger recorded (sha256 "
                            f"{recorded[:16]}... expected, {record.sha256[:16]}... found): it was replaced. "
                            "Restore it, or start a new run directory.")


class RunProgress:
    """A run's overall progress across its methods and arriving tasks, and an estimate of the time left.

    The estimate is the remaining (method, task) pairs times the average wall time of the pairs trained so
    far in this process (pairs a resumed run skips cost nothing and do not count): methods differ in cost
    (diff pruning trains two stages), so it is a pace, not a promise, and it says so."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.trained, self.spent = total, 0, 0, 0.0
        self.started = time.perf_counter()

    def skip(self) -> None:
        """A pair finished by an earlier process."""
        self.done += 1

    def finish(self, seconds: float) -> None:
        """A pair trained and evaluated in this process, in ``seconds`` of wall time."""
        self.done += 1
        self.trained += 1
        self.spent += seconds

    def summary(self) -> str:
        """``run 3/10 done, 4.2 min so far, about 9 min left at this run's pace so far``."""
        text = f"run {self.done}/{self.total} done, {(time.perf_counter() - self.started) / 60:.1f} min so far"
        left = self.total - self.done
        if self.trained and left:
            text += f", about {left * self.spent / self.trained / 60:.0f} min left at this run's pace so far"
        return text


def _run_method(spec: MethodSpec, sharing: Sharing, config: RunConfig, order: tuple[str, ...],
                backbone: Backbone, builder: ArrivalBuilder, store: ArtifactStore, ledger: Ledger,
                numerics: dict[str, Any], progress: bool, on_step: Callable[[int], Any] | None = None,
                overall: RunProgress | None = None) -> None:
    label = spec.resolved_label
    tasks = {name: builder.task(name) for name in order}
    for step, task_name in enumerate(order, 1):
        if ledger.completed(label, step):
            _check_recorded_artifact(store, ledger, label, step, task_name)
            if on_step is not None:
                on_step(step)
            if overall is not None:
                overall.skip()
            continue
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        clock = time.perf_counter()
        arrival = builder.arrival(step, task_name)
        seconds["prepare"] = time.perf_counter() - clock
        key = ArtifactKey(label, step, task_name)
        if store.exists(key):
            logger.info("%s step %d (%s): artifact already written; evaluating it", label, step, task_name)
            seconds["train"] = seconds["store"] = 0.0
        else:
            previous = None
            if sharing is Sharing.EVOLVING and step > 1:
                previous = store.read(ArtifactKey(label, step - 1, order[step - 2]))
            clock = time.perf_counter()
            method, trained, selection = _train_candidates(spec, arrival, backbone, previous, progress)
            seconds["train"] = time.perf_counter() - clock
            clock = time.perf_counter()
            sidecar = {
                "method_name": spec.name, "config": method.config.to_dict(), "seed": config.seed,
                "backbone": backbone.identity_record(), "taskstream_version": package_versions()["taskstream"],
                "meta": trained.payload.meta, "new_params": trained.payload.new_params,
                "lower_bound_bits": trained.payload.lower_bound_bits, "fit": trained.fit.to_dict(),
                "numerics": numerics, "selection": selection,
                # What serving must tokenise with (the pooling is in "backbone"): predict checks config.json
                # against it, so an edited config cannot silently change the answers.
                "max_seq_length": arrival.budget.max_seq_length,
            }
            store.write(key, trained.payload.tensors, sidecar)
            del trained, method
            seconds["store"] = time.perf_counter() - clock
        clock = time.perf_counter()
        artifact = store.read(key)
        method = method_for_artifact(spec.name, artifact.sidecar, backbone)
        model = method.load(artifact, arrival.task)
        seconds["load"] = time.perf_counter() - clock
        clock = time.perf_counter()
        batch = arrival.budget.eval_batch_size
        results = {task_name: (*evaluate(model, arrival.tests, arrival.task, batch_size=batch, progress=progress,
                                         desc=f"{label} {step}:{task_name} test"), False)}
        del model
        for earlier_step, earlier in enumerate(order[:step - 1], 1):
            if sharing is Sharing.EVOLVING or config.reevaluate:
                source = artifact if sharing is Sharing.EVOLVING else store.read(
                    ArtifactKey(label, earlier_step, earlier))
                loader = method_for_artifact(spec.name, source.sidecar, backbone)
                earlier_model = loader.load(source, tasks[earlier])
                results[earlier] = (*evaluate(earlier_model, builder.tests(earlier), tasks[earlier],
                                              batch_size=batch, progress=progress,
                                              desc=f"{label} {step}:{earlier} test"), False)
                del earlier_model
            else:
                # The earlier task's file is unchanged and the backbone is verified unchanged after every
                # step, so its model, and its score, are the same (tests/test_method_matrix.py proves it).
                row = next(r for r in ledger.step_rows(label, earlier_step) if r["eval_task"] == earlier)
                results[earlier] = (row["metrics"], row["score"], True)
        seconds["eval"] = time.perf_counter() - clock
        backbone.verify_unchanged()
        floors = {name: builder.chance(name) for name in order[:step]}
        info = _step_info(sharing, spec, config, backbone, ledger, step, artifact.record, artifact.sidecar)
        info["seconds"] = {**seconds, "wall": time.perf_counter() - started}
        rows = []
        for eval_step, eval_task in enumerate(order[:step], 1):
            metrics, score, reused = results[eval_task]
            rows.append({**info, "eval_task": eval_task, "eval_step": eval_step, "score": score,
                         "metrics": metrics, "reused": reused, "rows_in_step": step, **floors[eval_task]})
        ledger.append_step(rows)
        if on_step is not None:
            on_step(step)
        if overall is not None:
            overall.finish(info["seconds"]["wall"])
        logger.info("%s step %d/%d %s: score %.2f, %d bytes (cumulative %d), train %.1fs%s", label, step,
                    len(order), task_name, results[task_name][1], info["artifact_bytes"],
                    info["cumulative_bytes"], seconds["train"], "" if overall is None else " | " + overall.summary())


def run_numerics(config: RunConfig, backbone: Backbone) -> dict[str, Any]:
    """The settings that decide a run's training numerics on this machine: device, resolved precision, and
    torch's CPU threads (set from ``config.threads`` when given). Recorded in every sidecar and ledger row."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return {"device": str(backbone.device), "precision": resolve_precision(config.precision, backbone.device),
            "threads": torch.get_num_threads()}


def _warn_if_numerics_changed(ledger: Ledger, numerics: dict[str, Any]) -> None:
    recorded = {json.dumps(r["numerics"], sort_keys=True) for r in ledger.rows if r.get("numerics")}
    now = json.dumps(numerics, sort_keys=True)
    if recorded - {now}:
        logger.warning("Resuming with other numerics than earlier steps recorded (%s now, %s before): steps "
                       "trained now may differ in their last bits from a run that never stopped.", now,
                       ", ".join(sorted(recorded - {now})))


def run_stream(config: RunConfig, run_dir: str | Path, *, progress: bool = True,
               backbone: Backbone | None = None) -> RunSummary:
    """Run (or resume) a stream into ``run_dir``.

    Args:
        config: what to run.
        run_dir: the run directory; an existing one is resumed after its last completed (method, step)
            if its saved config matches, and refused with the differing fields otherwise.
        progress: show a progress bar with the loss while training.
        backbone: an already loaded backbone (tests pass tiny models); by default ``config.backbone``.

    On Linux the process's allocator is set to keep large freed blocks for reuse first
    (:func:`stream.engine.allocator.keep_freed_memory`: same results, diff pruning up to 1.9x faster).
    """
    keep_freed_memory()
    run_dir = Path(run_dir)
    # Everything is checked before anything is written: the directory, every task's data, the backbone and
    # every method's options against it. A run that fails here leaves the directory as it was.
    check_run_dir(run_dir, config)
    tasks, source = resolve_tasks(config)
    if backbone is None:
        backbone = load_backbone(config.backbone, pooling=config.pooling, device=config.device)
    numerics = run_numerics(config, backbone)
    builder = ArrivalBuilder(source, tasks=tasks, budgets={t: config.budget_for(t) for t in tasks},
                             seed=config.seed, precision=numerics["precision"])
    builder.preload()  # every split is read (and checked) before hours go into training
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    order = resolve_order(config.tasks, config.order_seed)
    check_methods(config, backbone)
    busy = (f"Another taskstream process (pid {{pid}}) is writing to {run_dir}; two runs would both train into it. "
            "Wait for it to finish (then re-run to resume), or use another --run-dir.")
    with exclusive_lock(run_dir / LOCK_FILE, busy):
        remove_stray_temp_files(run_dir)
        prepare_run_dir(run_dir, config)
        return _run_methods(config, run_dir, backbone, builder, order, numerics, progress)


def check_methods(config: RunConfig, backbone: Backbone) -> None:
    """Build every method of ``config`` with every option set it will train with (per task and searched) on
    ``backbone``, so an option the backbone cannot take (``last_layer:k=100`` on 6 blocks) fails before any
    method trains, not when that method's turn comes."""
    for spec in config.methods:
        cls = get_method_class(spec.name)
        tried: set[str] = set()
        for task in (None, *config.tasks):
            for options in spec.candidates(task):
                key = json.dumps(options, sort_keys=True, default=str)
                if key in tried:
                    continue
                tried.add(key)
                try:
                    cls(cls.config_class.from_options(options), backbone)
                except ConfigError as exc:
                    where = "" if task is None else f" on task {task!r}"
                    raise ConfigError(f"Method {spec.resolved_label!r}{where}: {exc}") from None


def _run_methods(config: RunConfig, run_dir: Path, backbone: Backbone, builder: ArrivalBuilder,
                 order: tuple[str, ...], numerics: dict[str, Any], progress: bool) -> RunSummary:
    store = ArtifactStore(run_dir / ARTIFACTS_DIR)
    ledger = Ledger(run_dir / LEDGER_FILE)
    _warn_if_numerics_changed(ledger, numerics)
    overall = RunProgress(len(config.methods) * len(order))
    for spec in config.methods:
        method = spec.build(backbone)
        log = None
        if config.avalanche_loggers:
            from stream.engine.avalanche_log import run_log

            log = run_log(run_dir, spec.resolved_label, config.avalanche_loggers, method, builder, order, store,
                          ledger, backbone, eval_batch_size=config.budget.eval_batch_size)
        _run_method(spec, method.sharing, config, order, backbone, builder, store, ledger, numerics, progress,
                    on_step=None if log is None else log.record, overall=overall)
        if log is not None:
            log.close()
    return RunSummary(run_dir=run_dir, ledger_path=ledger.path, order=order)
