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
from stream.core.errors import ArtifactError, ConfigError
from stream.core.rundir import ARTIFACTS_DIR, CONFIG_FILE
from stream.core.store import ArtifactStore, LoadedArtifact
from stream.core.tokenization import TokenizedSplit, tokenize_texts
from stream.engine.config import MethodSpec
from stream.engine.run_index import RunIndex, ServedTask, as_examples

logger = logging.getLogger(__name__)

_NOT_BUILT = object()  # a (method, task) whose artifact has not been read yet


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


class TaskBank(RunIndex):
    """Every task of a run, served from one live copy of the backbone (the run's names and files: :class:`RunIndex`).

    Args:
        run_dir: a run directory (config, ledger, artifacts) written by :func:`stream.engine.runner.run_stream`.
        backbone: an already loaded backbone (tests pass tiny models); by default the run's, loaded once.
        device: where to serve (``auto``: CUDA when present), when the bank loads the backbone.
    """

    def __init__(self, run_dir: str | Path, *, backbone: Backbone | None = None, device: str = "auto") -> None:
        super().__init__(run_dir)
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

    @property
    def active(self) -> tuple[str, str] | None:
        """The (method label, task) the live model currently serves, or None."""
        return self._active

    @property
    def active_patch(self) -> ServingPatch | None:
        """The patch applied to the live encoder, or None (nothing active, or a model rebuilt by ``load``)."""
        return self._applied

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
