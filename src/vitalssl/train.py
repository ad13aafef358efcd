"""Masked-signal-model pretraining: a boring, explicit loop with resume and DDP.

Resumable state lives in a work directory outside the declared outputs (``dvc
repro`` and ``dvc exp run`` clear those before a run). After every epoch the
work directory holds the outputs so far and ``state.pt``; the outputs are
copied into ``output_dir`` only when training ends, so a half-finished run
never looks complete. ``state.pt`` is keyed by params, code and data; a key
mismatch is refused with a message that says what differs.

Every epoch reseeds its own randomness (shuffling, masks, dropout) from
(seed, epoch, rank), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .config import PretrainConfig, to_dict
from .data import EpochBatchSampler, WindowDataset, resolve_data_file
from .losses import msm_objective
from .masking import make_mask
from .fingerprint import code_fingerprint, data_fingerprint
from .model import MaskedTTM, ttm_config
from .outputs import history_csv, plot_history, publish, write_json
from .schedule import lr_at



class NonFiniteLossError(FloatingPointError):
    pass


class ResumeMismatchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- set-up

def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_distributed(device_kind: str) -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, we_initialised) from torchrun's environment or an existing group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")), True
    return 0, 1, 0, False


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for but no CUDA device is available; use --device cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


# --------------------------------------------------------------------------- one epoch

def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return nullcontext()


def _epoch_generator(seed: int, epoch: int, rank: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 101 + rank) * 7 + salt)


def train_one_epoch(model, loader, optimizer, cfg: PretrainConfig, epoch: int, step0: int, total_steps: int,
                    warmup_steps: int, device: torch.device, scaler, rank: int, world: int, pbar=None) -> dict:
    """One pass over the rank's batches; returns the mean loss terms over all ranks and the last LR."""
    model.train()
    mcfg = cfg.model
    gen = _epoch_generator(cfg.seed, epoch, rank, salt=1)
    torch.manual_seed(((cfg.seed * 1_000_003 + epoch) * 101 + rank) * 7 + 2)  # dropout
    sums = torch.zeros(4, dtype=torch.float64)  # loss*n, msm*n, stft*n, n
    params = [p for p in model.parameters() if p.requires_grad]
    lr = 0.0
    for b, x in enumerate(loader):
        step = step0 + b
        lr = lr_at(step, cfg.lr, warmup_steps, total_steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x = x.to(device, non_blocking=True)
        mask = make_mask(cfg.mask_type, x.shape[0], mcfg.num_patches, cfg.mask_ratio, gen).to(device)
        with _autocast(device, cfg.amp):
            recon = model(x, mask)
        terms = msm_objective(recon.float(), x, mask, mcfg.patch_length, cfg.stft, cfg.stft_weight)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, batch {b + 1}; "
                                     f"the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        clip = cfg.gradient_clip if cfg.gradient_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not torch.isfinite(gnorm):  # gradients are averaged over ranks: every rank sees this together
            raise NonFiniteLossError(f"non-finite gradient norm at epoch {epoch + 1}, batch {b + 1} (loss "
                                     f"{loss.item():.4g} on rank {rank}); the last good checkpoint is kept")
        scaler.step(optimizer)
        scaler.update()
        n = x.shape[0]
        sums += torch.tensor([loss.item() * n, terms["msm"].item() * n, terms["stft"].item() * n, n],
                             dtype=torch.float64)
        if pbar is not None:
            pbar.update(1)
            if (b + 1) % cfg.log_interval == 0 or b + 1 == len(loader):
                pbar.set_postfix(loss=f"{sums[0].item() / sums[3].item():.4f}", lr=f"{lr:.2e}")
    if world > 1:
        dist.all_reduce(sums)
    n = sums[3].item()
    return {"loss": sums[0].item() / n, "msm": sums[1].item() / n, "stft": sums[2].item() / n, "lr": lr,
            "steps": len(loader)}


@torch.no_grad()
def evaluate(model, dataset: WindowDataset, masks: torch.Tensor, cfg: PretrainConfig, device: torch.device,
             rank: int, world: int, batch_size: int) -> dict:
    """Mean loss terms over the whole validation set with its fixed masks (sharded over ranks)."""
    model.eval()
    idx = np.arange(rank, len(dataset), world)
    sums = torch.zeros(4, dtype=torch.float64)
    for i in range(0, len(idx), batch_size):
        sel = idx[i:i + batch_size]
        x = dataset[sel].to(device)
        mask = masks[torch.from_numpy(sel)].to(device)
        with _autocast(device, cfg.amp):
            recon = model(x, mask)
        t = msm_objective(recon.float(), x, mask, cfg.model.patch_length, cfg.stft, cfg.stft_weight)
        n = len(sel)
        sums += torch.tensor([t["loss"].item() * n, t["msm"].item() * n, t["stft"].item() * n, n],
                             dtype=torch.float64)
    if world > 1:
        dist.all_reduce(sums)
    n = max(sums[3].item(), 1.0)
    return {"loss": sums[0].item() / n, "msm": sums[1].item() / n, "stft": sums[2].item() / n}


def zero_fill_msm(dataset: WindowDataset, masks: torch.Tensor, patch_length: int, batch_size: int = 512) -> float:
    """MSM of predicting zeros in every hidden patch (1.0 in expectation on z-scored windows)."""
    from .losses import masked_mse
    tot, n = 0.0, 0
    for i in range(0, len(dataset), batch_size):
        sel = np.arange(i, min(i + batch_size, len(dataset)))
        x = dataset[sel]
        tot += masked_mse(torch.zeros_like(x), x, masks[torch.from_numpy(sel)], patch_length).item() * len(sel)
        n += len(sel)
    return tot / n


# --------------------------------------------------------------------------- outputs

def _unwrap(model):
    return model.module if isinstance(model, DDP) else model


def _checkpoint(model, optimizer, cfg, epoch, best_val, metrics, global_step) -> dict:
    m = _unwrap(model)
    return {
        "epoch": epoch,
        "encoder_state_dict": m.encoder.state_dict(),
        "decoder_state_dict": m.decoder.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "best_val_loss": best_val,
        "metrics": metrics,
        "config": {**to_dict(cfg), "ttm_config": ttm_config(cfg.model).to_dict()},
        "model_config": to_dict(cfg.model),
        "global_step": global_step,
    }


# --------------------------------------------------------------------------- the run

def pretrain(cfg: PretrainConfig, data_dir: Path, output_dir: Path, work_dir: Path, *,
             metrics_path: Path | None = None, plots_path: Path | None = None, resume: str = "auto",
             progress: bool = True, log=print) -> dict:
    """Train; returns ``{"history", "best_val_loss", "model", "rank", "world_size"}``.

    ``resume``: ``auto`` continues a matching state and starts fresh (with a message)
    on a mismatch; ``require`` fails unless a matching state exists; ``never`` starts fresh.
    """
    from tqdm import tqdm

    if resume not in ("auto", "require", "never"):
        raise ValueError(f"resume must be auto, require or never, got {resume!r}")
    device_kind = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    rank, world, local_rank, own_pg = setup_distributed(device_kind)
    try:
        return _pretrain(cfg, Path(data_dir), Path(output_dir), Path(work_dir), metrics_path, plots_path, resume,
                         progress, log, rank, world, local_rank, tqdm)
    finally:
        if own_pg:
            dist.destroy_process_group()


def _pretrain(cfg, data_dir, output_dir, work_dir, metrics_path, plots_path, resume, progress, log,
              rank, world, local_rank, tqdm):
    is_main = rank == 0
    device = pick_device(cfg.device, local_rank)
    if device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is the global batch and must divide by the "
                         f"{world} processes")
    per_rank_batch = cfg.batch_size // world
    set_seed(cfg.seed)

    train_path = resolve_data_file(data_dir, cfg.train_file, "--train-file")
    val_path = resolve_data_file(data_dir, cfg.val_file, "--val-file")
    limit = cfg.fast_windows if cfg.fast else None
    train_ds = WindowDataset(train_path, cfg.channels, limit, "--train-file")
    val_ds = WindowDataset(val_path, cfg.channels, limit, "--val-file")
    for ds, flag in ((train_ds, "--train-file"), (val_ds, "--val-file")):
        if ds.length != cfg.model.context_length:
            raise ValueError(f"{flag}: windows are {ds.length} samples but --context-length is "
                             f"{cfg.model.context_length}")

    key_parts = {"config": to_dict(cfg), "code": code_fingerprint(),
                 "data": data_fingerprint([train_path, val_path]), "world_size": world}
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()

    model = MaskedTTM(cfg.model).to(device)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    use_scaler = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    history, best_val, start_epoch = [], math.inf, 0
    state_path = work_dir / "state.pt"
    if resume != "never" and state_path.exists():
        state = load_checkpoint(state_path, map_location=device)
        if state.get("key") == key:
            model.encoder.load_state_dict(state["encoder_state_dict"])
            model.decoder.load_state_dict(state["decoder_state_dict"])
            optimizer.load_state_dict(state["optimizer_state_dict"])
            history, best_val, start_epoch = list(state["history"]), state["best_val_loss"], state["epoch"] + 1
            if is_main:
                log(f"Resuming from {state_path} after epoch {start_epoch}/{cfg.epochs}")
        else:
            diff = [k for k in ("config", "code", "data", "world_size")
                    if state.get("key_parts", {}).get(k) != key_parts[k]]
            msg = (f"resumable state {state_path} does not match this run (differs in: "
                   f"{', '.join(diff) or 'unknown'}); ")
            if resume == "require":
                raise ResumeMismatchError(msg + "refusing to resume. Remove it or run without --resume.")
            if is_main:
                log(msg + "not resuming, starting fresh.")
            start_epoch = 0
    elif resume == "require":
        raise ResumeMismatchError(f"--resume: no resumable state at {state_path}")
    if world > 1:
        dist.barrier()  # every rank has read the state before rank 0 may clear it
    if start_epoch == 0 and is_main:
        if work_dir.exists():
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True)
        write_json(work_dir / "training_config.json",
                    {**to_dict(cfg), "data_dir": str(data_dir), "train_file": train_path.name,
                     "val_file": val_path.name, "world_size": world, "device": str(device),
                     "train_windows": len(train_ds), "val_windows": len(val_ds),
                     "ttm_config": ttm_config(cfg.model).to_dict()})
    if world > 1:
        dist.barrier()

    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    sampler = EpochBatchSampler(len(train_ds), per_rank_batch, cfg.seed, rank, world)
    loader = DataLoader(train_ds, sampler=sampler, batch_size=None, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0)
    steps_per_epoch = len(sampler)
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    val_masks = make_mask(cfg.mask_type, len(val_ds), cfg.model.num_patches, cfg.mask_ratio,
                          torch.Generator().manual_seed(cfg.seed + 7919))
    zero_fill = zero_fill_msm(val_ds, val_masks, cfg.model.patch_length)
    if is_main and start_epoch == 0:
        log(f"Pretraining on {device} x{world}: {len(train_ds)} train / {len(val_ds)} val windows, "
            f"{steps_per_epoch} steps/epoch, {sum(p.numel() for p in model.parameters()):,} parameters; "
            f"zero-fill val MSM {zero_fill:.4f}")

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        sampler.set_epoch(epoch)
        pbar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                    disable=not (progress and is_main), unit="batch")
        tr = train_one_epoch(ddp_model, loader, optimizer, cfg, epoch, epoch * steps_per_epoch, total_steps,
                             warmup_steps, device, scaler, rank, world, pbar)
        pbar.close()
        va = evaluate(model, val_ds, val_masks, cfg, device, rank, world, per_rank_batch)
        entry = {"epoch": epoch + 1, "lr": tr["lr"], "train_loss": tr["loss"], "train_msm": tr["msm"],
                 "train_stft": tr["stft"], "val_loss": va["loss"], "val_msm": va["msm"], "val_stft": va["stft"],
                 "time_s": round(time.time() - t0, 3)}
        history.append(entry)
        improved = va["loss"] < best_val
        best_val = min(best_val, va["loss"])
        if is_main:
            metrics = {k: v for k, v in entry.items() if k != "time_s"}
            ckpt = _checkpoint(model, optimizer, cfg, epoch, best_val, metrics, (epoch + 1) * steps_per_epoch)
            if improved:
                save_atomic(ckpt, work_dir / "best_model.pt")
            if (epoch + 1) % cfg.save_interval == 0:
                save_atomic(ckpt, work_dir / f"checkpoint_epoch_{epoch + 1}.pt")
            save_atomic(ckpt, work_dir / "last_model.pt")
            write_json(work_dir / "training_history.json", {"zero_fill_val_msm": zero_fill, "epochs": history})
            save_atomic({**ckpt, "history": history, "key": key, "key_parts": key_parts}, state_path)
            log(f"Epoch {epoch + 1}/{cfg.epochs} ({entry['time_s']:.1f}s)")
            log(f"  Train - Loss: {tr['loss']:.3f}, MSM: {tr['msm']:.3f}, STFT: {tr['stft']:.3f}")
            log(f"  Val   - Loss: {va['loss']:.3f}, MSM: {va['msm']:.3f}, STFT: {va['stft']:.3f}")
            if improved:
                log(f"  ✓ Best model saved (val_loss: {va['loss']:.3f})")
        if world > 1:
            dist.barrier()

    if is_main:
        plot_history(history, work_dir / "loss_curves.png")
        publish(work_dir, output_dir)
        best = min(history, key=lambda h: h["val_loss"])
        final = history[-1]
        summary = {
            "final": {k: v for k, v in final.items() if k != "time_s"},
            "best": {k: best[k] for k in ("epoch", "val_loss", "val_msm", "val_stft")},
            "zero_fill_val_msm": zero_fill,
            "best_val_msm_vs_zero_fill": best["val_msm"] / zero_fill,
            "train_windows": len(train_ds), "val_windows": len(val_ds),
        }
        if metrics_path is not None:
            Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
            write_json(Path(metrics_path), summary)
        if plots_path is not None:
            Path(plots_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(plots_path).with_name(Path(plots_path).name + ".tmp")
            tmp.write_text(history_csv(history))
            os.replace(tmp, plots_path)
        shutil.rmtree(work_dir, ignore_errors=True)
        log(f"Done: best val loss {best['val_loss']:.4f} at epoch {best['epoch']}; val MSM "
            f"{best['val_msm']:.4f} vs zero-fill {zero_fill:.4f}; outputs in {output_dir}")
    if world > 1:
        dist.barrier()
    return {"history": history, "best_val_loss": best_val, "model": model, "rank": rank, "world_size": world}


__all__ = ["pretrain", "train_one_epoch", "evaluate", "NonFiniteLossError", "ResumeMismatchError",
           "CheckpointError", "history_csv"]
