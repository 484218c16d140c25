"""Tokenised splits and the cache that tokenises each (backbone, length, task, split, rows) once.

Every method of a run trains on the same rows, so the arrival loop asks the cache, not the tokenizer:
a task is tokenised once per backbone and maximum length, however many methods see it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

# Batches per length-sorted chunk: large enough that most batches hold rows of near-equal length, small
# enough that a chunk is a small slice of an epoch (the order stays random at the scale of the data).
LENGTH_GROUP_BATCHES = 50


@dataclass(frozen=True)
class TokenizedSplit:
    """One split of one task, tokenised and padded to its longest row.

    Batches are trimmed to their own longest row, so short-sentence tasks do not pay for the
    maximum length. Tensors are (rows, longest) int64; labels are int64 ids or float32 targets.
    """

    task: str
    split: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    lengths: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``rows`` (1-D index tensor) as model inputs plus ``labels``."""
        longest = int(self.lengths[rows].max()) if len(rows) else 1
        out = {
            "input_ids": self.input_ids[rows, :longest],
            "attention_mask": self.attention_mask[rows, :longest],
            "labels": self.labels[rows],
        }
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[rows, :longest]
        return out

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None,
                group_by_length: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Batches in order, or shuffled with ``generator`` (one epoch).

        ``group_by_length`` (shuffled batches only): the shuffled rows are cut into chunks of
        ``LENGTH_GROUP_BATCHES`` batches, each chunk is sorted by length and cut into batches, and the
        batch order is shuffled, so a batch pads to a length near its rows' own while every epoch still
        sees the rows in a new random grouping.
        """
        n = len(self)
        if generator is None:
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=generator)
        if generator is None or not group_by_length:
            for start in range(0, n, batch_size):
                yield self.batch(order[start:start + batch_size])
            return
        chunk = batch_size * LENGTH_GROUP_BATCHES
        batches = []
        for start in range(0, n, chunk):
            rows = order[start:start + chunk]
            rows = rows[torch.argsort(self.lengths[rows], stable=True)]
            batches.extend(rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield self.batch(batches[index])

    def select(self, rows: torch.Tensor) -> TokenizedSplit:
        """A new split holding only ``rows`` (kept in the given order)."""
        return TokenizedSplit(
            task=self.task, split=self.split,
            input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[rows],
            lengths=self.lengths[rows], labels=self.labels[rows],
        )


def tokenize_texts(tokenizer, texts: tuple[list[str], ...], labels: np.ndarray, *, max_length: int,
                   task: str, split: str) -> TokenizedSplit:
    """Tokenise one or two text columns (a sentence or a sentence pair) into a TokenizedSplit."""
    if len(texts) not in (1, 2):
        raise ValueError(f"task {task!r} has {len(texts)} text columns; encoders take one or two")
    encoded = tokenizer(*texts, truncation=True, max_length=max_length, padding="longest",
                        return_tensors="pt", return_token_type_ids=True)
    attention = encoded["attention_mask"].to(torch.int64)
    label_tensor = torch.as_tensor(labels)
    label_tensor = label_tensor.to(torch.float32 if label_tensor.is_floating_point() else torch.int64)
    return TokenizedSplit(
        task=task, split=split,
        input_ids=encoded["input_ids"].to(torch.int64),
        attention_mask=attention,
        token_type_ids=encoded.get("token_type_ids"),
        lengths=attention.sum(dim=1),
        labels=label_tensor,
    )


class TokenCache:
    """In-memory cache of tokenised row selections, shared by every method of a run.

    ``calls`` counts real tokenizer invocations so tests can prove the cache works.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, TokenizedSplit] = {}
        self.calls = 0

    def get(self, tokenizer, tokenizer_key: str, *, texts: tuple[list[str], ...], labels: np.ndarray,
            rows: np.ndarray, max_length: int, task: str, split: str) -> TokenizedSplit:
        """Tokenise ``rows`` of a split, or return the cached result for the same selection."""
        rows_key = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
        key = (tokenizer_key, max_length, task, split, rows_key)
        if key not in self._entries:
            selected = tuple([column[i] for i in rows] for column in texts)
            self._entries[key] = tokenize_texts(tokenizer, selected, labels[rows], max_length=max_length,
                                                task=task, split=split)
            self.calls += 1
        return self._entries[key]
