"""The artifact store: atomic writes, exact round trips, and refusal of damaged or tampered files."""

from __future__ import annotations

import json
import os

import pytest
import torch

from stream.core.errors import ArtifactError
from stream.core.store import ArtifactKey, ArtifactStore

KEY = ArtifactKey("bitfit", 2, "rte")


def _write(store, key=KEY):
    tensors = {"head.out.weight": torch.randn(2, 8), "diff.values": torch.arange(5, dtype=torch.float16),
               "mask.bits": torch.tensor([255, 0, 7], dtype=torch.uint8)}
    return tensors, store.write(key, tensors, {"meta": {"nnz": 5}, "new_params": 21})


def test_round_trip_is_exact_and_bytes_are_file_sizes(tmp_path):
    store = ArtifactStore(tmp_path)
    tensors, record = _write(store)
    loaded = store.read(KEY)
    assert set(loaded.tensors) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded.tensors[name].dtype == tensor.dtype and torch.equal(loaded.tensors[name], tensor)
    assert loaded.meta == {"nnz": 5}
    assert record.total_bytes == record.tensor_path.stat().st_size + record.sidecar_path.stat().st_size
    assert loaded.sidecar["tensor_breakdown"] == {"diff": 10, "head": 64, "mask": 3}
    assert loaded.record == record


def test_completed_artifact_is_never_rewritten(tmp_path):
    store = ArtifactStore(tmp_path)
    _, record = _write(store)
    before = record.tensor_path.read_bytes()
    with pytest.raises(ArtifactError, match="never rewritten"):
        _write(store)
    assert record.tensor_path.read_bytes() == before


def test_tampered_file_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    _, record = _write(store)
    data = bytearray(record.tensor_path.read_bytes())
    data[-1] ^= 0x01
    record.tensor_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256.*taskstream retrain"):
        store.read(KEY)


def test_truncated_file_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    _, record = _write(store)
    record.tensor_path.write_bytes(record.tensor_path.read_bytes()[:-9])
    with pytest.raises(ArtifactError, match="truncated"):
        store.read(KEY)


def test_sidecar_that_names_another_artifact_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    _, record = _write(store)
    sidecar = json.loads(record.sidecar_path.read_text())
    sidecar["task"] = "mrpc"
    record.sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="task='mrpc'"):
        store.read(KEY)


def test_corrupt_sidecar_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    _, record = _write(store)
    record.sidecar_path.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        store.read(KEY)


def test_a_write_killed_before_the_sidecar_leaves_no_artifact(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    real_replace = os.replace
    calls = []

    def dies_on_sidecar(src, dst):
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_sidecar)
    with pytest.raises(KeyboardInterrupt):
        _write(store)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not store.exists(KEY)
    folder = tmp_path / KEY.method
    assert not list(folder.glob("*.tmp")), "temporary files are cleaned up"
    with pytest.raises(ArtifactError, match="never completely written"):
        store.read(KEY)
    _write(store)  # the task can then be written for real
    assert store.exists(KEY)


def test_reading_never_unpickles(tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    store = ArtifactStore(tmp_path)
    _write(store)
    store.read(KEY)
