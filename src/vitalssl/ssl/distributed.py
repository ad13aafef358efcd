"""Process-group set-up for DDP (torchrun's environment) and the device each rank uses."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


def setup_distributed(device_kind: str) -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, we_initialised) from torchrun's environment or an existing group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")), True
    return 0, 1, 0, False


def device_kind(name: str) -> str:
    """``cuda`` or ``cpu`` for a ``device`` param (``auto`` picks CUDA when there is one)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else "cpu"


def pick_device(name: str, local_rank: int) -> torch.device:
    if device_kind(name) == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: no CUDA device is available here; use --device cpu (or auto)")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def unwrap(model):
    """The model inside a DDP wrapper (state dicts are saved unwrapped)."""
    return model.module if isinstance(model, DDP) else model
