"""Multi-task serving from one backbone: a :class:`TaskBank` answers for any task of a finished run.

The bank loads the run's backbone once and serves every (method label, task) of the run's ledger from the
artifact that task's own step wrote (for evolving methods: the newest artifact, which holds every head).
Switching to a task applies that task's :class:`~methods.core.patches.ServingPatch` to the live encoder in place
(diff pruning adds its sparse diff, masking zeroes its masked-out weights, adapters/LoRA swap their modules
in, BitFit/last_layer write their tensors) after reverting the previous one. Methods without a patch (full
finetuning, the evolving continual baselines) are rebuilt with ``Method.load`` from their file at every
switch. Either way the answer is bit for bit what ``Method.load`` rebuilds from the file, and the backbone
returns bit-identical after a revert (``tests/test_serving.py``).

Artifacts are read lazily, on the first switch to their task, and verified then: the store's size and
sha256 checks, the sha256 the ledger recorded, and the backbone fingerprint the sidecar recorded. Patches
are kept (they are small); rebuilt models are not. A bank serves one task at a time and is not thread-safe.

    bank = TaskBank("runs/default")
    bank.predict("rte", [("A man sleeps.", "Someone is asleep.")], method="lora")
    # -> [Prediction(label='entailment', probabilities={'entailment': ..., 'not_entailment': ...}, value=None)]
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from methods.core.backbone import Backbone, load_backbone
from methods.core.base import Method
from methods.core.patches import ServingPatch
from methods.core.task_model import TaskModel
from stream.core.errors import ArtifactError, ConfigError, DataError, RunDirectoryError
from stream.core.ledger import Sharing, read_ledger
from stream.core.plan import Budget
from stream.core.rundir import ARTIFACTS_DIR, CONFIG_FILE, LEDGER_FILE
from stream.core.rundir import read_run_config as read_saved_config
from stream.core.sources import read_text_rows
from stream.core.store import ArtifactKey, ArtifactStore, LoadedArtifact
from stream.core.tasks import CustomTaskSpec, TaskSpec, get_task
from stream.core.tokenization import TokenizedSplit, tokenize_texts
from stream.engine.config import MethodSpec

logger = logging.getLogger(__name__)

_NOT_BUILT = object()  # a (method, task) whose artifact has not been read yet


@dataclass(frozen=True)
class ServedTask:
    """Where the bank serves one (method label, task) from.

    Attributes:
        method: the method label (the run's artifacts folder and ledger name).
        method_name: the registered method it is a variant of.
        task: the task's name.
        sharing: the method's sharing rule (``evolving`` methods serve every task from their newest file).
        key: the artifact read for this task.
        sha256: the artifact's sha256 as the ledger recorded it.
    """

    method: str
    method_name: str
    task: str
    sharing: str
    key: ArtifactKey
    sha256: str


@dataclass(frozen=True)
class Prediction:
    """One example's answer: a class name with every class's probability, or a regression value.

    Attributes:
        label: the predicted class name (classification), else None.
        probabilities: class name -> probability, in the task's label order (classification), else None.
        value: the predicted value (regression), else None.
    """

    label: str | None
    probabilities: dict[str, float] | None
    value: float | None

    @property
    def score(self) -> float:
        """The predicted class's probability, or the regression value."""
        return self.value if self.label is None else self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        if self.label is None:
            return {"value": self.value}
        return {"label": self.label, "probabilities": self.probabilities}


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The saved config of a run directory (``config.json``, as :meth:`stream.engine.config.RunConfig.to_dict` wrote
    it). Kept as plain data: a method's spec is validated, and its module imported, only when it is served."""
    path = run_dir / CONFIG_FILE
    if not path.is_file() or not (run_dir / LEDGER_FILE).is_file():
        raise RunDirectoryError(f"{run_dir} is not a taskstream run directory (it lacks {CONFIG_FILE} or "
                                f"{LEDGER_FILE}): give the --run-dir of a run made by `taskstream run`.")
    return read_saved_config(run_dir)


def served_tasks(run_dir: Path) -> dict[tuple[str, str], ServedTask]:
    """Every (method label, task) a finished (or partly finished) run can serve, from its ledger."""
    steps: dict[str, dict[int, dict]] = {}
    for row in read_ledger(run_dir):
        steps.setdefault(row["method"], {})[row["step"]] = row
    served = {}
    for label, by_step in steps.items():
        newest = by_step[max(by_step)]
        for step, row in sorted(by_step.items()):
            source = newest if row["sharing"] == Sharing.EVOLVING.value else row
            key = ArtifactKey(label, source["step"], source["task"])
            served[(label, row["task"])] = ServedTask(label, row["method_name"], row["task"], row["sharing"], key,
                                                      source["artifact_sha256"])
    return served


def _task_specs(config: dict[str, Any]) -> dict[str, TaskSpec]:
    custom = {c["name"]: CustomTaskSpec.from_dict(c) for c in config.get("custom_tasks", [])}
    return {name: custom[name].to_task_spec() if name in custom else get_task(name) for name in config["tasks"]}


def as_examples(task: TaskSpec, examples: Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    """Each example as a tuple of the task's texts (a string for one-text tasks, a pair for pair tasks)."""
    if isinstance(examples, str):
        examples = [examples]
    width = len(task.text_columns)
    out = []
    for number, example in enumerate(examples, 1):
        texts = (example,) if isinstance(example, str) else tuple(example)
        if len(texts) != width or not all(isinstance(t, str) for t in texts):
            wanted = " and ".join(task.text_columns)
            hint = (" Give both texts (on the command line: two quoted arguments; in a file: a tab between them)."
                    if width == 2 else "")
            raise DataError(f"Task {task.name!r} takes {width} text{'s' * (width > 1)} per example ({wanted}); "
                            f"example {number} has {len(texts)}: {texts!r}.{hint}")
        out.append(texts)
    if not out:
        raise DataError(f"No examples to predict for task {task.name!r}.")
    return out


def read_examples(path: str | Path, task: TaskSpec) -> list[tuple[str, ...]]:
    """Examples from a file, read by the reader training uses (:func:`stream.core.sources.read_text_rows`): a
    data file (``.csv``, ``.tsv``, ``.json``, ``.jsonl``, ``.parquet``) whose columns include the task's text
    columns, or plain text with one example per line (a tab between the two texts of a pair task; blank
    lines are skipped)."""
    return as_examples(task, read_text_rows(path, task.text_columns))


class TaskBank:
    """Every task of a run, served from one live copy of the backbone.

    Args:
        run_dir: a run directory (config, ledger, artifacts) written by :func:`stream.engine.runner.run_stream`.
        backbone: an already loaded backbone (tests pass tiny models); by default the run's, loaded once.
        device: where to serve (``auto``: CUDA when present), when the bank loads the backbone.
    """

    def __init__(self, run_dir: str | Path, *, backbone: Backbone | None = None, device: str = "auto") -> None:
        self.run_dir = Path(run_dir)
        self.config = read_run_config(self.run_dir)
        self.served = served_tasks(self.run_dir)
        if not self.served:
            raise RunDirectoryError(f"Run {self.run_dir} has no completed step to serve yet.")
        self.task_specs = _task_specs(self.config)
        self._method_entries: dict[str, dict] = {m["label"]: m for m in self.config["methods"]}
        if backbone is not None and backbone.pooling != self.config["pooling"]:
            raise ConfigError(f"Run {self.run_dir} was trained with pooling={self.config['pooling']!r}; the given "
                              f"backbone pools with {backbone.pooling!r}.")
        self._backbone = backbone
        self._device = device
        self.store = ArtifactStore(self.run_dir / ARTIFACTS_DIR)
        self._methods: dict[str, Method] = {}
        self._patches: dict[tuple[str, str], ServingPatch | None] = {}
        self._applied: ServingPatch | None = None
        self._active: tuple[str, str] | None = None
        self._model: TaskModel | None = None

    @property
    def backbone(self) -> Backbone:
        """The run's backbone, loaded on first use (so names can be checked before the model loads)."""
        if self._backbone is None:
            self._backbone = load_backbone(self.config["backbone"], pooling=self.config["pooling"],
                                           device=self._device)
        return self._backbone

    # ------------------------------------------------------------------------------------------ index
    @property
    def methods(self) -> tuple[str, ...]:
        """The method labels the bank serves, in the run's order."""
        present = {label for label, _ in self.served}
        return tuple(label for label in self._method_entries if label in present)

    def tasks(self, method: str | None = None) -> tuple[str, ...]:
        """The tasks served for ``method`` (default: the run's only method), in arrival order."""
        label = self._label(method)
        return tuple(task for lab, task in self.served if lab == label)

    @property
    def active(self) -> tuple[str, str] | None:
        """The (method label, task) the live model currently serves, or None."""
        return self._active

    @property
    def active_patch(self) -> ServingPatch | None:
        """The patch applied to the live encoder, or None (nothing active, or a model rebuilt by ``load``)."""
        return self._applied

    def _label(self, method: str | None) -> str:
        labels = self.methods
        if method is None:
            if len(labels) == 1:
                return labels[0]
            raise ConfigError(f"Run {self.run_dir} has several methods ({', '.join(labels)}); choose one "
                              "(--method LABEL).")
        if method not in labels:
            if method in self._method_entries:
                raise RunDirectoryError(f"Method {method!r} of run {self.run_dir} has no completed step yet; "
                                        "resume the run first.")
            raise self._unknown("method", method, labels)
        return method

    def entry(self, task: str, method: str | None = None) -> ServedTask:
        """Where ``task`` (of ``method``) is served from; unknown names are refused with the valid ones."""
        label = self._label(method)
        self.task_spec(task)
        served = self.served.get((label, task))
        if served is None:
            raise RunDirectoryError(f"Method {label!r} of run {self.run_dir} has not finished task {task!r} yet "
                                    f"(finished: {', '.join(self.tasks(label))}); resume the run first.")
        return served

    # ---------------------------------------------------------------------------------------- switching
    def method(self, label: str) -> Method:
        """The run's method object for ``label``, built on the bank's backbone."""
        if label not in self._methods:
            spec = MethodSpec.from_value(self._method_entries[label])
            self._methods[label] = spec.build(self.backbone)
        return self._methods[label]

    def read(self, task: str, method: str | None = None) -> LoadedArtifact:
        """The artifact ``task`` is served from, verified against the store, the ledger and the backbone."""
        served = self.entry(task, method)
        artifact = self.store.read(served.key)
        if artifact.record.sha256 != served.sha256:
            raise ArtifactError(f"Artifact {artifact.record.tensor_path} is not the file the ledger recorded "
                                f"(sha256 {served.sha256[:16]}... expected, {artifact.record.sha256[:16]}... "
                                "found): it was replaced after the run. Restore it or re-run the task.")
        self._check_recorded_settings(artifact, served)
        trained_on = artifact.sidecar.get("backbone", {}).get("fingerprint")
        if trained_on != self.backbone.fingerprint:
            raise ArtifactError(f"Artifact {artifact.record.tensor_path} was trained on backbone fingerprint "
                                f"{str(trained_on)[:12]}..., but the served backbone {self.backbone.identity!r} "
                                f"is {self.backbone.fingerprint[:12]}...: serve it with the run's own backbone.")
        return artifact

    def _check_recorded_settings(self, artifact: LoadedArtifact, served: ServedTask) -> None:
        """Refuse an artifact whose recorded pooling or maximum length differs from what ``config.json`` says now:
        the answers would silently change with an edited config. (Artifacts written before the maximum length
        was recorded are checked for pooling only.)"""
        path = self.run_dir / CONFIG_FILE
        pooling = artifact.sidecar.get("backbone", {}).get("pooling")
        if pooling is not None and pooling != self.config["pooling"]:
            raise ConfigError(f"{path} says pooling={self.config['pooling']!r}, but {artifact.record.tensor_path} "
                              f"was trained with pooling={pooling!r}: the config was edited after the run. Set "
                              f"\"pooling\": {json.dumps(pooling)} back in it.")
        recorded = artifact.sidecar.get("max_seq_length")
        if recorded is not None and served.key.task == served.task and recorded != self.max_seq_length(served.task):
            raise ConfigError(f"{path} gives task {served.task!r} a maximum length of "
                              f"{self.max_seq_length(served.task)} tokens, but {artifact.record.tensor_path} was "
                              f"trained with {recorded}: the config was edited after the run. Set max_seq_length "
                              f"back to {recorded} (in \"budget\" or the task's \"task_budgets\").")

    def switch(self, task: str, method: str | None = None) -> TaskModel:
        """Make the live model serve ``task``; returns it (valid until the next switch or :meth:`reset`)."""
        served = self.entry(task, method)
        key = (served.method, served.task)
        if self._active == key:
            return self._model
        self.reset()
        spec, method_obj = self.task_specs[task], self.method(served.method)
        patch, artifact = self._patches.get(key, _NOT_BUILT), None
        if patch is _NOT_BUILT:
            artifact = self.read(task, served.method)
            patch = self._patches[key] = method_obj.serving_patch(artifact, spec)
            logger.debug("%s/%s: %s", *key, "patched in place" if patch else "rebuilt by load() at every switch")
        if patch is None:
            model = method_obj.load(artifact or self.read(task, served.method), spec)
        else:
            model = patch.apply(self.backbone.encoder)
            self._applied = patch
        self._active, self._model = key, model
        return model

    def reset(self, *, verify: bool = False) -> None:
        """Revert the applied patch (if any): the live encoder is the pristine backbone again.

        With ``verify``, also recompute the backbone's fingerprint and raise if it is not the original.
        """
        if self._applied is not None:
            self._applied.revert(self.backbone.encoder)
            self._applied = None
        self._active, self._model = None, None
        if verify:
            self.backbone.verify_unchanged()

    def close(self) -> None:
        """Same as :meth:`reset`: leave the shared backbone as it was loaded."""
        self.reset()

    def __enter__(self) -> TaskBank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------------------------------- predicting
    def encode(self, task: str, examples: Sequence[str | Sequence[str]]) -> TokenizedSplit:
        """Tokenise examples for ``task`` as the run did (its text columns and maximum length)."""
        spec = self.task_spec(task)
        rows = as_examples(spec, examples)
        columns = tuple(list(column) for column in zip(*rows))
        return tokenize_texts(self.backbone.tokenizer, columns, np.zeros(len(rows), dtype=np.int64),
                              max_length=self.max_seq_length(task), task=task, split="predict")

    def max_seq_length(self, task: str) -> int:
        """The maximum token length the run trained and evaluated ``task`` with (its budget's)."""
        overrides = self.config.get("task_budgets", {}).get(task, {})
        return Budget(**self.config["budget"]).updated(overrides).max_seq_length

    def task_spec(self, task: str) -> TaskSpec:
        """The spec of one of the run's tasks; an unknown name is refused with the run's tasks listed."""
        if task not in self.task_specs:
            raise self._unknown("task", task, tuple(self.task_specs))
        return self.task_specs[task]

    def _unknown(self, kind: str, name: str, known: tuple[str, ...]) -> ConfigError:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"Run {self.run_dir} has no {kind} {name!r}; its {kind}s: {', '.join(known)}.{hint}")

    @torch.inference_mode()
    def logits(self, task: str, examples: TokenizedSplit | Sequence[str | Sequence[str]], *,
               method: str | None = None, batch_size: int = 64) -> torch.Tensor:
        """Raw model outputs (examples, outputs) for ``task``, on CPU; switches the live model if needed."""
        split = examples if isinstance(examples, TokenizedSplit) else self.encode(task, examples)
        model = self.switch(task, method)
        device = self.backbone.device
        outputs = [model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).float().cpu()
                   for batch in split.batches(batch_size)]
        return torch.cat(outputs)

    def predict(self, task: str, examples: Sequence[str | Sequence[str]], *, method: str | None = None,
                batch_size: int = 64) -> list[Prediction]:
        """Predictions for ``examples`` (strings, or text pairs for pair tasks), in order."""
        spec = self.task_spec(task)
        logits = self.logits(task, examples, method=method, batch_size=batch_size)
        if spec.is_regression:
            return [Prediction(label=None, probabilities=None, value=float(v)) for v in logits[:, 0]]
        probabilities = torch.softmax(logits, dim=-1)
        names = spec.label_names
        return [Prediction(label=names[int(row_logits.argmax())],
                           probabilities={name: float(p) for name, p in zip(names, row)}, value=None)
                for row_logits, row in zip(logits, probabilities)]
