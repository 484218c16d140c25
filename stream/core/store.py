"""The artifact store: one safetensors file plus one JSON sidecar per (method, step, task).

Writes are atomic (temporary file, fsync, rename) and the sidecar is written last, so a sidecar's
presence means its tensor file is complete. The sidecar records the tensor file's byte size and sha256;
reading checks both and refuses a truncated or tampered file. Tensors are read with safetensors only:
nothing is ever unpickled. Storage is the bytes of both files on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from stream.core.errors import ArtifactError
from stream.core.rundir import ArtifactKey

SIDECAR_SCHEMA = 1


@dataclass
class ArtifactPayload:
    """What a method wants written for one task: tensors (safetensors) plus JSON-able metadata.

    Attributes:
        tensors: name -> tensor. Head tensors use the ``head.`` prefix; method tensors a method prefix.
        meta: method-specific metadata (the store adds method, task, step, config, backbone identity).
        new_params: parameters this file adds, the papers' "new params per task" numerator
            (for sparse diffs: the nonzeros; see each method's docstring for its convention).
        lower_bound_bits: information-theoretic lower bound of the method's tensors in bits, when the
            method stores something compressible (sparse positions, masks); None otherwise.
    """

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    new_params: int = 0
    lower_bound_bits: float | None = None


@dataclass(frozen=True)
class ArtifactRecord:
    """Where an artifact lives and what it costs on disk."""

    key: ArtifactKey
    tensor_path: Path
    sidecar_path: Path
    tensor_bytes: int
    sidecar_bytes: int
    sha256: str

    @property
    def total_bytes(self) -> int:
        """The artifact's storage: tensor file plus sidecar."""
        return self.tensor_bytes + self.sidecar_bytes


@dataclass(frozen=True)
class LoadedArtifact:
    """An artifact read back from disk and verified: its tensors, its sidecar and its record."""

    tensors: dict[str, torch.Tensor]
    sidecar: dict[str, Any]
    record: ArtifactRecord

    @property
    def meta(self) -> dict[str, Any]:
        """The method-specific metadata the method put in its payload."""
        return self.sidecar["meta"]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent or complete, even after SIGKILL."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def tensor_breakdown(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """Payload bytes per tensor group (the name's first dotted component: ``head``, ``diff``, ...)."""
    out: dict[str, int] = {}
    for name, t in tensors.items():
        group = name.split(".", 1)[0]
        out[group] = out.get(group, 0) + t.numel() * t.element_size()
    return dict(sorted(out.items()))


class ArtifactStore:
    """Artifacts of one run under ``root/<method label>/<step>-<task>.{safetensors,json}``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def paths(self, key: ArtifactKey) -> tuple[Path, Path]:
        """The artifact's tensor file and sidecar in this store."""
        return key.paths(self.root)

    def exists(self, key: ArtifactKey) -> bool:
        """True when the artifact was completely written (its sidecar exists)."""
        return self.paths(key)[1].exists()

    def write(self, key: ArtifactKey, tensors: dict[str, torch.Tensor], sidecar: dict[str, Any]) -> ArtifactRecord:
        """Write a new artifact atomically; an existing complete artifact is never overwritten."""
        tensor_path, sidecar_path = self.paths(key)
        if sidecar_path.exists():
            raise ArtifactError(f"Artifact {sidecar_path} already exists; completed artifacts are never "
                                "rewritten. Use a new run directory to train again.")
        tensor_path.parent.mkdir(parents=True, exist_ok=True)
        contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        # One metadata entry only: safetensors writes its metadata map in random order, and identical runs
        # must produce byte-identical files.
        header = {"taskstream": json.dumps({"method": key.method, "step": key.step, "task": key.task})}
        data = safetensors_save(contiguous, metadata=header)
        _atomic_write(tensor_path, data)
        full = dict(sidecar)
        full.update({
            "schema": SIDECAR_SCHEMA, "method": key.method, "step": key.step, "task": key.task,
            "tensor_file": tensor_path.name, "tensor_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "tensor_breakdown": tensor_breakdown(contiguous),
        })
        encoded = json.dumps(full, indent=1, sort_keys=True).encode()
        _atomic_write(sidecar_path, encoded)
        return ArtifactRecord(key, tensor_path, sidecar_path, len(data), len(encoded), full["sha256"])

    def record(self, key: ArtifactKey) -> ArtifactRecord:
        """The record of a complete artifact, after checking the tensor file's size and hash."""
        return self.read(key).record

    def read(self, key: ArtifactKey) -> LoadedArtifact:
        """Read and verify an artifact (size, sha256, header fields) without unpickling anything."""
        tensor_path, sidecar_path = self.paths(key)
        sidecar = self._read_sidecar(key)
        fix = retrain_advice(self.root, key)
        if not tensor_path.exists():
            raise ArtifactError(f"Artifact tensor file {tensor_path} is missing but its sidecar exists. {fix}")
        data = tensor_path.read_bytes()
        if len(data) != sidecar["tensor_bytes"]:
            raise ArtifactError(f"Artifact {tensor_path} is {len(data)} bytes but its sidecar says "
                                f"{sidecar['tensor_bytes']}: the file is truncated or was replaced. {fix}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != sidecar["sha256"]:
            raise ArtifactError(f"Artifact {tensor_path} fails its sha256 check (expected {sidecar['sha256'][:16]}..., "
                                f"found {digest[:16]}...): it was modified after it was written. {fix}")
        try:
            tensors = safetensors_load(data)
        except (SafetensorError, ValueError) as exc:
            raise ArtifactError(f"Artifact {tensor_path} is not a valid safetensors file ({exc}). {fix}") from exc
        for field in ("method", "task", "step"):
            if sidecar[field] != getattr(key, field):
                raise ArtifactError(f"Sidecar {sidecar_path} names {field}={sidecar[field]!r} but the "
                                    f"store expected {getattr(key, field)!r}: files were moved or renamed.")
        record = ArtifactRecord(key, tensor_path, sidecar_path, len(data), sidecar_path.stat().st_size, digest)
        return LoadedArtifact(tensors=tensors, sidecar=sidecar, record=record)

    def _read_sidecar(self, key: ArtifactKey) -> dict[str, Any]:
        _, sidecar_path = self.paths(key)
        if not sidecar_path.exists():
            raise ArtifactError(f"Artifact sidecar {sidecar_path} does not exist: the artifact was never "
                                f"completely written, or was deleted. {retrain_advice(self.root, key)}")
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"Artifact sidecar {sidecar_path} is not valid JSON ({exc}). "
                                f"{retrain_advice(self.root, key)}") from None
        if not isinstance(sidecar, dict):
            raise ArtifactError(f"Artifact sidecar {sidecar_path} holds a JSON {type(sidecar).__name__}, not an "
                                f"object. {retrain_advice(self.root, key)}")
        required = ("schema", "method", "task", "step", "tensor_bytes", "sha256", "meta")
        missing = [f for f in required if f not in sidecar]
        if missing or sidecar.get("schema") != SIDECAR_SCHEMA:
            raise ArtifactError(f"Artifact sidecar {sidecar_path} lacks {', '.join(missing) or 'a known schema'}; "
                                "it was not written by this version of taskstream.")
        return sidecar


def retrain_advice(root: Path, key: ArtifactKey) -> str:
    """The fix for a refused artifact: the command that sets its files aside, drops the ledger rows that depend
    on it, and trains the task again (``root`` is the run directory's artifacts folder)."""
    return (f"To train this task again, run `taskstream retrain {root.parent} --method {key.method} --task "
            f"{key.task}` (it moves the refused files to {root.parent / 'forgotten'}/ and keeps the ledger "
            "consistent).")
