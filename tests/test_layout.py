"""The package's shape: two wings that never import each other, and a DVC graph that covers every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

PKG = ROOT / "src" / "vitalssl"


def module_path(name: str) -> Path | None:
    """The project file of module ``vitalssl.x.y``, or None for a module outside the project."""
    if name != "vitalssl" and not name.startswith("vitalssl."):
        return None
    base = ROOT / "src" / Path(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def imports_of(path: Path) -> set[Path]:
    """Project files ``path`` imports anywhere in its body (top level or inside functions), and the
    ``__init__.py`` files of the packages on the way."""
    tree = ast.parse(path.read_text())
    src = ROOT / "src"
    pkg_parts = list(path.relative_to(src).parts[:-1]) if src in path.parents else []  # relative imports resolve here
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from . import x` imports module x
    out = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            p = module_path(".".join(parts[:i]))
            if p is not None:
                out.add(p)
    return out


def closure(start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(imports_of(p) - seen)
    return seen


def stage_deps() -> dict[str, list[Path]]:
    """Each stage's (foreach-expanded) ``deps`` that are code, as absolute paths."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = {}
    for name, st in doc["stages"].items():
        body = st.get("do", st)
        out[name] = [ROOT / d for d in body["deps"] if d.startswith(("src/", "stages/"))]
    return out


def stage_scripts() -> dict[str, Path]:
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = {}
    for name, st in doc["stages"].items():
        cmd = st.get("do", st)["cmd"].split()
        out[name] = ROOT / cmd[cmd.index("python") + 1]
    return out


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(stage_scripts()))
def test_every_file_a_stage_imports_is_one_of_its_deps(stage):
    script = stage_scripts()[stage]
    files = closure(script)
    assert script in files and len(files) > 3
    missing = sorted(str(p.relative_to(ROOT)) for p in files if not covered(p, stage_deps()[stage]))
    assert not missing, f"stage {stage} imports {missing} but dvc.yaml does not list them in its deps"


def test_closure_follows_relative_and_nested_imports():
    files = {str(p.relative_to(PKG)) for p in closure(ROOT / "stages" / "pretrain.py") if PKG in p.parents}
    # stages/pretrain.py -> entry.pretrain_stage -> ssl.train -> ssl.losses -> ssl.masking ...
    assert {"entry/pretrain_stage.py", "ssl/train.py", "ssl/losses.py", "ssl/masking.py", "windowfile.py",
            "config.py", "ssl/checkpoint.py"} <= files
    # checkpoint.rebuild_model imports the model inside the function: still followed
    assert "ssl/model.py" in {str(p.relative_to(PKG)) for p in imports_of(PKG / "ssl" / "checkpoint.py")}


def test_the_two_wings_never_import_each_other():
    for wing, other in (("data", "ssl"), ("ssl", "data"), ("data", "eval"), ("eval", "data"), ("ssl", "eval")):
        for f in (PKG / wing).rglob("*.py"):
            bad = [p for p in imports_of(f) if (PKG / other) in p.parents]
            assert not bad, f"{f.relative_to(PKG)} imports {[str(p.relative_to(PKG)) for p in bad]}"


def test_root_modules_import_no_wing():
    for f in PKG.glob("*.py"):
        if f.name == "pretrain_vitaldb_ssl.py":  # the `python -m` launcher of the command line
            continue
        wings = [p for p in imports_of(f) if p.parent != PKG]
        assert not wings, f"{f.name} imports {[str(p.relative_to(PKG)) for p in wings]}"


def test_only_the_entry_layer_reads_params_or_writes_dvc_metrics():
    for f in PKG.rglob("*.py"):
        if (PKG / "entry") in f.parents:
            continue
        text = f.read_text()
        rel = f.relative_to(PKG)
        assert "import yaml" not in text and "load_params" not in text, f"{rel} reads params.yaml"
        assert "metrics_path" not in text and "plots_path" not in text, f"{rel} writes DVC metrics or plots"


def test_resume_key_hashes_what_the_pretrain_stage_depends_on():
    from vitalssl.ssl.fingerprint import PRETRAIN_CODE, code_files

    deps = {p for p in stage_deps()["pretrain"] if (ROOT / "src") in p.parents}
    assert deps == {PKG / part for part in PRETRAIN_CODE}
    assert {p for p in closure(ROOT / "stages" / "pretrain.py") if (ROOT / "src") in p.parents} <= set(code_files())


def test_every_training_param_is_a_param_of_the_pretrain_stage():
    """A param the training reads but dvc.yaml does not list would let `dvc exp run -S` skip the stage."""
    import dataclasses

    from vitalssl.ssl.config import PretrainConfig

    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert set(doc["stages"]["pretrain"]["params"]) == {f.name for f in dataclasses.fields(PretrainConfig)}
    assert doc["stages"]["evaluate"]["params"] == ["evaluate"]
