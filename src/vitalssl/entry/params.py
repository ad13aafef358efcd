"""Reading ``params.yaml``: the only place the project opens it (the stages and command lines call this)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..config import ConfigError

# top-level sections that are not pretraining hyperparameters
SECTIONS = ("data", "demo", "splits", "windows", "evaluate")


def load_yaml(path: str | Path, what: str) -> dict:
    """A YAML mapping from ``path``; a missing file or a syntax error names the file (and line, column)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: file not found")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}{where}: invalid YAML: {e.problem or e}") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path}: invalid YAML: {e}") from e
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{what} {path}: must hold a mapping of params, got {type(d).__name__}")
    return d


def load_params(path: str | Path = "params.yaml") -> dict:
    return load_yaml(path, "params file")


def section(params: dict, name: str) -> dict:
    if name not in params:
        raise ConfigError(f"missing param section `{name}`")
    return params[name]
