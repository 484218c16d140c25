"""The continual-learning baselines (Avalanche strategies as evolving methods).

- sequential finetuning forgets on a stream built to make it forget, while a frozen-backbone method cannot;
- each strategy's own state (EWC's importances and anchors, Replay's buffer, LwF's teacher) goes through
  the artifact file and continues from it exactly as Avalanche's in-memory state would;
- tuned_blocks stores only the trained blocks; a foreign artifact is refused.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("avalanche")

from methods.registry import build_method  # noqa: E402
from stream.core.errors import ArtifactError  # noqa: E402
from stream.core.scenario import Budget  # noqa: E402
from stream.core.store import ArtifactKey, ArtifactStore  # noqa: E402
from stream.core.tasks import CustomTaskSpec  # noqa: E402
from stream.engine.config import MethodSpec, RunConfig  # noqa: E402
from stream.engine.runner import run_stream  # noqa: E402
from tests.conftest import REPO, synthetic_rows, write_jsonl_gz  # noqa: E402
from tests.test_method_matrix import _arrivals, _sidecar  # noqa: E402

ANIMALS = {"cat", "dog", "runs", "sits"}


def _stream_tasks(root) -> tuple[CustomTaskSpec, ...]:
    """Two tasks on the same sentences with conflicting labels: sentiment words, then animal words.

    The second rule needs different features from the small shared encoder, so training on it overwrites
    what the first task's (untouched) head reads.
    """
    specs = []
    for name, rule in (("polarity", None), ("animals", lambda s: int(bool(set(s.split()) & ANIMALS)))):
        files = {}
        for split, n, seed in (("train", 256, 10), ("validation", 64, 20)):
            rows = synthetic_rows("sst2", n, seed)
            for row in rows:
                row["label"] = row["label"] if rule is None else rule(row["sentence"])
            files[split] = root / name / f"{split}.jsonl.gz"
            write_jsonl_gz(files[split], rows)
        specs.append(CustomTaskSpec(name=name, files=files, text_columns=("sentence",),
                                    label_names=("negative", "positive")))
    return tuple(specs)


def test_sequential_finetuning_forgets_and_a_frozen_backbone_does_not(tiny_model_dir, tmp_path):
    specs = _stream_tasks(tmp_path / "data")
    methods = (MethodSpec(name="sequential", options=(("learning_rate", 3e-3),)), MethodSpec(name="linear_probe"))
    config = RunConfig(tasks=("polarity", "animals"), custom_tasks=specs, methods=methods,
                       backbone=str(tiny_model_dir), device="cpu", reevaluate=True,
                       budget=Budget(max_train_examples=256, epochs=4, batch_size=16, max_dev_examples=32),
                       task_budgets=(("animals", (("epochs", 8),)),))
    run_stream(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()]
    score = {(r["method"], r["step"], r["eval_task"]): r["score"] for r in rows}
    sequential = "sequential-learning_rate0.003"
    assert score[(sequential, 1, "polarity")] > 80  # it learned the first task ...
    assert score[(sequential, 2, "polarity")] < score[(sequential, 1, "polarity")] - 15  # ... and forgot it
    later = next(r for r in rows if r["method"] == "linear_probe" and r["step"] == 2 and r["eval_task"] == "polarity")
    assert not later["reused"] and later["score"] == score[("linear_probe", 1, "polarity")]


def _train_steps(name, options, backbone, glue_dir, tmp_path, tasks=("sst2", "rte", "stsb")):
    """Train ``name`` over ``tasks`` through the store; the artifacts read back, in order."""
    method = build_method(name, options, backbone)
    store = ArtifactStore(tmp_path)
    previous, artifacts = None, []
    for arrival in _arrivals(backbone, glue_dir, tasks):
        trained = method.train(arrival, previous=previous)
        key = ArtifactKey(name, arrival.step, arrival.task.name)
        store.write(key, trained.payload.tensors, _sidecar(trained))
        previous = store.read(key)
        artifacts.append(previous)
    return method, artifacts


@pytest.mark.parametrize("mode,kept", [("online", lambda step: [step - 1]), ("separate", lambda step: list(range(step)))])
def test_ewc_state_is_in_the_file(mode, kept, tiny_backbone, glue_dir, tmp_path):
    _, artifacts = _train_steps("ewc", {"ewc_mode": mode}, tiny_backbone, glue_dir, tmp_path)
    for step, artifact in enumerate(artifacts, 1):
        tensors = artifact.tensors
        assert artifact.meta["ewc"]["experiences"] == kept(step)
        # The newest anchor is the model as stored; importances are non-negative squared gradients.
        newest = kept(step)[-1]
        for name in (n for n in tensors if n.startswith(("encoder.", "heads."))):
            assert torch.equal(tensors[f"ewc.{newest}.anchor.{name}"], tensors[name])
            assert bool((tensors[f"ewc.{newest}.importance.{name}"] >= 0).all())
        assert any(float(t.abs().sum()) > 0 for n, t in tensors.items() if ".importance.encoder." in n)


def test_ewc_penalty_continues_from_the_file(tiny_backbone, glue_dir, tmp_path):
    from methods.avalanche_strategies import prepare_arrival

    method, artifacts = _train_steps("ewc", {"ewc_lambda": 1e6}, tiny_backbone, glue_dir, tmp_path, ("sst2",))
    arrival = _arrivals(tiny_backbone, glue_dir, ("sst2", "rte"))[1]
    strategy = prepare_arrival(method, arrival, artifacts[0]).strategy
    plugin, tensors = strategy.plugin, artifacts[0].tensors
    assert strategy.clock.train_exp_counter == 1 and list(plugin.importances) == [0]
    name = "encoder.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(plugin.importances[0][name].data, tensors[f"ewc.0.importance.{name}"])
    strategy.loss = torch.zeros(())
    plugin.before_backward(strategy)
    assert float(strategy.loss) == 0.0  # the model is at its anchor
    with torch.no_grad():
        dict(strategy.model.named_parameters())[name].add_(0.1)
    plugin.before_backward(strategy)
    expected = 1e6 * float((tensors[f"ewc.0.importance.{name}"] * 0.01).sum())
    assert float(strategy.loss) == pytest.approx(expected, rel=1e-4)
    assert expected > 0


def _rows(tensors, group):
    ids, lengths = tensors[f"replay.{group}.input_ids"], tensors[f"replay.{group}.lengths"]
    return [tuple(ids[i, :int(lengths[i])].tolist()) for i in range(len(lengths))]


def test_replay_buffer_evolves_through_the_file(tiny_backbone, glue_dir, tmp_path):
    _, artifacts = _train_steps("replay", {"mem_size": 12}, tiny_backbone, glue_dir, tmp_path)
    arrivals = _arrivals(tiny_backbone, glue_dir, ("sst2", "rte", "stsb"))
    for step, artifact in enumerate(artifacts, 1):
        groups = artifact.meta["replay"]["groups"]
        assert groups == list(range(step))
        for group in groups:
            tensors = artifact.tensors
            weights = tensors[f"replay.{group}.weights"]
            assert len(weights) == 12 // step and bool((weights[:-1] >= weights[1:]).all())
            train = arrivals[group].train
            train_rows = {tuple(train.input_ids[i, :int(train.lengths[i])].tolist()) for i in range(len(train))}
            assert set(_rows(tensors, group)) <= train_rows
            if group < step - 1:  # Avalanche shrinks a group by keeping its highest-weight rows: a prefix of the old one
                old = artifacts[step - 2].tensors
                assert _rows(tensors, group) == _rows(old, group)[:len(weights)]
                assert torch.equal(weights, old[f"replay.{group}.weights"][:len(weights)])
        assert artifact.tensors["replay.0.labels"].dtype == torch.int64
    assert artifacts[-1].tensors["replay.2.labels"].dtype == torch.float32  # STS-B targets


def test_lwf_distils_the_previous_model_including_regression_heads(tiny_backbone):
    from methods.avalanche_strategies import RegressionAwareLwF
    from methods.core.multitask import MultiHeadEncoder
    from methods.core.task_model import TaskHead

    heads = {0: TaskHead(tiny_backbone.hidden_size, 2), 1: TaskHead(tiny_backbone.hidden_size, 1)}
    student = MultiHeadEncoder(tiny_backbone.fresh_encoder(), heads, regression=[1], trained_tasks=[0, 1]).eval()
    lwf = RegressionAwareLwF(alpha=1.0, temperature=2.0, regression=frozenset({1}))
    lwf.prev_model = copy.deepcopy(student)
    lwf.prev_classes_by_task.update({0: {0, 1}, 1: {0}})
    x = {"input_ids": torch.tensor([[2, 7, 9, 3], [2, 11, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    assert float(lwf(x, None, student)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        student.heads["1"].out.bias += 0.5  # only the regression head moves: only the MSE term can see it
    assert float(lwf(x, None, student)) == pytest.approx(0.25, abs=1e-6)


def test_tuned_blocks_stores_only_the_trained_blocks(tiny_backbone, glue_dir, tmp_path):
    _, full = _train_steps("sequential", {}, tiny_backbone, glue_dir, tmp_path / "all", ("sst2",))
    _, top = _train_steps("sequential", {"tuned_blocks": 1}, tiny_backbone, glue_dir, tmp_path / "top", ("sst2",))
    last = tiny_backbone.num_blocks - 1
    encoder_keys = [k for k in top[0].tensors if k.startswith("encoder.")]
    assert encoder_keys and all(k.startswith(f"encoder.encoder.layer.{last}.") for k in encoder_keys)
    assert top[0].record.tensor_bytes < full[0].record.tensor_bytes


def test_a_foreign_previous_artifact_is_refused(tiny_backbone, glue_dir, tmp_path):
    _, artifacts = _train_steps("ewc", {}, tiny_backbone, glue_dir, tmp_path, ("sst2",))
    sequential = build_method("sequential", {}, tiny_backbone)
    arrival = _arrivals(tiny_backbone, glue_dir, ("sst2", "rte"))[1]
    with pytest.raises(ArtifactError, match="strategy='EWC'.*belongs to another method"):
        sequential.train(arrival, previous=artifacts[0])


def test_registering_and_configuring_them_does_not_import_avalanche():
    code = ("import sys; from methods.registry import registered_methods, get_method_class; registered_methods(); "
            "get_method_class('ewc').config_class.from_options({'ewc_lambda': 10.0}); "
            "assert 'avalanche' not in sys.modules, 'avalanche imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env={"PYTHONPATH": str(REPO)}, check=True)
