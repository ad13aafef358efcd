"""Training throughput: the full step vs the model's floor, at batch 128.

full step  = batch read from a memory-mapped window file, masking, encoder, decoder,
             masked MSE + MR-STFT, backward, gradient clipping, AdamW step
floor      = encoder + decoder forward/backward on a tensor already in memory

Prints samples/s for both, their ratio and peak RSS. Usage:
    python benchmarks/bench_pretrain.py [--batches 30] [--windows 8192] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
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
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--windows", type=int, default=8192)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from vitalssl.entry.pretrain_stage import pretrain_config
    from vitalssl.ssl.distributed import pick_device
    from vitalssl.ssl.masking import make_mask
    from vitalssl.ssl.model import MaskedTTM
    from vitalssl.ssl.train import RunContext, build_optimizer, make_scaler, train_one_epoch
    from vitalssl.windowfile import EpochBatchSampler, NpyAppender, WindowDataset

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = pretrain_config(params, {"device": args.device, "epochs": 1000, "warmup_epochs": 1})
    device = pick_device(cfg.device, 0)
    torch.manual_seed(0)
    B = cfg.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train_windows.npy"
        app = NpyAppender(path, (2, 1250))
        rng = np.random.default_rng(0)
        for _ in range(0, args.windows, 1024):
            app.append(rng.standard_normal((1024, 2, 1250)).astype(np.float32))
        app.close()
        ds = WindowDataset(path, cfg.channels)

        model = MaskedTTM(cfg.model).to(device)
        opt = build_optimizer(model, cfg)  # the training's own optimizer (AdamW, decay on weight matrices)

        # floor: forward/backward only, input already in memory
        x = ds[list(range(B))].to(device)
        mask = make_mask("random", B, cfg.model.num_patches, cfg.mask_ratio).to(device)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        for i in range(args.warmup + args.batches):
            if i == args.warmup:
                sync()
                t0 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            model(x, mask).square().mean().backward()
        sync()
        floor = args.batches * B / (time.perf_counter() - t0)

        # full step, through the real loop
        sampler = EpochBatchSampler(len(ds), B, cfg.seed)

        ctx = RunContext(cfg, device, make_scaler(device, cfg.amp), steps_per_epoch=args.batches,
                         total_steps=cfg.epochs * args.batches, warmup_steps=args.batches)
        loader = torch.utils.data.DataLoader(ds, sampler=_Take(sampler, args.warmup), batch_size=None)
        train_one_epoch(model, loader, opt, ctx, epoch=0)
        sync()
        loader = torch.utils.data.DataLoader(ds, sampler=_Take(sampler, args.batches), batch_size=None)
        t0 = time.perf_counter()
        train_one_epoch(model, loader, opt, ctx, epoch=1)
        sync()
        full = args.batches * B / (time.perf_counter() - t0)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"device            {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"batch             {B}, model d_model {cfg.model.d_model}, {cfg.model.num_layers} layers, "
          f"dropout {cfg.model.dropout}")
    print(f"floor  (fwd+bwd)  {floor:8.1f} samples/s  ({B / floor * 1000:.0f} ms/step)")
    print(f"full step         {full:8.1f} samples/s  ({B / full * 1000:.0f} ms/step)")
    print(f"full / floor time {floor / full:8.3f}")
    print(f"peak RSS          {rss:8.0f} MiB")
    sys.stdout.flush()


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
