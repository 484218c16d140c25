"""Bottleneck adapters (Houlsby et al. 2019): a small residual MLP in every sublayer of every block.

Each adapter maps a sublayer's output h (batch, seq, d) to ``h + W_up gelu(W_down h + b_down) + b_up``
with a bottleneck of m units: 2md + d + m parameters. Two sit in every transformer block, after the
attention output projection and after the feed-forward output projection, each before its residual
add and LayerNorm. Adapters, every LayerNorm of the encoder and the head train; the rest stays frozen.

Where they go, and how. A BERT-like block ends each sublayer with an "output" module computing
``LayerNorm(dropout(dense(x)) + residual)`` (BertSelfOutput / BertOutput and their RoBERTa, ELECTRA,
XLM-R, DeBERTa twins). The adapter replaces that module's ``dropout`` with ``dropout`` followed by the
adapter, which is exactly where Houlsby's code and AdapterHub apply it: after the projection and its
dropout, before the residual add. Replacing a submodule of a private copy (rather than a forward hook)
keeps the adapter in the module tree, so ``.to(device)``, ``parameters()`` and ``state_dict()`` see it
and a deep copy cannot leave a hook pointing at another copy's adapter; the backbone's code is never
edited. Wrapping ``dense`` instead would put the dropout after the adapter; it only differs in training.

Initialisation: W_down ~ N(0, init_std), W_up = 0 and both biases 0, so before training every adapter
is the identity and the model equals the backbone bit for bit (tests prove it); W_up gets a gradient
at once and W_down from the second step on, as with LoRA's zero B.

Artifact: ``adapter.<block>.<sublayer path>.{down,up}.{weight,bias}`` plus, when they train,
``layer_norm.<module path>.{weight,bias}`` (the LayerNorms are per task here) and the head.
``new_params`` counts every stored tensor element (adapters, LayerNorms, head).
"""

from __future__ import annotations

import torch
from torch import nn

from methods.configs.adapters import AdaptersConfig
from methods.core.backbone import transformer_blocks
from methods.core.base import Method, TrainedTask
from methods.core.patches import AssignValues, ServingPatch, SwapModules, module_paths, shared_skeleton
from methods.core.task_model import TaskModel, head_state, load_head
from methods.core.training import decay_groups
from methods.registry import register_method
from stream.core.errors import ArtifactError, ConfigError
from stream.core.ledger import Sharing
from stream.core.store import ArtifactPayload

ADAPTER_PREFIX = "adapter."
LAYER_NORM_PREFIX = "layer_norm."
# Added to the task's seed so the adapters' random draws are not the head's.
_INIT_SEED_OFFSET = 1_000_003


class Adapter(nn.Module):
    """``h + up(gelu(down(h)))``: a residual bottleneck MLP, (batch, seq, d) -> (batch, seq, d)."""

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, hidden_size)

    def reset_near_identity(self, init_std: float) -> None:
        """W_down ~ N(0, init_std), W_up = 0, biases 0: the adapter is exactly the identity."""
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class DropoutThenAdapter(nn.Module):
    """Stands in for a sublayer output's ``dropout``: the original dropout, then the adapter."""

    def __init__(self, dropout: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.dropout = dropout
        self.adapter = adapter

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.dropout(hidden))


def _is_sublayer_output(module: nn.Module) -> bool:
    """BERT's sublayer-output layout: ``LayerNorm(dropout(dense(x)) + residual)``."""
    return (isinstance(getattr(module, "dense", None), nn.Linear)
            and isinstance(getattr(module, "dropout", None), (nn.Dropout, DropoutThenAdapter))
            and isinstance(getattr(module, "LayerNorm", None), nn.LayerNorm))


def sublayer_outputs(encoder: nn.Module) -> dict[str, nn.Module]:
    """Where adapters go: ``"<block>.<path in block>"`` -> that sublayer's output module, bottom first.

    For BERT-like blocks these are ``<i>.attention.output`` and ``<i>.output`` (plus a decoder's
    ``<i>.crossattention.output``). Raises ConfigError when a block has no such module.
    """
    found = {}
    for index, block in enumerate(transformer_blocks(encoder)):
        here = {f"{index}.{path}": module for path, module in block.named_modules() if path
                and _is_sublayer_output(module)}
        if not here:
            raise ConfigError(
                f"Adapters need BERT-like blocks whose sublayers end in a module with 'dense' (Linear), "
                f"'dropout' and 'LayerNorm' (LayerNorm(dropout(dense(x)) + residual)); block {index} of "
                f"{type(encoder).__name__} ({type(block).__name__}) has none. Use a BERT, RoBERTa, ELECTRA "
                "or XLM-R style encoder, or a method that does not edit blocks (lora, last_layer).")
        found.update(here)
    return found


def insert_adapters(encoder: nn.Module, bottleneck: int, *, init_std: float = 1e-2,
                    seed: int = 0) -> dict[str, Adapter]:
    """Put a near-identity adapter into every sublayer of ``encoder`` (a private copy), in place.

    Returns the adapters keyed like :func:`sublayer_outputs`; they are trainable, on the encoder's
    device and dtype. The initialisation is seeded and leaves the global RNG untouched.
    """
    adapters = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for key, output in sublayer_outputs(encoder).items():
            if isinstance(output.dropout, DropoutThenAdapter):
                raise ValueError(f"sublayer {key} already has an adapter; insert adapters into a fresh copy")
            dense = output.dense
            adapter = Adapter(dense.out_features, bottleneck)
            adapter.reset_near_identity(init_std)
            adapter.to(device=dense.weight.device, dtype=dense.weight.dtype)
            output.dropout = DropoutThenAdapter(output.dropout, adapter)
            adapters[key] = adapter
    return adapters


def encoder_layer_norms(encoder: nn.Module) -> dict[str, nn.LayerNorm]:
    """Every LayerNorm of the encoder by module path (embeddings and both per block)."""
    return {path: module for path, module in encoder.named_modules() if isinstance(module, nn.LayerNorm)}


def adapter_parameter_count(hidden_size: int, bottleneck: int) -> int:
    """2md + d + m: parameters of one adapter of bottleneck m on hidden size d."""
    return 2 * bottleneck * hidden_size + hidden_size + bottleneck


@register_method
class AdaptersMethod(Method):
    """Houlsby bottleneck adapters in every sublayer; adapters, LayerNorms and head train."""

    name = "adapters"
    config_class = AdaptersConfig
    sharing = Sharing.SHARED_BACKBONE

    def __init__(self, config, backbone) -> None:
        super().__init__(config, backbone)
        sublayer_outputs(backbone.encoder)  # an unsupported layout fails here, before any training

    def _tensors(self, adapters: dict[str, Adapter], norms: dict[str, nn.LayerNorm]) -> dict[str, nn.Parameter]:
        """The trained parameters under their artifact names."""
        named = {}
        for key, adapter in adapters.items():
            named.update({f"{ADAPTER_PREFIX}{key}.{n}": p for n, p in adapter.named_parameters()})
        for path, norm in norms.items():
            named.update({f"{LAYER_NORM_PREFIX}{path}.{n}": p for n, p in norm.named_parameters()})
        return named

    def train(self, arrival, *, previous=None, progress=False) -> TrainedTask:
        seed = arrival.task_seed
        encoder = self.backbone.fresh_encoder()
        adapters = insert_adapters(encoder, self.config.bottleneck, init_std=self.config.init_std,
                                   seed=seed + _INIT_SEED_OFFSET)
        norms = encoder_layer_norms(encoder) if self.config.train_layer_norms else {}
        trained = self._tensors(adapters, norms)
        for param in trained.values():
            param.requires_grad_(True)
        head = self.task_head(arrival)
        model = TaskModel(encoder, head, self.backbone.pooling)
        # Artifact names end like the modules' own (".bias", "LayerNorm.weight"), so decay_groups
        # exempts biases and LayerNorm weights from weight decay as usual.
        groups = (decay_groups(trained.items(), self.config.learning_rate, self.config.weight_decay)
                  + decay_groups(head.named_parameters(), self.head_lr(), self.config.weight_decay))
        result = self.fit(model, groups, arrival, progress=progress)
        tensors = {name: p.detach().to("cpu").clone() for name, p in trained.items()}
        tensors.update(head_state(head))
        meta = {"bottleneck": self.config.bottleneck, "sublayers": list(adapters),
                "layer_norms": sorted(norms)}
        payload = ArtifactPayload(tensors=tensors, meta=meta, new_params=sum(t.numel() for t in tensors.values()))
        return TrainedTask(model=model, payload=payload, fit=result)

    def _insert_stored(self, artifact, encoder: nn.Module) -> dict[str, torch.Tensor]:
        """Insert the artifact's adapters into ``encoder``, filled with the stored tensors, and return the
        stored LayerNorm tensors under ``encoder``'s parameter names (not written: ``encoder`` may be a
        skeleton sharing the live weights)."""
        meta = artifact.meta
        adapters = insert_adapters(encoder, int(meta["bottleneck"]))
        if list(adapters) != meta["sublayers"]:
            raise ArtifactError(f"Adapter artifact {artifact.record.tensor_path} was written for sublayers "
                                f"{meta['sublayers']} but this backbone has {list(adapters)}: "
                                "it belongs to another backbone.")
        all_norms = encoder_layer_norms(encoder)
        unknown = sorted(set(meta["layer_norms"]) - set(all_norms))
        if unknown:
            raise ArtifactError(f"Adapter artifact {artifact.record.tensor_path} stores LayerNorms {unknown} "
                                "that this backbone does not have: it belongs to another backbone.")
        norms = {path: all_norms[path] for path in meta["layer_norms"]}
        expected = self._tensors(adapters, norms)
        stored = {k: v for k, v in artifact.tensors.items() if not k.startswith("head.")}
        if set(stored) != set(expected):
            missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
            raise ArtifactError(f"Adapter artifact {artifact.record.tensor_path} does not match its sidecar: "
                                f"missing {missing[:3]}, unexpected {extra[:3]}.")
        for name, param in expected.items():
            if stored[name].shape != param.shape:
                raise ArtifactError(f"Adapter artifact tensor {name} has shape {tuple(stored[name].shape)}, "
                                    f"expected {tuple(param.shape)}.")
        with torch.no_grad():
            for name, param in expected.items():
                if name.startswith(ADAPTER_PREFIX):
                    param.copy_(stored[name])
        return {name[len(LAYER_NORM_PREFIX):]: stored[name].to(param.device, param.dtype)
                for name, param in expected.items() if name.startswith(LAYER_NORM_PREFIX)}

    def load(self, artifact, task) -> TaskModel:
        encoder = self.backbone.fresh_encoder()
        norm_values = self._insert_stored(artifact, encoder)
        with torch.no_grad():
            for name, value in norm_values.items():
                encoder.get_parameter(name).copy_(value)
        encoder.requires_grad_(False)
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        return TaskModel(encoder, head.to(self.device), self.backbone.pooling).eval()

    def serving_patch(self, artifact, task) -> ServingPatch:
        """Swap the task's adapter-carrying dropouts into the live encoder and write its LayerNorms.

        The adapters are inserted by :meth:`load`'s own code into a skeleton sharing the live weights; the
        ``DropoutThenAdapter`` modules it made are what the patch swaps in (their dropouts are parameterless
        copies of the live ones).
        """
        skeleton = shared_skeleton(self.backbone.encoder)
        norm_values = self._insert_stored(artifact, skeleton)
        skeleton.requires_grad_(False)
        paths = module_paths(skeleton)
        swaps = {f"{paths[id(output)]}.dropout": output.dropout for output in sublayer_outputs(skeleton).values()}
        head = load_head(artifact.tensors, self.backbone.hidden_size, task.num_outputs, self.config.head_dropout)
        edits = [SwapModules(swaps)] + ([AssignValues(norm_values)] if norm_values else [])
        return ServingPatch(edits, head.to(self.device), self.backbone.pooling)
