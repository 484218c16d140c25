"""Switching one live shared encoder between tasks in place, exactly: serving patches.

A server keeps one copy of the backbone and, per task, only what the task's artifact adds. To answer for a
task it applies that task's :class:`ServingPatch` to the live encoder; before answering for another task it
reverts it. A patch is the task's head plus a list of edits to the encoder, each undone exactly:

- :class:`AssignValues` writes task tensors into named parameters (last_layer's blocks, BitFit's biases,
  the adapters' LayerNorms) and assigns the overwritten tensors back on revert;
- :class:`AddAtPositions` adds sparse values at flat positions of named parameters (diff pruning);
- :class:`ZeroAtPositions` multiplies flat positions of named parameters by zero (masking's masked-out
  weights);
- :class:`SwapModules` puts task modules at module paths (adapters, LoRA) and the originals back.

"Exact" means two things, both proved by ``tests/test_serving.py``:

1. The patched encoder computes bit for bit what ``Method.load`` rebuilds from the same file: every edit
   performs the very operation ``load`` performs on its fresh copy (``index_add_``, ``mul`` by zero,
   ``copy_``), on the same pristine values, and swapped-in modules are built by the method's own load code.
2. After ``revert`` every tensor of the encoder is bit-identical to before ``apply``. Position edits keep
   the k original values they overwrite (k values, not the tensor) and restore them by assignment
   (``index_copy_``); nothing is ever undone by arithmetic, since ``(w + d) - d`` is not ``w`` in floating
   point.

A patch is built against the live encoder while no other patch is applied (it may read the encoder's
structure, and modules it wraps must be the pristine ones); a server applies one patch at a time.
"""

from __future__ import annotations

import abc
import copy
import itertools
import weakref
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from methods.core.task_model import TaskHead, TaskModel


class Edit(abc.ABC):
    """One in-place change to an encoder that can be undone exactly. Stateful: it keeps what it overwrote.

    Subclasses implement :meth:`_save` (keep what will be overwritten), :meth:`_write` and :meth:`_restore`;
    a write that fails half-way is reverted before the error propagates, so an edit is all or nothing.
    """

    _saved: dict | None = None
    _resolved: tuple[weakref.ref, dict[str, torch.Tensor]] | None = None
    _flat: bool = False  # whether _parameters gives flat (N_i,) views

    def _parameters(self, encoder: nn.Module, names) -> dict[str, torch.Tensor]:
        """``encoder``'s named parameters (detached: writes go into the live storage; flat views if
        ``_flat``), looked up once per encoder: resolving dotted names at every switch would cost more than
        BitFit's whole copy. Patches only ever write into parameters, never replace them, so the tensors
        found stay the live ones."""
        if self._resolved is None or self._resolved[0]() is not encoder:
            params = dict(encoder.named_parameters())
            found = {name: params[name].detach() for name in names}
            if self._flat:
                assert all(t.is_contiguous() for t in found.values()), "a flat view must not be a copy"
                found = {name: t.view(-1) for name, t in found.items()}
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
    """Write ``values`` (parameter name -> tensor of its shape, dtype and device) into the named parameters."""

    def __init__(self, values: Mapping[str, torch.Tensor]) -> None:
        self.values = dict(values)

    def _save(self, encoder):
        return {name: param.clone() for name, param in self._parameters(encoder, self.values).items()}

    def _write(self, encoder):
        for name, param in self._parameters(encoder, self.values).items():
            param.copy_(self.values[name])

    def _restore(self, encoder, saved):
        for name, param in self._parameters(encoder, self.values).items():
            param.copy_(saved[name])


class _PositionEdit(Edit):
    """Overwrite entries at flat positions of named parameters; keep those k entries and assign them back.

    ``positions``: parameter name -> int64 (k_i,) flat positions into that parameter, on its device.
    """

    _flat = True

    def __init__(self, positions: Mapping[str, torch.Tensor]) -> None:
        self.positions = {name: index for name, index in positions.items() if index.numel()}

    def _flats(self, encoder: nn.Module) -> dict[str, torch.Tensor]:
        return self._parameters(encoder, self.positions)

    def _save(self, encoder):
        return {name: flat.index_select(0, self.positions[name]) for name, flat in self._flats(encoder).items()}

    def _write(self, encoder):
        for name, flat in self._flats(encoder).items():
            self._overwrite(name, flat, self.positions[name], self._saved[name])

    def _restore(self, encoder, saved):
        for name, flat in self._flats(encoder).items():
            flat.index_copy_(0, self.positions[name], saved[name])

    @abc.abstractmethod
    def _overwrite(self, name: str, flat: torch.Tensor, index: torch.Tensor, old: torch.Tensor) -> None:
        """Write the new entries at ``index`` of ``flat`` (whose entries there were ``old``)."""


class AddAtPositions(_PositionEdit):
    """``flat[index] += values`` per parameter, by ``index_add_`` as diff pruning's ``load`` does."""

    def __init__(self, positions: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor]) -> None:
        super().__init__(positions)
        self.values = {name: values[name] for name in self.positions}

    def _overwrite(self, name, flat, index, old) -> None:
        flat.index_add_(0, index, self.values[name])


class ZeroAtPositions(_PositionEdit):
    """``flat[index] *= 0`` per parameter: a binary mask's zeros, as ``weight.mul_(mask)`` computes them.

    Multiplying (rather than writing 0.0) keeps the sign of zero and NaN propagation identical to the
    dense ``mul_`` of masking's ``load``; the mask's ones leave their entries untouched (``w * 1 == w``).
    """

    def _overwrite(self, name, flat, index, old) -> None:
        flat.index_copy_(0, index, old.mul(0))


def _parent(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, attr = path.rpartition(".")
    return (root.get_submodule(parent) if parent else root), attr


class SwapModules(Edit):
    """Put ``modules`` (module path -> module) into the encoder; the displaced modules go back on revert.

    The modules are put in eval mode here, once: a served encoder is in eval mode, and a switch does not
    walk the whole encoder to set it again.
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.modules = {path: module.eval() for path, module in modules.items()}

    def _save(self, encoder):
        return {path: getattr(*_parent(encoder, path)) for path in self.modules}

    def _write(self, encoder):
        for path, module in self.modules.items():
            setattr(*_parent(encoder, path), module)

    def _restore(self, encoder, saved):
        for path, original in saved.items():
            setattr(*_parent(encoder, path), original)


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
