"""(IA)3 through peft (the second peft tuner, on the shared PeftTuner base): artifact contents, the start
state, no weight decay on its vectors, and config errors. The shared checks run on its method-matrix rows."""

from __future__ import annotations

import pytest
import torch

from methods.ia3 import Ia3Config, Ia3Method
from methods.registry import build_method
from stream.core.errors import ConfigError
from stream.core.scenario import ArrivalBuilder, Budget
from stream.engine.config import RunConfig, resolve_tasks

BUDGET = Budget(max_train_examples=32, epochs=1, batch_size=16, max_eval_examples=16, max_dev_examples=16)


@pytest.fixture()
def arrival(tiny_backbone, glue_dir):
    config = RunConfig(tasks=("sst2",), data_dir=str(glue_dir), budget=BUDGET)
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={"sst2": BUDGET}, seed=0)
    builder.use_tokenizer(tiny_backbone.tokenizer, tiny_backbone.identity)
    return builder.arrival(1, "sst2")


def test_artifact_holds_one_vector_per_target_and_the_head(tiny_backbone, arrival):
    method = build_method("ia3", {}, tiny_backbone)
    trained = method.train(arrival)
    tensors = trained.payload.tensors
    vectors = {n: t for n, t in tensors.items() if n.startswith("ia3.")}
    assert set(tensors) - set(vectors) == {"head.out.weight", "head.out.bias"}
    # Per block of the tiny BERT (hidden 32, intermediate 64): key and value rescale their 32 outputs; the
    # attention output projection and the FFN output rescale their inputs (32 and 64 wide).
    shapes = {n.split("encoder.layer.0.", 1)[1]: tuple(t.shape) for n, t in vectors.items() if ".layer.0." in n}
    assert shapes == {"attention.self.key.ia3_l": (32, 1), "attention.self.value.ia3_l": (32, 1),
                      "attention.output.dense.ia3_l": (1, 32), "output.dense.ia3_l": (1, 64)}
    assert len(vectors) == 2 * len(shapes)
    assert trained.payload.new_params == sum(t.numel() for t in tensors.values())
    assert trained.payload.meta["peft"]["feedforward_modules"] == ["output.dense"]
    assert any(not torch.equal(t, torch.ones_like(t)) for t in vectors.values())  # the vectors trained


def test_fresh_ia3_is_exactly_the_backbone_and_only_its_vectors_train(tiny_backbone, arrival):
    encoder = Ia3Method.inject(tiny_backbone.fresh_encoder(), Ia3Method.peft_settings(Ia3Config())).eval()
    batch = next(iter(arrival.tests["validation"].batches(8)))
    tokens = {k: v for k, v in batch.items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(encoder(**tokens).last_hidden_state, tiny_backbone.encoder(**tokens).last_hidden_state)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".ia3_l.default") for n in trainable)


class _Captured(Exception):
    """Raised by a stand-in training loop to carry out what ``train`` handed it."""


def test_vectors_get_no_weight_decay_while_the_head_does(tiny_backbone, arrival, monkeypatch):
    method = build_method("ia3", {"weight_decay": 0.1}, tiny_backbone)

    def capture(model, groups, *args, **kwargs):
        raise _Captured(groups, model)

    monkeypatch.setattr(method, "fit", capture)
    with pytest.raises(_Captured) as caught:
        method.train(arrival)
    groups, model = caught.value.args
    vectors = {id(p) for n, p in model.encoder.named_parameters() if n.endswith(".ia3_l.default")}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert vectors and all(decay_of[v] == 0.0 for v in vectors)
    assert decay_of[id(model.head.out.weight)] == 0.1


@pytest.mark.parametrize("options, message", [
    ({"feedforward_modules": "intermediate.dense"}, r"Ia3Config\.feedforward_modules must be a subset"),
    ({"feedforward_modules": []}, r"Ia3Config\.feedforward_modules must be one or more module names"),
    ({"target_modules": "key+key"}, r"Ia3Config\.target_modules must not repeat"),
])
def test_config_errors_name_the_field(options, message):
    with pytest.raises(ConfigError, match=message):
        Ia3Config.from_options(options)


def test_targets_are_checked_against_the_encoder(tiny_backbone):
    with pytest.raises(ConfigError, match=r"Ia3Config\.target_modules entry 'keys' matches no module.*'key'"):
        build_method("ia3", {"target_modules": "keys", "feedforward_modules": "keys"}, tiny_backbone)
