"""BitFit: only biases change, and the artifact is the dense bias vector plus the head."""

from __future__ import annotations

import pytest
import torch

from methods.bitfit import BIAS_KEY, bias_parameters
from methods.core.backbone import state_fingerprint
from methods.registry import build_method
from stream.core.errors import ArtifactError
from stream.core.scenario import ArrivalBuilder, Budget
from stream.core.store import ArtifactKey, ArtifactStore, LoadedArtifact
from stream.engine.config import RunConfig, resolve_tasks

BUDGET = Budget(max_train_examples=32, epochs=1, batch_size=16, max_eval_examples=24, max_dev_examples=16)


@pytest.fixture()
def trained_and_loaded(tiny_backbone, glue_dir, tmp_path):
    specs, source = resolve_tasks(RunConfig(tasks=("sst2",), data_dir=str(glue_dir), budget=BUDGET))
    builder = ArrivalBuilder(source, tasks=specs, budgets={"sst2": BUDGET}, seed=0)
    builder.use_tokenizer(tiny_backbone.tokenizer, tiny_backbone.identity)
    arrival = builder.arrival(1, "sst2")
    method = build_method("bitfit", {"learning_rate": 0.05}, tiny_backbone)
    trained = method.train(arrival)
    key = ArtifactKey("bitfit", 1, "sst2")
    store = ArtifactStore(tmp_path)
    store.write(key, trained.payload.tensors, {"meta": trained.payload.meta, "new_params": trained.payload.new_params})
    return method, arrival, trained, store.read(key)


def test_only_biases_change(trained_and_loaded, tiny_backbone):
    fingerprint = state_fingerprint(tiny_backbone.encoder)
    method, arrival, _, loaded = trained_and_loaded
    rebuilt = method.load(loaded, arrival.task)
    pristine = dict(tiny_backbone.encoder.named_parameters())
    changed = []
    for name, param in rebuilt.encoder.named_parameters():
        if name.endswith("bias"):
            changed.append(not torch.equal(param, pristine[name]))
        else:
            assert torch.equal(param, pristine[name]), name
    assert changed and all(changed), "every bias vector should have trained"
    assert state_fingerprint(tiny_backbone.encoder) == fingerprint


def test_artifact_is_the_dense_biases_plus_the_head(trained_and_loaded, tiny_backbone):
    _, _, trained, loaded = trained_and_loaded
    count = sum(p.numel() for p in bias_parameters(tiny_backbone.encoder).values())
    head = 32 * 2 + 2
    assert loaded.tensors[BIAS_KEY].shape == (count,)
    assert trained.payload.new_params == count + head
    payload_bytes = 4 * (count + head)
    assert payload_bytes < loaded.record.tensor_bytes < payload_bytes + 400  # + the safetensors header


def test_artifact_from_another_layout_is_refused(trained_and_loaded):
    method, arrival, _, loaded = trained_and_loaded
    tampered = LoadedArtifact(tensors={**loaded.tensors, BIAS_KEY: loaded.tensors[BIAS_KEY][:-1]},
                              sidecar=loaded.sidecar, record=loaded.record)
    with pytest.raises(ArtifactError, match="does not fit this backbone"):
        method.load(tampered, arrival.task)
