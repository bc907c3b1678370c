"""The optimizer and the learning-rate schedule of a training phase."""
from __future__ import annotations

import math

import torch

from higgs_lora.config import OPTIMIZERS, SCHEDULES
from higgs_lora.errors import ConfigError


def learning_rate(step: int, *, total_steps: int, lr: float, schedule: str, warmup_frac: float) -> float:
    """The rate at global step `step`: linear warm-up over warmup_frac of the steps, then constant or cosine."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    warmup = int(total_steps * warmup_frac)
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr


def make_optimizer(params, *, name: str, lr: float, weight_decay: float, device: torch.device):
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    assert set(classes) == set(OPTIMIZERS)
    if name not in classes:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    # The fused kernels exist for CUDA (and recent CPU builds); foreach is the portable fallback.
    kwargs = dict(lr=lr, weight_decay=weight_decay, foreach=True)
    if device.type == "cuda":
        kwargs = dict(lr=lr, weight_decay=weight_decay, fused=True)
    return classes[name](params, **kwargs)
