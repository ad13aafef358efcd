"""The user's DVC commands, end to end, in a throwaway git repo with a small demo."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

pytestmark = [pytest.mark.slow,  # real dvc repro runs: CI runs them with `-m slow`
              pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None,
                                 reason="needs the dvc and git executables")]


def sh(cwd, *cmd, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout + r.stderr


def new_repo(root: Path) -> Path:
    """A throwaway git + DVC repo at ``root`` with the project's pipeline and a small demo."""
    for item in ("dvc.yaml", "params.yaml", "stages", "src", ".gitignore"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / item,
                                                            **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                               if src.is_dir() else {}))
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["demo"].update(n_cases=10, n_subjects=10, duration_s=[120, 150])
    p["splits"].update(fasttrack_cases=10, train=0.6, val=0.2, test=0.2)
    p["windows"]["num_workers"] = 1
    p.update(epochs=30, batch_size=32, warmup_epochs=1, save_interval=10)
    p["model"].update(d_model=16, num_layers=1)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "t@example.invalid")
    sh(root, "git", "config", "user.name", "t")
    sh(root, "dvc", "init", "-q")
    sh(root, "dvc", "config", "core.analytics", "false")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "init")
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return new_repo(tmp_path_factory.mktemp("dvcrepo"))


def _state_epoch(path: Path):
    from vitalssl.ssl.checkpoint import load_checkpoint
    try:
        return load_checkpoint(path)["epoch"]
    except Exception:  # absent, or replaced while being read
        return None


def test_repro_killed_mid_training_resumes(repo):
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    state = repo / "artifacts" / ".foundation_model.resume" / "state.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        e = _state_epoch(state) if state.exists() else None
        if e is not None and e >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _state_epoch(state)
    assert done is not None and done < 29
    out = sh(repo, "dvc", "repro")
    assert f"Resuming from artifacts/.foundation_model.resume/state.pt after epoch {done + 1}/30" in out
    hist = json.loads((repo / "artifacts/foundation_model/training_history.json").read_text())["epochs"]
    assert [h["epoch"] for h in hist] == list(range(1, 31))
    assert not state.exists()
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")


def test_user_commands(repo):
    if not (repo / "metrics" / "pretrain.json").exists():
        sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline run")
    base = json.loads((repo / "metrics" / "pretrain.json").read_text())
    assert base["zero_fill_val_msm"] > 0.5 and "windows_kept" in json.loads(
        (repo / "metrics" / "windows_train.json").read_text())

    out = sh(repo, "dvc", "exp", "run", "-S", "mask_ratio=0.6")
    assert "pretrain" in out
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["mask_ratio"] == 0.6
    ckpt_cfg = json.loads((repo / "artifacts/foundation_model/training_config.json").read_text())
    assert ckpt_cfg["mask_ratio"] == 0.6

    diff = sh(repo, "dvc", "metrics", "diff", "--json")
    d = json.loads(diff)
    assert "metrics/pretrain.json" in d and "best.val_loss" in d["metrics/pretrain.json"]
    assert "val.reconstruction.random_r40.model.all" in d["metrics/evaluate.json"]
    moved = [k for k in d["metrics/evaluate.json"] if k.startswith("test.tasks.") and k.endswith(".value")]
    assert len({k.split(".")[2] for k in moved if ".pretrained_" in k}) >= 2, moved   # tasks move with the encoder
    assert all(d["metrics/evaluate.json"][k]["diff"] != 0 for k in moved)

    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    text = json.dumps(shown)
    assert "mask_ratio" in text and "0.6" in text and "best" in text

    sh(repo, "dvc", "plots", "diff", "-o", "plots_out")
    html = (repo / "plots_out" / "index.html").read_text()
    assert "val_loss" in html and "val_msm" in html
    assert "evaluate_reconstruction.png" in html and "evaluate_probes.png" in html


WINDOWS = ("build-windows@train", "build-windows@val", "build-windows@test")


@pytest.mark.parametrize("module,stages", [
    ("src/vitalssl/data/config.py", {"demo", "prepare-splits", *WINDOWS}),
    ("src/vitalssl/data/quality.py", {"demo", "prepare-splits", *WINDOWS}),
    ("src/vitalssl/windowfile.py", {"demo", "prepare-splits", *WINDOWS,
                                    "pretrain", "evaluate"}),
    ("src/vitalssl/ssl/losses.py", {"pretrain", "evaluate"}),
    ("src/vitalssl/eval/baselines.py", {"evaluate"}),
    ("src/vitalssl/entry/params.py", {"demo", "prepare-splits", *WINDOWS,
                                      "pretrain", "evaluate"}),
])
def test_an_edit_to_an_imported_module_makes_its_stages_stale(repo, module, stages):
    if not (repo / "metrics" / "pretrain.json").exists():
        sh(repo, "dvc", "repro")
    path = repo / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        status = json.loads(sh(repo, "dvc", "status", "--json"))
    finally:
        path.write_text(original)
    assert {name for name, changes in status.items() if any("changed deps" in c for c in changes
                                                             if isinstance(c, dict))} >= stages, status
    assert set(status) & {"demo", "prepare-splits", *WINDOWS, "pretrain",
                          "evaluate"} == stages, status


def test_bad_exp_run_setting_ends_in_one_line(repo):
    """One end-to-end check; tests/test_bad_inputs.py runs every other bad setting through the stages in-process."""
    setting, message = "mask_type=foo", "error: invalid param `mask_type (--mask-type)`: 'foo' is not random or block"
    if not (repo / "metrics" / "pretrain.json").exists():
        sh(repo, "dvc", "repro")
    params = (repo / "params.yaml").read_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run(["dvc", "exp", "run", "-S", setting], cwd=repo, capture_output=True, text=True, env=env)
    finally:
        (repo / "params.yaml").write_text(params)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out
    assert [ln for ln in out.splitlines() if ln.startswith("error: ")] == [message], out


def test_repro_on_the_vitaldb_source_equals_the_local_source(tmp_path):
    """`dvc repro` of the data stages with `data.source: vitaldb` against a real HTTP server on 127.0.0.1
    (VitalDB's API layout: the case files, /cases and /trks) gives the splits and windows that the same
    files give through `data.source: local`, byte for byte."""
    from vitaldb_server import VitalServer
    from vitalssl.data.vitalfile import list_tracks

    (tmp_path / "repo").mkdir()
    root = new_repo(tmp_path / "repo")
    sh(root, "dvc", "repro", "-q", "demo")
    demo = root / "data" / "demo"
    files = {int(f.stem): f.read_bytes() for f in demo.glob("*.vital")}
    trks = "caseid,tname,tid\n" + "".join(f"{c},{t},{c * 100 + i}\n" for c in sorted(files)
                                           for i, t in enumerate(list_tracks(demo / f"{c}.vital")))
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = ("prepare-splits", "build-windows@train", "build-windows@val")
    names = ("train_windows.npy", "train_windows.meta.csv", "train_windows.decisions.csv", "val_windows.npy",
             "val_windows.meta.csv")

    def run(**data) -> dict:
        p = {**params, "data": {**params["data"], **data}}
        (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        sh(root, "dvc", "repro", "-q", *stages)
        splits = json.loads((root / "data" / "splits.json").read_text())
        out = {n: (root / "data" / "vitaldb_windows" / n).read_bytes() for n in names}
        out["splits"] = {s: splits[s] for s in ("train", "val", "test")}
        return out

    local = run(source="local", local_dir=str(demo), clinical_csv=str(demo / "clinical.csv"))
    with VitalServer(files, {"cases": (demo / "clinical.csv").read_bytes(), "trks": trks.encode()}) as server:
        remote = run(source="vitaldb", api_url=server.url, cache_dir=str(tmp_path / "cache"), download_retries=0)
    assert len(local["splits"]["train"]["caseids"]) >= 4
    assert remote["splits"] == local["splits"]
    for n in names:
        assert remote[n] == local[n], n
    assert {int(f.stem) for f in (tmp_path / "cache").glob("*.vital")} == \
        set(local["splits"]["train"]["caseids"]) | set(local["splits"]["val"]["caseids"])
