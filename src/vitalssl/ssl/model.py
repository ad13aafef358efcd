"""TinyTimeMixer encoder + light patch decoder for masked signal modeling.

Dimensions: B batch, C channels, L samples, N patches, P patch length, D model width.
"""

from __future__ import annotations

import torch
from torch import nn
from tsfm_public.models.tinytimemixer import TinyTimeMixerConfig, TinyTimeMixerModel

from .config import ModelConfig
from .dropout import use_fast_dropout
from .masking import sample_mask, unpatchify


def ttm_config(cfg: ModelConfig) -> TinyTimeMixerConfig:
    """The encoder's TinyTimeMixerConfig; keys map 1:1 onto ``params.yaml``'s ``model`` section."""
    return TinyTimeMixerConfig(
        context_length=cfg.context_length, patch_length=cfg.patch_length, patch_stride=cfg.patch_stride,
        num_input_channels=cfg.num_input_channels, d_model=cfg.d_model, num_layers=cfg.num_layers,
        expansion_factor=cfg.expansion_factor, dropout=cfg.dropout, mode=cfg.mode, gated_attn=cfg.gated_attn,
        scaling=cfg.scaling, prediction_length=cfg.patch_length,  # unused by the backbone
    )


def ttm_encoder(cfg: ModelConfig) -> TinyTimeMixerModel:
    """A fresh TinyTimeMixer backbone for ``cfg``, its dropout layers drawing 16-bit masks on CPU (:mod:`.dropout`)."""
    return use_fast_dropout(TinyTimeMixerModel(ttm_config(cfg)))


class PatchDecoder(nn.Module):
    """Latents ``[B, C, N, D]`` -> patches ``[B, C, N, P]``: a linear map, or a one-hidden-layer MLP."""

    def __init__(self, d_model: int, patch_length: int, hidden: int = 0):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, hidden), nn.GELU(),
                                     nn.Linear(hidden, patch_length))
        else:
            self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, patch_length))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MaskedTTM(nn.Module):
    """Masked-signal model: hide patches, encode with TTM, decode every patch back to samples."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ttm_encoder(cfg)
        self.decoder = PatchDecoder(cfg.d_model, cfg.patch_length, cfg.decoder_hidden)
        if cfg.mask_token:
            self.decoder.register_parameter("mask_token", nn.Parameter(torch.zeros(())))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.cfg.num_input_channels or x.shape[2] != self.cfg.context_length:
            raise ValueError(f"input [B, C, L] = {list(x.shape)} does not match model channels "
                             f"{self.cfg.num_input_channels} and context_length {self.cfg.context_length}")

    def hide(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace hidden patches of ``x [B, C, L]``; returns the masked input and ``[B, C, L]`` visibility."""
        hidden = sample_mask(mask, self.cfg.patch_length).expand_as(x)
        fill = self.decoder.mask_token.to(x.dtype) if self.cfg.mask_token else x.new_zeros(())
        return torch.where(hidden, fill, x), ~hidden

    def encode(self, x: torch.Tensor, visible: torch.Tensor | None = None):
        """``x [B, C, L]`` -> latents ``[B, C, N, D]``, loc and scale ``[B, 1, C]`` of TTM's scaler.

        ``visible`` (``[B, C, L]`` bool) restricts TTM's scaler to visible samples.
        """
        self._check_input(x)
        obs = None if visible is None else visible.transpose(1, 2)
        out = self.encoder(past_values=x.transpose(1, 2), past_observed_mask=obs)
        return out.last_hidden_state, out.loc, out.scale

    def decode(self, z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, N, D]`` -> reconstruction ``[B, C, L]`` in input units."""
        y = unpatchify(self.decoder(z))
        return y * scale.transpose(1, 2) + loc.transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, C, L]``, ``mask [B, N]`` (True = hidden) -> reconstruction ``[B, C, L]``."""
        self._check_input(x)
        if mask.shape != (x.shape[0], self.cfg.num_patches):
            raise ValueError(f"mask shape {list(mask.shape)} != [B, N] = [{x.shape[0]}, {self.cfg.num_patches}]")
        x_in, visible = self.hide(x, mask)
        z, loc, scale = self.encode(x_in, visible)
        return self.decode(z, loc, scale)
