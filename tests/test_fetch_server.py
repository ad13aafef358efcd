"""Downloads of the vitaldb source against a real HTTP server on 127.0.0.1, with injected faults."""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from vitaldb_server import VitalServer
from vitalssl.config import from_dict
from vitalssl.data.config import DataConfig, DemoConfig
from vitalssl.data.demo import generate_demo
from vitalssl.data.download import CaseCache, check_cache_dir, fetch_cases
from vitalssl.data.sources import make_source
from vitalssl.data.windows import build_split


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    root = tmp_path_factory.mktemp("fetchdemo")
    cfg = replace(from_dict(DemoConfig, params["demo"], "demo"), n_cases=4, n_subjects=4, duration_s=(60, 90))
    generate_demo(cfg, root, progress=False)
    files = {int(p.stem): p.read_bytes() for p in root.glob("*.vital")}
    return root, files


@pytest.fixture
def server(demo):
    root, files = demo
    tables = {"cases": (root / "clinical.csv").read_bytes()}
    with VitalServer(files, tables, stall_s=1.5) as s:
        yield s


def data_cfg(tmp_path, url, **kw) -> DataConfig:
    d = dict(source="vitaldb", local_dir="", clinical_csv=None, cache_dir=str(tmp_path / "cache"),
             download_retries=2, demo_dir="", api_url=url, download_workers=4, connect_timeout_s=2.0,
             read_timeout_s=0.5, retry_backoff_s=0.01)
    d.update(kw)
    return DataConfig(**d)


def cache_of(cfg: DataConfig) -> CaseCache:
    return CaseCache(Path(cfg.cache_dir), cfg.api_url, cfg.download_retries, cfg.connect_timeout_s,
                     cfg.read_timeout_s, cfg.retry_backoff_s)


def assert_cache_clean(cfg: DataConfig, files: dict) -> None:
    """Every file under a final name is byte-identical to the server's, and has a matching manifest entry."""
    for p in Path(cfg.cache_dir).glob("*.vital"):
        c = int(p.stem)
        assert p.read_bytes() == files[c], f"case {c} in the cache differs from the server's bytes"
        e = json.loads((Path(cfg.cache_dir) / "manifest" / f"{c}.json").read_text())
        assert e["bytes"] == len(files[c]) and e["sha256"] == hashlib.sha256(files[c]).hexdigest()
        assert {"SNUADC/PLETH", "SNUADC/ECG_II"} <= set(e["tracks"])


def test_clean_fetch_stores_the_servers_bytes_and_a_manifest(tmp_path, server, demo):
    cfg = data_cfg(tmp_path, server.url)
    ids = sorted(demo[1])
    s = fetch_cases(cfg, ids, progress=False)
    assert (s["fetched"], s["cached"], s["failed"]) == (4, 0, 0)
    assert s["received"] == sum(len(b) for b in demo[1].values())
    assert_cache_clean(cfg, demo[1])
    again = fetch_cases(cfg, ids, progress=False)
    assert (again["cached"], again["received"]) == (4, 0)  # nothing is asked of the server again


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_a_cut_or_stalled_download_is_resumed_with_a_range_request(tmp_path, server, demo, fault):
    cfg = data_cfg(tmp_path, server.url)
    c = min(demo[1])
    server.faults[c] = [fault]
    got = cache_of(cfg).fetch(c)
    assert got.status == "fetched"
    full = len(demo[1][c])
    reqs = [r for r in server.log if r[0].endswith(f"/{c}.vital")]
    assert len(reqs) == 2 and reqs[0][1] == 0 and 0 < reqs[1][1] < full and reqs[1][3] == 206
    assert reqs[1][2] < full  # the resume asked only for the rest
    assert_cache_clean(cfg, demo[1])


def test_a_server_ignoring_range_starts_over(tmp_path, server, demo):
    cfg = data_cfg(tmp_path, server.url)
    c = min(demo[1])
    server.faults[c] = ["cut", "no_range"]
    assert cache_of(cfg).fetch(c).status == "fetched"
    reqs = [r for r in server.log if r[0].endswith(f"/{c}.vital")]
    assert [r[3] for r in reqs] == [200, 200] and reqs[1][2] == len(demo[1][c])
    assert_cache_clean(cfg, demo[1])


def test_500_then_success_is_retried(tmp_path, server, demo):
    cfg = data_cfg(tmp_path, server.url)
    c = min(demo[1])
    server.faults[c] = ["500", "500"]
    assert cache_of(cfg).fetch(c).status == "fetched"
    assert [r[3] for r in server.log] == [500, 500, 200]


@pytest.mark.parametrize("faults,words", [
    (["404"], ["HTTP 404", "after 1 attempt(s)"]),                   # permanent: no retry
    (["500"] * 3, ["HTTP 500", "after 3 attempt(s)"]),
    (["corrupt"] * 3, ["unreadable", "gzip"]),
    (["short_length"] * 3, ["truncated"]),
    (["cut", "cut", "cut"], ["body cut short"]),
])
def test_every_failure_is_named_and_nothing_bad_is_cached(tmp_path, server, demo, faults, words):
    cfg = data_cfg(tmp_path, server.url)
    ids = sorted(demo[1])
    server.faults[ids[0]] = list(faults)
    lines = []
    s = fetch_cases(cfg, ids, progress=False, on_failure=lambda e: lines.append(str(e)))
    assert s["failed"] == 1 and s["fetched"] == 3 and s["failed_by_reason"] == {"download_failed": 1}
    assert len(lines) == 1 and f"case {ids[0]}" in lines[0] and f"/1.0.1/{ids[0]}.vital" in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert "127.0.0.1" not in lines[0]  # the URL's path, never its host part
    assert not (Path(cfg.cache_dir) / f"{ids[0]}.vital").exists()
    assert_cache_clean(cfg, demo[1])


def test_a_cut_download_is_never_read_as_a_shorter_case(tmp_path, server, demo, wcfg):
    """Cut on every try: build-windows names the case as download_failed, it never reads half of it."""
    cfg = data_cfg(tmp_path, server.url, download_retries=1)
    ids = sorted(demo[1])
    server.faults[ids[0]] = ["cut", "cut"]
    src = make_source(cfg, None)
    report = build_split(src, [(c, None) for c in ids], wcfg, tmp_path / "w", "train", progress=False)
    assert report["cases_failed_by_reason"] == {"download_failed": 1}
    assert report["failed_cases"][0]["caseid"] == ids[0]
    assert report["cases_read"] == 3


def test_a_cached_file_not_matching_its_manifest_is_fetched_again(tmp_path, server, demo):
    cfg = data_cfg(tmp_path, server.url)
    c = min(demo[1])
    cache = cache_of(cfg)
    cache.fetch(c)
    p = cache.path(c)
    p.write_bytes(p.read_bytes()[:-10])  # a cached file changed behind the manifest's back
    assert not cache.is_cached(c)
    assert cache.fetch(c).status == "fetched" and p.read_bytes() == demo[1][c]


def test_old_cache_files_without_manifest_are_not_trusted(tmp_path, server, demo):
    cfg = data_cfg(tmp_path, server.url)
    c = min(demo[1])
    Path(cfg.cache_dir).mkdir()
    (Path(cfg.cache_dir) / f"{c}.vital").write_bytes(demo[1][c][:100])
    assert cache_of(cfg).fetch(c).status == "fetched"
    assert_cache_clean(cfg, demo[1])


def test_cache_dir_that_is_a_file_is_refused_before_any_download(tmp_path, server, demo):
    (tmp_path / "cache").write_text("not a dir")
    with pytest.raises(NotADirectoryError, match="is a file"):
        fetch_cases(data_cfg(tmp_path, server.url), sorted(demo[1]), progress=False)
    assert server.log == []


def _mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("opts,error,words", [("ro,size=1m", PermissionError, "not writable"),
                                              ("size=64k", OSError, "MiB free")])
def test_read_only_or_full_cache_is_refused_before_any_download(tmp_path, server, demo, opts, error, words):
    mnt = tmp_path / "cache"
    if not _mount_tmpfs(mnt, opts):
        pytest.skip("needs permission to mount a tmpfs")
    try:
        with pytest.raises(error, match=words):
            check_cache_dir(mnt)
        with pytest.raises(error, match="data.cache_dir"):
            fetch_cases(data_cfg(tmp_path, server.url), sorted(demo[1]), progress=False)
        assert server.log == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_fetched_cache_gives_the_same_windows_as_the_local_files(tmp_path, server, demo, wcfg):
    """The vitaldb source over the local server and the local source over the same files: identical windows."""
    root, files = demo
    ids = sorted(files)
    cfg = data_cfg(tmp_path, server.url)
    fetch_cases(cfg, ids, progress=False)
    local = make_source(replace(cfg, source="local", local_dir=str(root)), None)
    cases = [(c, None) for c in ids]
    build_split(make_source(cfg, None), cases, wcfg, tmp_path / "v", "train", progress=False)
    build_split(local, cases, wcfg, tmp_path / "l", "train", progress=False)
    for name in ("train_windows.npy", "train_windows.meta.csv", "train_windows.decisions.csv"):
        assert (tmp_path / "v" / name).read_bytes() == (tmp_path / "l" / name).read_bytes()
    assert np.load(tmp_path / "v" / "train_windows.npy").shape[0] > 0


def test_fetch_command_names_failures_and_refuses_a_bad_cache(tmp_path, server, demo, capsys):
    from vitalssl.entry.cli import ttm_vitaldb
    ids = sorted(demo[1])
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="vitaldb", api_url=server.url, cache_dir=str(tmp_path / "cache"),
                          download_retries=0, retry_backoff_s=0.0)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    split = {"train": {"caseids": ids[:3], "subjectids": [None] * 3},
             "val": {"caseids": ids[3:], "subjectids": [None]}}
    (tmp_path / "s.json").write_text(json.dumps(split))
    server.faults[ids[1]] = ["404"]
    argv = ["fetch", "--params", str(tmp_path / "p.yaml"), "--split-file", str(tmp_path / "s.json"),
            "--split", "train", "val", "--workers", "2"]
    ttm_vitaldb(argv)
    out = capsys.readouterr().out
    assert f"fetch: case {ids[1]}: download_failed: GET /1.0.1/{ids[1]}.vital: HTTP 404" in out
    assert "4 cases of split(s) train, val: 0 already cached, 3 fetched" in out and "1 failed" in out
    before = len(server.log)
    ttm_vitaldb(argv)  # re-run: only the missing case is asked for again
    assert "3 already cached, 1 fetched" in capsys.readouterr().out
    assert [r[0] for r in server.log[before:]] == [f"/1.0.1/{ids[1]}.vital"]
    (tmp_path / "cache2").write_text("")
    params["data"]["cache_dir"] = str(tmp_path / "cache2")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as e:
        ttm_vitaldb(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: cache dir") and "is a file" in err[0]


def test_a_disk_filling_up_mid_download_ends_the_run_and_the_rerun_completes(tmp_path, server, demo, monkeypatch):
    """A real full disk (a small tmpfs) while bytes arrive: one error naming the cache, nothing incomplete under a
    final name, the finished cases kept; with room again, the re-run fetches only what is missing."""
    from vitalssl.data import download
    sizes = sorted(len(b) for b in demo[1].values())
    mnt = tmp_path / "cache"
    room = sizes[0] + sizes[1] // 2 + (64 << 10)     # the first case fits, a later one cannot
    if not _mount_tmpfs(mnt, f"size={room}"):
        pytest.skip("needs permission to mount a tmpfs")
    monkeypatch.setattr(download, "MIN_FREE_BYTES", 16 << 10)   # the up-front check allows this small disk
    try:
        cfg = data_cfg(tmp_path, server.url, download_workers=1)
        with pytest.raises(OSError, match=r"data.cache_dir.*disk full while writing") as err:
            fetch_cases(cfg, sorted(demo[1]), progress=False)
        assert err.value.errno == errno.ENOSPC
        assert_cache_clean(cfg, demo[1])                          # finished cases intact, no partial one published
        kept = {int(p.stem) for p in mnt.glob("*.vital")}
        assert 1 <= len(kept) < len(demo[1])
        subprocess.run(["mount", "-o", f"remount,size={sum(sizes) * 3}", str(mnt)], check=True)
        again = fetch_cases(cfg, sorted(demo[1]), progress=False)
        assert (again["cached"], again["fetched"], again["failed"]) == (len(kept), len(demo[1]) - len(kept), 0)
        assert_cache_clean(cfg, demo[1])
        assert {int(p.stem) for p in mnt.glob("*.vital")} == set(demo[1])
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
