"""Splitting the work of one command over processes (``torchrun`` / ``accelerate launch`` / SLURM).

Every process walks the same list of studies and takes the batches ``b`` with
``b % world_size == rank``; no collective calls are needed (see :mod:`ctresample.workflows`).
"""
from __future__ import annotations

import os

import torch

__all__ = ["dist_info", "resolve_device", "batches", "my_batches"]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` from ``torch.distributed`` when initialised, else the env vars."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover
        pass
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1)
    if not (0 <= rank < world):
        raise ValueError(f"inconsistent RANK={rank} / WORLD_SIZE={world}")
    return rank, world


def resolve_device(device: str) -> torch.device:
    """``"cuda"`` under several processes means ``cuda:LOCAL_RANK`` (one GPU per process)."""
    dev = torch.device(device)
    local = os.environ.get("LOCAL_RANK")
    if dev.type == "cuda" and dev.index is None and local is not None and torch.cuda.is_available():
        dev = torch.device("cuda", int(local) % torch.cuda.device_count())
    return dev


def batches(n: int, batch_size: int) -> list[list[int]]:
    """Slices ``0 .. n-1`` in fixed consecutive batches ``[0, B), [B, 2B), ...``."""
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def my_batches(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """The batches of :func:`batches` that process ``rank`` of ``world`` computes."""
    return [b for i, b in enumerate(batches(n, batch_size)) if i % world == rank]
