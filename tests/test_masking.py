"""Masking: exact initial sparsity, straight-through gradients, the stored masks, and the frozen-head option."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from methods.core.backbone import load_backbone, state_fingerprint
from methods.core.codecs import unpack_masks
from methods.masking import ScoreMask, binarize, init_scores
from methods.registry import build_method
from stream.core.errors import ArtifactError, ConfigError
from stream.core.scenario import ArrivalBuilder, Budget
from stream.core.store import ArtifactKey, ArtifactStore
from stream.engine.config import RunConfig, resolve_tasks

BUDGET = Budget(max_train_examples=32, epochs=1, batch_size=16, max_eval_examples=24, max_dev_examples=16)
FROZEN = {"learning_rate": 1e-12}  # scores barely move: the stored masks are the initial ones


def _arrival(backbone, glue_dir, task="sst2"):
    specs, source = resolve_tasks(RunConfig(tasks=(task,), data_dir=str(glue_dir), budget=BUDGET))
    builder = ArrivalBuilder(source, tasks=specs, budgets={task: BUDGET}, seed=0)
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    return builder.arrival(1, task)


def _train_and_store(backbone, arrival, options, root):
    method = build_method("masking", options, backbone)
    trained = method.train(arrival)
    key = ArtifactKey("masking", arrival.step, arrival.task.name)
    store = ArtifactStore(root)
    store.write(key, trained.payload.tensors, {"meta": trained.payload.meta, "new_params": 0})
    return method, trained, store.read(key)


@pytest.mark.parametrize("shape", [(7,), (33, 17), (384, 1536)])
@pytest.mark.parametrize("sparsity", [0.0, 0.05, 0.5])
def test_initial_masked_out_count_is_exact(shape, sparsity):
    generator = torch.Generator().manual_seed(3)
    scores = init_scores(shape, threshold=0.01, sparsity=sparsity, width=0.2, generator=generator)
    assert scores.shape == shape and scores.dtype == torch.float32
    assert int((~binarize(scores, 0.01)).sum()) == round(sparsity * math.prod(shape))
    low, high = 0.01 - sparsity * 0.2, 0.01 + (1 - sparsity) * 0.2
    assert float(scores.min()) >= low - 1e-6 and float(scores.max()) <= high + 1e-6


def test_initial_scores_are_uniform_over_the_interval():
    scores = init_scores((200_000,), threshold=0.01, sparsity=0.05, width=0.2,
                         generator=torch.Generator().manual_seed(0))
    counts = torch.histc(scores, bins=10, min=0.0, max=0.2)
    assert torch.allclose(counts / scores.numel(), torch.full((10,), 0.1), atol=0.005)


def test_method_starts_from_exactly_the_configured_fraction(tiny_backbone, glue_dir, tmp_path):
    arrival = _arrival(tiny_backbone, glue_dir)
    for sparsity in (0.05, 0.2):
        _, trained, loaded = _train_and_store(tiny_backbone, arrival, {**FROZEN, "initial_sparsity": sparsity},
                                              tmp_path / str(sparsity))
        masks = unpack_masks(loaded.tensors, loaded.meta["masks"])
        assert masks and all(int((~m).sum()) == round(sparsity * m.numel()) for m in masks.values())
        assert loaded.meta["flipped_fraction"] == 0.0


def test_straight_through_gradient_reaches_the_scores():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4).requires_grad_(False)
    weight = linear.weight.detach().clone()
    scores = init_scores((4, 6), threshold=0.01, sparsity=0.5, width=0.2, generator=torch.Generator().manual_seed(1))
    mask = ScoreMask(scores, 0.01)
    torch.nn.utils.parametrize.register_parametrization(linear, "weight", mask)
    x = torch.randn(5, 6)
    linear(x).pow(2).sum().backward()
    keep = binarize(scores, 0.01).float()
    out = x @ (weight * keep).T + linear.bias
    grad_effective = (2 * out).T @ x  # dL/dW_masked, (out, in)
    assert torch.allclose(mask.mask_scores.grad, grad_effective * weight, atol=1e-5)
    assert (mask.mask_scores.grad[keep == 0] != 0).any()  # masked-out weights still get a gradient
    assert linear.parametrizations.weight.original.grad is None


def test_training_changes_masks_and_leaves_the_backbone_bit_identical(tiny_backbone, glue_dir, tmp_path):
    fingerprint = state_fingerprint(tiny_backbone.encoder)
    arrival = _arrival(tiny_backbone, glue_dir)
    method, trained, loaded = _train_and_store(tiny_backbone, arrival, {"learning_rate": 0.05}, tmp_path)
    rebuilt = method.load(loaded, arrival.task)
    assert state_fingerprint(tiny_backbone.encoder) == fingerprint
    masks = unpack_masks(loaded.tensors, loaded.meta["masks"])
    fractions = [float((~m).float().mean()) for m in masks.values()]
    assert any(abs(f - 0.05) > 0.01 for f in fractions), "training should flip some mask bits"
    assert loaded.meta["flipped_fraction"] > 0.0
    pristine = dict(tiny_backbone.encoder.named_parameters())
    masked_params = {f"encoder.layer.{m[len('block.'):]}.weight": m for m in masks}
    assert masked_params.keys() <= pristine.keys()
    for name, param in rebuilt.encoder.named_parameters():
        if name in masked_params:
            assert torch.equal(param, pristine[name] * masks[masked_params[name]]), name
        else:
            assert torch.equal(param, pristine[name]), name
    payload = trained.payload
    covered = sum(m.numel() for m in masks.values())
    head = sum(t.numel() for k, t in payload.tensors.items() if k.startswith("head."))
    assert payload.new_params == math.ceil(covered / 32) + head
    bound = payload.lower_bound_bits - 32 * head
    assert 0 < bound <= covered
    assert loaded.meta["covered_weights"] == covered


def test_entropy_coding_is_smaller_at_five_percent_and_stores_the_same_masks(tiny_backbone, glue_dir, tmp_path):
    arrival = _arrival(tiny_backbone, glue_dir)
    sizes, masks = {}, {}
    for coded in (False, True):
        _, trained, loaded = _train_and_store(tiny_backbone, arrival, {**FROZEN, "entropy_coded": coded},
                                              tmp_path / str(coded))
        mask_tensors = {k: v for k, v in loaded.tensors.items() if k.startswith("mask.")}
        assert list(mask_tensors) == (["mask.positions"] if coded else ["mask.bits"])
        sizes[coded] = sum(t.numel() for t in mask_tensors.values())
        masks[coded] = unpack_masks(loaded.tensors, loaded.meta["masks"])
        head_bits = sum(32 * t.numel() for k, t in trained.payload.tensors.items() if k.startswith("head."))
        bound_bytes = (trained.payload.lower_bound_bits - head_bits) / 8
    assert masks[False].keys() == masks[True].keys()
    assert all(torch.equal(masks[False][k], masks[True][k]) for k in masks[False])
    covered = sum(m.numel() for m in masks[True].values())
    assert sizes[False] == math.ceil(covered / 8)
    assert bound_bytes < sizes[True] < 0.5 * sizes[False]


def test_frozen_random_head_is_masked_and_regenerated_from_the_seed(tiny_backbone, glue_dir, tmp_path):
    arrival = _arrival(tiny_backbone, glue_dir)
    method, trained, loaded = _train_and_store(tiny_backbone, arrival, {"train_head": False, "learning_rate": 0.05},
                                               tmp_path)
    assert not any(k.startswith("head.") for k in loaded.tensors)
    masks = unpack_masks(loaded.tensors, loaded.meta["masks"])
    assert "head.out" in masks
    fresh = method.new_head(arrival.task, loaded.meta["head_seed"])
    rebuilt = method.load(loaded, arrival.task)
    assert torch.equal(rebuilt.head.out.weight, fresh.out.weight * masks["head.out"])
    assert torch.equal(rebuilt.head.out.bias, torch.zeros_like(fresh.out.bias))
    assert torch.equal(trained.model.head.out.weight, rebuilt.head.out.weight)
    assert trained.payload.new_params == math.ceil(sum(m.numel() for m in masks.values()) / 32)
    trained_head_method = build_method("masking", {}, tiny_backbone)
    with pytest.raises(ArtifactError, match="frozen_random"):
        trained_head_method.load(loaded, arrival.task)


def test_first_block_and_targets_choose_the_covered_matrices(tiny_backbone, glue_dir, tmp_path):
    arrival = _arrival(tiny_backbone, glue_dir)
    _, _, loaded = _train_and_store(tiny_backbone, arrival, {**FROZEN, "first_block": 1, "targets": "query+value"},
                                    tmp_path)
    assert loaded.meta["masks"]["names"] == ["block.1.attention.self.query", "block.1.attention.self.value"]


def test_the_pooler_is_masked_when_the_backbone_keeps_it(tiny_model_dir, glue_dir, tmp_path):
    backbone = load_backbone(str(tiny_model_dir), pooling="pooler", device="cpu")
    arrival = _arrival(backbone, glue_dir)
    method, trained, loaded = _train_and_store(backbone, arrival, FROZEN, tmp_path)
    masks = unpack_masks(loaded.tensors, loaded.meta["masks"])
    assert "pooler.dense" in masks
    rebuilt = method.load(loaded, arrival.task)
    expected = backbone.encoder.pooler.dense.weight * masks["pooler.dense"]
    assert torch.equal(rebuilt.encoder.pooler.dense.weight, expected)


@pytest.mark.parametrize("options, match", [
    ({"first_block": 2}, "first_block must be < 2"),
    ({"targets": "query+qkv"}, "targets must be one of"),
    ({"targets": ("value", "value")}, "must not repeat"),
    ({"initial_sparsity": 1.0}, "initial_sparsity must be < 1.0"),
    ({"init_width": 0}, "init_width must be > 0.0"),
    ({"train_head": "no"}, "train_head must be true or false"),
])
def test_bad_options_are_refused_with_the_field_named(options, match, tiny_backbone):
    with pytest.raises(ConfigError, match=match):
        build_method("masking", options, tiny_backbone)


def test_placement_names_every_covered_backbone_matrix(tiny_backbone, glue_dir):
    from analysis.placement import describe_parameter

    method = build_method("masking", {}, tiny_backbone)
    trained = method.train(_arrival(tiny_backbone, glue_dir))
    placement = trained.payload.meta["placement"]
    encoder_names = dict(tiny_backbone.encoder.named_parameters())
    assert len(placement) == len(method.blocks) * 6 and set(placement) <= set(encoder_names)
    for name, (changed, total) in placement.items():
        assert total == encoder_names[name].numel() and 0 < changed < total
        assert describe_parameter(name)[0] in {str(b) for b in method.blocks}
    masked = sum(c for c, _ in placement.values()) / sum(t for _, t in placement.values())
    assert masked == pytest.approx(trained.payload.meta["masked_out_fraction"])
