"""Checkpoints: a single safetensors file (tensors) whose metadata holds the JSON state, written
atomically, so a kill at any instant leaves either the previous checkpoint or the new one.

The batch order and the learning rate are pure functions of (seed, phase, epoch, step), so the
weights, the optimizer's moments and the position (epoch, step) are enough to continue bit-for-bit,
provided the run continues with the same settings: every checkpoint also holds the settings it was
made with (the resolved recipe, the data's fingerprint, the split), and resuming with others is refused
with one line naming each difference, old -> new.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from higgs_lora.hardware import distributed
from higgs_lora.errors import CheckpointError
from higgs_lora.io import atomic_path

CHECKPOINT_FORMAT = "higgs-lora-checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """Where fit() keeps its state (after every epoch, and when interrupted), and whether to start from it."""
    path: Path
    resume: bool = False
    settings: dict | None = None  # what the run must keep to resume from here (JSON-able); saved in the file

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))


def flatten(settings: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 1e-3, 'model': {'width': 128}}} -> {'train.lr': 1e-3, 'train.model.width': 128}."""
    out = {}
    for k, v in settings.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(old: dict, new: dict) -> list[str]:
    """'name old -> new' for each setting that differs between two nested dicts (JSON-normalised)."""
    old, new = flatten(json.loads(json.dumps(old))), flatten(json.loads(json.dumps(new)))
    return [f"{k} {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def refuse_changed_settings(where, old: dict, new: dict) -> None:
    """One line naming every difference; nothing when the settings agree."""
    changed = differences(old, new)
    if changed:
        raise CheckpointError(f"--resume: settings differ from {where}: {'; '.join(changed)} "
                              "(resume with the original settings, or start afresh with --force)")


def save_state(path: Path, model, opt, *, phase, epoch, step, carry, best, history, settings=None) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars = {}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
            else:
                scalars[f"{idx}.{k}"] = v
    if best["state"] is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best["state"].items()})
    meta = dict(format=CHECKPOINT_FORMAT, phase=phase, epoch=epoch, step=step, carry=carry, world=distributed.world()[1],
                best=dict(loss=best["loss"], epoch=best["epoch"], bad_epochs=best["bad_epochs"]),
                param_groups=opt_state["param_groups"], optim_scalars=scalars, history=history, settings=settings,
                torch_rng=torch.get_rng_state().numpy().tobytes().hex())
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})


def load_state(path: Path, model, opt, phase, *, settings: dict | None = None):
    """Restore model, optimizer and RNG from the checkpoint; refuses one made with other `settings`."""
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e}); delete it to start this phase afresh") from None
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("phase") != phase:
        raise CheckpointError(f"{path}: not a {phase} checkpoint")
    if settings is not None and meta.get("settings") is not None:
        refuse_changed_settings(f"the checkpoint {path}", meta["settings"], settings)
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: checkpoint does not match this network ({str(e).splitlines()[0]})") from None
    state = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for k, v in meta["optim_scalars"].items():
        idx, name = k.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict(dict(state=state, param_groups=meta["param_groups"]))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(bytes.fromhex(meta["torch_rng"]), dtype=np.uint8).copy()))
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    best = dict(meta["best"], state=best_state)
    carry = meta["carry"]
    if carry is not None:
        carry = dict(carry, loss_sum=torch.tensor(carry["loss_sum"], dtype=torch.float64),
                     correct=torch.tensor(carry["correct"], dtype=torch.float64))
    return meta["epoch"], meta["step"], carry, best, meta["history"], meta.get("world", 1)
