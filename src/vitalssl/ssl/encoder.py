"""The pretrained encoder as a feature extractor: load it from a checkpoint, encode windows in batches.

Dimensions: N windows, C channels, L samples, N_p patches, D model width.

    from vitalssl.ssl.encoder import PretrainedEncoder

    enc = PretrainedEncoder.load("artifacts/foundation_model/best_model.pt", device="auto")
    z = enc.encode(windows)                 # [N, C, N_p, D] latents
    e = enc.embed(windows)                  # [N, D]: mean over channels and patches
    e = enc.embed(windows, pool="channels") # [N, C * D]: mean over patches, channels side by side
    enc = PretrainedEncoder.from_export("artifacts/foundation_model_hf")   # the same, from the export folder

Only the encoder's weights and the model config are read from the checkpoint; the
optimizer state and the decoder are not loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tsfm_public.models.tinytimemixer import TinyTimeMixerModel

from ..windowfile import WindowDataset
from .checkpoint import CheckpointError, load_checkpoint, model_config_of
from .config import ModelConfig
from .distributed import pick_device
from .model import ttm_encoder

POOLS = ("mean", "channels")


class PretrainedEncoder:
    """A TinyTimeMixer encoder in eval mode, with its :class:`ModelConfig`, on one device."""

    def __init__(self, encoder: TinyTimeMixerModel, cfg: ModelConfig, device="cpu"):
        self.device = pick_device(device, 0) if isinstance(device, str) else torch.device(device)
        self.cfg = cfg
        self.model = encoder.to(self.device).eval()

    @classmethod
    def load(cls, checkpoint_path: str | Path, device="cpu") -> "PretrainedEncoder":
        """The encoder of a pretraining checkpoint, rebuilt from the config stored in it."""
        ckpt = load_checkpoint(Path(checkpoint_path))
        if "encoder_state_dict" not in ckpt:
            raise CheckpointError(f"{checkpoint_path} lacks encoder_state_dict")
        cfg = model_config_of(ckpt)
        enc = ttm_encoder(cfg)
        enc.load_state_dict(ckpt["encoder_state_dict"])
        return cls(enc, cfg, device)

    @classmethod
    def from_export(cls, folder: str | Path, device="cpu") -> "PretrainedEncoder":
        """The encoder of an export folder (:mod:`vitalssl.ssl.export`), read with ``from_pretrained``."""
        from ..config import from_dict
        from .export import read_export

        cfg = from_dict(ModelConfig, read_export(Path(folder))["model_config"], "vitalssl.json model_config")
        return cls(TinyTimeMixerModel.from_pretrained(Path(folder)), cfg, device)

    @classmethod
    def random(cls, cfg: ModelConfig, seed: int, device="cpu") -> "PretrainedEncoder":
        """The same architecture with freshly initialised weights (a control for what pretraining adds)."""
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            enc = ttm_encoder(cfg)
        finally:
            torch.random.set_rng_state(state)
        return cls(enc, cfg, device)

    def _batches(self, windows, batch_size: int, progress: bool, desc: str):
        n = len(windows)
        if n == 0:
            raise ValueError("no windows to encode")
        from tqdm import tqdm
        for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False, unit="batch"):
            j = min(i + batch_size, n)
            # a WindowDataset reads a batch from a list of indices, in one memory-map access
            x = windows[np.arange(i, j)] if isinstance(windows, WindowDataset) else windows[i:j]
            x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
            if x.ndim != 3 or x.shape[1] != self.cfg.num_input_channels or x.shape[2] != self.cfg.context_length:
                raise ValueError(f"windows [N, C, L] = [{n}, {list(x.shape)[1:]}] do not match the encoder's "
                                 f"C = {self.cfg.num_input_channels}, L = {self.cfg.context_length}")
            yield x.to(self.device)

    @torch.no_grad()
    def _encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(past_values=x.transpose(1, 2)).last_hidden_state  # [B, C, N_p, D]

    def encode(self, windows, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """``windows [N, C, L]`` (array, memory map or tensor) -> latents ``[N, C, N_p, D]`` float32 on CPU."""
        return torch.cat([self._encode_batch(x).float().cpu()
                          for x in self._batches(windows, batch_size, progress, "encode")])

    def embed(self, windows, pool: str = "mean", batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Pooled embeddings on CPU: ``mean`` -> ``[N, D]`` (over channels and patches), ``channels`` -> ``[N, C * D]``."""
        return self.embeddings(windows, (pool,), batch_size, progress)[pool]

    def embeddings(self, windows, pools=POOLS, batch_size: int = 256, progress: bool = False) -> dict:
        """Several poolings from one pass over the windows: ``{pool: tensor}`` as :meth:`embed` gives them."""
        bad = [p for p in pools if p not in POOLS]
        if bad:
            raise ValueError(f"pool {bad[0]!r} is not one of {', '.join(POOLS)}")
        out: dict = {p: [] for p in pools}
        for x in self._batches(windows, batch_size, progress, "embed"):
            z = self._encode_batch(x).float()
            for p in pools:
                out[p].append((z.mean(dim=(1, 2)) if p == "mean" else z.mean(dim=2).flatten(1)).cpu())
        return {p: torch.cat(v) for p, v in out.items()}
