"""The method registry: every method by name, and the catalogue of the built-in ones.

This module imports no torch. A built-in method is known here by its catalogue entry (the module that defines
it, its config class, how its files share the backbone, a one-line summary), so ``taskstream methods`` lists
every method and a run's method options are checked (:func:`config_class`) without importing a method module;
the module, and with it torch (and peft or Avalanche), is imported only when the method class itself is needed
(:func:`get_method_class`). ``tests/test_registry.py`` imports every module under ``methods/`` and fails when a
registered method has no entry here or an entry disagrees with its class.

Adding a method: one module ``methods/<name>.py`` with a ``@register_method`` ``XxxMethod`` class, its
``XxxConfig`` in ``methods/configs/<name>.py`` (torch-free), one entry in ``BUILTIN_METHODS`` below, and a row
in the method-wide test matrix (``tests/method_matrix.py``). A method defined outside ``methods/`` (a user's
own) only needs ``@register_method``: it is registered when its module is imported.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from methods.configs.adapters import AdaptersConfig
from methods.configs.bitfit import BitFitConfig
from methods.configs.continual import ContinualConfig, EWCConfig, LwFConfig, ReplayConfig
from methods.configs.diff_pruning import DiffPruningConfig, DiffPruningNonadaptiveConfig, DiffPruningUnstructuredConfig
from methods.configs.full import FullConfig
from methods.configs.ia3 import Ia3Config
from methods.configs.last_layer import LastLayerConfig, LinearProbeConfig
from methods.configs.lora import LoraConfig
from methods.configs.masking import MaskingConfig
from methods.core.config import MethodConfig
from stream.core.ledger import Sharing
from stream.core.validation import unknown_name_error

if TYPE_CHECKING:
    from methods.core.backbone import Backbone
    from methods.core.base import Method


@dataclass(frozen=True)
class MethodInfo:
    """What is known of a method without importing its module (for a built-in one).

    Attributes:
        module: the module under ``methods/`` whose import registers the method.
        config_class: the method's config class (``Method.config_class``).
        sharing: how its files relate to the shared backbone (``Method.sharing``).
        summary: one line saying what it trains and stores (the first line of the method class's docstring).
    """

    module: str
    config_class: type[MethodConfig]
    sharing: Sharing
    summary: str

    @classmethod
    def of(cls, method: type[Method]) -> MethodInfo:
        """The info of an imported method class (what a built-in entry must equal)."""
        module = method.__module__.removeprefix("methods.")
        return cls(module, method.config_class, method.sharing, (method.__doc__ or "").strip().split("\n")[0])


_SHARED, _STANDALONE, _EVOLVING = Sharing.SHARED_BACKBONE, Sharing.STANDALONE, Sharing.EVOLVING

BUILTIN_METHODS: dict[str, MethodInfo] = {
    "full": MethodInfo("full", FullConfig, _STANDALONE, "Finetune the whole encoder and a task head."),
    "last_layer": MethodInfo(
        "last_layer", LastLayerConfig, _SHARED,
        "Train the top ``k`` transformer blocks and a task head; store those blocks and the head."),
    "linear_probe": MethodInfo(
        "last_layer", LinearProbeConfig, _SHARED,
        "Head only (k=0): a linear probe on the frozen backbone's pooled output."),
    "adapters": MethodInfo(
        "adapters", AdaptersConfig, _SHARED,
        "Houlsby bottleneck adapters in every sublayer; adapters, LayerNorms and head train."),
    "bitfit": MethodInfo(
        "bitfit", BitFitConfig, _SHARED, "Train the encoder's biases and a task head; store the biases densely."),
    "lora": MethodInfo(
        "lora", LoraConfig, _SHARED,
        "LoRA on chosen linear layers via peft; the A/B tensors and the head are stored per task."),
    "ia3": MethodInfo(
        "ia3", Ia3Config, _SHARED,
        "(IA)3 via peft: learned rescaling vectors on chosen linear layers; the vectors and the head are stored."),
    "masking": MethodInfo(
        "masking", MaskingConfig, _SHARED,
        "Learn a binary mask over frozen weights of the upper blocks; store the masks (and the head)."),
    "diff_pruning": MethodInfo(
        "diff_pruning", DiffPruningConfig, _SHARED,
        "Diff pruning: a sparse diff of every backbone weight per task (module docstring)."),
    "diff_pruning_unstructured": MethodInfo(
        "diff_pruning", DiffPruningUnstructuredConfig, _SHARED,
        "Diff pruning with one gate per weight and no group gates."),
    "diff_pruning_nonadaptive": MethodInfo(
        "diff_pruning", DiffPruningNonadaptiveConfig, _SHARED,
        "The paper's non-adaptive baseline: prune a full finetuning's diff by magnitude, then finetune."),
    "sequential": MethodInfo(
        "continual", ContinualConfig, _EVOLVING,
        "Sequential finetuning of one shared encoder (Avalanche's Naive), one head per task."),
    "ewc": MethodInfo(
        "continual", EWCConfig, _EVOLVING,
        "Elastic Weight Consolidation (Avalanche's EWC) on one shared encoder, one head per task."),
    "lwf": MethodInfo(
        "continual", LwFConfig, _EVOLVING,
        "Learning without Forgetting (Avalanche's LwF) on one shared encoder, one head per task."),
    "replay": MethodInfo(
        "continual", ReplayConfig, _EVOLVING,
        "Experience replay (Avalanche's Replay) on one shared encoder, one head per task."),
}

_REGISTRY: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``; duplicates are refused."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"{cls.__name__}.name must be an identifier string; got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"A method named {name!r} is already registered ({_REGISTRY[name].__qualname__}).")
    builtin = BUILTIN_METHODS.get(name)
    if builtin is not None and cls.__module__ != f"methods.{builtin.module}":
        # the built-in's module may not be imported yet; a same-named class would shadow it silently
        raise ValueError(f"{name!r} is a built-in method (methods/{builtin.module}.py); give {cls.__qualname__} "
                         "another name.")
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, MethodConfig)):
        raise TypeError(f"{cls.__name__}.config_class must subclass MethodConfig")
    _REGISTRY[name] = cls
    return cls


def method_names() -> list[str]:
    """Every method name: the built-in ones, then any registered from outside ``methods/`` (no import)."""
    return list(dict.fromkeys([*BUILTIN_METHODS, *_REGISTRY]))


def method_info(name: str) -> MethodInfo:
    """What the registry knows of method ``name`` (no import for a built-in one); an unknown name lists the
    known ones."""
    if name in _REGISTRY:
        return MethodInfo.of(_REGISTRY[name])
    if name in BUILTIN_METHODS:
        return BUILTIN_METHODS[name]
    raise unknown_name_error("method", name, method_names())


def config_class(name: str) -> type[MethodConfig]:
    """The config class of method ``name``, without importing a built-in method's module (nor torch).

    An unknown name lists the known ones."""
    return method_info(name).config_class


def get_method_class(name: str) -> type[Method]:
    """The method class registered as ``name`` (importing its module, so torch, the first time); an unknown
    name lists the known ones."""
    if name not in _REGISTRY and name in BUILTIN_METHODS:
        importlib.import_module(f"methods.{BUILTIN_METHODS[name].module}")
    if name not in _REGISTRY:
        raise unknown_name_error("method", name, method_names())
    return _REGISTRY[name]


def registered_methods() -> dict[str, type[Method]]:
    """Every registered method class by name (imports every built-in method module)."""
    for module in dict.fromkeys(entry.module for entry in BUILTIN_METHODS.values()):
        importlib.import_module(f"methods.{module}")
    return dict(_REGISTRY)


def build_method(name: str, options: Mapping[str, Any], backbone: Backbone) -> Method:
    """Instantiate a registered method from user options (validated by its config class)."""
    cls = get_method_class(name)
    return cls(cls.config_class.from_options(options), backbone)


def shared_option_defaults() -> dict[str, Any]:
    """The options every method has (:class:`MethodConfig`'s fields), with their defaults."""
    return {f.name: _default(f) for f in dataclasses.fields(MethodConfig)}


def option_defaults(name: str) -> dict[str, Any]:
    """Method ``name``'s own options with their defaults: the fields its config adds to :class:`MethodConfig`
    and the shared ones whose default it changes (no import of the method's module)."""
    shared = shared_option_defaults()
    return {f.name: _default(f) for f in dataclasses.fields(config_class(name))
            if f.name not in shared or shared[f.name] != _default(f)}


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default
