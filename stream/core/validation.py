"""Small checks used by every config dataclass's ``__post_init__``.

Each check raises :class:`~stream.core.errors.ConfigError` with a message in one shape:
``"<owner>.<field> must be <rule>; got <value!r>."`` so users see the field, the rule and the value.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable
from typing import Any

from stream.core.errors import ConfigError


def _where(owner: str, field: str) -> str:
    return f"{owner}.{field}" if owner else field


def check_str_tuple(owner: str, field_name: str, value: Any, *, min_len: int = 1,
                    max_len: int | None = None) -> tuple[str, ...]:
    """Return ``value`` as a tuple of distinct non-empty strings (lists from YAML are accepted)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{_where(owner, field_name)} must be a list of strings; got {value!r}.")
    items = tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"{_where(owner, field_name)} must contain only non-empty strings; got {value!r}.")
    if len(set(items)) != len(items):
        raise ConfigError(f"{_where(owner, field_name)} must not repeat an entry; got {value!r}.")
    if len(items) < min_len or (max_len is not None and len(items) > max_len):
        rule = f"between {min_len} and {max_len}" if max_len is not None else f"at least {min_len}"
        raise ConfigError(f"{_where(owner, field_name)} must have {rule} entries; got {value!r}.")
    return items


def check_int(owner: str, field: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None, allow_none: bool = False) -> None:
    """Require an integer (not a bool) within ``[minimum, maximum]``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{_where(owner, field)} must be an integer; got {value!r}.")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{_where(owner, field)} must be >= {minimum}; got {value!r}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{_where(owner, field)} must be <= {maximum}; got {value!r}.")


def check_real(owner: str, field: str, value: Any, *, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: bool = False,
               exclusive_maximum: bool = False, allow_none: bool = False) -> None:
    """Require a finite real number within the given bounds."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise ConfigError(f"{_where(owner, field)} must be a number; got {value!r}.")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        rule = ">" if exclusive_minimum else ">="
        raise ConfigError(f"{_where(owner, field)} must be {rule} {minimum}; got {value!r}.")
    if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
        rule = "<" if exclusive_maximum else "<="
        raise ConfigError(f"{_where(owner, field)} must be {rule} {maximum}; got {value!r}.")


def check_choice(owner: str, field: str, value: Any, choices: Iterable[Any]) -> None:
    """Require ``value`` to be one of ``choices``; the message lists them and suggests a close match."""
    choices = list(choices)
    if value in choices:
        return
    suggestion = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
        if close:
            suggestion = f" Did you mean {close[0]!r}?"
    listed = ", ".join(repr(c) for c in choices)
    raise ConfigError(f"{_where(owner, field)} must be one of {listed}; got {value!r}.{suggestion}")


def check_device(owner: str, field: str, value: Any) -> None:
    """Require a device name ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked without torch (whether that
    device exists is known only once torch loads)."""
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda")
                                          or (value.startswith("cuda:") and value[5:].isdigit())):
        raise ConfigError(f"{_where(owner, field)} must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {value!r}.")


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """Build the error for an unknown registry name: ``Unknown method 'lora2'. Registered: ...``."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"Unknown {kind} {name!r}. Registered: {', '.join(known)}.{hint}")
