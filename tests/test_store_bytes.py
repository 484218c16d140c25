"""The store writes identical bytes for identical artifacts, so a re-run's sha256s match the original's."""

from __future__ import annotations

import torch

from stream.core.store import ArtifactKey, ArtifactStore


def test_identical_artifacts_are_identical_files(tmp_path):
    tensors = {"head.out.weight": torch.arange(6.0).reshape(2, 3), "block.1.bias": torch.ones(3)}
    key = ArtifactKey("last_layer-k1", 2, "rte")
    hashes = {ArtifactStore(tmp_path / str(i)).write(key, tensors, {"meta": {}}).sha256 for i in range(6)}
    assert len(hashes) == 1
