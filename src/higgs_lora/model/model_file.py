"""Saved networks: safetensors (tensors) + JSON (everything else); nothing is ever unpickled.

A model is two files, NAME.safetensors and NAME.json. The JSON holds the ModelConfig, the feature
names, the standardizer's provenance and the SHA-256 of the tensor file, so a truncated or swapped
file is caught on load.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from higgs_lora.config import ModelConfig
from higgs_lora.data.standardize import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.io import atomic_path, read_json, sha256_file, write_json
from higgs_lora.hardware.runtime import versions
from higgs_lora.model.network import ResidualMLP

MODEL_FORMAT = "higgs-lora-model"
ADAPTER_FORMAT = "higgs-lora-adapter"
FORMAT_VERSION = 1


class _Loaded(NamedTuple):
    model: ResidualMLP
    standardizer: Standardizer
    meta: dict


class LoadedModel(_Loaded):
    """What load_model gives: (model, standardizer, meta), unpackable as a tuple, and the file's `path`."""
    path: Path


def tensors_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Content hash of named tensors, independent of file layout; ties an adapter to its base."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


SUFFIXES = (".safetensors", ".json")


def model_paths(path) -> tuple[Path, Path]:
    """NAME.safetensors and NAME.json for NAME, NAME.safetensors or NAME.json. The extensions are appended
    to a name given without ours, never put in place of a suffix of its own: merged.v2 -> merged.v2.safetensors."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in SUFFIXES else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def saved_paths(path) -> tuple[Path, Path]:
    """model_paths of a file to read, refusing a path that names something else: a file that is not ours
    (base.pt, never swapped for a neighbouring base.safetensors), or a directory."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: a directory; give a model or adapter file (NAME.safetensors with NAME.json beside it)")
    if p.suffix not in SUFFIXES and p.is_file():
        raise UserError(f"{p}: not a higgs-lora file (a model or adapter is NAME.safetensors with NAME.json beside it)")
    st_path, js_path = model_paths(p)
    old = p.with_suffix(".json")  # earlier versions wrote `--out base.v1` as base.json: say so, load nothing
    if p.suffix and p.suffix not in SUFFIXES and not js_path.exists() and old.exists():
        raise UserError(f"{js_path}: file not found; {old} is there (earlier higgs-lora versions replaced the suffix "
                        f"of --out {p.name}): give {old.with_suffix('.safetensors')} to use it")
    return st_path, js_path


def model_state(model: ResidualMLP, standardizer: Standardizer) -> dict[str, torch.Tensor]:
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    state["standardizer.mean"] = torch.from_numpy(np.ascontiguousarray(standardizer.mean, dtype=np.float32))
    state["standardizer.std"] = torch.from_numpy(np.ascontiguousarray(standardizer.std, dtype=np.float32))
    return state


def save_model(path, model: ResidualMLP, standardizer: Standardizer, *, feature_names: list[str],
               kind: str = "base", provenance: dict | None = None) -> Path:
    """Write NAME.safetensors then NAME.json, each atomically. Returns the .safetensors path."""
    if any(hasattr(m, "lora_A") for m in model.modules()):  # adapters live a layer above: no import of them
        raise ValueError("save_model takes a plain network; merge the adapters first or use save_adapter")
    st_path, js_path = model_paths(path)
    state = model_state(model, standardizer)
    refuse_nonfinite(st_path, state)
    with atomic_path(st_path) as tmp:
        save_file(state, str(tmp), metadata={"format": MODEL_FORMAT})
    meta = dict(format=MODEL_FORMAT, format_version=FORMAT_VERSION, kind=kind, model=model.config.to_dict(),
                feature_names=list(feature_names), fingerprint=tensors_fingerprint(state),
                sha256=sha256_file(st_path), n_params=model.n_params(), versions=versions(),
                provenance=provenance or {})
    write_json(js_path, meta)
    return st_path


def refuse_newer(js_path: Path, meta: dict, kind: str) -> None:
    """A file of a newer format may mean what this version cannot know: refuse rather than guess."""
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{js_path}: written by a newer higgs-lora ({kind} format version {version}; this one reads "
                        f"up to {FORMAT_VERSION}): upgrade higgs-lora to use it")


def refuse_nonfinite(st_path: Path, state: dict[str, torch.Tensor]) -> None:
    """No command saves a network that computes NaN: refuse, naming the first bad tensor."""
    for name, t in state.items():
        if not torch.isfinite(t).all():
            raise UserError(f"{st_path}: not written: {name} holds non-finite values (NaN or infinity); "
                            "the training that made it diverged")


def load_tensors(st_path: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The tensors of NAME.safetensors, checked against the SHA-256 in its JSON `meta`."""
    if not st_path.exists():
        raise UserError(f"{st_path}: file not found (its JSON is at {model_paths(st_path)[1]})")
    if meta.get("sha256") and sha256_file(st_path) != meta["sha256"]:
        raise UserError(f"{st_path}: contents do not match the checksum in {model_paths(st_path)[1]} "
                        "(file corrupt, truncated or replaced)")
    try:
        return load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{st_path}: not a readable safetensors file ({e})") from None


def load_model(path) -> LoadedModel:
    """Load NAME.safetensors + NAME.json; returns (model in eval mode, standardizer, metadata)."""
    st_path, js_path = saved_paths(path)
    meta = read_json(js_path)
    if meta.get("format") != MODEL_FORMAT:
        hint = " (it is an adapter: use it with --adapter on its base model)" if meta.get("format") == ADAPTER_FORMAT else ""
        raise UserError(f"{js_path}: not a higgs-lora model file{hint}")
    refuse_newer(js_path, meta, "model")
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, UserError) as e:
        raise UserError(f"{js_path}: bad model hyperparameters ({e})") from None
    state = load_tensors(st_path, meta)
    model = ResidualMLP.from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected["standardizer.mean"] = expected["standardizer.std"] = (config.n_features,)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        diff = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
        raise UserError(f"{st_path}: tensors do not match the architecture in {js_path.name} "
                        f"{config.to_dict()}: " + ", ".join(f"{k} {got.get(k)} vs expected {expected.get(k)}" for k in diff[:6]))
    standardizer = Standardizer(mean=state.pop("standardizer.mean").numpy(), std=state.pop("standardizer.std").numpy())
    model.load_state_dict(state)
    model.eval()
    loaded = LoadedModel(model, standardizer, meta)
    loaded.path = st_path
    return loaded
