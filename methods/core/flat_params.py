"""The shared encoder's parameters as one flat vector, and that encoder run on weights supplied per call.

Methods that learn a change to every backbone weight (diff pruning) keep the change as one flat (N,)
tensor in the encoder's parameter order, so the gate math, the penalty and the optimizer each touch one
or two big tensors instead of a hundred small ones. :class:`FlatLayout` maps between that flat vector and
the named tensors; :class:`FunctionalEncoder` runs the encoder's architecture with weights computed out
of place (``backbone + change``) through ``torch.func.functional_call``: the shared tensors are read,
never written and never copied.

:class:`FlatWeights` serves the other direction: it moves a live encoder's own parameters into one flat
buffer, so that a server's in-place switch (diff pruning's sparse diff, masking's zeros) is one indexed op
on that buffer rather than one per parameter tensor.
"""

from __future__ import annotations

import copy
import itertools
import re
import weakref
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


def _single_kind(encoder: nn.Module, named: list, needs: str) -> tuple[torch.dtype, torch.device]:
    """The one (dtype, device) every parameter of ``encoder`` shares; a ConfigError starting ``needs`` if not."""
    kinds = {(p.dtype, p.device) for _, p in named}
    if len(kinds) != 1:
        raise ConfigError(f"{needs} an encoder whose parameters share one dtype and device; "
                          f"{type(encoder).__name__} has {sorted(map(str, kinds))}. Convert the backbone to one "
                          "dtype first.")
    return kinds.pop()


class FlatLayout:
    """Where each parameter of an encoder sits in one flat (N,) vector, in ``named_parameters`` order.

    Holds flat views of the encoder's own tensors (no copies) so :meth:`add_to_bases` can build the
    task weights ``backbone + delta`` out of place with one fused multi-tensor add.
    """

    def __init__(self, encoder: nn.Module) -> None:
        named = list(encoder.named_parameters())
        _single_kind(encoder, named, "A flat parameter layout needs")
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


class FlatWeights:
    """An encoder's parameters moved into one flat buffer, so that an edit at positions anywhere in the
    encoder is one indexed op on one tensor instead of one per parameter.

    Building it re-points every parameter (the same ``Parameter`` objects: modules, names and optimizers see
    no change) at a slice of a new buffer holding the same values. Each slice starts on a 64-byte boundary,
    as a separately allocated tensor does, so kernels see the alignment they saw before and compute the same
    bits. Use :func:`flat_weights` rather than the constructor: an encoder is flattened once.
    """

    ALIGN_BYTES = 64

    def __init__(self, encoder: nn.Module) -> None:
        named = list(encoder.named_parameters())
        dtype, device = _single_kind(encoder, named, "Flat weights need")
        align = max(1, self.ALIGN_BYTES // torch.empty((), dtype=dtype).element_size())
        offsets, end = {}, 0
        for name, p in named:
            offsets[name] = end
            end += -(-p.numel() // align) * align
        self.offsets: dict[str, int] = offsets
        self._parameters = tuple(p for _, p in named)
        # Not an inference tensor even when first built under inference_mode: the parameters live here for
        # good, and later in-place writes (outside inference mode) must be allowed.
        with torch.inference_mode(False), torch.no_grad():
            self.buffer = torch.zeros(end, dtype=dtype, device=device)
            for name, p in named:
                view = self.buffer[offsets[name]:offsets[name] + p.numel()].view(p.shape)
                view.copy_(p)
                p.data = view
        self._pointers = list(map(torch.Tensor.data_ptr, self._parameters))

    def holds(self, encoder: nn.Module | None = None) -> bool:
        """Whether the parameters still live in the buffer (nothing moved or replaced them since), and, given
        ``encoder``, whether they are still exactly its parameters."""
        if encoder is not None and [id(p) for p in encoder.parameters()] != [id(p) for p in self._parameters]:
            return False
        # map over the C method: this runs at every switch, and a generator costs several times more.
        return list(map(torch.Tensor.data_ptr, self._parameters)) == self._pointers

    def positions(self, local: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Positions in the buffer (one int64 tensor) of per-parameter flat positions (name -> (k_i,)), in the
        mapping's order."""
        unknown = sorted(set(local) - set(self.offsets))
        if unknown:
            raise ConfigError(f"The encoder has no parameter {unknown[0]!r}; its first is "
                              f"{next(iter(self.offsets))!r}.")
        if not local:
            return torch.zeros(0, dtype=torch.int64, device=self.buffer.device)
        return torch.cat([index.to(self.buffer.device, torch.int64) + self.offsets[name]
                          for name, index in local.items()])


_FLATTENED: weakref.WeakKeyDictionary[nn.Module, FlatWeights] = weakref.WeakKeyDictionary()


def flat_weights(encoder: nn.Module) -> FlatWeights:
    """``encoder``'s parameters as one flat buffer (:class:`FlatWeights`), flattened on the first call and
    again only if something moved them since (``.to()``, ``load_state_dict(assign=True)``)."""
    weights = _FLATTENED.get(encoder)
    if weights is None or not weights.holds(encoder):
        weights = _FLATTENED[encoder] = FlatWeights(encoder)
    return weights
