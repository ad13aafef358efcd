"""Configs of the model and its training: the encoder/decoder, the MR-STFT loss, the run's hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import check


@dataclass(frozen=True)
class ModelConfig:
    """Encoder/decoder config; keys are TinyTimeMixerConfig's own names (section `model`)."""
    context_length: int
    patch_length: int
    patch_stride: int
    num_input_channels: int
    d_model: int
    num_layers: int
    expansion_factor: int
    dropout: float
    mode: str                  # common_channel | mix_channel
    gated_attn: bool
    scaling: Optional[str]     # null | std | mean; computed over visible samples only
    decoder_hidden: int        # 0 = linear decoder, else one hidden layer of this width
    mask_token: bool           # learned value in hidden patches instead of zeros

    def __post_init__(self):
        check(self.context_length >= 2, "model.context_length (--context-length)", "must be >= 2 samples")
        check(self.patch_length > 0 and self.context_length % self.patch_length == 0,
               "model.patch_length (--patch-size)",
               f"{self.patch_length} does not divide context_length {self.context_length}")
        check(self.patch_length < self.context_length, "model.patch_length (--patch-size)",
              f"{self.patch_length} leaves a single patch in context_length {self.context_length}; masking "
              f"needs at least 2 (one hidden, one visible)")
        check(self.patch_stride == self.patch_length, "model.patch_stride",
               "must equal patch_length (masking works on non-overlapping patches)")
        check(self.num_input_channels >= 1, "model.num_input_channels", "must be >= 1")
        check(self.mode in ("common_channel", "mix_channel"), "model.mode", "must be common_channel or mix_channel")
        check(self.scaling in (None, "std", "mean"), "model.scaling", "must be null, std or mean")
        check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        for k in ("d_model", "num_layers", "expansion_factor"):
            check(getattr(self, k) >= 1, f"model.{k}", f"must be >= 1, got {getattr(self, k)}")
        check(self.decoder_hidden >= 0, "model.decoder_hidden",
              f"must be >= 0 (0 = linear decoder), got {self.decoder_hidden}")

    @property
    def num_patches(self) -> int:
        return self.context_length // self.patch_length


@dataclass(frozen=True)
class STFTConfig:
    """Multi-resolution STFT loss (section `stft`)."""
    fft_sizes: tuple[int, ...]
    hop_sizes: tuple[int, ...]
    win_lengths: tuple[int, ...]
    eps: float

    def __post_init__(self):
        n = len(self.fft_sizes)
        check(n > 0 and len(self.hop_sizes) == n and len(self.win_lengths) == n, "stft",
               "fft_sizes, hop_sizes and win_lengths must have the same non-zero length")
        for f, h, w in zip(self.fft_sizes, self.hop_sizes, self.win_lengths):
            check(0 < h <= w <= f, "stft", f"need 0 < hop <= win <= fft, got hop={h} win={w} fft={f}")
        check(self.eps > 0, "stft.eps", "must be > 0")


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining hyperparameters: the guide's flag names as top-level params."""
    seed: int
    channels: tuple[str, ...]
    train_file: str
    val_file: str
    mask_ratio: float
    mask_type: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    stft_weight: float
    gradient_clip: float
    device: str
    num_workers: int
    amp: bool
    log_interval: int
    save_interval: int
    fast: bool
    fast_windows: int          # windows per split used by --fast
    compile: bool              # torch.compile the model and the loss
    sampler: str               # random | block (contiguous blocks through a shuffle buffer)
    block_size: int            # windows per block (sampler: block)
    shuffle_buffer: int        # windows in the shuffle buffer, a multiple of block_size (sampler: block)
    model: ModelConfig
    stft: STFTConfig

    def __post_init__(self):
        check(0 < self.mask_ratio < 1, "mask_ratio (--mask-ratio)", f"{self.mask_ratio} is not in (0, 1)")
        check(self.mask_type in ("random", "block"), "mask_type (--mask-type)", f"{self.mask_type!r} is not random or block")
        check(self.epochs >= 1, "epochs (--epochs)", "must be >= 1")
        check(self.batch_size >= 1, "batch_size (--batch-size)", "must be >= 1")
        check(self.lr > 0, "lr (--lr)", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay (--weight-decay)", "must be >= 0")
        check(self.warmup_epochs >= 0, "warmup_epochs (--warmup-epochs)",
              "must be >= 0 (a warmup longer than training is cut to the training length)")
        check(self.stft_weight >= 0, "stft_weight (--stft-weight)", "must be >= 0")
        check(self.gradient_clip >= 0, "gradient_clip (--gradient-clip)", "must be >= 0 (0 disables)")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device (--device)",
               "must be auto, cpu, cuda or cuda:N")
        check(self.num_workers >= 0, "num_workers (--num-workers)", "must be >= 0")
        check(self.log_interval >= 1, "log_interval (--log-interval)", "must be >= 1")
        check(self.save_interval >= 1, "save_interval (--save-interval)", "must be >= 1")
        check(len(self.channels) >= 1 and len(set(self.channels)) == len(self.channels), "channels (--channels)",
               "must be a non-empty list without repeats")
        check(len(self.channels) == self.model.num_input_channels, "channels (--channels)",
               f"{len(self.channels)} channel(s) given but model.num_input_channels is {self.model.num_input_channels}")
        check(self.fast_windows >= 1, "fast_windows", "must be >= 1")
        if self.stft_weight > 0:  # the STFT term is skipped at weight 0, so its sizes do not matter then
            L = self.model.context_length
            for f in self.stft.fft_sizes:
                check(f < 2 * L, "stft.fft_sizes",
                      f"{f} needs windows longer than {f // 2} samples (reflect padding) but "
                      f"model.context_length is {L}; use FFT sizes below {2 * L}")
        check(self.sampler in ("random", "block"), "sampler", f"{self.sampler!r} is not random or block")
        check(self.block_size >= 1, "block_size", "must be >= 1")
        check(self.shuffle_buffer >= self.block_size and self.shuffle_buffer % self.block_size == 0,
              "shuffle_buffer", f"{self.shuffle_buffer} must be a positive multiple of block_size {self.block_size}")
        n_hidden = round(self.mask_ratio * self.model.num_patches)
        check(1 <= n_hidden < self.model.num_patches, "mask_ratio (--mask-ratio)",
               f"{self.mask_ratio} of {self.model.num_patches} patches hides {n_hidden}; need 1..{self.model.num_patches - 1}")
