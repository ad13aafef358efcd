"""The guide's ttm_vitaldb.py command line, and strict params."""

import json

import numpy as np
import pytest
import yaml

from conftest import ROOT
from vitalssl.entry.cli import ttm_vitaldb
from vitalssl.config import ConfigError
from vitalssl.entry.pretrain_stage import pretrain_config


@pytest.fixture
def small_params(tmp_path):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["demo_dir"] = str(tmp_path / "demo")
    p["demo"].update(n_cases=8, n_subjects=8, duration_s=[90, 120])
    p["splits"].update(fasttrack_cases=8, train=0.5, val=0.25, test=0.25)
    p["windows"]["num_workers"] = 1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    from vitalssl.config import from_dict
    from vitalssl.data.config import DemoConfig
    from vitalssl.data.demo import generate_demo
    generate_demo(from_dict(DemoConfig, p["demo"], "demo"), tmp_path / "demo", progress=False)
    return path


def test_prepare_splits_and_build_windows_flags(small_params, tmp_path):
    ttm_vitaldb(["prepare-splits", "--params", str(small_params), "--mode", "full", "--case-set", "bis",
                 "--output", str(tmp_path / "data")])
    split_file = tmp_path / "data" / "splits_full.json"
    doc = json.loads(split_file.read_text())
    assert doc["provenance"]["params"]["mode"] == "full" and sum(doc["provenance"]["counts"].values()) == 8
    (tmp_path / "channels.yaml").write_text("ppg_track: SNUADC/PLETH\necg_track: SNUADC/ECG_II\n")
    (tmp_path / "windows.yaml").write_text("stride_s: 5.0\n")
    ttm_vitaldb(["build-windows", "--params", str(small_params), "--channels-yaml", str(tmp_path / "channels.yaml"),
                 "--windows-yaml", str(tmp_path / "windows.yaml"), "--split-file", str(split_file),
                 "--split", "train", "--outdir", str(tmp_path / "win")])
    info = json.loads((tmp_path / "win" / "train_windows.json").read_text())
    assert info["params"]["stride_s"] == 5.0
    report = json.loads((tmp_path / "win" / "train_quality.json").read_text())
    x = np.load(tmp_path / "win" / "train_windows.npy", mmap_mode="r")
    assert len(x) == report["windows_kept"] > 0
    # 5 s stride: about twice the windows a 10 s stride gives
    assert report["windows_total"] >= 2 * sum(1 for _ in doc["train"]["caseids"]) * 8


def test_ttm_vitaldb_rejects_bad_input_by_name(small_params, tmp_path, capsys):
    (tmp_path / "w.yaml").write_text("stride_s: -1\n")
    with pytest.raises(SystemExit):
        ttm_vitaldb(["build-windows", "--params", str(small_params), "--windows-yaml", str(tmp_path / "w.yaml"),
                     "--split-file", str(tmp_path / "none.json"), "--split", "train"])
    assert "windows.stride_s" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ttm_vitaldb(["build-windows", "--params", str(small_params), "--split-file", str(tmp_path / "none.json"),
                     "--split", "train"])
    assert "split file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ttm_vitaldb(["prepare-splits", "--params", str(small_params), "--case-set", "nosuch"])
    assert "splits.case_set" in capsys.readouterr().err


def test_params_file_is_strict(params):
    assert pretrain_config(params).mask_ratio == 0.4
    with pytest.raises(ConfigError, match="unknown top-level param.*mask_ration"):
        pretrain_config({**params, "mask_ration": 0.5})
    with pytest.raises(ConfigError, match="unknown param.*model.d_modle"):
        pretrain_config(params, {"model": {"d_modle": 8}})
    p = dict(params)
    del p["lr"]
    with pytest.raises(ConfigError, match="missing param `lr`"):
        pretrain_config(p)
    with pytest.raises(ConfigError, match="stft"):
        pretrain_config(params, {"stft": {"hop_sizes": [50, 120]}})


def test_defaults_follow_the_guide(params):
    cfg = pretrain_config(params)
    # departures chosen by the evaluation, documented in the README ("Choosing the recipe"):
    # 200 epochs (guide 100), stft_weight 0 (guide 0.3), a mask token and a one-hidden-layer decoder
    assert (cfg.mask_ratio, cfg.mask_type, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == \
        (0.4, "random", 200, 128, 5e-4, 0.01)
    assert (cfg.warmup_epochs, cfg.gradient_clip, cfg.stft_weight, cfg.log_interval, cfg.save_interval, cfg.seed) == \
        (10, 1.0, 0.0, 50, 10, 42)
    assert (cfg.model.mask_token, cfg.model.decoder_hidden) == (True, 256)
    assert (cfg.model.context_length, cfg.model.patch_length, cfg.model.d_model) == (1250, 125, 192)
    assert cfg.channels == ("PPG", "ECG") and cfg.stft.fft_sizes == (512, 1024, 2048)
