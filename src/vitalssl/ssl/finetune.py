"""Fine-tuning the pretrained encoder on another channel layout (the guide's step 3).

Dimensions: B batch, C pretrained channels, C' fine-tuning channels, L samples,
N patches, D model width, E TTM's expansion factor.

    from vitalssl.ssl.finetune import load_pretrained_with_channel_inflate

    model = load_pretrained_with_channel_inflate(
        "artifacts/foundation_model/best_model.pt", pretrain_channels=2, finetune_channels=5,
        channel_names=["ACC_X", "ACC_Y", "ACC_Z", "PPG", "ECG"], task="regression", num_outputs=1,
        freeze_encoder=True, unfreeze_last_n=1)
    print(model.transfer_report.summary())
    y = model(x)              # x [B, 5, 1250] -> [B, 1]

What "inflation" means for TinyTimeMixer:

* ``common_channel`` (the default): every channel goes through the same weights
  and no weight depends on the channel count, so inflation is a config change:
  every pretrained tensor is copied, and the PPG and ECG latents of the inflated
  model equal the pretrained model's.
* ``mix_channel``: each mixer layer has a channel mixer whose MLP
  (``fc1 [C*E, C]``, ``fc2 [C, C*E]``) and gate (``attn_layer [C, C]``) act
  across channels. They are inflated to C' channels as follows, with the
  pretrained channels at their positions in the new layout and the first C*E
  hidden units being the pretrained ones:

  - pretrained entries are copied (fc1 rows < C*E, columns at the pretrained
    channels; fc2 rows at the pretrained channels, columns < C*E; the gate's
    rows and columns at the pretrained channels; the matching biases);
  - the pretrained hidden units start blind to the new channels (their fc1
    columns for new channels are 0), and the pretrained channels' outputs start
    blind to the new hidden units (fc2 entries 0);
  - the new hidden units (fc1 rows >= C*E) and the new channels' outputs (fc2
    rows at new channels) keep the fresh initialisation of ``nn.Linear``;
  - the gate's new rows and columns and new biases are 0, so a new channel's
    gate logit starts at 0.

  The gate is a softmax over channels, so the new channels still dilute the
  pretrained channels' gates: in this mode the inflated model's PPG/ECG
  outputs are close to, not equal to, the pretrained model's.

Every pretrained tensor is either copied, inflated, or named as dropped (the
decoder is pretraining-only) in :class:`TransferReport`; a pretrained tensor that
fits nowhere is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn
from tsfm_public.models.tinytimemixer import TinyTimeMixerModel

from ..config import ConfigError, from_dict, to_dict
from .checkpoint import CheckpointError, load_checkpoint, model_config_of
from .config import ModelConfig
from .dropout import use_fast_dropout
from .model import ttm_encoder

TASKS = ("regression", "classification")
_MIXER = re.compile(r"^(.*\.mixers\.\d+)\.channel_feature_mixer\.(mlp\.fc1|mlp\.fc2|gating_block\.attn_layer)\.(weight|bias)$")


@dataclass
class TransferReport:
    """What happened to every tensor: pretrained ones copied, inflated or dropped; fine-tuning ones new."""
    channel_map: dict                                # pretrained channel name -> index in the fine-tuning layout
    copied: list = field(default_factory=list)       # encoder tensors loaded unchanged
    inflated: dict = field(default_factory=dict)     # encoder tensor -> how it was inflated
    dropped: list = field(default_factory=list)      # pretrained tensors not used for fine-tuning (the decoder)
    new: list = field(default_factory=list)          # fine-tuning model tensors without a pretrained source

    def summary(self) -> str:
        lines = [f"channels: {self.channel_map}",
                 f"copied {len(self.copied)} pretrained encoder tensors",
                 f"inflated {len(self.inflated)}:"] + [f"  {k}: {v}" for k, v in self.inflated.items()]
        lines += [f"dropped {len(self.dropped)} pretraining-only tensors: {', '.join(self.dropped)}",
                  f"new {len(self.new)} (freshly initialised): {', '.join(self.new)}"]
        return "\n".join(lines)


class FineTuneModel(nn.Module):
    """TTM encoder + a task head on the pooled latents: ``[B, C', L]`` -> ``[B, num_outputs]``.

    ``pool="channels"`` averages over patches and keeps channels side by side
    (``[B, C' * D]``, so the head knows which channel is which); ``"mean"`` also
    averages over channels (``[B, D]``). Classification returns logits.
    """

    def __init__(self, encoder: TinyTimeMixerModel, cfg: ModelConfig, task: str, num_outputs: int,
                 pool: str = "channels"):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
        if pool not in ("channels", "mean"):
            raise ValueError(f"pool {pool!r} is not channels or mean")
        if num_outputs < 1 or (task == "classification" and num_outputs < 2):
            raise ValueError(f"num_outputs {num_outputs}: need >= 1 for regression, >= 2 classes for classification")
        self.cfg, self.task, self.pool = cfg, task, pool
        self.encoder = encoder
        width = cfg.d_model * (cfg.num_input_channels if pool == "channels" else 1)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(cfg.dropout), nn.Linear(width, num_outputs))
        self.transfer_report: Optional[TransferReport] = None
        use_fast_dropout(self)   # an encoder from anywhere (from_pretrained too) draws its masks fast on CPU

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C', L]`` -> latents ``[B, C', N, D]``."""
        if x.ndim != 3 or x.shape[1] != self.cfg.num_input_channels or x.shape[2] != self.cfg.context_length:
            raise ValueError(f"input [B, C, L] = {list(x.shape)} does not match C = {self.cfg.num_input_channels}, "
                             f"L = {self.cfg.context_length}")
        return self.encoder(past_values=x.transpose(1, 2)).last_hidden_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        pooled = z.mean(dim=2).flatten(1) if self.pool == "channels" else z.mean(dim=(1, 2))
        return self.head(pooled)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE for regression (``target [B, num_outputs]`` or ``[B]``), cross-entropy for classification (``[B]`` ids)."""
        if self.task == "classification":
            return nn.functional.cross_entropy(out, target.long())
        return nn.functional.mse_loss(out, target.reshape(out.shape).to(out.dtype))


def set_trainable(model: FineTuneModel, freeze_encoder: bool, unfreeze_last_n: int = 0) -> None:
    """Freeze the encoder (the head stays trainable), then unfreeze its last ``unfreeze_last_n`` mixer layers."""
    mixers = model.encoder.encoder.mlp_mixer_encoder.mixers
    if not 0 <= unfreeze_last_n <= len(mixers):
        raise ValueError(f"unfreeze_last_n {unfreeze_last_n}: the encoder has {len(mixers)} mixer layers")
    if unfreeze_last_n and not freeze_encoder:
        raise ValueError("unfreeze_last_n needs freeze_encoder=True (an unfrozen encoder trains every layer)")
    for p in model.encoder.parameters():
        p.requires_grad_(not freeze_encoder)
    for layer in list(mixers)[len(mixers) - unfreeze_last_n:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for p in model.head.parameters():
        p.requires_grad_(True)


def channel_layout(pretrained: Sequence[str], finetune_channels: int,
                   channel_names: Optional[Sequence[str]]) -> dict:
    """Pretrained channel name -> index among the fine-tuning channels.

    Without ``channel_names`` the pretrained channels are the last ones (``[new..., PPG, ECG]``).
    """
    if channel_names is None:
        if finetune_channels < len(pretrained):
            raise ValueError(f"finetune_channels {finetune_channels} < the {len(pretrained)} pretrained channels")
        return {c: finetune_channels - len(pretrained) + i for i, c in enumerate(pretrained)}
    names = list(channel_names)
    if len(names) != finetune_channels or len(set(names)) != len(names):
        raise ValueError(f"channel_names {names}: need {finetune_channels} distinct names")
    missing = [c for c in pretrained if c not in names]
    if missing:
        raise ValueError(f"channel_names {names} lack the pretrained channel(s) {', '.join(missing)}; "
                         f"name them to carry their weights over")
    return {c: names.index(c) for c in pretrained}


def inflate_channel_mixer(name: str, w: torch.Tensor, fresh: torch.Tensor, pos: list, C: int, E: int) -> torch.Tensor:
    """One mix_channel tensor, pretrained ``w`` (C channels) into ``fresh`` (C' channels), as the module docstring says."""
    out = fresh.detach().clone()
    pos_t = torch.tensor(pos)
    kind = _MIXER.match(name).group(2, 3)
    if kind == ("mlp.fc1", "weight"):             # [C'E, C']
        out[:C * E] = 0
        out[:C * E, pos_t] = w
    elif kind == ("mlp.fc1", "bias"):             # [C'E]
        out[:C * E] = w
    elif kind == ("mlp.fc2", "weight"):           # [C', C'E]
        out[pos_t] = 0
        out[pos_t, :C * E] = w
    elif kind == ("mlp.fc2", "bias"):             # [C']
        out[pos_t] = w
    elif kind == ("gating_block.attn_layer", "weight"):   # [C', C']
        out.zero_()
        out[pos_t.unsqueeze(1), pos_t.unsqueeze(0)] = w
    else:                                                 # gate bias [C']
        out.zero_()
        out[pos_t] = w
    return out


def load_pretrained_with_channel_inflate(checkpoint_path: str | Path, pretrain_channels: int = 2,
                                         finetune_channels: int = 5, model_config: Optional[dict] = None, *,
                                         channel_names: Optional[Sequence[str]] = None, task: str = "regression",
                                         num_outputs: int = 1, pool: str = "channels", freeze_encoder: bool = False,
                                         unfreeze_last_n: int = 0, seed: Optional[int] = None) -> FineTuneModel:
    """A :class:`FineTuneModel` for ``finetune_channels`` channels from a pretraining checkpoint.

    ``model_config``: keys of the ``model`` section to change for fine-tuning (e.g.
    ``dropout``, or ``mode: mix_channel`` to learn channel mixers from scratch);
    the rest comes from the checkpoint. ``channel_names``: the fine-tuning layout;
    each pretrained channel (the checkpoint's ``channels``) must appear in it.
    ``seed`` seeds the fresh initialisation of new tensors. The returned model's
    ``transfer_report`` says what happened to every tensor.
    """
    ckpt = load_checkpoint(Path(checkpoint_path))
    if "encoder_state_dict" not in ckpt:
        raise CheckpointError(f"{checkpoint_path} lacks encoder_state_dict")
    src_cfg = model_config_of(ckpt)
    if src_cfg.num_input_channels != pretrain_channels:
        raise ValueError(f"pretrain_channels {pretrain_channels} but {checkpoint_path} was trained on "
                         f"{src_cfg.num_input_channels} channels")
    over = dict(model_config or {})
    if over.get("num_input_channels", finetune_channels) != finetune_channels:
        raise ConfigError(f"model_config num_input_channels {over['num_input_channels']} != finetune_channels "
                          f"{finetune_channels}")
    cfg = from_dict(ModelConfig, {**to_dict(src_cfg), **over, "num_input_channels": finetune_channels}, "model_config")
    pretrained_names = tuple(ckpt["config"].get("channels", ()))
    if len(pretrained_names) != pretrain_channels:
        raise CheckpointError(f"{checkpoint_path}: config.channels {list(pretrained_names)} does not name "
                              f"{pretrain_channels} channels")
    cmap = channel_layout(pretrained_names, finetune_channels, channel_names)

    rng = torch.random.get_rng_state()
    try:
        if seed is not None:
            torch.manual_seed(seed)
        model = FineTuneModel(ttm_encoder(cfg), cfg, task, num_outputs, pool)
    finally:
        if seed is not None:
            torch.random.set_rng_state(rng)
    report = TransferReport(channel_map=cmap,
                            dropped=[f"decoder.{k}" for k in ckpt.get("decoder_state_dict", {})])
    model.load_state_dict(transfer(ckpt["encoder_state_dict"], model, src_cfg, cfg, list(cmap.values()), report,
                                   str(checkpoint_path)))
    set_trainable(model, freeze_encoder, unfreeze_last_n)
    model.transfer_report = report
    return model


def transfer(src: dict, model: FineTuneModel, src_cfg: ModelConfig, cfg: ModelConfig, pos: list,
             report: TransferReport, where: str) -> dict:
    """The fine-tuning model's state dict with every pretrained encoder tensor copied or inflated into it."""
    dst = model.state_dict()
    state = dict(dst)
    bad = []
    for k, w in src.items():
        key = f"encoder.{k}"
        if key not in dst:
            bad.append(f"{k} {list(w.shape)} (no such tensor in the fine-tuning encoder)")
        elif dst[key].shape == w.shape:
            state[key] = w.clone()
            report.copied.append(key)
        elif _MIXER.match(key) is not None:
            state[key] = inflate_channel_mixer(key, w, dst[key], pos, src_cfg.num_input_channels,
                                               src_cfg.expansion_factor)
            report.inflated[key] = f"{list(w.shape)} -> {list(dst[key].shape)}, pretrained channels at {pos}"
        else:
            bad.append(f"{k}: pretrained {list(w.shape)} vs fine-tuning {list(dst[key].shape)}")
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} pretrained encoder tensor(s) do not fit the fine-tuning "
                              f"model (model_config changes a shape, or the checkpoint is of another "
                              f"architecture): " + "; ".join(bad))
    report.new = [k for k in dst if k.removeprefix("encoder.") not in src]
    return state
