"""Properties every method must have, checked on every row of ``tests/method_matrix.py``.

- the artifact round-trips exactly through the store;
- training never touches the shared backbone;
- stored bytes are the files' sizes, and cumulative storage follows the method's sharing rule;
- a model rebuilt from the file predicts exactly what the in-memory model predicted;
- methods whose earlier files cannot change may reuse earlier scores: re-evaluating gives the same numbers;
- methods that carry nothing from one task to the next train a task into the same file at any arrival
  position (so a study's task orders compare like with like).
"""

from __future__ import annotations

import json

import pytest
import torch

from methods.registry import build_method, registered_methods
from stream.core.ledger import Sharing
from stream.core.scenario import ArrivalBuilder, Budget
from stream.core.store import ArtifactKey, ArtifactStore
from stream.engine.config import MethodSpec, RunConfig, resolve_tasks
from stream.engine.runner import run_stream
from tests.method_matrix import MATRIX, row_id

BUDGET = Budget(max_train_examples=32, epochs=1, batch_size=16, max_eval_examples=24, max_dev_examples=16)


def _builder(backbone, glue_dir, tasks) -> ArrivalBuilder:
    config = RunConfig(tasks=tasks, data_dir=str(glue_dir), budget=BUDGET)
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={t: BUDGET for t in specs}, seed=0)
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    return builder


def _arrivals(backbone, glue_dir, tasks=("sst2", "stsb")):
    builder = _builder(backbone, glue_dir, tasks)
    return [builder.arrival(step, task) for step, task in enumerate(tasks, 1)]


def _sidecar(trained) -> dict:
    return {"meta": trained.payload.meta, "new_params": trained.payload.new_params,
            "lower_bound_bits": trained.payload.lower_bound_bits, "fit": trained.fit.to_dict()}


def _logits(model, split) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}) for b in split.batches(8)])


def test_every_registered_method_is_in_the_matrix():
    assert set(registered_methods()) <= {name for name, _ in MATRIX}


@pytest.mark.parametrize("row", MATRIX, ids=row_id)
def test_artifact_round_trip_and_reload_reproduce_predictions(row, tiny_backbone, glue_dir, tmp_path):
    name, options = row
    method = build_method(name, options, tiny_backbone)
    store = ArtifactStore(tmp_path)
    previous = None
    for arrival in _arrivals(tiny_backbone, glue_dir):
        trained = method.train(arrival, previous=previous)
        key = ArtifactKey(row_id(row), arrival.step, arrival.task.name)
        store.write(key, trained.payload.tensors, _sidecar(trained))
        loaded = store.read(key)
        assert loaded.tensors.keys() == trained.payload.tensors.keys()
        for tensor_name, tensor in trained.payload.tensors.items():
            stored = loaded.tensors[tensor_name]
            assert stored.dtype == tensor.dtype and stored.shape == tensor.shape
            assert torch.equal(stored.view(torch.uint8) if stored.numel() else stored,
                               tensor.cpu().contiguous().view(torch.uint8) if tensor.numel() else tensor)
        assert loaded.meta == json.loads(json.dumps(trained.payload.meta))
        rebuilt = method.load(loaded, arrival.task)
        for split in arrival.tests.values():
            assert torch.equal(_logits(trained.model, split), _logits(rebuilt, split))
        previous = loaded
    tiny_backbone.verify_unchanged()


@pytest.mark.parametrize("row", MATRIX, ids=row_id)
def test_training_leaves_the_shared_backbone_untouched(row, tiny_backbone, glue_dir):
    name, options = row
    method = build_method(name, options, tiny_backbone)
    before = {k: v.clone() for k, v in tiny_backbone.encoder.state_dict().items()}
    arrival = _arrivals(tiny_backbone, glue_dir, tasks=("sst2",))[0]
    trained = method.train(arrival)
    assert trained.fit.steps > 0
    after = tiny_backbone.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in tiny_backbone.encoder.parameters())
    tiny_backbone.verify_unchanged()


@pytest.mark.parametrize("row", MATRIX, ids=row_id)
def test_stored_bytes_are_file_sizes_and_earlier_scores_are_stable(row, tiny_model_dir, glue_dir, tmp_path):
    name, options = row
    spec = MethodSpec(name=name, options=tuple(options.items()))
    config = RunConfig(tasks=("sst2", "rte", "stsb"), methods=(spec,), backbone=str(tiny_model_dir),
                       data_dir=str(glue_dir), budget=BUDGET, device="cpu", reevaluate=True)
    run_stream(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows}
    sizes = []
    for step, row_ in sorted(steps.items()):
        tensor_file = tmp_path / "artifacts" / row_["artifact_path"].split("/", 1)[1]
        sidecar_file = tensor_file.with_suffix(".json")
        assert row_["artifact_bytes"] == tensor_file.stat().st_size + sidecar_file.stat().st_size
        sizes.append(row_["artifact_bytes"])
        expected = {Sharing.SHARED_BACKBONE.value: row_["backbone_bytes"] + sum(sizes),
                    Sharing.STANDALONE.value: sum(sizes), Sharing.EVOLVING.value: sizes[-1]}[row_["sharing"]]
        assert row_["cumulative_bytes"] == expected
    if rows[0]["sharing"] != Sharing.EVOLVING.value:
        diagonal = {r["eval_task"]: r["score"] for r in rows if r["eval_step"] == r["step"]}
        later = [r for r in rows if r["eval_step"] < r["step"]]
        assert later and all(not r["reused"] for r in later)
        assert all(r["score"] == diagonal[r["eval_task"]] for r in later)


@pytest.mark.parametrize("row", MATRIX, ids=row_id)
def test_a_task_trains_into_the_same_file_at_any_arrival_position(row, tiny_backbone, glue_dir):
    name, options = row
    method = build_method(name, options, tiny_backbone)
    if method.sharing is Sharing.EVOLVING:
        pytest.skip("an evolving method's task piece depends, by design, on the tasks before it")
    builder = _builder(tiny_backbone, glue_dir, ("sst2",))
    tensors = [method.train(builder.arrival(step, "sst2")).payload.tensors for step in (1, 2)]
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])
