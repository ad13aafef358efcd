"""Pretraining: outputs and checkpoint contents, safety, non-finite stop, resume after a kill, DDP, CLI flags."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, make_windows, tiny_pretrain_overrides, write_windows
from vitalssl.ssl.checkpoint import CHECKPOINT_KEYS, CheckpointError, load_checkpoint, rebuild_model, ttm_config_dict
from vitalssl.entry.cli import config_from_args, pretrain_parser, pretrain_vitaldb_ssl
from vitalssl.ssl.losses import masked_mse, msm_objective
from vitalssl.ssl.masking import make_mask
from vitalssl.ssl.model import MaskedTTM
from vitalssl.entry.pretrain_stage import run_pretrain
from vitalssl.ssl.resume import ResumeMismatchError
from vitalssl.ssl.train import NonFiniteLossError


def _run(cfg, window_dir, root, **kw):
    return run_pretrain(cfg, window_dir, root / "out", root / "work", metrics_path=root / "m.json",
                    plots_path=root / "h.csv", progress=False, log=lambda s: None, **kw)


def test_outputs_checkpoints_and_rebuild(tiny_cfg, window_dir, tmp_path):
    cfg = tiny_cfg(epochs=4, save_interval=2)
    res = _run(cfg, window_dir, tmp_path)
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir() if p.name != ".vitalssl-made")  # the folder's marker
    assert names == ["best_model.pt", "checkpoint_epoch_2.pt", "checkpoint_epoch_4.pt", "last_model.pt",
                     "loss_curves.png", "training_config.json", "training_history.json"]
    assert not (tmp_path / "work").exists()  # resumable state is cleared once the outputs are published
    ckpt = load_checkpoint(out / "last_model.pt")
    assert set(CHECKPOINT_KEYS) <= set(ckpt) and ckpt["epoch"] == 3
    assert ckpt["config"]["mask_ratio"] == 0.4 and ckpt["config"]["model"]["d_model"] == 16
    assert ckpt["best_val_loss"] == pytest.approx(min(h["val_loss"] for h in res["history"]))
    assert load_checkpoint(out / "checkpoint_epoch_2.pt")["epoch"] == 1
    # the file alone rebuilds the model, with the trained weights
    model = rebuild_model(ckpt).eval()
    x = torch.from_numpy(np.load(window_dir / "val_windows.npy")[:4])
    m = make_mask("random", 4, 10, 0.4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x, m), res["model"].eval()(x, m))
    # the encoder weights load into a plain TinyTimeMixerModel for fine-tuning
    from tsfm_public.models.tinytimemixer import TinyTimeMixerConfig, TinyTimeMixerModel
    enc = TinyTimeMixerModel(TinyTimeMixerConfig(**ttm_config_dict(ckpt)))
    enc.load_state_dict(ckpt["encoder_state_dict"])
    hist = json.loads((out / "training_history.json").read_text())
    assert [h["epoch"] for h in hist["epochs"]] == [1, 2, 3, 4]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["best"]["val_loss"] == pytest.approx(ckpt["best_val_loss"])
    csv_lines = (tmp_path / "h.csv").read_text().splitlines()
    assert csv_lines[0] == "epoch,lr,train_loss,train_msm,train_stft,val_loss,val_msm,val_stft" and len(csv_lines) == 5
    assert json.loads((out / "training_config.json").read_text())["train_windows"] == 96


def test_one_fixed_batch_is_learned_far_beyond_zero_fill(tiny_cfg):
    """The model, both losses and the optimizer can fit: 60 steps on one batch take its MSM far below zero fill."""
    from vitalssl.ssl.train import build_optimizer

    cfg = tiny_cfg(lr=3e-3, model={"d_model": 32, "dropout": 0.0})
    torch.manual_seed(0)
    x = torch.from_numpy(make_windows(32, seed=1))
    mask = make_mask("random", 32, cfg.model.num_patches, cfg.mask_ratio, torch.Generator().manual_seed(0))
    model = MaskedTTM(cfg.model)
    opt = build_optimizer(model, cfg)
    zero_fill = masked_mse(torch.zeros_like(x), x, mask, cfg.model.patch_length).item()
    for _ in range(60):
        terms = msm_objective(model(x, mask), x, mask, cfg.model.patch_length, cfg.stft, cfg.stft_weight)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    with torch.no_grad():
        msm = masked_mse(model(x, mask), x, mask, cfg.model.patch_length).item()
    assert zero_fill == pytest.approx(1.0, abs=0.15)
    assert msm < 0.5 * zero_fill, (msm, zero_fill)


def test_checkpoint_needing_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"epoch": 1, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, window_dir, tmp_path, monkeypatch):
    import vitalssl.ssl.train as train_mod
    real = train_mod.msm_objective
    calls = {"n": 0}
    steps_per_epoch = 6  # 96 windows / 16

    def poisoned(recon, *a, **k):
        out = real(recon, *a, **k)
        if recon.requires_grad:
            calls["n"] += 1
            if calls["n"] == steps_per_epoch + 3:  # epoch 2, batch 3
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(train_mod, "msm_objective", poisoned)
    with pytest.raises(NonFiniteLossError, match="epoch 2, batch 3"):
        _run(tiny_cfg(epochs=3), window_dir, tmp_path)
    assert not (tmp_path / "out").exists()  # nothing looks complete
    last = load_checkpoint(tmp_path / "work" / "last_model.pt")
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["encoder_state_dict"].values())


def _write_params(directory: Path, **over):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for k, v in tiny_pretrain_overrides(**over).items():
        if isinstance(v, dict):
            params[k].update(v)
        else:
            params[k] = v
    (directory / "params.yaml").write_text(yaml.safe_dump(params))


def _stage(cwd: Path, window_dir: Path):
    cmd = [sys.executable, str(ROOT / "stages" / "pretrain.py"), "--data-dir", str(window_dir),
           "--output-dir", "out", "--work-dir", "work", "--metrics", "m.json", "--plots", "h.csv"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _strip_time(history):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(window_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        _write_params(d, epochs=8, save_interval=3)
    ref = _stage(a, window_dir)
    killed = _stage(b, window_dir)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once an epoch >= 2 has completed, i.e. inside a later epoch
        st = b / "work" / "state.pt"
        if st.exists():
            try:
                if load_checkpoint(st)["epoch"] >= 1:
                    break
            except Exception:  # replaced while being read; look again
                pass
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    done_before = load_checkpoint(b / "work" / "state.pt")["epoch"]
    assert done_before < 7 and not (b / "out").exists()
    resumed = _stage(b, window_dir)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert f"Resuming from work/state.pt after epoch {done_before + 1}/8" in log
    assert ref.wait(timeout=300) == 0
    ha = json.loads((a / "out" / "training_history.json").read_text())["epochs"]
    hb = json.loads((b / "out" / "training_history.json").read_text())["epochs"]
    assert _strip_time(ha) == _strip_time(hb)
    for name in ("last_model.pt", "best_model.pt", "checkpoint_epoch_3.pt", "checkpoint_epoch_6.pt"):
        ca, cb = load_checkpoint(a / "out" / name), load_checkpoint(b / "out" / name)
        for k in ca["encoder_state_dict"]:
            assert torch.equal(ca["encoder_state_dict"][k], cb["encoder_state_dict"][k]), (name, k)
        for k in ca["decoder_state_dict"]:
            assert torch.equal(ca["decoder_state_dict"][k], cb["decoder_state_dict"][k]), (name, k)
    assert (a / "h.csv").read_text() == (b / "h.csv").read_text()


def test_resume_state_is_refused_on_mismatch(tiny_cfg, window_dir, tmp_path, monkeypatch):
    import vitalssl.ssl.train as train_mod
    real = train_mod.msm_objective
    calls = {"n": 0}

    def stop_in_epoch_2(recon, *a, **k):
        calls["n"] += 1
        if recon.requires_grad and calls["n"] > 9:
            raise KeyboardInterrupt
        return real(recon, *a, **k)

    monkeypatch.setattr(train_mod, "msm_objective", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_cfg(), window_dir, tmp_path)
    monkeypatch.setattr(train_mod, "msm_objective", real)
    assert (tmp_path / "work" / "state.pt").exists()
    with pytest.raises(ResumeMismatchError, match="differs in: config"):
        _run(tiny_cfg(mask_ratio=0.6), window_dir, tmp_path, resume="require")
    logs = []
    run_pretrain(tiny_cfg(mask_ratio=0.6), window_dir, tmp_path / "out", tmp_path / "work", progress=False,
                 log=logs.append, resume="auto")
    assert any("differs in: config" in s and "starting fresh" in s for s in logs)


def _ddp_worker(rank, world, store, cfg, window_dir, root):
    import torch.distributed as dist
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        res = run_pretrain(cfg, window_dir, root / "out", root / "work", metrics_path=root / "m.json",
                       progress=False, log=lambda s: None)
        torch.save({k: v.detach().clone() for k, v in res["model"].state_dict().items()}, root / f"rank{rank}.pt")
        torch.save(res["history"], root / f"hist{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_agree_with_each_other_and_single_process(tiny_cfg, window_dir, tmp_path):
    import torch.multiprocessing as mp
    cfg = tiny_cfg(epochs=4, batch_size=16)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), cfg, window_dir, ddp), nprocs=2, join=True)
    w0, w1 = torch.load(ddp / "rank0.pt"), torch.load(ddp / "rank1.pt")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    h0, h1 = torch.load(ddp / "hist0.pt"), torch.load(ddp / "hist1.pt")
    assert _strip_time(h0) == _strip_time(h1)
    assert (ddp / "out" / "best_model.pt").exists() and json.loads((ddp / "m.json").read_text())["train_windows"] == 96
    res = _run(cfg, window_dir, single)
    a, b = h0[-1]["val_loss"], res["history"][-1]["val_loss"]
    assert abs(a - b) / b < 0.05, (a, b)


# --------------------------------------------------------------------------- the guide's command line

def test_every_guide_flag_maps_onto_the_config():
    argv = ["--config", str(ROOT / "params.yaml"), "--data-dir", "d", "--output-dir", "o", "--channels", "ECG",
            "--train-file", "t.npy", "--val-file", "v.npy", "--mask-ratio", "0.6", "--mask-type", "block",
            "--epochs", "7", "--batch-size", "32", "--lr", "1e-3", "--weight-decay", "0.05", "--warmup-epochs", "2",
            "--context-length", "1100", "--patch-size", "100", "--device", "cpu", "--num-workers", "2", "--no-amp",
            "--gradient-clip", "0.5", "--stft-weight", "0.1", "--log-interval", "5", "--save-interval", "3",
            "--fast", "--seed", "1"]
    cfg = config_from_args(pretrain_parser().parse_args(argv))
    assert (cfg.channels, cfg.train_file, cfg.val_file, cfg.mask_ratio, cfg.mask_type, cfg.epochs) == \
        (("ECG",), "t.npy", "v.npy", 0.6, "block", 7)
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup_epochs, cfg.device, cfg.num_workers) == \
        (32, 1e-3, 0.05, 2, "cpu", 2)
    assert (cfg.amp, cfg.gradient_clip, cfg.stft_weight, cfg.log_interval, cfg.save_interval, cfg.fast, cfg.seed) == \
        (False, 0.5, 0.1, 5, 3, True, 1)
    assert (cfg.model.context_length, cfg.model.patch_length, cfg.model.num_input_channels) == (1100, 100, 1)


@pytest.mark.parametrize("flags,names", [
    (["--mask-ratio", "1.5"], "--mask-ratio"), (["--mask-ratio", "0"], "--mask-ratio"),
    (["--patch-size", "100"], "--patch-size"), (["--channels", "PPG", "ABP"], "--channels"),
    (["--train-file", "nope.npy"], "--train-file"), (["--epochs", "0"], "--epochs"),
])
def test_invalid_flags_fail_before_training_naming_the_flag(flags, names, window_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pretrain_vitaldb_ssl(["--config", str(ROOT / "params.yaml"), "--data-dir", str(window_dir),
                              "--output-dir", str(tmp_path / "o"), "--device", "cpu", *flags])
    assert e.value.code == 2
    assert names in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_data_dir_names_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pretrain_vitaldb_ssl(["--config", str(ROOT / "params.yaml"), "--data-dir", str(tmp_path / "none")])
    assert "--data-dir" in capsys.readouterr().err


def test_guide_npz_layout_trains_through_the_cli(tmp_path):
    d = tmp_path / "npz"
    d.mkdir()
    for split, n, seed in (("train", 48, 1), ("val", 16, 2)):
        x = write_windows(tmp_path / "tmp", split, n, seed)
        np.savez(d / f"{split}_windows.npz", windows=x, channels=np.array(["PPG", "ECG"]))
    cfg_path = tmp_path / "cfg.yaml"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(d_model=16, num_layers=1)
    cfg_path.write_text(yaml.safe_dump(params))
    pretrain_vitaldb_ssl(["--config", str(cfg_path), "--data-dir", str(d), "--output-dir", str(tmp_path / "o"),
                          "--epochs", "2", "--batch-size", "16", "--warmup-epochs", "1", "--device", "cpu",
                          "--channels", "ECG", "--train-file", "train_windows.npz", "--val-file", "val_windows.npz"])
    ckpt = load_checkpoint(tmp_path / "o" / "last_model.pt")
    assert ckpt["config"]["channels"] == ["ECG"] and ckpt["config"]["model"]["num_input_channels"] == 1
    assert json.loads((tmp_path / "o" / "training_config.json").read_text())["train_windows"] == 48


def test_the_guides_quick_test_command_runs_and_cuts_the_warmup(window_dir, tmp_path, capsys):
    """``--epochs 5`` with the default 10 warmup epochs: warm up over all 5, with a notice."""
    out = tmp_path / "ssl_test"
    _write_params(tmp_path, warmup_epochs=10)  # the default warmup, a tiny model
    pretrain_vitaldb_ssl(["--config", str(tmp_path / "params.yaml"), "--data-dir", str(window_dir),
                          "--output-dir", str(out), "--epochs", "5", "--batch-size", "32", "--fast",
                          "--device", "cpu"])
    assert "warmup_epochs 10 > epochs 5; warming up over all 5" in capsys.readouterr().out
    hist = json.loads((out / "training_history.json").read_text())["epochs"]
    lrs = [h["lr"] for h in hist]
    assert len(hist) == 5 and lrs == sorted(lrs)  # still rising at the end: the whole run is warmup
    assert load_checkpoint(out / "last_model.pt")["config"]["warmup_epochs"] == 10


@pytest.mark.parametrize("flags,needle", [
    (["--resume"], "--resume: no resumable state at"),
    (["--device", "cuda"], "--device cuda: no CUDA device is available"),
    (["--device", "cuda:3"], "--device cuda:3"),
])
def test_command_line_errors_are_one_line(flags, needle, window_dir, tmp_path, capsys):
    if torch.cuda.is_available() and "cuda" in " ".join(flags):
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as e:
        pretrain_vitaldb_ssl(["--config", str(ROOT / "params.yaml"), "--data-dir", str(window_dir),
                              "--output-dir", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_grad_scaler_state_is_saved_and_resumed(tiny_cfg, tmp_path):
    """The loss scale of fp16 training survives a resume (a CPU GradScaler stands in for the CUDA one)."""
    from vitalssl.ssl.resume import RunKey, load_or_start, save_state
    from vitalssl.ssl.train import build_optimizer

    cfg = tiny_cfg()
    model = MaskedTTM(cfg.model)
    opt = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaler.scale(torch.ones(()))  # the scale exists once used
    scaler.update(new_scale=2.0 ** 7)
    key = RunKey.of(config={"a": 1}, code="c", data="d", world_size=1)
    ckpt = {"epoch": 2, "encoder_state_dict": model.encoder.state_dict(),
            "decoder_state_dict": model.decoder.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "best_val_loss": 0.5}
    save_state(tmp_path, ckpt, [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], key, scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    progress = load_or_start(tmp_path, key, "auto", MaskedTTM(cfg.model), opt, fresh, "cpu", log=lambda s: None)
    assert progress.start_epoch == 3 and fresh.get_scale() == 2.0 ** 7


def test_publish_swaps_whole_folders_and_recovers_a_parked_old_one(tmp_path):
    from vitalssl.ssl.outputs import publish

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "best_model.pt").write_text("new")
    (work / "state.pt").write_text("state")
    (work / "last_model.tmp.pt").write_text("half")
    # an earlier publish crashed between its renames: only the parked old folder exists
    from vitalssl.ssl.folders import mark
    (tmp_path / "out.old").mkdir()
    mark(tmp_path / "out.old")
    (tmp_path / "out.old" / "best_model.pt").write_text("old")
    publish(work, out)
    assert sorted(p.name for p in out.iterdir()) == [".vitalssl-made", "best_model.pt"]
    assert (out / "best_model.pt").read_text() == "new"
    assert not (tmp_path / "out.old").exists() and not (tmp_path / "out.new").exists()
