"""Splits (subject-disjoint, deterministic) and window files (format, memory-map, bad cases, atomicity)."""

import hashlib
import json

import numpy as np
import pytest

from conftest import clean_case, demo_data_config, write_case
from dataclasses import replace

from vitalssl.config import ConfigError
from vitalssl.data.config import SplitConfig
from vitalssl.entry.data_stages import run_build_windows, run_demo, run_prepare_splits
from vitalssl.data.sources import LocalSource
from vitalssl.data.splits import select_cases, split_cases, splits_document

TRACKS = ("SNUADC/PLETH", "SNUADC/ECG_II")
from vitalssl.data.windows import build_split


def _scfg(**kw):
    d = dict(mode="full", case_set="all", fasttrack_cases=70, train=0.7, val=0.15, test=0.15, seed=42)
    d.update(kw)
    return SplitConfig(**d)


def test_splits_are_subject_disjoint_and_follow_ratios():
    cases = list(range(1, 201))
    subj = {c: str(c // 3) for c in cases}  # 3 cases per subject
    out = split_cases(cases, subj, _scfg())
    seen = {}
    for s in ("train", "val", "test"):
        for c in out[s]["caseids"]:
            assert seen.setdefault(subj[c], s) == s, f"subject {subj[c]} in two splits"
    n = {s: len(out[s]["caseids"]) for s in ("train", "val", "test")}
    assert sum(n.values()) == 200 and abs(n["train"] - 140) <= 3 and abs(n["val"] - 30) <= 3
    assert out["case_level_cases"] == []


def test_cases_without_subject_fall_back_to_case_level():
    out = split_cases(list(range(1, 21)), {1: "a", 2: "a"}, _scfg())
    assert sorted(out["case_level_cases"]) == list(range(3, 21))
    doc, _ = splits_document(list(range(1, 21)), {1: "a", 2: "a"}, _scfg(), "local")
    assert doc["provenance"]["subject_level"] is False and doc["provenance"]["case_level_fallback"] == 18


def test_empty_split_fails_naming_it():
    with pytest.raises(ValueError, match="split 'val' is empty"):
        split_cases([1, 2], None, _scfg())


def test_fasttrack_selects_fixed_number_within_case_set():
    avail = list(range(1, 500))
    case_set = set(range(1, 500, 2))
    sel = select_cases(avail, case_set, _scfg(mode="fasttrack"))
    assert len(sel) == 70 and set(sel) <= case_set and sel == select_cases(avail, case_set, _scfg(mode="fasttrack"))
    with pytest.raises(ValueError, match="fasttrack needs 70"):
        select_cases(list(range(1, 20)), None, _scfg(mode="fasttrack"))


def test_split_config_rejects_bad_ratios():
    with pytest.raises(ConfigError, match="sum to 1"):
        _scfg(train=0.8)
    with pytest.raises(ConfigError, match="splits.mode"):
        _scfg(mode="fast")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, params):
    """The demo -> prepare-splits -> build-windows path on a small demo."""
    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig, WindowConfig
    root = tmp_path_factory.mktemp("demo_run")
    dcfg = replace(from_dict(DemoConfig, params["demo"], "demo"), n_cases=12, n_subjects=9, duration_s=(120, 180))
    data = demo_data_config(root / "demo")
    run_demo(dcfg, root / "demo", progress=False)
    scfg = _scfg(mode="fasttrack", fasttrack_cases=12, case_set="bis", train=0.5, val=0.25, test=0.25)
    run_prepare_splits(data, scfg, root / "splits.json", TRACKS)
    w = dict(params["windows"])
    wcfg = from_dict(WindowConfig, w, "windows")
    report = run_build_windows(data, wcfg, root / "splits.json", "train", root / "win", root / "m.json",
                               progress=False)
    return root, data, scfg, wcfg, report


def test_prepare_splits_is_byte_identical_and_subject_disjoint(demo_run, tmp_path):
    root, data, scfg, _, _ = demo_run
    run_prepare_splits(data, scfg, tmp_path / "again.json", TRACKS)
    assert (root / "splits.json").read_bytes() == (tmp_path / "again.json").read_bytes()
    doc = json.loads((root / "splits.json").read_text())
    subj = [set(doc[s]["subjects"]) for s in ("train", "val", "test")]
    assert not (subj[0] & subj[1] or subj[0] & subj[2] or subj[1] & subj[2])
    assert doc["provenance"]["counts"]["train"] == len(doc["train"]["caseids"]) > 0
    assert doc["provenance"]["source"] == "demo" and doc["provenance"]["subject_level"] is True


def test_window_file_format_and_memory_map(demo_run):
    root, _, _, wcfg, report = demo_run
    x = np.load(root / "win" / "train_windows.npy", mmap_mode="r")
    assert isinstance(x, np.memmap) and x.dtype == np.float32 and x.shape[1:] == (2, 1250)
    assert x.shape[0] == report["windows_kept"] > 0
    assert report["windows_kept"] + report["windows_rejected"] == report["windows_total"]
    sample = np.asarray(x[: min(len(x), 50)])
    np.testing.assert_allclose(sample.mean(-1), 0, atol=1e-4)
    np.testing.assert_allclose(sample.std(-1), 1, atol=1e-3)
    meta = (root / "win" / "train_windows.meta.csv").read_text().splitlines()
    assert len(meta) == len(x) + 1 and meta[0].startswith("caseid,subjectid,start_s")
    header = meta[0].split(",")
    row = dict(zip(header, meta[1].split(",")))
    assert float(row["label_hr"]) > 30 and 0 <= float(row["label_bis"]) <= 100 and row["subjectid"]
    info = json.loads((root / "win" / "train_windows.json").read_text())
    assert info["channels"] == ["PPG", "ECG"] and info["count"] == len(x)
    assert json.loads((root / "m.json").read_text())["windows_kept"] == len(x)
    truth = report["gate_vs_demo_faults"]
    assert truth["faulted_rejected_frac"] == truth["faulted_rejected"] / truth["faulted"]
    assert truth["rejection_precision"] == truth["faulted_rejected"] / (
        truth["faulted_rejected"] + truth["clean"] - truth["clean_kept"])


def test_build_windows_is_deterministic(demo_run, tmp_path):
    root, data, _, wcfg, _ = demo_run
    run_build_windows(data, replace(wcfg, num_workers=2), root / "splits.json", "train", tmp_path, None,
                      progress=False)
    for name in ("train_windows.npy", "train_windows.meta.csv", "train_windows.decisions.csv", "train_gate.png",
                 "train_windows.json"):
        a = hashlib.sha256((root / "win" / name).read_bytes()).hexdigest()
        b = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        if name.endswith(".json"):
            continue  # records num_workers, which differs here
        assert a == b, name


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_cases_are_reported_and_skipped(tmp_path, wcfg, workers):
    d = tmp_path / "local"
    d.mkdir()
    ppg, ecg = clean_case(40)
    write_case(d / "1.vital", 1, ppg, ecg, 40)                      # good
    write_case(d / "2.vital", 2, None, ecg, 40)                     # missing PPG
    (d / "3.vital").write_bytes(b"garbage")                         # corrupt
    write_case(d / "4.vital", 4, ppg[::2], ecg[::2], 40, srate=250)  # wrong rate
    good = (d / "1.vital").read_bytes()
    (d / "5.vital").write_bytes(good[: len(good) // 2])             # truncated
    src = LocalSource("local", d, None)
    cases = [(c, None) for c in (1, 2, 3, 4, 5, 6)]                  # 6: unknown case id
    report = build_split(src, cases, replace(wcfg, num_workers=workers), tmp_path / "out", "train", progress=False)
    assert report["cases_read"] == 1 and report["cases_failed"] == 5
    assert report["cases_failed_by_reason"] == {"missing_track": 1, "unreadable": 1, "truncated": 1,
                                                "wrong_srate": 1, "unknown_case": 1}
    assert {f["caseid"] for f in report["failed_cases"]} == {2, 3, 4, 5, 6}
    assert np.load(tmp_path / "out" / "train_windows.npy").shape == (4, 2, 1250)


@pytest.mark.parametrize("workers", [1, 2])
def test_nothing_usable_fails_and_leaves_no_window_file(tmp_path, wcfg, workers):
    d = tmp_path / "local"
    d.mkdir()
    (d / "3.vital").write_bytes(b"garbage")
    write_case(d / "4.vital", 4, None, clean_case(40)[1], 40)
    with pytest.raises(RuntimeError, match="no usable window"):
        build_split(LocalSource("local", d, None), [(3, None), (4, None)], replace(wcfg, num_workers=workers),
                    tmp_path / "out", "val", progress=False)
    assert not list((tmp_path / "out").iterdir())


def test_window_params_are_validated(params):
    from vitalssl.config import from_dict
    from vitalssl.data.config import WindowConfig
    w = dict(params["windows"])
    with pytest.raises(ConfigError, match="windows.target_srate"):
        from_dict(WindowConfig, {**w, "target_srate": 120}, "windows")
    with pytest.raises(ConfigError, match="windows.filter.ecg_band"):
        from_dict(WindowConfig, {**w, "filter": {**w["filter"], "ecg_band": [0.5, 70.0]}}, "windows")
    with pytest.raises(ConfigError, match="unknown param.*windows.bogus"):
        from_dict(WindowConfig, {**w, "bogus": 1}, "windows")
    w2 = dict(w)
    del w2["gate"]
    with pytest.raises(ConfigError, match="missing param `windows.gate`"):
        from_dict(WindowConfig, w2, "windows")


@pytest.mark.slow  # two processes, or the whole chain: CI runs it with -m slow
def test_demo_files_are_byte_identical(tmp_path, params):
    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig
    from vitalssl.data.demo import generate_demo
    cfg = replace(from_dict(DemoConfig, params["demo"], "demo"), n_cases=3, n_subjects=3, duration_s=(60, 60))
    generate_demo(cfg, tmp_path / "a", progress=False)
    import subprocess
    import sys
    import time
    time.sleep(1.1)  # a different second: the gzip header's time field must not leak in
    # another process (another pid, so other temporary names): the gzip header's file name must not leak in
    subprocess.run([sys.executable, "-c", "import sys, pickle; from pathlib import Path; from vitalssl.data.demo import generate_demo; "
                    "generate_demo(pickle.loads(bytes.fromhex(sys.argv[1])), Path(sys.argv[2]), progress=False)",
                    __import__("pickle").dumps(cfg).hex(), str(tmp_path / "b")], check=True)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(names) == 5 and names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n


def test_decisions_table_records_every_window_and_agrees_with_the_report(demo_run):
    import csv
    from vitalssl.data.quality import CRITERIA
    root, _, _, _, report = demo_run
    with open(root / "win" / "train_windows.decisions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["windows_total"]
    kept = [r for r in rows if r["kept"] == "1"]
    assert len(kept) == report["windows_kept"]
    assert all((r["failed"] == "") == (r["kept"] == "1") for r in rows)
    for c in CRITERIA:
        assert sum(c in r["failed"].split(";") for r in rows) == report["rejected_by_criterion"][c], c
    with open(root / "win" / "train_windows.meta.csv", newline="") as f:
        meta = list(csv.DictReader(f))
    # the window file's rows are the kept decisions, in the same order, with the same measures
    assert [(m["caseid"], m["start_s"], m["ecg_hr"]) for m in meta] == [(r["caseid"], r["start_s"], r["ecg_hr"])
                                                                        for r in kept]
    rejected = [r for r in rows if r["kept"] == "0"]
    assert rejected and all(set(r["failed"].split(";")) <= set(CRITERIA) for r in rejected)


def test_gate_figure_is_written_per_split(demo_run):
    from PIL import Image
    root, _, _, _, _ = demo_run
    with Image.open(root / "win" / "train_gate.png") as im:
        w, h = im.size
    assert w > 1000 and h > 1000
    assert not list((root / "win").glob("*.tmp*"))


def test_a_criterion_rejecting_a_whole_case_is_noted_with_a_hint(tmp_path, wcfg):
    """An ECG stored in microvolts loses every window to `amplitude`; the report says which case and why."""
    d = tmp_path / "local"
    d.mkdir()
    ppg, ecg = clean_case(120)
    write_case(d / "1.vital", 1, ppg, ecg, 120)
    write_case(d / "2.vital", 2, ppg, ecg * 1000.0, 120)
    report = build_split(LocalSource("local", d, None), [(1, None), (2, None)], wcfg, tmp_path / "out", "train",
                         progress=False)
    assert report["windows_kept"] == 12 and report["rejected_by_criterion"]["amplitude"] == 12
    assert report["case_warnings"] == [{"caseid": 2, "criterion": "amplitude", "rejected": 12, "windows": 12,
                                        "hint": report["case_warnings"][0]["hint"]}]
    assert "units" in report["case_warnings"][0]["hint"]


def test_a_second_build_into_the_same_folder_fails_at_once_and_changes_nothing(demo_run, tmp_path):
    """Two builds into one folder would interleave their files: while one holds the folder's lock, another
    fails before reading a case, naming the holder's pid, and every file already there is byte-identical."""
    import os

    from vitalssl.atomic import FolderLock
    from vitalssl.data.windows import LOCK_NAME
    root, data, _, wcfg, _ = demo_run
    out = tmp_path / "win"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "train_windows.npy").write_bytes((root / "win" / "train_windows.npy").read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with FolderLock(out, LOCK_NAME, "build-windows"):
        with pytest.raises(RuntimeError, match=rf"another build-windows \(pid {os.getpid()}\) is writing into"):
            run_build_windows(data, wcfg, root / "splits.json", "train", out, None, progress=False)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME}
    assert not (out / LOCK_NAME).exists()  # the holder removed it on release
    assert after == before
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_temporary_names_are_unique_per_process(tmp_path):
    """A second run's temporary file never is the first's: the names carry the process id."""
    import os
    import subprocess
    import sys

    from vitalssl.atomic import is_tmp, tmp_path as tmp_name
    mine = tmp_name(tmp_path / "train_windows.npy")
    other = subprocess.run([sys.executable, "-c", "import sys; from vitalssl.atomic import tmp_path; "
                            "print(tmp_path(sys.argv[1]))", str(tmp_path / "train_windows.npy")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert mine.name == f"train_windows.{os.getpid()}.tmp.npy" and is_tmp(mine) and is_tmp(other)
    assert other != str(mine)


def test_temporaries_of_finds_only_unfinished_writes_of_that_file(tmp_path):
    """Leftovers of any process's write of x.npy are found; a user's file with a similar name is not."""
    from vitalssl.atomic import temporaries_of
    target = tmp_path / "train_windows.npy"
    names = ["train_windows.123.tmp.npy", "train_windows.9.tmp.npy",          # unfinished writes
             "train_windows.backup.tmp.npy", "train_windows.12a.tmp.npy",     # a user's own files
             "train_windows.123.tmp.json", "val_windows.123.tmp.npy", "train_windows.npy"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "train_windows.77.tmp.npy").mkdir()                           # a folder is never a leftover
    assert [p.name for p in temporaries_of(target)] == ["train_windows.123.tmp.npy", "train_windows.9.tmp.npy"]
    assert temporaries_of(tmp_path / "absent" / "x.npy") == []


def test_a_window_file_that_disagrees_with_its_header_or_sidecar_is_refused(demo_run, tmp_path):
    """Bytes beyond the header's count (two builds interleaved) or a sidecar from another build are named at open."""
    import json

    from vitalssl.windowfile import WindowDataset
    root = demo_run[0]
    src = root / "win" / "train_windows.npy"
    grown = tmp_path / "a" / "train_windows.npy"
    grown.parent.mkdir()
    grown.write_bytes(src.read_bytes() + b"\0" * 4 * 2 * 1250)
    with pytest.raises(ValueError, match=r"train_windows\.npy: its header says .* but the file has \d+ bytes"):
        WindowDataset(grown, ("PPG", "ECG"))
    other = tmp_path / "b" / "train_windows.npy"
    other.parent.mkdir()
    other.write_bytes(src.read_bytes())
    info = json.loads((root / "win" / "train_windows.json").read_text())
    info["count"] += 61
    (other.parent / "train_windows.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=rf"holds {info['count'] - 61} windows but its sidecar train_windows.json "
                                         rf"says count {info['count']}"):
        WindowDataset(other, ("PPG", "ECG"))
    for key, value in (("count", str(info["count"] - 61)), ("count", float(info["count"] - 61)), ("window_len", 1000)):
        bad = {**info, "count": info["count"] - 61, key: value}
        (other.parent / "train_windows.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=rf"its sidecar train_windows.json says {key} {value!r}"):
            WindowDataset(other, ("PPG", "ECG"))


@pytest.mark.slow
def test_two_concurrent_builds_into_one_folder(tmp_path, params):
    """Two real `ttm-vitaldb build-windows` processes into one folder, stride 10 s and 5 s, the second started
    while the first runs: the second fails naming the first's pid, and the first publishes exactly a clean
    build's files (before the lock, 3 of 3 such trials published a corrupt window file)."""
    import copy

    import yaml
    import shutil
    import subprocess
    import sys
    import time

    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig
    root = tmp_path
    dcfg = replace(from_dict(DemoConfig, params["demo"], "demo"), n_cases=16, n_subjects=12, duration_s=(900, 900))
    run_demo(dcfg, root / "demo", progress=False)
    data = demo_data_config(root / "demo")
    run_prepare_splits(data, _scfg(mode="fasttrack", fasttrack_cases=16, case_set="bis", train=0.5, val=0.25,
                                   test=0.25), root / "splits.json", TRACKS)
    p = copy.deepcopy(params)
    p["data"]["demo_dir"] = str(root / "demo")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    (tmp_path / "stride5.yaml").write_text("stride_s: 5.0\n")
    out = tmp_path / "both"
    cmd = [shutil.which("ttm-vitaldb"), "build-windows", "--params", str(tmp_path / "params.yaml"),
           "--split-file", str(root / "splits.json"), "--split", "train", "--outdir", str(out)]
    subprocess.run([*cmd[:-1], str(root / "win")], check=True, capture_output=True)  # a clean build to compare with
    # the second is started first, imported and waiting: it calls the CLI the moment the first holds the lock
    waiter = ("import os, sys, time\n"
              "import vitalssl.entry.data_stages, vitalssl.data.windows, vitalssl.data.gatefigure, matplotlib.pyplot\n"
              "from vitalssl.entry.cli import ttm_vitaldb\n"
              "lock, ready = sys.argv[1], sys.argv[2]\n"
              "open(ready, 'w').close()\n"
              "while not (os.path.exists(lock) and open(lock).read().strip()):\n"
              "    time.sleep(0.001)\n"
              "sys.exit(ttm_vitaldb(sys.argv[3:]))\n")
    lock, ready = out / ".build-windows.lock", tmp_path / "ready"
    second = subprocess.Popen([sys.executable, "-c", waiter, str(lock), str(ready), *cmd[1:], "--windows-yaml",
                               str(tmp_path / "stride5.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(6000):  # its imports done
        if ready.exists() or second.poll() is not None:
            break
        time.sleep(0.01)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second_err = second.communicate(timeout=600)[1]
    first_err = first.communicate(timeout=600)[1]
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second_err
    assert f"another build-windows (pid {first.pid}) is writing into this folder" in second_err.splitlines()[-1]
    for name in ("train_windows.npy", "train_windows.meta.csv", "train_windows.decisions.csv"):
        assert (out / name).read_bytes() == (root / "win" / name).read_bytes(), name
    assert not [q.name for q in out.iterdir() if ".tmp" in q.name or q.name == lock.name]


def test_a_window_value_beyond_any_z_score_is_named_at_open(demo_run, tmp_path):
    """A 1e30 in a window file is named with the file and window when it is opened, not as a loss later."""
    import shutil

    from vitalssl.windowfile import WindowDataset
    root = demo_run[0]
    for name in ("train_windows.npy", "train_windows.json"):
        shutil.copy(root / "win" / name, tmp_path / name)
    x = np.load(tmp_path / "train_windows.npy", mmap_mode="r+")
    assert np.abs(x).max() <= np.sqrt(x.shape[-1] - 1) + 1e-3  # what z-scoring allows
    x[7, 1, 100] = 1e30
    x.flush()
    del x
    with pytest.raises(ValueError, match=r"train_windows\.npy: window 7 holds a value of 1e\+30 in magnitude .* "
                                         r"in channel ECG"):
        WindowDataset(tmp_path / "train_windows.npy", ("PPG", "ECG"))


def test_a_killed_builds_temporaries_are_removed_by_the_next_build_and_nothing_else(demo_run, tmp_path):
    """A build killed before its renames leaves `<name>.<pid>.tmp<suffix>` files; the next build of that split
    removes those (its own output names), and leaves a user's files, also ones with `tmp` in their name."""
    root, data, _, wcfg, _ = demo_run
    out = tmp_path / "win"
    out.mkdir()
    left = [out / "train_windows.4242.tmp.npy", out / "train_windows.meta.4242.tmp.csv", out / "train_gate.17.tmp.png"]
    mine = [out / "notes.tmp.txt", out / "train_windows.backup.tmp.npy", out / "val_windows.4242.tmp.npy"]
    for p in left + mine:
        p.write_bytes(b"x")
    run_build_windows(data, wcfg, root / "splits.json", "train", out, None, progress=False)
    assert not any(p.exists() for p in left)
    assert all(p.read_bytes() == b"x" for p in mine)  # not this split's, or not a pid: not its to remove
    assert (out / "train_windows.npy").read_bytes() == (root / "win" / "train_windows.npy").read_bytes()


def test_an_output_folder_that_is_a_file_is_refused_before_any_case(demo_run, tmp_path):
    root, data, _, wcfg, _ = demo_run
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ValueError, match=r"output folder .*afile is a file, not a folder \(--outdir\)"):
        run_build_windows(data, wcfg, root / "splits.json", "train", tmp_path / "afile", None, progress=False)
    assert (tmp_path / "afile").read_text() == "mine"
