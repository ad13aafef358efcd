"""Pretraining never deletes what it did not make, keeps every resume state it does not continue, and refuses
damaged checkpoints by name. Each test checks the exit code, the one ``error:`` line and that the user's files
and earlier outputs are byte-identical afterwards."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
import torch

from test_bad_inputs import Env, _digest, quiet_progress_bars, shared  # noqa: F401 (shared is a fixture)
from vitalssl.atomic import atomic_write_text
from vitalssl.ssl.checkpoint import CheckpointError, load_checkpoint, save_atomic
from vitalssl.ssl.folders import MARKER
from vitalssl.ssl.resume import RunKey, key_differences, numeric_config


@pytest.fixture
def env(shared, tmp_path, capsys, monkeypatch):  # noqa: F811
    quiet_progress_bars(monkeypatch)
    return Env(tmp_path, shared, capsys, monkeypatch)


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return _digest(path)


def _fails(r, *names):
    assert r.code == 2, r.err + r.out
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.err, r.err
    for n in names:
        assert n in lines[0], f"{n!r} not in {lines[0]}"


def test_work_dir_holding_user_files_is_refused_untouched(env):
    work = env.root / "scratch"
    before = _user_folder(work)
    r = env.pretrain("--work-dir", work, "--epochs", "1")
    _fails(r, "--work-dir", str(work), "notes.txt", "sub/")
    assert _digest(work) == before and not (env.root / "out").exists()


def test_output_dir_holding_user_files_keeps_them(env):
    out = env.root / "out"
    before = _user_folder(out)
    r = env.pretrain("--epochs", "1")
    assert r.code == 0, r.err
    after = _digest(out)
    assert {k: after[k] for k in before} == before  # the user's files, byte-identical
    assert {"best_model.pt", "last_model.pt", "training_history.json"} <= set(after)
    assert MARKER not in after  # the run did not make this folder, so it never claims it
    assert not (env.root / ".out.resume").exists()  # the work dir it made is gone
    r = env.pretrain("--epochs", "1", "--fresh")  # publishing again replaces only the run's own names
    assert r.code == 0 and {k: _digest(out)[k] for k in before} == before


@pytest.mark.parametrize("case", ["file", "dot", "work", "inside-work", "old-in-the-way", "data"])
def test_output_dirs_that_cannot_be_published_to_fail_at_start(env, case):
    windows = env.windows()
    work = env.root / "w"
    out = {"file": env.root / "model.pt", "dot": ".", "work": work, "inside-work": work / "o",
           "old-in-the-way": env.root / "res", "data": windows.parent}[case]
    if case == "file":
        out.write_bytes(b"a user's file")
    if case == "old-in-the-way":
        _user_folder(env.root / "res.old")
    params = env.pretrain_params()
    before = _digest(env.root)
    epochs = []
    import vitalssl.ssl.train as train_mod
    env.monkeypatch.setattr(train_mod, "train_one_epoch", lambda *a, **k: epochs.append(1))
    r = env._call(train_mod_cli(), ["--config", str(params), "--data-dir", str(windows),
                                    "--output-dir", str(out), "--work-dir", str(work)])
    _fails(r, "--output-dir", str(out))
    assert not epochs and _digest(env.root) == before
    assert not (env.root / "model.pt.old").exists()


def train_mod_cli():
    from vitalssl.entry.cli import pretrain_vitaldb_ssl
    return pretrain_vitaldb_ssl


def test_metrics_path_that_is_a_folder_fails_before_training(env):
    (env.root / "m").mkdir()
    r = env.pretrain("--metrics", env.root / "m")
    _fails(r, "--metrics", str(env.root / "m"), "folder")
    assert not (env.root / "out").exists()


# --------------------------------------------------------------------------- resume states

def test_run_key_ignores_harmless_flags_and_names_what_differs(env):
    from vitalssl.entry.cli import config_from_args, pretrain_parser
    base = ["--config", str(env.pretrain_params()), "--data-dir", "d"]
    cfg = config_from_args(pretrain_parser().parse_args(base))
    key = numeric_config(cfg, "cpu", "off")
    for flags in (["--log-interval", "7"], ["--num-workers", "2"], ["--device", "auto"], ["--save-interval", "3"],
                  ["--no-amp"]):
        other = config_from_args(pretrain_parser().parse_args(base + flags))
        assert numeric_config(other, "cpu", "off") == key, flags
    lr = numeric_config(config_from_args(pretrain_parser().parse_args(base + ["--lr", "0.1"])), "cpu", "off")
    parts = dict(code="c", data="d", world_size=1)
    assert RunKey.of(config=lr, **parts).digest != RunKey.of(config=key, **parts).digest
    assert key_differences({"config": key, **parts}, {"config": lr, **parts}) == [f"config.lr ({cfg.lr} -> 0.1)"]
    assert key_differences({"config": key, **parts}, {"config": key, **parts, "code": "x"}) == ["code"]
    assert numeric_config(cfg, "cuda", "bfloat16") != key  # another device kind draws other masks


def test_interrupted_run_resumes_after_a_harmless_flag_changes(env):
    import shutil
    shutil.copytree(env.shared["state"], env.root / ".out.resume")
    r = env.pretrain("--log-interval", "3", "--num-workers", "0", "--save-interval", "5")
    assert r.code == 0, r.err
    assert "Resuming from" in r.out and "after epoch 1/2" in r.out and "another run" not in r.out
    hist = json.loads((env.root / "out" / "training_history.json").read_text())["epochs"]
    assert [h["epoch"] for h in hist] == [1, 2]


@pytest.mark.parametrize("content,what", [(b"", "empty file"), (b"<!DOCTYPE html><html>", "an HTML page"),
                                          (os.urandom(4096), "not a torch checkpoint"), ("cut", "truncated")])
def test_bad_state_is_named_and_moved_beside_the_work_dir(env, content, what):
    import shutil
    work = env.root / ".out.resume"
    shutil.copytree(env.shared["state"], work)
    state = work / "state.pt"
    data = state.read_bytes()[:3000] if content == "cut" else content
    state.write_bytes(data)
    r = env.pretrain("--resume")
    _fails(r, "--resume", str(state), what)
    assert state.read_bytes() == data  # --resume leaves it in place
    r = env.pretrain("--epochs", "1")  # as `dvc repro pretrain` re-runs it
    assert r.code == 0, r.err
    [aside] = list(env.root.glob(".out.resume.corrupt-*"))
    assert (aside / "state.pt").read_bytes() == data
    assert not list((env.root / "out").glob("*corrupt*"))  # nothing of it in the published model
    assert [ln for ln in r.out.splitlines() if what in ln and str(aside) in ln]


# --------------------------------------------------------------------------- checkpoints

def _tensor_offset(path):
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2


def test_a_flipped_byte_in_a_tensor_is_refused(tmp_path):
    path = tmp_path / "best_model.pt"
    save_atomic({"epoch": 0, "encoder_state_dict": {"w": torch.arange(4096.0)}, "config": {}}, path)
    assert torch.equal(load_checkpoint(path)["encoder_state_dict"]["w"], torch.arange(4096.0))
    data = bytearray(path.read_bytes())
    data[_tensor_offset(path)] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path}: encoder_state_dict does not match the checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize("content,what", [(b"", "empty file (0 bytes)"), (b"<html><body>404</body></html>",
                                                                          "an HTML page"),
                                          (b"\x80\x02garbage", "not a torch checkpoint or is corrupt")])
def test_bad_best_model_is_named(tmp_path, content, what):
    path = tmp_path / "best_model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and what in str(e.value) and "could run code" not in str(e.value)


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import vitalssl.atomic as atomic
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    atomic_write_text(tmp_path / "x.json", "{}")
    assert events == [("fsync", str(tmp_path / f"x.{os.getpid()}.tmp.json")), ("replace", str(tmp_path / "x.json")),
                      ("fsync", str(tmp_path))]


@pytest.mark.slow  # two processes, or the whole chain: CI runs it with -m slow
def test_a_checkpoint_saved_by_two_processes_has_the_same_bytes(tmp_path):
    """The same checkpoint, saved in two processes (two pids, so two temporary names), is the same file:
    `dvc repro` reproduces the model files byte for byte."""
    import subprocess
    import sys
    code = ("import sys, torch; from vitalssl.ssl.checkpoint import save_atomic; "
            "torch.manual_seed(0); save_atomic({'epoch': 3, 'model_state_dict': torch.nn.Linear(4, 2).state_dict()}, "
            "sys.argv[1])")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name / "best_model.pt")], check=True)
    a, b = (tmp_path / "a" / "best_model.pt").read_bytes(), (tmp_path / "b" / "best_model.pt").read_bytes()
    assert len(a) > 1000 and a == b
