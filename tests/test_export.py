"""The Hugging Face export: loads with TinyTimeMixerModel.from_pretrained, equal latents, a card equal to the metrics."""

import json
import re

import pytest
import torch
from tsfm_public.models.tinytimemixer import TinyTimeMixerModel

from conftest import make_windows, write_windows
from test_evaluate_stage import write_meta
from vitalssl.config import to_dict
from vitalssl.entry.evaluate_stage import eval_config, run_evaluate
from vitalssl.entry.export_stage import run_export
from vitalssl.eval.modelcard import reconstruction_rows, task_rows
from vitalssl.ssl.encoder import PretrainedEncoder
from vitalssl.ssl.checkpoint import make_checkpoint, save_atomic
from vitalssl.ssl.export import EXPORT_FILES, read_export
from vitalssl.ssl.model import MaskedTTM
from vitalssl.ssl.train import build_optimizer


@pytest.fixture(scope="module")
def exported(tmp_path_factory, params, wcfg):
    """A tiny trained-looking checkpoint, evaluated on tiny windows, then exported."""
    from conftest import tiny_pretrain_overrides
    from vitalssl.entry.pretrain_stage import pretrain_config
    tmp = tmp_path_factory.mktemp("export")
    d = tmp / "windows"
    for split, n, seed, first in (("train", 60, 1, 0), ("val", 30, 2, 100), ("test", 20, 3, 200)):
        write_meta(d, split, write_windows(d, split, n, seed=seed), 10, first)
        info = json.loads((d / f"{split}_windows.json").read_text())
        info.update(window_len=1250, count=n, dtype="float32", layout="[N, C, L]",
                    normalisation="z-score per window and channel", params=to_dict(wcfg))
        (d / f"{split}_windows.json").write_text(json.dumps(info))
    cfg = pretrain_config(params, tiny_pretrain_overrides(model={"num_layers": 2}))
    torch.manual_seed(0)
    model = MaskedTTM(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    (tmp / "model").mkdir()
    save_atomic(make_checkpoint(model, build_optimizer(model, cfg), cfg, 4, 0.7, {}, 9), tmp / "model" / "best_model.pt")
    ep = dict(params["evaluate"], n_bootstrap=200, probe_folds=3, random_encoder_seeds=1, scale_fit_windows=40,
              batch_size=32, mask_ratios=[0.4], mask_types=["random"], device="cpu", figure_windows=2)
    ecfg = eval_config({**params, "evaluate": ep})
    m = tmp / "metrics"
    run_evaluate(ecfg, tmp / "model", d, m / "evaluate.json", m / "rec.png", m / "probes.png", progress=False,
                 log=lambda s: None)
    out = tmp / "hf"
    run_export(tmp / "model" / "best_model.pt", d, m / "evaluate.json", out, ecfg.ci, log=lambda s: None)
    return {"out": out, "model": model.eval(), "metrics": json.loads((m / "evaluate.json").read_text()),
            "tmp": tmp, "windows": d, "ci": ecfg.ci}


def test_export_loads_with_from_pretrained_and_gives_the_checkpoints_latents(exported):
    enc = TinyTimeMixerModel.from_pretrained(exported["out"]).eval()
    x = torch.from_numpy(make_windows(5, seed=9))
    with torch.no_grad():
        z = enc(past_values=x.transpose(1, 2)).last_hidden_state
        ref, _, _ = exported["model"].encode(x)
    assert z.shape == ref.shape == (5, 2, 10, exported["model"].cfg.d_model)
    torch.testing.assert_close(z, ref, rtol=0, atol=0)
    torch.testing.assert_close(PretrainedEncoder.from_export(exported["out"]).encode(x), ref, rtol=0, atol=0)


def test_export_holds_no_pickles_and_its_decoder_reconstructs_as_the_checkpoint(exported):
    from safetensors.torch import load_file
    out = exported["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    for p in out.iterdir():  # neither torch's zip container nor a raw pickle stream
        assert not p.read_bytes().startswith((b"PK\x03\x04", b"\x80"))
    for name in ("model.safetensors", "decoder.safetensors"):
        assert len(load_file(out / name)) > 0
    doc = read_export(out)
    pre = doc["preprocessing"]
    assert pre["channels"] == ["PPG", "ECG"] and pre["sampling_rate_hz"] == 125.0 and pre["window_samples"] == 1250
    assert pre["band_pass"]["PPG_hz"] == [0.5, 8.0] and pre["band_pass"]["ECG_hz"] == [0.5, 40.0]
    assert doc["checkpoint"]["epoch"] == 4 and len(doc["checkpoint"]["sha256"]) == 64
    model = exported["model"]
    rebuilt = MaskedTTM(model.cfg)
    rebuilt.encoder = TinyTimeMixerModel.from_pretrained(out)
    rebuilt.decoder.load_state_dict(load_file(out / "decoder.safetensors"))
    rebuilt.eval()
    x = torch.from_numpy(make_windows(3, seed=4))
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, ::3] = True
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, mask), model(x, mask), rtol=0, atol=0)


def test_card_numbers_equal_the_metrics_file(exported):
    card = (exported["out"] / "README.md").read_text()
    m = exported["metrics"]
    rows = reconstruction_rows(m)
    tasks = task_rows(m)
    assert rows and tasks
    for k, ch, model, best, base, d, lo, hi in rows:
        assert f"| {k} | {ch} | {model:.3f} | {best} | {base:.3f} | {d:.3f} | [{lo:.3f}, {hi:.3f}] |" in card
    for task, method, score, v, lo, hi in tasks:
        if method != "skipped":
            assert f"| {task} | {method} | {score} | {v:.3f} | [{lo:.3f}, {hi:.3f}] |" in card
    hr = m["test"]["tasks"]["hr"]["pretrained_mean"]["r2"]          # the card reports test, which chose nothing
    assert f"| hr | pretrained_mean | r2 | {hr['value']:.3f} | [{hr['ci_low']:.3f}, {hr['ci_high']:.3f}] |" in card
    assert "test split" in card and "optimistic" not in card


@pytest.mark.parametrize("kind", ["file", "foreign"])
def test_export_refuses_a_target_it_did_not_make_and_changes_nothing(exported, kind):
    t = exported["tmp"] / f"target_{kind}"
    if kind == "file":
        t.write_text("mine")
        before = {t: t.read_bytes()}
    else:
        t.mkdir()
        (t / "notes.txt").write_text("mine")
        before = {t / "notes.txt": b"mine"}
    with pytest.raises(ValueError, match=re.escape(str(t))):
        run_export(exported["tmp"] / "model" / "best_model.pt", exported["windows"],
                   exported["tmp"] / "metrics" / "evaluate.json", t, exported["ci"], log=lambda s: None)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(exported["tmp"].glob(f"target_{kind}.tmp*"))


def test_export_over_an_earlier_export_replaces_it_whole(exported):
    out = exported["out"]
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    run_export(exported["tmp"] / "model" / "best_model.pt", exported["windows"],
               exported["tmp"] / "metrics" / "evaluate.json", out, exported["ci"], log=lambda s: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
