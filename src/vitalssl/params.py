"""Loading ``params.yaml`` into the typed configs (used by stages and the CLI)."""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import (ConfigError, DataConfig, DemoConfig, SplitConfig, WindowConfig, from_dict)


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return params


def section(params: dict, name: str) -> dict:
    if name not in params:
        raise ConfigError(f"missing param section `{name}`")
    return params[name]


def data_config(params: dict) -> DataConfig:
    return from_dict(DataConfig, section(params, "data"), "data")


def demo_config(params: dict) -> DemoConfig:
    return from_dict(DemoConfig, section(params, "demo"), "demo")


def split_config(params: dict) -> SplitConfig:
    return from_dict(SplitConfig, section(params, "splits"), "splits")


def window_config(params: dict) -> WindowConfig:
    return from_dict(WindowConfig, section(params, "windows"), "windows")
