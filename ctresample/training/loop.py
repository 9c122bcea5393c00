"""The one training loop the trainers share, and its pieces: EMA, resumable checkpoints, loss curves, run folders.

The exponential moving average is diffusers' ``EMAModel`` (:func:`make_ema`); the
trainers export and validate the averaged weights through :func:`ema_model`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..utils import progress as progress_bar
from .data import Augment

__all__ = ["TrainRunConfig", "train_loop", "make_ema", "ema_model", "save_checkpoint", "load_checkpoint", "plot_losses",
           "hardware_summary", "RunClock", "infinite_loader", "make_accelerator", "lr_factor", "resume_from",
           "save_state", "start_run", "write_json"]


@dataclass(frozen=True)
class TrainRunConfig:
    """The settings every training target shares; each target's config adds its own and may change defaults."""

    output_dir: str = "runs/train"
    data_root: str | None = None        # None: $CTRESAMPLE_DATA, else ../shared/data/ct from the working directory
    split_file: str | None = None       # None: the shipped configs/data_split.yaml
    cache_dir: str | None = None        # None: runs/cache under the working directory
    image_size: int = 256
    augment: Augment = field(default_factory=Augment)
    batch_size: int = 8
    lr: float = 5e-4
    lr_final_fraction: float = 0.1      # cosine decay to lr * this over the step/time budget
    warmup_steps: int = 100
    ema_decay: float = 0.995
    max_steps: int = 100_000
    max_minutes: float = 40.0           # wall-time budget across resumes (whichever ends first)
    log_every: int = 25
    checkpoint_every_minutes: float = 3.0
    seed: int = 0
    num_threads: int | None = 2         # torch CPU threads (None: torch default)
    mixed_precision: str = "no"         # accelerate: "no", "fp16", "bf16"


def make_ema(model: torch.nn.Module, decay: float):
    """diffusers ``EMAModel`` over ``model``'s parameters.

    After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so early averages
    are not dominated by the random initialisation. (``update_after_step=-1`` gives that
    count; diffusers' default 0 would start one update later, at ``n / (9 + n)``.) Frozen
    parameters are copied, not averaged.
    """
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=float(decay), update_after_step=-1)


def ema_model(ema, model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (buffers and all) holding the averaged weights of ``ema``, in eval mode, frozen."""
    averaged = copy.deepcopy(model)
    ema.copy_to(averaged.parameters())
    return averaged.eval().requires_grad_(False)


def _load_ema_state(ema, state: dict, module: torch.nn.Module) -> None:
    """Restore ``ema`` from a checkpoint; also reads the format of checkpoints written before ``EMAModel``."""
    if "model" in state and "shadow_params" not in state:  # {"decay", "num_updates", "model": state_dict}
        params = dict(state["model"])
        state = {"decay": float(state["decay"]), "optimization_step": int(state["num_updates"]),
                 "shadow_params": [params[name].clone() for name, _ in module.named_parameters()]}
    ema.load_state_dict(state)


def save_checkpoint(path, **state) -> None:
    """Atomic ``torch.save`` (write to a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plot_losses(history: list[dict], path, title: str = "", keys: tuple[str, ...] = ("loss",),
                val_key: str | None = None) -> None:
    """Training curves (raw and smoothed) plus an optional validation metric on a twin axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not history:
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = np.array([h["step"] for h in history if "loss" in h])
    for key in keys:
        vals = np.array([h[key] for h in history if key in h], dtype=float)
        if len(vals) == 0:
            continue
        s = steps[: len(vals)]
        ax.plot(s, vals, alpha=0.25, lw=0.8)
        k = max(1, len(vals) // 50)
        if len(vals) > k:
            sm = np.convolve(vals, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1:], sm, lw=1.5, label=f"{key} (moving avg {k})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if val_key:
        pts = [(h["step"], h[val_key]) for h in history if val_key in h]
        if pts:
            ax2 = ax.twinx()
            ax2.plot(*zip(*pts, strict=True), "o-", color="black", label=val_key)
            ax2.set_ylabel(val_key)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def hardware_summary(device: torch.device | str | None = None) -> str:
    """E.g. ``'CPU: 2 threads (x86_64), torch 2.x'`` or the CUDA device name."""
    if device is not None and torch.device(device).type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"CPU: {cpu}, {torch.get_num_threads()} torch threads ({os.cpu_count()} cores visible), "
            f"torch {torch.__version__}")


class RunClock:
    """Wall time across resumes: ``elapsed`` = time already spent (from the checkpoint) + this process."""

    def __init__(self, already: float = 0.0):
        self.already = float(already)
        self.start = time.time()

    @property
    def elapsed(self) -> float:
        return self.already + time.time() - self.start


def infinite_loader(loader):
    """Cycle a DataLoader forever (each pass reshuffles)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def make_accelerator(seed: int, num_threads: int | None, mixed_precision: str = "no"):
    """An ``accelerate.Accelerator`` (CPU, one GPU, or ``accelerate launch`` multi-process), seeded."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if num_threads:
        torch.set_num_threads(int(num_threads))
    if mixed_precision is False or mixed_precision is None:
        mixed_precision = "no"  # YAML 1.1 reads a bare `no` as false
    acc = Accelerator(mixed_precision=mixed_precision)
    # the loops sample with the global generators (DataLoader workers = 0); one seed per process
    set_seed(seed, device_specific=True)
    return acc


def write_json(path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def resume_from(ckpt_path, module, opt, ema, acc, resume: bool):
    """Load ``checkpoint.pt`` into model/optimizer/EMA (``EMAModel``)/RNG when resuming.

    Returns ``(step, history, elapsed_seconds)``; ``(0, [], 0.0)`` for a fresh run.
    """
    if not (resume and Path(ckpt_path).exists()):
        return 0, [], 0.0
    state = load_checkpoint(ckpt_path)
    module.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    _load_ema_state(ema, state["ema"], module)
    set_rng_state(state["rng"])
    acc.print(f"resumed from {ckpt_path} at step {state['step']} ({state['elapsed'] / 60:.1f} min done)")
    return state["step"], state["history"], state["elapsed"]


def save_state(ckpt_path, acc, module, opt, ema, *, step: int, history: list, clock: "RunClock", cfg, **extra) -> None:
    """Write ``checkpoint.pt`` (model, optimizer, EMA, step, history, elapsed, RNG, config) on the main process.

    The counterpart of :func:`resume_from`; ``extra`` adds loop-specific fields.
    """
    if not acc.is_main_process:
        return
    save_checkpoint(ckpt_path, model=module.state_dict(), optimizer=opt.state_dict(), ema=ema.state_dict(), step=step,
                    history=history, elapsed=clock.elapsed, rng=rng_state(), config=dataclasses.asdict(cfg), **extra)


def lr_factor(step: int, progress: float, warmup: int, final_fraction: float) -> float:
    """Linear warm-up, then cosine from 1 to ``final_fraction`` as ``progress`` goes 0 -> 1."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(max(progress, 0.0), 1.0)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * p))


def start_run(cfg):
    """The run folder (created, with ``config.yaml``) and the accelerator of a training config."""
    from ..config import save_config

    out = Path(cfg.output_dir)
    acc = make_accelerator(cfg.seed, cfg.num_threads, cfg.mixed_precision)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    return out, acc


def train_loop(cfg: TrainRunConfig, acc, model, opt, ema, ema_source: torch.nn.Module, loader, loss_fn, *,
               step: int, history: list, clock: RunClock, save, desc: str, progress: bool = True,
               after_step=None) -> int:
    """The optimisation loop the training targets share; returns the step reached.

    Until ``cfg.max_steps`` or ``cfg.max_minutes`` (wall time across resumes, whichever ends
    first): learning rate by :func:`lr_factor` over that budget, ``loss, logged = loss_fn(batch)``
    (``logged``: extra scalars, read only at logging steps), backward, gradient norm clipped to 1 over the
    trainable parameters, optimiser step, ``ema.step(ema_source.parameters())`` (``EMAModel``). Every
    ``log_every`` steps
    the loss goes to ``history`` (and, without a progress bar, a line to the log every 8 of
    those); ``after_step(step)`` runs after each step (validation monitors); ``save(step)``
    every ``checkpoint_every_minutes`` and once at the end.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    budget_s = cfg.max_minutes * 60.0
    bar = progress_bar(cfg.max_steps, desc, initial=step, unit="step", leave=True,
                       disable=not (progress and acc.is_local_main_process))
    last_ckpt = clock.elapsed
    data = infinite_loader(loader)
    model.train()
    while step < cfg.max_steps and clock.elapsed < budget_s:
        frac = max(step / cfg.max_steps, clock.elapsed / budget_s)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, frac, cfg.warmup_steps, cfg.lr_final_fraction)
        loss, logged = loss_fn(next(data))
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(ema_source.parameters())
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == 1:
            history.append({"step": step, "loss": loss.item(), **{k: float(v) for k, v in logged.items()},
                            "lr": opt.param_groups[0]["lr"],
                            "elapsed_s": round(clock.elapsed, 1)})
            bar.set_postfix(loss=f"{loss.item():.4g}")
            if not progress and step % (cfg.log_every * 8) == 0:
                recent = [h["loss"] for h in history[-8:] if "loss" in h]
                acc.print(f"{desc} step {step}: loss {np.mean(recent):.4g} (last {len(recent)} logs), "
                          f"{clock.elapsed / 60:.1f} min", flush=True)
        if after_step is not None:
            after_step(step)
        if clock.elapsed - last_ckpt > cfg.checkpoint_every_minutes * 60:
            save(step)
            last_ckpt = clock.elapsed
    bar.close()
    save(step)
    return step
