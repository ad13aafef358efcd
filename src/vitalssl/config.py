"""Typed-config helpers shared by both wings.

Every section of ``params.yaml`` becomes a frozen dataclass (the data wing's in
:mod:`vitalssl.data.config`, the model's in :mod:`vitalssl.ssl.config`). Unknown
or missing keys, and values of the wrong type (checked against the field's
annotation), are errors that name the key; values are range-checked where they
are built, so a bad param fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


class ConfigError(ValueError):
    """A param is missing, unknown or out of range; the message names it."""


def check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"invalid param `{name}`: {msg}")


def from_dict(cls, d: Any, where: str = ""):
    """Build dataclass ``cls`` from mapping ``d``, refusing unknown and missing keys and wrong types.

    ``where`` is the dotted path of ``d`` in params.yaml, used in messages.
    Nested dataclass fields are built recursively; every other value is checked
    against its field's annotation (:func:`check_type`).
    """
    prefix = f"{where}." if where else ""
    if not isinstance(d, dict):
        raise ConfigError(f"param `{where or cls.__name__}` must be a mapping, got {_shown(d)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown param(s) {', '.join(prefix + str(k) for k in unknown)}; "
                          f"allowed under `{where or 'top level'}`: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in d:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"missing param `{prefix}{name}`")
        value, hint = d[name], hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, prefix + name)
        else:
            kwargs[name] = check_type(value, hint, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - the type checks above should make this unreachable
        raise ConfigError(f"invalid params under `{where or 'top level'}`: {e}") from e


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _shown(value) -> str:
    """A value as the message shows it: its repr and, for clarity, its YAML-side type."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", tuple: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def _looks_like_exponent_float(value: str) -> bool:
    """``5e-4``: a float PyYAML reads as a string because it has no dot."""
    try:
        float(value)
    except ValueError:
        return False
    return "e" in value.lower() and "." not in value


def check_type(value, hint, name: str):
    """``value`` checked against annotation ``hint``; lists become tuples. A mismatch names ``name``.

    Understood: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Optional[X]``,
    ``tuple`` / ``tuple[X, ...]`` / ``tuple[X, Y]`` (length checked), ``dict`` / ``dict[K, V]``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return check_type(value, inner[0], name)
        raise ConfigError(f"invalid param `{name}`: unsupported annotation {hint}")  # pragma: no cover
    if hint in (int, float, bool, str):
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            hint_text = ""
            if hint is float and isinstance(value, str) and _looks_like_exponent_float(value):
                mant, _, exp = value.lower().partition("e")
                hint_text = (f"; YAML reads {value} as a string because it has no dot: write "
                             f"{mant}.0e{exp}")
            if hint is str and isinstance(value, bool):
                hint_text = "; YAML reads a bare yes, no, on, off, true or false as a boolean: quote the text"
            raise ConfigError(f"invalid param `{name}`: expected {_TYPE_NAMES[hint]}, got {_shown(value)}"
                              f"{hint_text}")
        return value
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid param `{name}`: expected a list, got {_shown(value)}")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_type(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"invalid param `{name}`: expected a list of {len(args)} values, got {len(value)}: "
                              f"{list(value)!r}")
        return tuple(check_type(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"invalid param `{name}`: expected a mapping, got {_shown(value)}")
        if not args:
            return dict(value)
        return {check_type(k, args[0], f"{name} (key {k!r})"): check_type(v, args[1], f"{name}.{k}")
                for k, v in value.items()}
    if hint is typing.Any:  # pragma: no cover
        return value
    raise ConfigError(f"invalid param `{name}`: unsupported annotation {hint}")  # pragma: no cover


def to_dict(cfg) -> dict:
    """Plain (JSON/YAML-ready) dict of a config dataclass; tuples become lists."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` laid on top, recursively for nested mappings."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
