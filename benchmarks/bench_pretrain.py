"""Training throughput: the full step against the model's own step on a batch in memory.

Per batch size (default 128 and 512 on CPU, 128 and 2048 on CUDA), samples/s of
  floor       encoder + decoder forward/backward, batch and mask already on the device
  torch drop  the floor with torch's own nn.Dropout in place of the model's Dropout16
  + AdamW     the floor plus the training's optimizer step
  in memory   + both losses (masked MSE + MR-STFT): the model step with its objective
  full step   ``train_one_epoch``: memory-mapped loader and prefetch thread, masks,
              both losses, clipping, AdamW, bookkeeping
  loader      the loader alone (sampler, memory-map gather, prefetch, copy to the device)
and the share of the full step spent in the MR-STFT term (its forward and backward
timed alone), peak RSS and, on CUDA, peak GPU memory. CUDA runs under the training's
autocast (``amp``). Measures are interleaved over ``--rounds`` rounds and the medians
printed, with the median of the per-round ratio full / in memory: on a shared machine
the load changes between rounds, less within one. The same ratio from process CPU
time (all threads) is printed too: it does not count time spent descheduled by other
load, so on a shared CPU it is the steadier of the two (on CUDA only wall time means
anything).

Usage:
    python benchmarks/bench_pretrain.py [--batch-sizes 128 512] [--batches 5] [--rounds 3]
                                        [--windows 16384] [--device auto] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=int, nargs="+", help="default: 128 512 on CPU, 128 2048 on CUDA")
    ap.add_argument("--batches", type=int, default=5, help="timed steps per measure and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--windows", type=int, default=16384, help="windows in the generated window file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile model and loss, as `compile: true`")
    args = ap.parse_args()

    from vitalssl.entry.pretrain_stage import pretrain_config
    from vitalssl.ssl.distributed import pick_device
    from vitalssl.windowfile import NpyAppender, WindowDataset

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = pretrain_config(params, {"device": args.device, "epochs": 1000, "warmup_epochs": 1,
                                   "compile": args.compile})
    device = pick_device(cfg.device, 0)
    sizes = args.batch_sizes or ([128, 2048] if device.type == "cuda" else [128, 512])
    print(f"device {device} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}; "
          f"d_model {cfg.model.d_model}, {cfg.model.num_layers} layers, dropout {cfg.model.dropout}; "
          f"amp {cfg.amp} (autocast {'on' if device.type == 'cuda' and cfg.amp else 'off'}), compile {cfg.compile}; "
          f"{args.batches} steps x {args.rounds} rounds per measure, medians")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train_windows.npy"
        app = NpyAppender(path, (2, 1250))
        rng = np.random.default_rng(0)
        for i in range(0, args.windows, 1024):
            app.append(rng.standard_normal((min(1024, args.windows - i), 2, 1250)).astype(np.float32))
        app.close()
        ds = WindowDataset(path, cfg.channels)
        rows = [bench_batch(cfg, device, ds, B, args) for B in sizes]
    print_table(rows, device)


def bench_batch(cfg, device, ds, B, args) -> dict:
    from dataclasses import replace

    from vitalssl.ssl.losses import mrstft_loss, msm_objective
    from vitalssl.ssl.masking import make_mask
    from vitalssl.ssl.model import MaskedTTM
    from vitalssl.ssl.prefetch import Prefetcher
    from vitalssl.ssl.train import RunContext, autocast, build_optimizer, compiled, make_scaler, train_one_epoch
    from vitalssl.ssl.dropout import use_fast_dropout
    from vitalssl.windowfile import EpochBatchSampler

    cfg = replace(cfg, batch_size=B)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = MaskedTTM(cfg.model).to(device)
    step_model = torch.compile(model) if cfg.compile else model
    objective = compiled(msm_objective) if cfg.compile else msm_objective
    opt = build_optimizer(model, cfg)
    x = ds[list(range(B))].to(device)
    mask = make_mask(cfg.mask_type, B, cfg.model.num_patches, cfg.mask_ratio,
                     torch.Generator(device=device).manual_seed(0))
    recon = x.clone().add_(0.1).requires_grad_()
    P = cfg.model.patch_length

    def floor():
        model.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp):
            out = step_model(x, mask)
        out.float().square().mean().backward()

    plain = use_fast_dropout(copy.deepcopy(model), fast=False)   # torch's own dropout: the old floor

    def torch_dropout():
        plain.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp):
            out = plain(x, mask)
        out.float().square().mean().backward()

    def adamw():
        floor()
        opt.step()

    def in_memory():
        opt.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp):
            out = step_model(x, mask)
        objective(out.float(), x, mask, P, cfg.stft, cfg.stft_weight)["loss"].backward()
        opt.step()

    def stft():
        recon.grad = None
        mrstft_loss(recon, x, cfg.stft).backward()

    sampler = EpochBatchSampler(len(ds), B, cfg.seed)
    ctx = RunContext(cfg, device, make_scaler(device, cfg.amp), steps_per_epoch=args.batches,
                     total_steps=cfg.epochs * args.batches, warmup_steps=args.batches)
    epoch = [0]

    def full_epoch():  # args.batches steps through the training's own epoch function
        epoch[0] += 1
        sampler.set_epoch(epoch[0])
        train_one_epoch(model if not cfg.compile else step_model, _loader(ds, sampler, args.batches), opt, ctx,
                        epoch[0])

    def loader_epoch():
        epoch[0] += 1
        sampler.set_epoch(epoch[0])
        with Prefetcher(iter(_loader(ds, sampler, args.batches)), device) as batches:
            for xb in batches:
                xb.sum()  # the batch is complete on the device

    def per_step(fn):
        return lambda: [fn() for _ in range(args.batches)]

    measures = {"floor": per_step(floor), "torch_dropout": per_step(torch_dropout), "adamw": per_step(adamw), "in_memory": per_step(in_memory),
                "full": full_epoch, "loader": loader_epoch, "stft": per_step(stft)}
    first = {}
    for name, fn in measures.items():  # warm-up round; with --compile it includes compilation
        t0 = time.perf_counter()
        fn()
        _sync(device)
        first[name] = time.perf_counter() - t0
    times = {k: [] for k in measures}
    cpu = {k: [] for k in measures}
    for _ in range(args.rounds):
        for name, fn in measures.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"B": B, "first": first, **{k: args.batches * B / v for k, v in med.items()},
           "full_vs_mem": statistics.median(m / f for m, f in zip(times["in_memory"], times["full"])),
           "stft_share": statistics.median(s / f for s, f in zip(times["stft"], times["full"])),
           "full_ratios": [m / f for m, f in zip(times["in_memory"], times["full"])],
           "full_ratios_cpu": [m / f for m, f in zip(cpu["in_memory"], cpu["full"])],
           "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "gpu": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
    print(f"  batch {B}: per-round full/in-memory {[round(r, 3) for r in row['full_ratios']]} (wall time), "
          f"{[round(r, 3) for r in row['full_ratios_cpu']]} (CPU time), median "
          f"{statistics.median(row['full_ratios_cpu']):.3f}", flush=True)
    return row


def print_table(rows, device) -> None:
    head = ("batch", "floor", "floor, nn.Dropout", "+ AdamW", "in memory (+ both losses)", "full step", "full / in memory",
            "loader alone", "MR-STFT share of full", "peak RSS", "peak GPU")
    print("samples/s; ratios are medians of per-round ratios")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        gpu = f"{r['gpu']:.0f} MiB" if r["gpu"] is not None else "-"
        print(f"| {r['B']} | {r['floor']:,.0f} | {r['torch_dropout']:,.0f} | {r['adamw']:,.0f} | {r['in_memory']:,.0f} | {r['full']:,.0f} | "
              f"{r['full_vs_mem']:.2f}x | {r['loader']:,.0f} | {r['stft_share']:.0%} | {r['rss']:,.0f} MiB | {gpu} |")
    for r in rows:
        print(f"batch {r['B']}: first (warm-up) round s: " +
              ", ".join(f"{k} {v:.1f}" for k, v in r["first"].items()))
    sys.stdout.flush()


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loader(ds, sampler, n):
    return torch.utils.data.DataLoader(ds, sampler=_Take(sampler, n), batch_size=None)


class _Take(torch.utils.data.Sampler):
    """The first ``n`` batches of a batch sampler."""

    def __init__(self, sampler, n):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        for i, b in enumerate(self.sampler):
            if i >= self.n:
                return
            yield b

    def __len__(self):
        return self.n


if __name__ == "__main__":
    main()
