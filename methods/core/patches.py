"""Switching one live shared encoder between tasks in place, exactly: serving patches.

A server keeps one copy of the backbone and, per task, only what the task's artifact adds. To answer for a
task it applies that task's :class:`ServingPatch` to the live encoder; before answering for another task it
reverts it. A patch is the task's head plus a list of edits to the encoder, each undone exactly:

- :class:`AssignValues` writes task tensors into named parameters (last_layer's blocks, BitFit's biases,
  the adapters' LayerNorms) and assigns the overwritten tensors back on revert;
- :class:`AddAtPositions` adds sparse values at flat positions of named parameters (diff pruning);
- :class:`ZeroAtPositions` multiplies flat positions of named parameters by zero (masking's masked-out
  weights); both work on the encoder's parameters moved into one flat buffer
  (:class:`~methods.core.flat_params.FlatWeights`), so a switch is one indexed copy however many tensors
  it touches;
- :class:`SwapModules` puts task modules at module paths (adapters, LoRA) and the originals back.

"Exact" means two things, both proved by ``tests/test_serving.py``:

1. The patched encoder computes bit for bit what ``Method.load`` rebuilds from the same file: every edit
   computes the very rounding ``load`` computes on its fresh copy (one addition per diff entry, as
   ``index_add_`` makes it; ``mul`` by zero; ``copy_``), on the same pristine values, and swapped-in modules
   are built by the method's own load code.
2. After ``revert`` every tensor of the encoder is bit-identical to before ``apply``. Position edits keep
   the k original values they overwrite (k values, not the tensor) and restore them by assignment
   (``scatter_`` of the kept originals); nothing is ever undone by arithmetic, since ``(w + d) - d`` is not
   ``w`` in floating point.

A patch is built and applied against the live encoder while no other patch is applied (it may read the
encoder's structure and values, and modules it wraps must be the pristine ones); a server applies one patch
at a time.
"""

from __future__ import annotations

import abc
import copy
import itertools
import weakref
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from methods.core.flat_params import flat_weights
from methods.core.task_model import TaskHead, TaskModel
from stream.core.errors import ArtifactError


class Edit(abc.ABC):
    """One in-place change to an encoder that can be undone exactly. Stateful: it keeps what it overwrote.

    Subclasses implement :meth:`_save` (keep what will be overwritten), :meth:`_write` and :meth:`_restore`;
    a write that fails half-way is reverted before the error propagates, so an edit is all or nothing.
    """

    _saved: dict | None = None
    _resolved: tuple[weakref.ref, dict[str, torch.Tensor]] | None = None

    def _parameters(self, encoder: nn.Module, names) -> dict[str, torch.Tensor]:
        """``encoder``'s named parameters, looked up once per encoder: resolving dotted names at every switch
        would cost more than BitFit's whole copy. Patches only ever write into parameters, never replace them,
        so the objects found stay the live ones; they are kept as the ``Parameter`` objects (not detached
        tensors), so writes follow them if their storage moves (:func:`flat_weights` moves it)."""
        if self._resolved is None or self._resolved[0]() is not encoder:
            params = dict(encoder.named_parameters())
            found = {name: params[name] for name in names}
            self._resolved = (weakref.ref(encoder), found)
        return self._resolved[1]

    def apply(self, encoder: nn.Module) -> None:
        """Change ``encoder`` in place, keeping what is needed to undo it."""
        assert self._saved is None, f"{type(self).__name__} applied twice"
        self._saved = self._save(encoder)
        try:
            self._write(encoder)
        except BaseException:
            self.revert(encoder)
            raise

    @abc.abstractmethod
    def _save(self, encoder: nn.Module) -> dict:
        """What :meth:`_write` will overwrite, by parameter name or module path."""

    @abc.abstractmethod
    def _write(self, encoder: nn.Module) -> None:
        """Make the change (only after :meth:`_save`)."""

    def revert(self, encoder: nn.Module) -> None:
        """Undo :meth:`apply` exactly and drop what was kept."""
        assert self._saved is not None, f"{type(self).__name__} reverted without being applied"
        self._restore(encoder, self._saved)
        self._saved = None

    @abc.abstractmethod
    def _restore(self, encoder: nn.Module, saved: dict) -> None:
        """Put back everything in ``saved`` by assignment."""


class AssignValues(Edit):
    """Write ``values`` (parameter name -> tensor of its shape, dtype and device) into the named parameters.

    Writes and restores are one multi-tensor copy each (``torch._foreach_copy_``) rather than one call per
    parameter: BitFit touches about fifty small tensors, where per-call overhead is the whole cost.
    """

    def __init__(self, values: Mapping[str, torch.Tensor]) -> None:
        self.values = dict(values)
        self._sources = list(self.values.values())

    def _targets(self, encoder: nn.Module) -> list[torch.Tensor]:
        return list(self._parameters(encoder, self.values).values())  # in the order of self.values

    def _save(self, encoder):
        return {"originals": [param.detach().clone() for param in self._targets(encoder)]}

    def _write(self, encoder):
        with torch.no_grad():
            torch._foreach_copy_(self._targets(encoder), self._sources)

    def _restore(self, encoder, saved):
        with torch.no_grad():
            torch._foreach_copy_(self._targets(encoder), saved["originals"])


class _PositionEdit(Edit):
    """Overwrite entries at flat positions of named parameters, through the encoder's one flat buffer.

    ``positions``: parameter name -> int64 (k_i,) flat positions into that parameter, each position at most
    once. On the first apply to an encoder the positions become sorted positions in the encoder's flat buffer
    (:func:`flat_weights`, which moves the parameters into one buffer the first time), and the k original
    entries and the k new ones are computed once and kept: from then on apply is one ``scatter_`` of the new
    entries and revert one of the originals, whatever the number of tensors touched. (``scatter_`` rather
    than ``index_copy_``: the same assignment for distinct positions, at about half the per-entry cost.)
    This relies on the serving contract above: the encoder holds the same values at every apply (the pristine
    backbone), as it did at the first.
    """

    def __init__(self, positions: Mapping[str, torch.Tensor]) -> None:
        self.positions = {name: index for name, index in positions.items() if index.numel()}
        self._cache: tuple | None = None  # (encoder ref, flat weights, buffer positions, new entries, originals)

    def entries(self, encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat buffer, sorted positions in it, new entries, originals): what apply and revert write, built on
        the first call for ``encoder`` and again only if the encoder changed or its parameters left the flat
        buffer. Read-only by contract (``bench/switch_floor.py`` times bare writes with them)."""
        cached = self._cache
        if cached is None or cached[0]() is not encoder or not cached[1].holds():
            with torch.inference_mode(False), torch.no_grad():  # kept for later switches: normal tensors
                cached = self._cache = self._build_cache(encoder)
        return cached[1].buffer, cached[2], cached[3], cached[4]

    def _build_cache(self, encoder: nn.Module) -> tuple:
        weights = flat_weights(encoder)
        order = sorted(self.positions, key=weights.offsets.__getitem__)  # ascending: cache-friendly
        index = weights.positions({name: self.positions[name] for name in order})
        new = self._new_entries(order, weights.buffer.index_select(0, index))
        if index.numel() > 1 and not bool((index[1:] > index[:-1]).all()):
            index, permutation = torch.sort(index)
            new = new[permutation]
            repeated = index[1:] == index[:-1]
            if bool(repeated.any()):
                raise ArtifactError(f"{type(self).__name__} got flat position {int(index[1:][repeated][0])} of the "
                                    "encoder more than once; a task's positions must be distinct (the artifact "
                                    "is damaged or was written by another version).")
        return weakref.ref(encoder), weights, index, new, weights.buffer.index_select(0, index)

    def _save(self, encoder):
        return {"resolved": self.entries(encoder)}  # the originals are kept in the cache, not copied

    def _write(self, encoder):
        buffer, index, new, _ = self._saved["resolved"]
        buffer.scatter_(0, index, new)

    def _restore(self, encoder, saved):
        buffer, index, _, old = saved["resolved"]  # exactly where apply wrote, even if the cache was rebuilt since
        buffer.scatter_(0, index, old)

    @abc.abstractmethod
    def _new_entries(self, order: Sequence[str], old: torch.Tensor) -> torch.Tensor:
        """The entries to write at the positions of the parameters ``order`` (concatenated in that order),
        whose entries are ``old``."""


class AddAtPositions(_PositionEdit):
    """``flat[index] += values`` per parameter: ``old + values``, the one rounding ``index_add_`` makes in
    diff pruning's ``load`` (positions are unique, so each entry gets exactly one addition)."""

    def __init__(self, positions: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor]) -> None:
        super().__init__(positions)
        self.values = {name: values[name] for name in self.positions}

    def _new_entries(self, order, old):
        return old + torch.cat([self.values[name].to(old.device, old.dtype) for name in order])


class ZeroAtPositions(_PositionEdit):
    """``flat[index] *= 0`` per parameter: a binary mask's zeros, as ``weight.mul_(mask)`` computes them.

    Multiplying (rather than writing 0.0) keeps the sign of zero and NaN propagation identical to the
    dense ``mul_`` of masking's ``load``; the mask's ones leave their entries untouched (``w * 1 == w``).
    """

    def _new_entries(self, order, old):
        return old.mul(0)


def _parent(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, attr = path.rpartition(".")
    return (root.get_submodule(parent) if parent else root), attr


class SwapModules(Edit):
    """Put ``modules`` (module path -> module) into the encoder; the displaced modules go back on revert.

    The modules are put in eval mode here, once: a served encoder is in eval mode, and a switch does not
    walk the whole encoder to set it again. The module paths are resolved to (parent module, attribute) once
    per encoder: a served encoder's structure changes only through patches, which put every module back, so
    the parents stay the live ones (resolving dotted paths at every switch cost more than the swap itself).
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.modules = {path: module.eval() for path, module in modules.items()}
        self._slots: tuple[weakref.ref, tuple[tuple[nn.Module, str], ...]] | None = None

    def _parents(self, encoder: nn.Module) -> tuple[tuple[nn.Module, str], ...]:
        """(parent module, attribute name) of every path, in the order of ``self.modules``."""
        if self._slots is None or self._slots[0]() is not encoder:
            self._slots = (weakref.ref(encoder), tuple(_parent(encoder, path) for path in self.modules))
        return self._slots[1]

    def _save(self, encoder):
        return {"originals": [getattr(parent, attr) for parent, attr in self._parents(encoder)]}

    def _write(self, encoder):
        for (parent, attr), module in zip(self._parents(encoder), self.modules.values()):
            setattr(parent, attr, module)

    def _restore(self, encoder, saved):
        for (parent, attr), original in zip(self._parents(encoder), saved["originals"]):
            setattr(parent, attr, original)


class ServingPatch:
    """A task's edits to the live shared encoder, plus the task's head.

    ``apply(encoder)`` edits the encoder in place and returns the task model over it (valid until
    ``revert``); ``revert(encoder)`` restores the encoder bit for bit. Edits are applied in order and
    reverted in reverse order; if one fails to apply, those already applied are reverted first.
    """

    def __init__(self, edits: Sequence[Edit], head: TaskHead, pooling: str) -> None:
        self.edits = tuple(edits)
        self.head = head.eval()
        self.pooling = pooling
        self._applied: int | None = None  # how many edits are applied; None when the patch is not

    @property
    def applied(self) -> bool:
        return self._applied is not None

    @torch.no_grad()
    def apply(self, encoder: nn.Module) -> TaskModel:
        """Edit ``encoder`` into this task's encoder; return the task model (eval mode) over it."""
        assert self._applied is None, "a ServingPatch is applied at most once at a time"
        self._applied = 0
        try:
            for edit in self.edits:
                edit.apply(encoder)
                self._applied += 1
        except BaseException:
            self._revert(encoder)
            raise
        model = TaskModel(encoder, self.head, self.pooling)
        if encoder.training:  # a server's backbone is in eval mode; set every module only if someone changed it
            return model.eval()
        model.training = False  # the head and swapped-in modules are in eval mode already (walking costs ~1 ms)
        return model

    @torch.no_grad()
    def revert(self, encoder: nn.Module) -> None:
        """Restore ``encoder`` exactly as it was before :meth:`apply`."""
        assert self._applied is not None, "revert() without apply()"
        self._revert(encoder)

    def _revert(self, encoder: nn.Module) -> None:
        for edit in reversed(self.edits[:self._applied]):
            edit.revert(encoder)
        self._applied = None


def shared_skeleton(encoder: nn.Module) -> nn.Module:
    """A structural copy of ``encoder``: new module objects holding the *same* parameter and buffer tensors.

    Lets a method run its own load code (inserting adapters, injecting LoRA) without copying the weights
    and without touching the live encoder; the new modules it creates are then swapped into the live
    encoder by :class:`SwapModules`. Writing into the skeleton's parameters writes into the live ones.
    """
    shared = {id(t): t for t in itertools.chain(encoder.parameters(), encoder.buffers())}
    return copy.deepcopy(encoder, memo=shared)


def parameter_names(encoder: nn.Module) -> dict[int, str]:
    """``id(parameter) -> name`` for every parameter of ``encoder``."""
    return {id(p): name for name, p in encoder.named_parameters()}


def module_paths(encoder: nn.Module) -> dict[int, str]:
    """``id(module) -> path`` for every submodule of ``encoder``."""
    return {id(m): path for path, m in encoder.named_modules()}
