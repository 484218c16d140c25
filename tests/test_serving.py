"""Multi-task serving: in-place switches are exact, the backbone comes back bit for bit, and the
``taskstream predict`` command answers with label names and values, and refuses bad input clearly.

One tiny run trains every row of the method matrix on three tasks (one-text classification, pair
classification, regression); a TaskBank then switches among all (method, task) pairs in a random order.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from methods.core.backbone import load_backbone, state_fingerprint
from methods.core.flat_params import flat_weights
from methods.core.patches import AddAtPositions, AssignValues, Edit, ServingPatch, SwapModules, ZeroAtPositions
from methods.core.task_model import TaskHead
from methods.registry import build_method
from stream.core.errors import ArtifactError, ConfigError, DataError, RunDirectoryError
from stream.core.scenario import Budget
from stream.core.tasks import get_task
from stream.engine.config import MethodSpec, RunConfig
from stream.engine.runner import run_stream
from stream.engine.run_index import read_examples
from stream.engine.serving import TaskBank
from tests.conftest import run_cli
from tests.method_matrix import MATRIX

TASKS = ("sst2", "rte", "stsb")
BUDGET = Budget(max_train_examples=16, epochs=1, batch_size=16, max_eval_examples=8, max_dev_examples=8)
SPECS = tuple(MethodSpec(name=name, options=tuple(options.items())) for name, options in MATRIX)
RELOADED = {"full", "sequential", "ewc", "lwf", "replay"}  # whole models: rebuilt by Method.load per switch
TEXTS = {"sst2": ["good film", "a very dull long plot", "the actor was great", "bad"],
         "rte": [("the cat sits", "cat sits"), ("a dog runs very long", "fun music")],
         "stsb": [("the cat sits", "the cat sits"), ("good film", "awful dog runs")]}


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, glue_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("served-run")
    config = RunConfig(tasks=TASKS, methods=SPECS, backbone=str(tiny_model_dir), data_dir=str(glue_dir),
                       budget=BUDGET, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # conftest's one-thread fixture is per test: it does not cover this setup
    try:
        run_stream(config, path, progress=False)
    finally:
        torch.set_num_threads(threads)
    return path


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes: -0.0 and 0.0 differ, as do NaN payloads."""
    return tensor.detach().reshape(-1).contiguous().view(torch.uint8)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(_bits(sa[k]), _bits(sb[k])) for k in sa)


def _references(bank: TaskBank) -> dict[tuple[str, str], tuple[torch.nn.Module, torch.Tensor]]:
    """Every (method, task)'s model rebuilt by Method.load on a pristine backbone, and its logits."""
    references = {}
    for label, task in bank.served:
        spec = next(s for s in SPECS if s.resolved_label == label)
        method = build_method(spec.name, dict(spec.options), bank.backbone)
        model = method.load(bank.read(task, label), get_task(task))
        with torch.inference_mode():
            logits = torch.cat([model(**{k: v for k, v in b.items() if k != "labels"})
                                for b in bank.encode(task, TEXTS[task]).batches(64)])
        references[(label, task)] = model, logits
    return references


def test_random_switches_match_method_load_exactly_and_restore_the_backbone(run_dir, tiny_model_dir):
    backbone = load_backbone(str(tiny_model_dir), device="cpu")
    pristine = {k: v.clone() for k, v in backbone.encoder.state_dict().items()}
    bank = TaskBank(run_dir, backbone=backbone)
    assert set(bank.methods) == {s.resolved_label for s in SPECS}
    assert all(bank.tasks(label) == TASKS for label in bank.methods)
    references = _references(bank)
    pairs = sorted(bank.served)
    rng = random.Random(0)
    order = pairs + [rng.choice(pairs) for _ in range(150)]  # every pair, then random switches
    for number, (label, task) in enumerate(order, 1):
        model = bank.switch(task, label)
        assert bank.active == (label, task)
        # Methods with a small per-task piece switch in place; only whole-model methods are rebuilt.
        assert (bank.active_patch is None) == (bank.entry(task, label).method_name in RELOADED), label
        reference_model, reference_logits = references[(label, task)]
        assert torch.equal(bank.logits(task, TEXTS[task], method=label), reference_logits), (label, task)
        assert _same_state(model, reference_model), (label, task)
        if number % 25 == 0:
            bank.reset(verify=True)
    bank.reset(verify=True)
    assert state_fingerprint(backbone.encoder) == backbone.fingerprint
    after = backbone.encoder.state_dict()
    assert list(after) == list(pristine) and all(torch.equal(_bits(after[k]), _bits(pristine[k])) for k in after)
    # Rebuilt from the backbone as the switches left it, every model is still the same.
    for key, (_, logits) in _references(bank).items():
        assert torch.equal(logits, references[key][1]), key


def test_predictions_carry_label_names_probabilities_and_values(run_dir, tiny_backbone):
    with TaskBank(run_dir, backbone=tiny_backbone) as bank:
        sst2 = bank.predict("sst2", TEXTS["sst2"], method="lora")
        assert [p.label in ("negative", "positive") for p in sst2] == [True] * 4
        assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 and p.score == p.probabilities[p.label]
                   for p in sst2)
        stsb = bank.predict("stsb", TEXTS["stsb"], method="masking")
        assert all(p.label is None and isinstance(p.value, float) for p in stsb)
        with pytest.raises(ConfigError, match="several methods"):
            bank.predict("sst2", ["good"])
        with pytest.raises(ConfigError, match="has no task 'cola'; its tasks: sst2, rte, stsb"):
            bank.predict("cola", ["good"], method="lora")
        with pytest.raises(ConfigError, match="Did you mean 'bitfit'"):
            bank.switch("sst2", "bitfti")
        with pytest.raises(DataError, match="takes 2 texts per example"):
            bank.predict("rte", ["only one text"], method="lora")
    tiny_backbone.verify_unchanged()


class _Failing(Edit):
    def _save(self, encoder):
        return {}

    def _write(self, encoder):
        raise RuntimeError("edit failed")

    def _restore(self, encoder, saved):
        assert saved == {}


def test_position_edits_restore_by_assignment_and_a_failed_apply_reverts(tiny_backbone):
    encoder = tiny_backbone.encoder
    name = "embeddings.word_embeddings.weight"
    weights = flat_weights(encoder)  # what the position edits write through; flattening keeps every value
    assert flat_weights(encoder) is weights and weights.holds(encoder)
    flat = encoder.get_parameter(name).detach().view(-1)
    assert flat.data_ptr() == weights.buffer[weights.offsets[name]:].data_ptr()
    with torch.no_grad():
        flat[:3] = torch.tensor([1e-8, -0.5, 2.0])  # (1e-8 + 1) - 1 == 0 in fp32: subtracting back is not exact
    before = flat.clone()
    index = torch.tensor([0, 1, 2])
    add = AddAtPositions({name: index}, {name: torch.tensor([1.0, 0.25, -3.0])})
    zero = ZeroAtPositions({name: torch.tensor([1])})
    patch = ServingPatch([add, zero], TaskHead(tiny_backbone.hidden_size, 2), tiny_backbone.pooling)
    patch.apply(encoder)
    assert flat[0] == 1.0 and _bits(flat[1:2]).tolist() == _bits(torch.tensor([-0.0])).tolist()  # -0.25 * 0
    patch.revert(encoder)
    assert torch.equal(_bits(flat), _bits(before))
    failing = ServingPatch([AssignValues({name: torch.zeros_like(flat).view_as(encoder.get_parameter(name))}),
                            _Failing()], TaskHead(tiny_backbone.hidden_size, 2), tiny_backbone.pooling)
    with pytest.raises(RuntimeError, match="edit failed"):
        failing.apply(encoder)
    assert not failing.applied and torch.equal(_bits(flat), _bits(before))
    half = AssignValues({name: torch.zeros_like(encoder.get_parameter(name)),
                         "embeddings.LayerNorm.weight": torch.zeros(3)})  # the second write fails
    with pytest.raises(RuntimeError):
        half.apply(encoder)
    assert torch.equal(_bits(flat), _bits(before))


def test_cached_switch_state_is_per_encoder_and_positions_may_come_unsorted(tiny_backbone):
    """Edits cache what they resolve (buffer positions and entries, parameters, module parents) per encoder:
    one patch applied to two encoders in turn edits each and restores each. Positions given out of order
    are sorted with their values (the result equals load's ``index_add_``); a repeated position is refused."""
    first, second = tiny_backbone.encoder, tiny_backbone.fresh_encoder()
    names = [name for name, _ in first.named_parameters()]
    big, bias = names[0], next(name for name in names if name.endswith("dense.bias"))
    index = torch.tensor([7, 2, 5])  # unsorted
    values = torch.tensor([0.5, -1.0, 3.0])
    module_path = next(path for path, m in first.named_modules() if isinstance(m, torch.nn.Linear))
    patch = ServingPatch([AddAtPositions({big: index, bias: torch.tensor([1, 0])},
                                         {big: values, bias: torch.tensor([2.0, -2.0])}),
                          ZeroAtPositions({bias: torch.tensor([3])}),
                          AssignValues({"embeddings.LayerNorm.bias": torch.full_like(
                              first.get_parameter("embeddings.LayerNorm.bias"), 0.125)}),
                          SwapModules({module_path: torch.nn.Identity()})],
                         TaskHead(tiny_backbone.hidden_size, 2), tiny_backbone.pooling)
    for encoder in (first, second, first):
        before = {name: _bits(p.detach()).clone() for name, p in encoder.named_parameters()}
        original_module = encoder.get_submodule(module_path)
        expected = encoder.get_parameter(big).detach().clone().view(-1).index_add_(0, index, values)
        patch.apply(encoder)
        assert torch.equal(_bits(encoder.get_parameter(big).detach().view(-1)), _bits(expected))
        assert bool((encoder.get_parameter("embeddings.LayerNorm.bias") == 0.125).all())
        assert isinstance(encoder.get_submodule(module_path), torch.nn.Identity)
        patch.revert(encoder)
        assert encoder.get_submodule(module_path) is original_module
        assert all(torch.equal(_bits(p.detach()), before[name]) for name, p in encoder.named_parameters())
    repeated = ServingPatch([ZeroAtPositions({big: torch.tensor([4, 1, 4])})], TaskHead(tiny_backbone.hidden_size, 2),
                            tiny_backbone.pooling)
    before = _bits(first.get_parameter(big).detach()).clone()
    with pytest.raises(ArtifactError, match="more than once"):
        repeated.apply(first)
    assert not repeated.applied and torch.equal(_bits(first.get_parameter(big).detach()), before)


def test_read_examples_from_text_and_csv(tmp_path):
    rte = get_task("rte")
    lines = tmp_path / "pairs.txt"
    lines.write_text("the cat sits\tcat sits\n\nfun music\ta dog runs\n")
    assert read_examples(lines, rte) == [("the cat sits", "cat sits"), ("fun music", "a dog runs")]
    table = tmp_path / "pairs.csv"
    table.write_text('id,sentence2,sentence1\n1,"b, c",a\n')
    assert read_examples(table, rte) == [("a", "b, c")]
    lines.write_text("no tab here\n")
    with pytest.raises(DataError, match="line 1: 1 tab-separated field"):
        read_examples(lines, rte)
    table.write_text("sentence\nfoo\n")
    with pytest.raises(DataError, match="missing column.*'sentence1'"):
        read_examples(table, rte)


@pytest.mark.parametrize("name, content, message", [
    ("bad.csv", b'sentence\n"an unterminated quote\n', "cannot parse the row"),  # training's reader refuses it too
    ("bad.txt", "caf\u00e9\n".encode("latin-1"), "line 1: not valid UTF-8"),
    ("bad.csv", "sentence\ncaf\u00e9\n".encode("latin-1"), "line 2: not valid UTF-8"),
    ("model.bin", bytes(range(256)) * 4, "binary file"),
    ("nul.txt", b"good\x00film\n", "binary file"),
    ("rows.jsonl", b'{"sentence": "good"}\n[1, 2]\n', "line 2: expected a JSON object"),
    ("rows.jsonl", b'{"text": "good"}\n', "column 'sentence' is missing"),
])
def test_read_examples_refuses_what_training_refuses(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_examples(path, get_task("sst2"))


@pytest.mark.parametrize("edit, error, message", [
    (lambda c: c.update(pooling="cls"), ConfigError, "trained with pooling='mean'"),
    (lambda c: c["budget"].update(max_seq_length=17), ConfigError, "maximum length of 17 tokens, but .* was trained "
                                                                   "with 128"),
    (lambda c: c["task_budgets"].update(sst2={"max_seq_length": 40}), ConfigError, "trained with 128"),
    (None, RunDirectoryError, "not valid JSON"),
])
def test_an_edited_config_is_refused_not_served(run_dir, tmp_path, edit, error, message):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = copy / "config.json"
    if edit is None:
        path.write_text(path.read_text()[:40])
    else:
        config = json.loads(path.read_text())
        config.setdefault("task_budgets", {})
        edit(config)
        path.write_text(json.dumps(config))
    with pytest.raises(error, match=message):
        TaskBank(copy, device="cpu").predict("sst2", ["good film"], method="bitfit")


# ------------------------------------------------------------------------------------------------- CLI
def taskstream(*args):
    return run_cli("predict", *args)


def test_cli_predicts_label_names_and_regression_values(run_dir, tmp_path):
    result = taskstream(run_dir, "--task", "sst2", "--method", "bitfit", "--device", "cpu", "good film")
    assert result.returncode == 0, result.stderr[-2000:]
    label, *probabilities = result.stdout.strip().split("\t")
    assert label in ("negative", "positive")
    assert [p.split("=")[0] for p in probabilities] == ["negative", "positive"]
    examples = tmp_path / "pairs.txt"
    examples.write_text("the cat sits\tthe cat sits\ngood film\tawful dog runs\nfun\tmusic\n")
    result = taskstream(run_dir, "--task", "stsb", "--method", "adapters-bottleneck8", "--file", examples)
    assert result.returncode == 0, result.stderr[-2000:]
    values = [float(line) for line in result.stdout.split()]
    assert len(values) == 3


@pytest.mark.parametrize("case", ["unknown_task", "unknown_method", "pair_given_one_text", "tampered_artifact"])
def test_cli_predict_refuses_bad_input_clearly(case, run_dir, tmp_path):
    args = [run_dir, "--task", "rte", "--method", "bitfit", "the cat sits", "cat sits"]
    if case == "unknown_task":
        args[2], expected = "mnli", ["has no task 'mnli'", "its tasks: sst2, rte, stsb"]
    elif case == "unknown_method":
        args[4], expected = "bitfti", ["has no method 'bitfti'", "Did you mean 'bitfit'"]
    elif case == "pair_given_one_text":
        args, expected = args[:-1], ["'rte' takes 2 texts per example", "Give both texts"]
    else:
        copy = tmp_path / "run"
        shutil.copytree(run_dir, copy)
        artifact = copy / "artifacts" / "bitfit" / "002-rte.safetensors"
        data = bytearray(artifact.read_bytes())
        data[-1] ^= 1
        artifact.write_bytes(bytes(data))
        args[0], expected = copy, ["002-rte.safetensors", "sha256", "modified after it was written"]
    result = taskstream(*args)
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert result.stderr.strip().splitlines()[-1].startswith("taskstream: error:")
    assert "Traceback" not in result.stderr
    for part in expected:
        assert part in result.stderr, (part, result.stderr[-2000:])
