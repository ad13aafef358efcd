"""Export a pretraining checkpoint as a Hugging Face model folder: no pickles, loadable without this project.

The folder holds::

    config.json          TinyTimeMixerConfig of the encoder        } TinyTimeMixerModel.from_pretrained(folder)
    model.safetensors    the encoder's weights                     }
    decoder.safetensors  the patch decoder (and the learned mask token, when the recipe has one)
    vitalssl.json        the preprocessing contract, the decoder's shape, the model config, the source checkpoint
    README.md            the model card (written by the caller, see vitalssl.eval.modelcard)

Loading the encoder needs granite-tsfm only::

    from tsfm_public.models.tinytimemixer import TinyTimeMixerModel
    enc = TinyTimeMixerModel.from_pretrained("artifacts/foundation_model_hf").eval()
    z = enc(past_values=x.transpose(1, 2)).last_hidden_state   # x [B, C, L] -> z [B, C, N_p, D]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..atomic import write_json
from ..config import to_dict
from .checkpoint import CheckpointError, load_checkpoint, model_config_of, rebuild_model

FORMAT = "vitalssl-hf-export/1"
EXPORT_FILES = ("config.json", "model.safetensors", "decoder.safetensors", "vitalssl.json", "README.md")


def preprocessing_contract(windows_info: dict) -> dict:
    """What a window must be before it enters the encoder, from a window file's ``.json`` sidecar."""
    try:
        p = windows_info["params"]
        return {
            "channels": list(windows_info["channels"]),
            "sampling_rate_hz": float(windows_info["srate"]),
            "window_samples": int(windows_info["window_len"]),
            "window_s": float(p["window_s"]),
            "layout": windows_info["layout"],
            "dtype": windows_info["dtype"],
            "normalisation": windows_info["normalisation"],
            "native_sampling_rate_hz": float(p["native_srate"]),
            "resampling": "scipy.signal.resample_poly from the native rate",
            "band_pass": {"type": p["filter"]["type"], "order": int(p["filter"]["order"]),
                          "zero_phase": True, "PPG_hz": list(p["filter"]["ppg_band"]),
                          "ECG_hz": list(p["filter"]["ecg_band"])},
            "source_tracks": {"PPG": p["ppg_track"], "ECG": p["ecg_track"]},
        }
    except (KeyError, TypeError) as e:
        raise ValueError(f"window sidecar lacks {e} (not a vitalssl window file's .json?)") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_export_target(out_dir: Path) -> None:
    """Refuse an ``out_dir`` that is a file, or a folder holding anything an export did not write."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"export folder {out_dir} is a file; name a folder")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)
        if foreign:
            raise ValueError(f"export folder {out_dir} holds files an export does not write "
                             f"({', '.join(foreign[:5])}); name an empty or new folder")


def write_export(checkpoint: Path, windows_info: dict, out_dir: Path, card) -> dict:
    """Write the folder (see the module docstring) for ``checkpoint``; returns the ``vitalssl.json`` document.

    ``card(doc)`` returns the model card's Markdown for the folder's ``vitalssl.json`` document ``doc``.

    The folder is built beside ``out_dir`` and renamed into place, so a reader sees a whole export or none.
    """
    from safetensors.torch import save_file

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    check_export_target(out_dir)
    ckpt = load_checkpoint(checkpoint)
    if "encoder_state_dict" not in ckpt or "decoder_state_dict" not in ckpt:
        raise CheckpointError(f"{checkpoint} lacks encoder_state_dict or decoder_state_dict")
    model = rebuild_model(ckpt)
    cfg = model_config_of(ckpt)
    doc = {
        "format": FORMAT,
        "preprocessing": preprocessing_contract(windows_info),
        "encoder": {"class": "tsfm_public.models.tinytimemixer.TinyTimeMixerModel",
                    "input": "past_values [B, L, C] (channels last)",
                    "output": "last_hidden_state [B, C, N_p, D]"},
        "decoder": {"file": "decoder.safetensors", "d_model": cfg.d_model, "patch_length": cfg.patch_length,
                    "hidden": cfg.decoder_hidden, "mask_token": cfg.mask_token,
                    "layers": "LayerNorm(D) -> Linear(D, hidden) -> GELU -> Linear(hidden, P), "
                              "or LayerNorm(D) -> Linear(D, P) when hidden is 0",
                    "output": "patches [B, C, N_p, P], times TTM's scale plus its loc"},
        "model_config": to_dict(cfg),
        "checkpoint": {"file": checkpoint.name, "epoch": int(ckpt.get("epoch", -1)),
                       "best_val_loss": float(ckpt.get("best_val_loss", float("nan"))),
                       "sha256": _sha256(checkpoint)},
    }
    tmp = out_dir.with_name(f"{out_dir.name}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.encoder.save_pretrained(tmp, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in model.decoder.state_dict().items()}, tmp / "decoder.safetensors")
        write_json(tmp / "vitalssl.json", doc)
        (tmp / "README.md").write_text(card(doc))
        _replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return doc


def _replace_folder(new: Path, out_dir: Path) -> None:
    """Swap ``new`` in for ``out_dir``, which holds at most an earlier export's files (checked before)."""
    unexpected = sorted(p.name for p in new.iterdir() if p.name not in EXPORT_FILES)
    if unexpected:  # save_pretrained wrote something else (a newer transformers?): say so rather than ship it
        raise RuntimeError(f"the export wrote unexpected files {unexpected}; expected {list(EXPORT_FILES)}")
    if out_dir.is_dir():
        for name in EXPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)
        out_dir.rmdir()
    os.replace(new, out_dir)


def read_export(folder: Path) -> dict:
    """The ``vitalssl.json`` of an export folder, checked for its format."""
    path = Path(folder) / "vitalssl.json"
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r} is not {FORMAT!r}")
    return doc
