"""Reading ``params.yaml``: the only place the project opens it (the stages and command lines call this)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..config import ConfigError

# top-level sections that are not pretraining hyperparameters
SECTIONS = ("data", "demo", "splits", "windows", "evaluate", "label_efficiency")


def load_yaml(path: str | Path, what: str) -> dict:
    """A YAML mapping from ``path``; a missing file or a syntax error names the file (and line, column)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: file not found")
    try:
        text = path.read_text()
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), path, what)
        d = yaml.safe_load(text)
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


MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse_duplicate_keys(node, path: Path, what: str, where: str = "", seen=None) -> None:
    """Fail on a key given twice in one mapping of the composed YAML ``node``, naming the key and both lines.

    PyYAML keeps the last value of a repeated key without a word (YAML 1.2 and DVC refuse it); the
    node tree still holds both, with their lines. ``<<`` merge keys may be overridden on purpose.
    """
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # an alias points at a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, path, what, f"{where}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key, value in node.value:
            if key.tag == MERGE_TAG or not isinstance(key, yaml.ScalarNode):
                continue
            name = f"{where}.{key.value}" if where else key.value
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first:
                raise ConfigError(f"{what} {path}: key `{name}` is given twice (lines {first[key.tag, key.value]} "
                                  f"and {line}); YAML keeps only the last, so keep one")
            first[key.tag, key.value] = line
            _refuse_duplicate_keys(value, path, what, name, seen)


def load_params(path: str | Path = "params.yaml") -> dict:
    return load_yaml(path, "params file")


def section(params: dict, name: str) -> dict:
    if name not in params:
        raise ConfigError(f"missing param section `{name}`")
    return params[name]
