"""The shared encoder's parameters as one flat vector, and that encoder run on weights supplied per call.

Methods that learn a change to every backbone weight (diff pruning) keep the change as one flat (N,)
tensor in the encoder's parameter order, so the gate math, the penalty and the optimizer each touch one
or two big tensors instead of a hundred small ones. :class:`FlatLayout` maps between that flat vector and
the named tensors; :class:`FunctionalEncoder` runs the encoder's architecture with weights computed out
of place (``backbone + change``) through ``torch.func.functional_call``: the shared tensors are read,
never written and never copied.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from stream.core.errors import ConfigError

_BLOCK_INDEX = re.compile(r"^(.*?\.\d+)\.")


def layer_of(name: str) -> str:
    """The layer a parameter belongs to, for per-layer summaries.

    The name up to its first numeric component (``encoder.layer.3.attention...`` -> ``encoder.layer.3``),
    else its first component (``embeddings.word_embeddings.weight`` -> ``embeddings``).
    """
    match = _BLOCK_INDEX.match(name)
    return match.group(1) if match else name.split(".", 1)[0]


class FlatLayout:
    """Where each parameter of an encoder sits in one flat (N,) vector, in ``named_parameters`` order.

    Holds flat views of the encoder's own tensors (no copies) so :meth:`add_to_bases` can build the
    task weights ``backbone + delta`` out of place with one fused multi-tensor add.
    """

    def __init__(self, encoder: nn.Module) -> None:
        named = list(encoder.named_parameters())
        kinds = {(p.dtype, p.device) for _, p in named}
        if len(kinds) != 1:
            raise ConfigError(f"A flat parameter layout needs an encoder whose parameters share one dtype and "
                              f"device; {type(encoder).__name__} has {sorted(map(str, kinds))}. Convert the "
                              "backbone to one dtype first.")
        self.names: tuple[str, ...] = tuple(name for name, _ in named)
        self.shapes: tuple[torch.Size, ...] = tuple(p.shape for _, p in named)
        self.sizes: tuple[int, ...] = tuple(p.numel() for _, p in named)
        self.offsets: tuple[int, ...] = tuple(itertools.accumulate((0,) + self.sizes[:-1]))
        self.numel: int = sum(self.sizes)
        # reshape(-1) of a contiguous tensor is a view: these alias the shared backbone's storage.
        self._bases = tuple(p.detach().reshape(-1) for _, p in named)
        self.dtype = named[0][1].dtype
        self.device = named[0][1].device

    def __len__(self) -> int:
        return len(self.names)

    def layers(self) -> tuple[str, ...]:
        """The layer of every parameter (see :func:`layer_of`), in layout order."""
        return tuple(layer_of(name) for name in self.names)

    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-parameter 1-D views of a flat (N,) tensor."""
        return torch.split(flat, self.sizes)

    def flat_bases(self) -> tuple[torch.Tensor, ...]:
        """Per-parameter 1-D views of the backbone's tensors (read-only by contract)."""
        return self._bases

    def add_to_bases(self, delta: torch.Tensor, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{name: backbone[name] + scale[i] * delta[name]}`` as new tensors in the parameters' shapes.

        ``delta`` is (N,); ``scale`` (one entry per parameter tensor, or None for 1) multiplies each
        tensor's slice, so a per-tensor gate costs no (N,) temporary. Autograd flows back into both.
        """
        pieces = self.split(delta)
        if scale is None:
            summed = torch._foreach_add(self._bases, pieces)
        else:
            summed = torch._foreach_addcmul(self._bases, pieces, scale.unbind())
        return dict(zip(self.names, (t.view(shape) for t, shape in zip(summed, self.shapes))))

    def expand(self, per_tensor: torch.Tensor) -> torch.Tensor:
        """(number of tensors,) -> (N,): each tensor's value repeated over its elements."""
        sizes = torch.tensor(self.sizes, device=per_tensor.device)
        return per_tensor.repeat_interleave(sizes, output_size=self.numel)

    def positions_per_parameter(self, positions: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Split sorted flat positions (k,) into ``(name, positions local to that parameter)`` pairs."""
        offsets = torch.tensor(self.offsets + (self.numel,), device=positions.device)
        bounds = torch.searchsorted(positions, offsets).tolist()
        for i, name in enumerate(self.names):
            yield name, positions[bounds[i]:bounds[i + 1]] - self.offsets[i]


class FunctionalEncoder(nn.Module):
    """Runs a shared encoder's architecture with weights supplied at each call.

    Holds a structural copy of the encoder (new module objects, the same parameter and buffer tensors)
    outside the module tree, so this module's ``train()``/``eval()`` switch dropout on the copy without
    touching the shared encoder's mode, and ``parameters()`` never yields the shared tensors.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        shared = {id(t): t for t in itertools.chain(encoder.parameters(), encoder.buffers())}
        skeleton = copy.deepcopy(encoder, memo=shared)
        skeleton.train(self.training)
        self.__dict__["_skeleton"] = skeleton  # deliberately not a registered submodule

    def train(self, mode: bool = True) -> FunctionalEncoder:
        super().train(mode)
        self._skeleton.train(mode)
        return self

    def forward(self, weights: Mapping[str, torch.Tensor], **inputs: torch.Tensor):
        """The encoder's output with ``weights`` (name -> tensor, every parameter) in place of its own."""
        return torch.func.functional_call(self._skeleton, dict(weights), args=(), kwargs=inputs)
