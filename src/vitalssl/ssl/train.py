"""Masked-signal-model pretraining: a boring, explicit loop.

:func:`pretrain` reads as the method: set up, then for each epoch train /
evaluate / checkpoint, then publish. Resuming is :mod:`.resume`'s, the process
group :mod:`.distributed`'s, the finished outputs :mod:`.outputs`'.

Every epoch reseeds its own randomness (shuffling, masks, dropout) from
(seed, epoch, rank) through :func:`vitalssl.seeding.derive_seed`, so a resumed
run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import functools
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from ..atomic import write_json
from ..config import to_dict
from ..seeding import DROPOUT, MASK, VAL_MASK, derive_seed
from ..windowfile import BlockShuffleBatchSampler, EpochBatchSampler, WindowDataset, resolve_data_file
from .checkpoint import make_checkpoint, save_atomic
from .config import PretrainConfig
from .distributed import all_reduce_sum, barrier, device_kind, pick_device, setup_distributed, unwrap
from .fingerprint import code_fingerprint, data_fingerprint
from .folders import check_run_paths
from .losses import masked_mse, msm_objective
from .masking import make_mask
from .model import MaskedTTM, ttm_config
from .outputs import plot_history, publish
from .prefetch import Prefetcher
from .resume import RunKey, load_or_start, numeric_config, prepare_work_dir, remove_work_dir, save_state
from .schedule import lr_at
from .tally import NonFiniteLossError, StepTally

__all__ = ["NonFiniteLossError", "RunContext", "train_one_epoch", "evaluate", "pretrain"]


@dataclass(frozen=True)
class RunContext:
    """What one epoch needs to know about the run besides the model, data and optimizer."""
    cfg: PretrainConfig
    device: torch.device
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    rank: int = 0
    world: int = 1


# --------------------------------------------------------------------------- set-up

def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on biases, norms or the mask token)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def amp_dtype(device_type: str, amp: bool, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on a device: None (float32) on CPU or with ``amp`` off,
    else bfloat16 where supported, float16 otherwise (which needs loss scaling)."""
    if device_type != "cuda" or not amp:
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    return amp_dtype(device.type, amp, device.type == "cuda" and torch.cuda.is_bf16_supported())


def _amp_name(device: torch.device, amp: bool) -> str:
    dtype = _amp_dtype(device, amp)
    return "off" if dtype is None else str(dtype).removeprefix("torch.")


def make_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 autocast (CUDA without bf16)."""
    return torch.amp.GradScaler("cuda", enabled=_amp_dtype(device, amp) == torch.float16)


def autocast(device: torch.device, enabled: bool):
    dtype = _amp_dtype(device, enabled)
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


@functools.lru_cache(maxsize=None)
def compiled(fn):
    """``torch.compile(fn)``, one wrapper per function, so every epoch reuses the graphs compiled in the first."""
    return torch.compile(fn)


def warmup_epochs(cfg: PretrainConfig, log=print) -> int:
    """``cfg.warmup_epochs``, cut to the training length with a notice when it is longer."""
    if cfg.warmup_epochs > cfg.epochs:
        log(f"note: warmup_epochs {cfg.warmup_epochs} > epochs {cfg.epochs}; warming up over all {cfg.epochs}")
        return cfg.epochs
    return cfg.warmup_epochs


# --------------------------------------------------------------------------- one epoch

def mask_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """The epoch's mask stream on ``device``: masks are drawn where the model runs, no copy per step.

    The same (seed, epoch, rank) gives the same masks on a given device type; CUDA's
    generator is not CPU's, so a run moved between them draws different (equally random) masks.
    """
    return torch.Generator(device=device).manual_seed(derive_seed(seed, MASK, epoch, rank))


def train_one_epoch(model, loader, optimizer, ctx: RunContext, epoch: int, pbar=None) -> dict:
    """One pass over the rank's batches; returns the mean loss terms over all ranks and the last LR.

    Nothing is read back from the device inside a step: the loss sums and a non-finite
    loss or gradient norm are kept on the device (:class:`StepTally`) and read every
    ``log_interval`` batches and at the end, where a non-finite step raises naming its batch.
    """
    cfg, device = ctx.cfg, ctx.device
    model.train()
    gen = mask_generator(cfg.seed, epoch, ctx.rank, device)
    torch.manual_seed(derive_seed(cfg.seed, DROPOUT, epoch, ctx.rank))
    objective = compiled(msm_objective) if cfg.compile else msm_objective
    tally = StepTally(device)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.gradient_clip if cfg.gradient_clip > 0 else float("inf")
    n_batches = len(loader)
    lr = 0.0
    with Prefetcher(iter(loader), device) as batches:
        for b, x in enumerate(batches):
            step = epoch * ctx.steps_per_epoch + b
            lr = lr_at(step, cfg.lr, ctx.warmup_steps, ctx.total_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            mask = make_mask(cfg.mask_type, x.shape[0], cfg.model.num_patches, cfg.mask_ratio, gen)
            with autocast(device, cfg.amp):
                recon = model(x, mask)
            terms = objective(recon.float(), x, mask, cfg.model.patch_length, cfg.stft, cfg.stft_weight)
            optimizer.zero_grad(set_to_none=True)
            ctx.scaler.scale(terms["loss"]).backward()
            ctx.scaler.unscale_(optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
            # gradients are averaged over ranks, so every rank sees a non-finite norm at the same batch. With
            # fp16 loss scaling an overflow is expected now and then: scaler.step skips it and lowers the scale.
            tally.add(b, terms, x.shape[0], None if ctx.scaler.is_enabled() else gnorm)
            ctx.scaler.step(optimizer)
            ctx.scaler.update()
            if pbar is not None:
                pbar.update(1)
            if (b + 1) % cfg.log_interval == 0 or b + 1 == n_batches:
                tally.check(epoch, ctx.rank)
                if pbar is not None:
                    pbar.set_postfix(loss=f"{tally.means()['loss']:.4f}", lr=f"{lr:.2e}")
    tally.check(epoch, ctx.rank)
    all_reduce_sum(tally.sums, ctx.world)
    return {**tally.means(), "lr": lr}


@torch.no_grad()
def evaluate(model, dataset: WindowDataset, masks: torch.Tensor, ctx: RunContext, batch_size: int) -> dict:
    """Mean loss terms over the whole validation set with its fixed masks (sharded over ranks)."""
    cfg = ctx.cfg
    model.eval()
    idx = np.arange(ctx.rank, len(dataset), ctx.world)
    tally = StepTally(ctx.device)
    for i in range(0, len(idx), batch_size):
        sel = idx[i:i + batch_size]
        x = dataset[sel].to(ctx.device)
        mask = masks[torch.from_numpy(sel)].to(ctx.device)
        with autocast(ctx.device, cfg.amp):
            recon = model(x, mask)
        tally.add(i // batch_size, msm_objective(recon.float(), x, mask, cfg.model.patch_length, cfg.stft,
                                                cfg.stft_weight), len(sel))
    all_reduce_sum(tally.sums, ctx.world)
    return tally.means()


def validation_masks(cfg: PretrainConfig, n: int) -> torch.Tensor:
    """The fixed ``[n, N]`` validation masks (True = hidden): the same every epoch and every run."""
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, VAL_MASK))
    return make_mask(cfg.mask_type, n, cfg.model.num_patches, cfg.mask_ratio, gen)


def zero_fill_msm(dataset: WindowDataset, masks: torch.Tensor, patch_length: int, batch_size: int = 512) -> float:
    """MSM of predicting zeros in every hidden patch (1.0 in expectation on z-scored windows)."""
    tot = 0.0
    for i in range(0, len(dataset), batch_size):
        sel = np.arange(i, min(i + batch_size, len(dataset)))
        x = dataset[sel]
        tot += masked_mse(torch.zeros_like(x), x, masks[torch.from_numpy(sel)], patch_length).item() * len(sel)
    return tot / len(dataset)


# --------------------------------------------------------------------------- the run

def make_sampler(cfg: PretrainConfig, n: int, rank: int, world: int):
    """The training batch sampler of ``cfg.sampler``: uniform shuffling, or blocks through a shuffle buffer."""
    if cfg.sampler == "block":
        return BlockShuffleBatchSampler(n, cfg.batch_size // world, cfg.seed, rank, world, cfg.block_size,
                                        cfg.shuffle_buffer)
    return EpochBatchSampler(n, cfg.batch_size // world, cfg.seed, rank, world)


def load_windows(cfg: PretrainConfig, data_dir: Path) -> tuple[WindowDataset, WindowDataset]:
    limit = cfg.fast_windows if cfg.fast else None
    out = []
    for name, flag in ((cfg.train_file, "--train-file"), (cfg.val_file, "--val-file")):
        ds = WindowDataset(resolve_data_file(data_dir, name, flag), cfg.channels, limit, flag)
        if ds.length != cfg.model.context_length:
            raise ValueError(f"{flag}: windows are {ds.length} samples but --context-length is "
                             f"{cfg.model.context_length}")
        out.append(ds)
    return out[0], out[1]


def pretrain(cfg: PretrainConfig, data_dir: Path, output_dir: Path, work_dir: Path, *, resume: str = "auto",
             keep_state: bool = False, progress: bool = True, log=print) -> dict:
    """Train, write the guide's outputs to ``output_dir``; returns ``{"history", "summary", "model", "rank"}``.

    ``resume``: a policy of :mod:`vitalssl.ssl.resume` (``auto``, ``require``, ``fresh``). The work
    directory is removed once the outputs are published, unless ``keep_state`` (the caller still
    has outputs to write and removes it itself).
    """
    check_run_paths(data_dir, output_dir, work_dir)
    rank, world, local_rank, own_group = setup_distributed(device_kind(cfg.device))
    try:
        return _pretrain(cfg, Path(data_dir), Path(output_dir), Path(work_dir), resume, keep_state, progress,
                         log if rank == 0 else (lambda *_: None), rank, world, local_rank)
    finally:
        if own_group:
            import torch.distributed as dist
            dist.destroy_process_group()


def _pretrain(cfg, data_dir, output_dir, work_dir, resume, keep_state, progress, log, rank, world,
              local_rank) -> dict:
    from tqdm import tqdm

    # ---- set up
    is_main = rank == 0
    device = pick_device(cfg.device, local_rank)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is the global batch and must divide by the "
                         f"{world} processes")
    if device.type == "cpu" and world > 1:
        import os
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    set_seed(cfg.seed)
    train_ds, val_ds = load_windows(cfg, data_dir)
    key = RunKey.of(config=numeric_config(cfg, device.type, _amp_name(device, cfg.amp)),
                    code=code_fingerprint(), data=data_fingerprint([train_ds.path, val_ds.path]),
                    world_size=world)
    model = MaskedTTM(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg)
    scaler = make_scaler(device, cfg.amp)
    state = load_or_start(work_dir, key, resume, model, optimizer, scaler, device, log)
    barrier(world)  # every rank has read the state before rank 0 may clear the work dir
    if is_main:
        prepare_work_dir(work_dir, state, log)
        if state.start_epoch == 0:
            write_json(work_dir / "training_config.json",
                       {**to_dict(cfg), "data_dir": str(data_dir), "train_file": train_ds.path.name,
                        "val_file": val_ds.path.name, "world_size": world, "device": str(device),
                        "train_windows": len(train_ds), "val_windows": len(val_ds),
                        "ttm_config": ttm_config(cfg.model).to_dict()})
    barrier(world)

    sampler = make_sampler(cfg, len(train_ds), rank, world)
    # pinning is the prefetch thread's (train_one_epoch), not the loader's
    loader = DataLoader(train_ds, sampler=sampler, batch_size=None, num_workers=cfg.num_workers,
                        persistent_workers=cfg.num_workers > 0)
    ctx = RunContext(cfg, device, scaler, len(sampler), cfg.epochs * len(sampler),
                     warmup_epochs(cfg, log) * len(sampler), rank, world)
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    if cfg.compile:
        train_model = torch.compile(train_model)
    val_masks = validation_masks(cfg, len(val_ds))
    zero_fill = zero_fill_msm(val_ds, val_masks, cfg.model.patch_length)
    if state.start_epoch > 0:
        log(f"Resuming from {work_dir / 'state.pt'} after epoch {state.start_epoch}/{cfg.epochs}")
    else:
        log(f"Pretraining on {device} x{world}: {len(train_ds)} train / {len(val_ds)} val windows, "
            f"{ctx.steps_per_epoch} steps/epoch, {sum(p.numel() for p in model.parameters()):,} parameters; "
            f"autocast {_amp_name(device, cfg.amp)}, "
            f"{cfg.sampler} sampler; zero-fill val MSM {zero_fill:.4f}")

    # ---- for each epoch: train, evaluate, checkpoint
    history, best_val = state.history, state.best_val
    for epoch in range(state.start_epoch, cfg.epochs):
        t0 = time.time()
        sampler.set_epoch(epoch)
        with tqdm(total=ctx.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                  disable=not (progress and is_main), unit="batch") as pbar:
            tr = train_one_epoch(train_model, loader, optimizer, ctx, epoch, pbar)
        va = evaluate(model, val_ds, val_masks, ctx, cfg.batch_size // world)
        if not np.isfinite(va["loss"]):
            raise NonFiniteLossError(f"non-finite validation loss ({va['loss']}) after epoch {epoch + 1}; "
                                     f"the last good checkpoint is kept")
        entry = {"epoch": epoch + 1, "lr": tr["lr"], "train_loss": tr["loss"], "train_msm": tr["msm"],
                 "train_stft": tr["stft"], "val_loss": va["loss"], "val_msm": va["msm"], "val_stft": va["stft"],
                 "time_s": round(time.time() - t0, 3)}
        history.append(entry)
        improved = va["loss"] < best_val
        best_val = min(best_val, va["loss"])
        if is_main:
            save_epoch(work_dir, model, optimizer, cfg, epoch, best_val, entry, ctx, history, key, zero_fill,
                       improved)
            log_epoch(log, entry, cfg.epochs, improved)
        barrier(world)

    # ---- publish
    summary = run_summary(history, zero_fill, len(train_ds), len(val_ds))
    if is_main:
        plot_history(history, work_dir / "loss_curves.png")
        publish(work_dir, output_dir)
        if not keep_state:
            remove_work_dir(work_dir, log)
        log(f"Done: best val loss {summary['best']['val_loss']:.4f} at epoch {summary['best']['epoch']}; val MSM "
            f"{summary['best']['val_msm']:.4f} vs zero-fill {zero_fill:.4f}; outputs in {output_dir}")
    barrier(world)
    return {"history": history, "summary": summary, "model": model, "rank": rank}


def save_epoch(work_dir, model, optimizer, cfg, epoch, best_val, entry, ctx, history, key, zero_fill,
               improved) -> None:
    """The epoch's checkpoints, history and resumable state, in the work directory."""
    metrics = {k: v for k, v in entry.items() if k != "time_s"}
    ckpt = make_checkpoint(unwrap(model), optimizer, cfg, epoch, best_val, metrics,
                           (epoch + 1) * ctx.steps_per_epoch)
    if improved:
        save_atomic(ckpt, work_dir / "best_model.pt")
    if (epoch + 1) % cfg.save_interval == 0:
        save_atomic(ckpt, work_dir / f"checkpoint_epoch_{epoch + 1}.pt")
    save_atomic(ckpt, work_dir / "last_model.pt")
    write_json(work_dir / "training_history.json", {"zero_fill_val_msm": zero_fill, "epochs": history})
    save_state(work_dir, ckpt, history, key, ctx.scaler)


def log_epoch(log, entry: dict, epochs: int, improved: bool) -> None:
    """The guide's console lines for one epoch."""
    log(f"Epoch {entry['epoch']}/{epochs} ({entry['time_s']:.1f}s)")
    log(f"  Train - Loss: {entry['train_loss']:.3f}, MSM: {entry['train_msm']:.3f}, STFT: {entry['train_stft']:.3f}")
    log(f"  Val   - Loss: {entry['val_loss']:.3f}, MSM: {entry['val_msm']:.3f}, STFT: {entry['val_stft']:.3f}")
    if improved:
        log(f"  ✓ Best model saved (val_loss: {entry['val_loss']:.3f})")


def run_summary(history: list[dict], zero_fill: float, n_train: int, n_val: int) -> dict:
    """Final and best epoch, against the zero-fill baseline (the stage's DVC metrics)."""
    best = min(history, key=lambda h: h["val_loss"])
    return {
        "final": {k: v for k, v in history[-1].items() if k != "time_s"},
        "best": {k: best[k] for k in ("epoch", "val_loss", "val_msm", "val_stft")},
        "zero_fill_val_msm": zero_fill,
        "best_val_msm_vs_zero_fill": best["val_msm"] / zero_fill,
        "train_windows": n_train, "val_windows": n_val,
    }
