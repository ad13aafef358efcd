"""Docs that cannot drift: every shell command shown in README.md and docs/ parses, names real params and paths.

A fenced block marked ``bash``, ``sh``, ``shell`` or ``console`` is read line by line (``$ `` prompts and
``\\`` continuations handled). For each command:

- ``ttm-vitaldb``, ``pretrain-vitaldb-ssl``, ``python stages/<x>.py`` and ``torchrun ... -m
  vitalssl.pretrain_vitaldb_ssl`` are parsed by their own argparse parsers (nothing runs);
- ``dvc exp run -S key=value`` names a key of params.yaml, by its full dotted path;
- a path under ``data/``, ``artifacts/`` or ``metrics/`` is one dvc.yaml or params.yaml declares (or lies
  inside one); a path under ``stages/``, ``src/``, ``tests/``, ``benchmarks/`` or ``docs/`` exists.

The parameter reference (docs/parameters.md) lists every key of params.yaml with its default as in the file.
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SHELLS = ("bash", "sh", "shell", "console")
DECLARED_ROOTS = ("data/", "artifacts/", "metrics/")
REPO_ROOTS = ("stages/", "src/", "tests/", "benchmarks/", "docs/")


def shell_commands(path: Path) -> list[tuple[str, int, str]]:
    """``(file, line, command)`` for each command in the file's fenced shell blocks."""
    out, lang, buf, start = [], None, "", 0
    for i, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```+\s*([\w-]*)", line)
        if fence:
            lang = None if lang is not None else fence.group(1).lower()
            continue
        if lang not in SHELLS:
            continue
        text = re.sub(r"^\s*\$ ", "", line).rstrip()
        if not buf:
            start = i
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        cmd = (buf + text).strip()
        buf = ""
        if cmd and not cmd.startswith("#"):
            out.append((path.name, start, cmd))
    return out


def all_commands() -> list:
    return [c for p in DOCS for c in shell_commands(p)]


def simple_commands(cmd: str) -> list[list[str]]:
    """The simple commands of a line: split on ``&&``, ``||``, ``;`` and ``|``; env assignments dropped."""
    try:
        tokens = shlex.split(cmd.split(" #")[0], comments=False)
    except ValueError as e:
        raise AssertionError(f"cannot tokenise {cmd!r}: {e}")
    parts, cur = [], []
    for t in tokens:
        if t in ("&&", "||", ";", "|"):
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    parts.append(cur)
    return [[t for j, t in enumerate(p) if not (re.match(r"^[A-Z_][A-Z0-9_]*=", t) and
                                                 all(re.match(r"^[A-Z_][A-Z0-9_]*=", u) for u in p[:j + 1]))]
            for p in parts if p]


class _Parsed(BaseException):
    """Raised right after argparse accepted the arguments, so that nothing runs."""


def _parse_only(monkeypatch, call) -> None:
    original = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    try:
        call()
    except _Parsed:
        return
    except SystemExit as e:
        raise AssertionError(f"argparse refused it (exit {e.code})")
    raise AssertionError("the command ran without parsing its arguments")


def check_cli(argv: list[str], monkeypatch) -> bool:
    """Parse ``argv`` with the project's parser for it; ``False`` when it is not one of the project's commands."""
    from vitalssl.entry.cli import pretrain_vitaldb_ssl, ttm_vitaldb

    prog, rest = argv[0], argv[1:]
    if prog == "torchrun":
        if "-m" not in rest:
            return False
        i = rest.index("-m")
        prog, rest = rest[i + 1], rest[i + 2:]
    if prog in ("python", "python3") and rest and rest[0] == "-m":
        prog, rest = rest[1], rest[2:]
    if prog in ("ttm-vitaldb",):
        _parse_only(monkeypatch, lambda: ttm_vitaldb(rest))
    elif prog in ("pretrain-vitaldb-ssl", "vitalssl.pretrain_vitaldb_ssl"):
        _parse_only(monkeypatch, lambda: pretrain_vitaldb_ssl(rest))
    elif prog in ("python", "python3") and rest and rest[0].startswith("stages/"):
        script = ROOT / rest[0]
        assert script.is_file(), f"{rest[0]} does not exist"
        monkeypatch.setattr(sys, "argv", [str(script)] + rest[1:])
        _parse_only(monkeypatch, lambda: runpy.run_path(str(script), run_name="__main__"))
    else:
        return False
    return True


def flat_params(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_params(v, key + "."))
        else:
            out[key] = v
    return out


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def check_exp_run(argv: list[str]) -> None:
    keys = flat_params(PARAMS)
    sections = {k.rsplit(".", 1)[0] for k in keys if "." in k}
    for i, t in enumerate(argv):
        if t in ("-S", "--set-param"):
            key = argv[i + 1].split("=", 1)[0]
            assert key in keys or key in sections, f"`-S {argv[i + 1]}`: params.yaml has no key {key!r}"


def declared_paths() -> set[str]:
    """Paths dvc.yaml and params.yaml name, with dvc.yaml's ``${...}`` resolved from its vars and params."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    values = {k: v for d in dvc.get("vars", []) for k, v in d.items()} | flat_params(PARAMS)
    found: set[str] = set()

    def resolve(s: str) -> list[str]:
        if "${item}" in s:
            return [s.replace("${item}", split) for split in ("train", "val", "test")]
        return [re.sub(r"\$\{([\w.]+)\}", lambda m: str(values.get(m.group(1), m.group(0))), s)]

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            for s in resolve(x):
                for tok in s.split():
                    if tok.startswith(DECLARED_ROOTS):
                        found.add(tok.rstrip("/"))
    walk(dvc.get("stages", {}))
    walk(resolve_params_paths())
    return {p for s in found for p in resolve(s)}


def resolve_params_paths() -> list[str]:
    return [v for v in flat_params(PARAMS).values() if isinstance(v, str) and v.startswith(DECLARED_ROOTS)]


OUTPUT_FLAGS = ("--output-dir", "--outdir", "--work-dir", "--metrics", "--plots", "--out")


def made_paths(argv: list[str]) -> set[str]:
    """Paths a command of the project writes, so that later commands in the same page may name them."""
    made = {argv[i + 1].rstrip("/") for i, t in enumerate(argv[:-1]) if t in OUTPUT_FLAGS}
    if "prepare-splits" in argv:  # writes <--output>/splits_<mode>.json
        out = argv[argv.index("--output") + 1] if "--output" in argv else "data"
        mode = argv[argv.index("--mode") + 1] if "--mode" in argv else PARAMS["splits"]["mode"]
        made.add(f"{out.rstrip('/')}/splits_{mode}.json")
    return made


def check_paths(argv: list[str], declared: set[str]) -> None:
    for t in argv:
        for tok in re.split(r"[=,]", t):
            tok = tok.rstrip("/")
            if tok.startswith(DECLARED_ROOTS) and "<" not in tok and "*" not in tok:
                ok = tok in declared or any(tok.startswith(d + "/") for d in declared)
                assert ok, f"path {tok} is not declared by dvc.yaml or params.yaml"
            elif tok.startswith(REPO_ROOTS) and "<" not in tok and "*" not in tok and "::" not in tok:
                assert (ROOT / tok).exists(), f"path {tok} does not exist in the repository"


COMMANDS = all_commands()


def test_the_docs_show_the_projects_commands():
    progs = {argv[0] for _, _, c in COMMANDS for argv in simple_commands(c) if argv}
    assert {"dvc", "pip"} <= progs, progs
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where,line,cmd", COMMANDS, ids=[f"{f}:{n}" for f, n, _ in COMMANDS])
def test_documented_command(where, line, cmd, monkeypatch):
    declared = declared_paths()
    for _, n, earlier in (c for c in COMMANDS if c[0] == where and c[1] < line):
        for argv in simple_commands(earlier):
            if argv and argv[0] in ("ttm-vitaldb", "pretrain-vitaldb-ssl", "torchrun", "python", "python3"):
                declared |= made_paths(argv)
    for argv in simple_commands(cmd):
        declared |= made_paths(argv)
        try:
            if argv[:3] == ["dvc", "exp", "run"]:
                check_exp_run(argv)
            check_cli(argv, monkeypatch)
            check_paths(argv, declared)
        except AssertionError as e:
            raise AssertionError(f"{where}:{line}: {cmd}\n  {e}") from None


def reference_rows(path: Path) -> dict:
    """``{key: default}`` of the rows ``| `key` | `default` | ...`` of the parameter reference."""
    rows = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\|\s*`([\w.]+)`\s*\|\s*`([^`]*)`\s*\|", line)
        if m:
            rows[m.group(1)] = yaml.safe_load(m.group(2))
    return rows


def test_parameter_reference_lists_every_key_with_its_default():
    ref = ROOT / "docs" / "parameters.md"
    assert ref.is_file(), "docs/parameters.md is missing"
    rows = reference_rows(ref)
    keys = flat_params(PARAMS)
    missing = sorted(set(keys) - set(rows))
    assert not missing, f"docs/parameters.md lacks {missing}"
    unknown = sorted(set(rows) - set(keys))
    assert not unknown, f"docs/parameters.md lists keys params.yaml does not have: {unknown}"
    wrong = {k: (rows[k], keys[k]) for k in keys if rows[k] != keys[k]}
    assert not wrong, f"defaults differ from params.yaml (doc, file): {wrong}"


def test_the_checks_catch_a_mistyped_flag_key_and_path(monkeypatch):
    with pytest.raises(AssertionError, match="argparse refused"):
        check_cli(["pretrain-vitaldb-ssl", "--data-dir", "x", "--mask-ratoi", "0.6"], monkeypatch)
    with pytest.raises(AssertionError, match="no key 'mask_rato'"):
        check_exp_run(["dvc", "exp", "run", "-S", "mask_rato=0.6"])
    with pytest.raises(AssertionError, match="not declared"):
        check_paths(["data/vitaldb_windowz/train_windows.npy"], declared_paths())
    assert check_cli(["ttm-vitaldb", "build-windows", "--split-file", "data/splits.json", "--split", "train"],
                     monkeypatch)


def test_result_tables_are_the_committed_metrics():
    """README's headline and docs/results.md's tables are rendered from the evaluation metrics: rerun
    `python -m vitalssl.eval.modelcard README.md docs/results.md` after `dvc repro` if this fails."""
    import json

    from vitalssl.eval.modelcard import refresh_doc
    metrics = json.loads((ROOT / "metrics" / "evaluate.json").read_text())
    eff = json.loads((ROOT / "metrics" / "label_efficiency.json").read_text())
    for doc in ("README.md", "docs/results.md"):
        text = (ROOT / doc).read_text()
        assert refresh_doc(ROOT / doc, metrics, eff) == text, f"{doc}'s tables differ from the metrics"
    assert eff["split"] == "test"
    age = eff["tasks"]["age"]["100pct"]["beat_linear"]["mae"]["value"]
    assert f"| {age:.2f} [" in (ROOT / "README.md").read_text()
    hr = metrics["test"]["tasks"]["hr"]["pretrained_mean"]["r2"]["value"]
    assert f"| hr | R² | {hr:.3f} [" in (ROOT / "README.md").read_text()  # the test split's, not val's


def test_the_efficiency_table_quotes_the_recorded_budget_and_marks_networks_that_never_moved():
    """The caption is the stage's budget, not a literal; a trained network whose best val loss was at step 0
    carries a mark, and metrics from before the budget was recorded are refused with the fix."""
    import json

    from vitalssl.eval.modelcard import efficiency_table
    eff = json.loads((ROOT / "metrics" / "label_efficiency.json").read_text())
    eff["budget"] = dict(eff["budget"], max_steps=77, patience=5)
    lines = efficiency_table(eff)
    assert "at most 77 steps" in lines[0] and "patience 5" in lines[0]
    marked = {(t, f, m) for t, r in eff["tasks"].items() for f, e in r.items() if isinstance(e, dict)
              for m in ("finetune", "scratch") if isinstance(e.get(m), dict) and e[m]["best_step"] == 0}
    assert len(marked) > 0
    assert sum(line.count(" †") for line in lines[4:]) == len(marked)
    del eff["budget"]
    with pytest.raises(ValueError, match="dvc repro label-efficiency"):
        efficiency_table(eff)


def test_the_efficiency_table_of_several_draws_says_so_and_counts_the_marks():
    from vitalssl.eval.modelcard import efficiency_table
    cell = {"draws": 3, "subjects": [8, 8, 8], "n_train": [290, 301, 299],
            **{m: {"mae": {"value": 7.0, "ci_low": 5.0, "ci_high": 9.0, "draws": [6.0, 7.0, 8.0]}, "steps": [30, 30, 60],
                   "best_step": b} for m, b in (("frozen_linear", None), ("finetune", [0, 0, 30]),
                                                ("scratch", [0, 0, 0]), ("beat_linear", None))}}
    eff = {"fractions": [0.2], "tasks": {"map": {"metric": "mae", "20pct": cell}},
           "budget": {"draws": 3, "max_steps": 150, "eval_every": 10, "patience": 3, "batch_size": 64,
                      "finetune_from_probe": True}}
    lines = efficiency_table(eff)
    assert "the mean of 3 draws" in lines[0] and "spanning" in lines[0]
    assert lines[-1] == "| map | MAE | 20% (8) | 7.00 [5.00, 9.00] | 7.00 [5.00, 9.00] † 2/3 | 7.00 [5.00, 9.00] † | 7.00 [5.00, 9.00] |"
    cell["subjects"] = [7, 8, 8]
    assert "| 20% (7-8) |" in efficiency_table(eff)[-1]
    cell["draws"] = 2                                        # one draw skipped: the row says how many are pooled
    assert "| 20% (7-8; 2 of 3 draws) |" in efficiency_table(eff)[-1]
