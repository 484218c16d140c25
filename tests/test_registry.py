"""The registry's catalogue of built-in methods agrees with the method classes it stands in for.

``taskstream methods`` and config validation read the catalogue without importing a method module, so a method
module that registers a class the catalogue does not list, or an entry whose module, config class, sharing or
summary differs from the class, would go unnoticed there: these tests import every module under ``methods/``
and compare.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import methods
import methods.configs
from methods import registry
from methods.core.base import Method
from methods.core.config import MethodConfig
from methods.registry import BUILTIN_METHODS, MethodInfo, config_class, method_info, option_defaults
from stream.core.errors import ConfigError
from stream.core.ledger import Sharing


def _import_every_method_module() -> dict[str, type[Method]]:
    for module in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"methods.{module.name}")
    return registry.registered_methods()


def test_every_registered_method_is_in_the_catalogue_with_its_class_info():
    registered = _import_every_method_module()
    assert set(registered) == set(BUILTIN_METHODS), "register each new method module in methods.registry"
    for name, cls in registered.items():
        assert MethodInfo.of(cls) == BUILTIN_METHODS[name], name


def test_every_method_module_has_its_config_module_and_back():
    configs = {m.name for m in pkgutil.iter_modules(methods.configs.__path__)}
    method_modules = {entry.module for entry in BUILTIN_METHODS.values()}
    assert configs == method_modules
    for entry in BUILTIN_METHODS.values():
        assert entry.config_class.__module__ == f"methods.configs.{entry.module}"


def test_config_classes_and_option_defaults_come_from_the_catalogue():
    assert config_class("last_layer").__name__ == "LastLayerConfig"
    assert option_defaults("last_layer") == {"learning_rate": 5e-4, "head_learning_rate": 1e-3, "k": 1}
    assert option_defaults("bitfit") == {"learning_rate": 3e-3}
    with pytest.raises(ConfigError, match="Unknown method 'lorra'.*Did you mean 'lora'"):
        config_class("lorra")


def test_a_method_registered_from_outside_methods_is_known_by_its_class(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ToyConfig(MethodConfig):
        width: int = 3

    @registry.register_method
    class ToyMethod(Method):
        """A toy method.

        More text."""

        name = "toy"
        config_class = ToyConfig
        sharing = Sharing.STANDALONE

    assert "toy" in registry.method_names()
    assert method_info("toy") == MethodInfo(__name__, ToyConfig, Sharing.STANDALONE, "A toy method.")
    assert option_defaults("toy") == {"width": 3}
    with pytest.raises(ValueError, match="already registered"):
        registry.register_method(type("Other", (ToyMethod,), {}))
    with pytest.raises(ValueError, match="'lora' is a built-in method.*another name"):
        registry.register_method(type("MyLora", (ToyMethod,), {"name": "lora"}))
