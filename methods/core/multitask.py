"""Taskstream's tokenised rows and task heads in Avalanche's shapes: what an Avalanche strategy trains on.

A sample is ``[features, label, task_label]`` where ``features`` maps ``input_ids`` / ``attention_mask`` /
``token_type_ids`` to 1-D token tensors; :func:`task_dataset` makes one task's rows such an Avalanche dataset, and
its collate function (:class:`TokenCollator`) pads them into a :class:`TokenBatch`, a dict of
``(batch, longest)`` tensors that also has ``.to(device)``, so Avalanche's stock strategies, which call ``.to``
on every minibatch element, train on it unchanged.

GLUE mixes output sizes (1 for STS-B regression, 2 for most tasks, 3 for MNLI), so the model is multi-head:
:class:`MultiHeadEncoder` (an Avalanche ``MultiTaskModule``) runs the shared encoder once per minibatch and
one task head per task label. A minibatch that mixes tasks (replay) gets logits padded to the widest head
with a very negative value, so cross-entropy and argmax over a padded row equal those of the task's own head.

Regression tasks (STS-B): a one-output head; the sample label is the float target; the ``targets`` data
attribute (the class ids Avalanche uses for class bookkeeping, e.g. LwF's distilled units) is all zeros, the
head's single unit. Train with :class:`MultiTaskCriterion` (mean squared error on regression rows,
cross-entropy on the others; plain ``CrossEntropyLoss`` is fine for classification-only streams).

The continual methods' strategies (:mod:`methods.avalanche_strategies`) train on these, and the Avalanche
export of a whole scenario (:mod:`stream.engine.avalanche_bridge`) is built from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute, TaskLabels
from avalanche.benchmarks.utils.flat_data import ConstantSequence
from avalanche.models import MultiTaskModule
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from methods.core.task_model import TaskHead, TaskModel, pool
from stream.core.tokenization import TokenizedSplit


_FEATURES = ("input_ids", "attention_mask", "token_type_ids")


class TokenBatch(dict):
    """A dict of ``(batch, longest)`` token tensors that moves to a device like a tensor does."""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenBatch:
        return TokenBatch({k: v.to(device, non_blocking=non_blocking) for k, v in self.items()})


@dataclass(frozen=True)
class TokenCollator:
    """Collate ``[features, label, task_label]`` samples into ``[TokenBatch, labels, task_labels]``.

    Rows are right-padded to the minibatch's longest row with the tokenizer's pad ids, which is exactly how
    :meth:`~stream.core.tokenization.TokenizedSplit.batch` pads, so both give the model identical inputs.
    Labels are int64 class ids, or float32 when any row is a regression target.
    """

    pad_token_id: int = 0
    pad_token_type_id: int = 0

    def __call__(self, samples: Sequence[Sequence[Any]]) -> list:
        longest = max(int(s[0]["input_ids"].shape[0]) for s in samples)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": self.pad_token_type_id}
        batch = TokenBatch()
        for key in _FEATURES:
            if key not in samples[0][0]:
                continue
            out = torch.full((len(samples), longest), pads[key], dtype=torch.int64)  # (batch, longest)
            for row, sample in enumerate(samples):
                values = sample[0][key]
                out[row, :values.shape[0]] = values
            batch[key] = out
        labels = [torch.as_tensor(s[1]) for s in samples]
        dtype = torch.float32 if any(label.is_floating_point() for label in labels) else torch.int64
        task_labels = torch.as_tensor([int(s[-1]) for s in samples], dtype=torch.int64)
        return [batch, torch.stack(labels).to(dtype), task_labels]


class SplitRows(Dataset):
    """The rows of a :class:`TokenizedSplit` as ``[features, label]`` samples, each trimmed to its length."""

    def __init__(self, split: TokenizedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> list:
        split, length = self.split, int(self.split.lengths[index])
        features = {"input_ids": split.input_ids[index, :length],
                    "attention_mask": split.attention_mask[index, :length]}
        if split.token_type_ids is not None:
            features["token_type_ids"] = split.token_type_ids[index, :length]
        return [features, split.labels[index]]


def task_dataset(split: TokenizedSplit, task_label: int, collator: TokenCollator, *,
                 regression: bool = False) -> TaskAwareSupervisedClassificationDataset:
    """One task's rows as an Avalanche dataset with ``targets`` and ``targets_task_labels`` attributes.

    A regression task's ``targets`` are all 0 (its head's single unit); its samples carry the float labels.
    """
    targets = [0] * len(split) if regression else split.labels.tolist()
    return TaskAwareSupervisedClassificationDataset(
        [SplitRows(split)],
        data_attributes=[DataAttribute(targets, "targets"),
                         TaskLabels(ConstantSequence(task_label, len(split)))],
        collate_fn=collator)


def collator_for(tokenizer: Any) -> TokenCollator:
    """The collator padding with ``tokenizer``'s pad ids (0 when it defines none)."""
    return TokenCollator(pad_token_id=int(getattr(tokenizer, "pad_token_id", None) or 0),
                         pad_token_type_id=int(getattr(tokenizer, "pad_token_type_id", None) or 0))


def single_experience(dataset: TaskAwareSupervisedClassificationDataset):
    """A one-experience task-aware train stream's experience holding ``dataset``."""
    return with_task_labels(benchmark_from_datasets(train=[dataset])).train_stream[0]


def _padding_value(dtype: torch.dtype) -> float:
    # Far below any real logit but far from -inf, so log-softmax stays finite: a padded unit gets probability 0.
    return torch.finfo(dtype).min / 2


def tag_rows(logits: torch.Tensor, regression_rows: torch.Tensor) -> torch.Tensor:
    """Mark which rows of ``logits`` are regression outputs (read by :class:`MultiTaskCriterion`)."""
    # MultiTaskCriterion reads which rows are regression targets from the logits themselves: stock strategies
    # (and EWC's importance pass) call criterion(logits, targets) with no task labels.
    logits.regression_rows = regression_rows
    return logits


def route_rows(task_labels: torch.Tensor, heads: Iterable[int], regression: Iterable[int], run_head) -> torch.Tensor:
    """Logits of a minibatch whose rows belong to several tasks, padded to the widest head.

    ``run_head(label, rows)`` returns the ``(len(rows), outputs)`` logits of task ``label`` for the row
    indices ``rows``. The result is tagged with the rows that are regression targets.
    """
    regression, heads = set(regression), set(heads)
    labels = task_labels.to("cpu")
    parts, width = {}, 0
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().squeeze(1)
        if label not in heads:
            raise ValueError(f"No head for task label {label}; the model has heads for {sorted(heads)}.")
        parts[label] = (rows, run_head(label, rows))
        width = max(width, parts[label][1].shape[1])
    first = next(iter(parts.values()))[1]
    out = torch.full((len(labels), width), _padding_value(first.dtype), dtype=first.dtype, device=first.device)
    for label, (rows, logits) in parts.items():
        out[rows.to(out.device), :logits.shape[1]] = logits
    regression_rows = torch.as_tensor([int(t) in regression for t in labels.tolist()], dtype=torch.bool)
    return tag_rows(out, regression_rows.to(out.device))


class MultiHeadEncoder(MultiTaskModule):
    """One shared encoder and one :class:`~methods.core.task_model.TaskHead` per task label.

    ``forward(x, task_labels)`` runs the encoder once on the whole minibatch, then each row's head;
    ``task_labels=None`` gives every trained head's logits as a dict (what Avalanche's LwF distils).

    Args:
        encoder: a transformers encoder (the model's shared, possibly trainable, part).
        heads: task label -> head.
        pooling: how heads read the encoder (``mean``, ``cls``, ``pooler``; see :mod:`methods.core.task_model`).
        regression: the task labels whose head is a one-output regression head.
        trained_tasks: task labels already trained (Avalanche's ``known_train_tasks_labels``).
    """

    def __init__(self, encoder: nn.Module, heads: Mapping[int, TaskHead], *, pooling: str = "mean",
                 regression: Iterable[int] = (), trained_tasks: Iterable[int] = ()) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({str(label): head for label, head in sorted(heads.items())})
        self.pooling = pooling
        self.regression = frozenset(int(t) for t in regression)
        self.known_train_tasks_labels = set(int(t) for t in trained_tasks)

    @property
    def task_labels(self) -> list[int]:
        return sorted(int(label) for label in self.heads)

    def add_head(self, label: int, head: TaskHead, *, regression: bool = False) -> None:
        """Add the head of a new task label."""
        if str(label) in self.heads:
            raise ValueError(f"Task label {label} already has a head.")
        self.heads[str(label)] = head
        if regression:
            self.regression = self.regression | {int(label)}

    def task_model(self, label: int) -> TaskModel:
        """A taskstream :class:`TaskModel` view (shared modules, no copy) of task ``label``."""
        return TaskModel(self.encoder, self.heads[str(label)], self.pooling)

    def adaptation(self, experience) -> None:
        """Check that every task label of ``experience`` has a head; record trained labels while training."""
        labels = set(int(t) for t in experience.task_labels)
        missing = sorted(labels - set(self.task_labels))
        if missing:
            raise ValueError(f"MultiHeadEncoder has no head for task label(s) {missing} (heads: "
                             f"{self.task_labels}). Build it with AvalancheStream.multi_head_model(), which "
                             "creates one head per task of the stream.")
        if self.training:
            self.known_train_tasks_labels |= labels

    def _pooled(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(**{k: x[k] for k in _FEATURES if k in x})
        return pool(out.last_hidden_state, x["attention_mask"], self.pooling,
                    getattr(out, "pooler_output", None))  # (batch, hidden)

    def forward(self, x: Mapping[str, torch.Tensor], task_labels: torch.Tensor | int | None):
        if task_labels is None:
            return self.forward_all_tasks(x)
        pooled = self._pooled(x)
        if isinstance(task_labels, int) or task_labels.unique().numel() == 1:
            label = int(task_labels) if isinstance(task_labels, int) else int(task_labels.flatten()[0])
            logits = self.heads[str(label)](pooled)
            rows = torch.full((pooled.shape[0],), label in self.regression, dtype=torch.bool, device=logits.device)
            return tag_rows(logits, rows)
        return route_rows(task_labels, self.task_labels, self.regression,
                          lambda label, rows: self.heads[str(label)](pooled[rows.to(pooled.device)]))

    def forward_single_task(self, x: Mapping[str, torch.Tensor], task_label: int) -> torch.Tensor:
        return self.forward(x, int(task_label))

    def forward_all_tasks(self, x: Mapping[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        pooled = self._pooled(x)
        return {label: self.heads[str(label)](pooled) for label in sorted(self.known_train_tasks_labels)}


class MultiTaskCriterion:
    """The loss of a multi-head GLUE minibatch: cross-entropy on classification rows, MSE on regression rows.

    Which rows are regression targets comes from the logits of :class:`MultiHeadEncoder` (it tags them);
    untagged logits are treated as regression exactly when the targets are floating point. Each row's loss
    is summed and divided by the batch size, so a single-task batch gets the plain mean of that loss.
    """

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        regression = getattr(logits, "regression_rows", None)
        logits = logits.float()  # autocast may have produced bf16/fp16 logits; losses are taken in fp32
        if regression is None:
            regression = torch.full((len(targets),), targets.is_floating_point(), dtype=torch.bool,
                                    device=logits.device)
        total = logits.new_zeros(())
        if regression.any():
            total = total + F.mse_loss(logits[regression, 0], targets[regression].to(logits.dtype), reduction="sum")
        classification = ~regression
        if classification.any():
            total = total + F.cross_entropy(logits[classification], targets[classification].long(), reduction="sum")
        return total / max(1, len(targets))
