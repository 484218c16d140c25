"""A task model: an encoder, a pooling rule and a task head.

Pooling is a documented choice. The default, ``mean`` (attention-masked mean of the last hidden states),
is how all-MiniLM-L6-v2 was trained (sentence-transformers, mean pooling), so its mean-pooled output is
a trained sentence representation. Its [CLS] state and its ``pooler`` layer were never trained for that,
and a head on them starves head-only and frozen-backbone methods (see README, "Pooling"). ``cls`` and
``pooler`` remain available for backbones trained with them.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_PREFIX = "head."


class TaskHead(nn.Module):
    """Dropout then one linear layer from the pooled representation to the task's outputs."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_outputs)
        nn.init.normal_(self.out.weight, std=0.02)
        nn.init.zeros_(self.out.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (batch, hidden) -> (batch, outputs)
        return self.out(self.dropout(pooled))


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
         pooler_output: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce (batch, seq, hidden) states to (batch, hidden) by ``mean``, ``cls`` or ``pooler``."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "pooler":
        assert pooler_output is not None, "pooling='pooler' needs an encoder with a pooler"
        return pooler_output
    raise ValueError(f"unknown pooling {pooling!r}")


class TaskModel(nn.Module):
    """``head(pool(encoder(tokens)))``: logits of shape (batch, num_outputs).

    The encoder is whatever a method made of its private backbone copy (finetuned, masked, with
    adapters...); the model itself knows nothing about methods.
    """

    def __init__(self, encoder: nn.Module, head: TaskHead, pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling,
                      getattr(out, "pooler_output", None))
        return self.head(pooled)


def head_state(head: TaskHead) -> dict[str, torch.Tensor]:
    """The head's tensors under the ``head.`` prefix, detached on CPU, ready for an artifact."""
    return {HEAD_PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in head.state_dict().items()}


def load_head(tensors: dict[str, torch.Tensor], hidden_size: int, num_outputs: int,
              dropout: float = 0.1) -> TaskHead:
    """Rebuild a head from the ``head.*`` tensors of an artifact."""
    head = TaskHead(hidden_size, num_outputs, dropout)
    own = {k[len(HEAD_PREFIX):]: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    head.load_state_dict(own, strict=True)
    return head
