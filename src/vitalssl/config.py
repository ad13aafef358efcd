"""Typed-config helpers shared by both wings.

Every section of ``params.yaml`` becomes a frozen dataclass (the data wing's in
:mod:`vitalssl.data.config`, the model's in :mod:`vitalssl.ssl.config`). Unknown
or missing keys are errors that name the key; values are range-checked where
they are built, so a bad param fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

class ConfigError(ValueError):
    """A param is missing, unknown or out of range; the message names it."""


def check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"invalid param `{name}`: {msg}")


def from_dict(cls, d: Any, where: str = ""):
    """Build dataclass ``cls`` from mapping ``d``, refusing unknown and missing keys.

    ``where`` is the dotted path of ``d`` in params.yaml, used in messages.
    Nested dataclass fields are built recursively.
    """
    prefix = f"{where}." if where else ""
    if not isinstance(d, dict):
        raise ConfigError(f"param `{where or cls.__name__}` must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown param(s) {', '.join(prefix + k for k in unknown)}; "
                          f"allowed under `{where or 'top level'}`: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in d:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"missing param `{prefix}{name}`")
        value = d[name]
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, prefix + name)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - defensive
        raise ConfigError(f"invalid params under `{where}`: {e}") from e


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
