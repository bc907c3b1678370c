"""Saved adapters: NAME.safetensors (only the adapter tensors) + NAME.json (the adapter's AdapterConfig, the
fingerprint of the base it was trained on, what it adapts to, how it did); nothing is ever unpickled.
The shared checks (format version, finite tensors, checksums) are the saved networks' (model_file.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from safetensors.torch import save_file

from higgs_lora.adapters.lora import adapter_config, adapter_state, add_adapters, load_adapter_state
from higgs_lora.config import AdapterConfig
from higgs_lora.errors import UserError
from higgs_lora.hardware.runtime import versions
from higgs_lora.io import atomic_path, read_json, sha256_file, write_json
from higgs_lora.model.model_file import (ADAPTER_FORMAT, FORMAT_VERSION, load_tensors, model_paths, refuse_newer,
                                         refuse_nonfinite, saved_paths)
from higgs_lora.model.network import ResidualMLP, dense_layer_names


def save_adapter(path, model: ResidualMLP, *, base_fingerprint: str, provenance: dict | None = None,
                 name: str | None = None, target_condition: str | None = None, metrics: dict | None = None) -> Path:
    """Write NAME.safetensors (the adapter tensors) then NAME.json. `name` (default: the file's stem) tells
    adapters of one base apart; `target_condition` says what data they adapt to; `metrics` how they did."""
    config = adapter_config(model)
    st_path, js_path = model_paths(path)
    state = {k: v.float().cpu().contiguous() for k, v in adapter_state(model).items()}
    refuse_nonfinite(st_path, state)
    with atomic_path(st_path) as tmp:
        save_file(state, str(tmp), metadata={"format": ADAPTER_FORMAT})
    # The config's fields at the top level, as version 0.1.0 wrote them, with the two numbers they imply.
    meta = dict(format=ADAPTER_FORMAT, format_version=FORMAT_VERSION, **config.to_dict(),
                lora_alpha=config.lora_alpha, scaling=config.scaling, name=name or st_path.stem,
                target_condition=target_condition, metrics=metrics,
                base_fingerprint=base_fingerprint, model=model.config.to_dict(),
                trainable_params=sum(v.numel() for v in state.values()), sha256=sha256_file(st_path),
                versions=versions(), provenance=provenance or {})
    write_json(js_path, meta)
    return st_path


def load_adapter(path, model: ResidualMLP, *, base_fingerprint: str) -> ResidualMLP:
    """Add the saved adapters to `model` (a base loaded with load_model) and fill them in."""
    st_path, js_path = saved_paths(path)
    meta = read_json(js_path)
    if meta.get("format") != ADAPTER_FORMAT:
        raise UserError(f"{js_path}: not a higgs-lora adapter file")
    refuse_newer(js_path, meta, "adapter")
    if meta.get("base_fingerprint") != base_fingerprint:
        raise UserError(f"{js_path}: this adapter was trained on another base model "
                        f"(its base {meta.get('base_fingerprint')}, this base {base_fingerprint})")
    state = load_tensors(st_path, meta)
    refuse_disagreement(st_path, js_path, meta, state, model)
    add_adapters(model, saved_config(js_path, meta))
    try:
        load_adapter_state(model, state)
    except UserError as e:  # a disagreement refuse_disagreement does not name: short, with the file
        raise UserError(f"{st_path}: does not match its JSON {js_path} ({str(e)[:200]})") from None
    return model


def saved_config(js_path: Path, meta: dict) -> AdapterConfig:
    """The AdapterConfig an adapter's JSON records (its fields at the top level; one written before the
    variants existed has none of theirs: plain LoRA)."""
    settings = {f.name for f in dataclasses.fields(AdapterConfig)}
    try:
        return AdapterConfig.from_dict({k: v for k, v in meta.items() if k in settings})
    except (TypeError, ValueError) as e:  # TypeError: rank or scale missing
        raise UserError(f"{js_path}: bad adapter settings ({e})") from None


def refuse_disagreement(st_path: Path, js_path: Path, meta: dict, state: dict, model: ResidualMLP) -> None:
    """An adapter's JSON and tensors must describe the same adapters (a hand-edited rank, targets or
    variant): one line naming the file, what the JSON says and what the tensors hold."""
    def refuse(says: str, holds: str):
        raise UserError(f"{st_path}: does not match its JSON: {js_path} says {says}, the tensors {holds}")

    held = [n for n in dense_layer_names(model.config) if f"{n}.lora_A" in state]
    targets = meta.get("targets")
    if isinstance(targets, list) and set(targets) != set(held):
        refuse(f"targets {', '.join(map(str, targets))}", f"hold {', '.join(held) or 'none'}")
    ranks = sorted({int(state[f"{n}.lora_A"].shape[-1]) for n in held})
    if ranks and [meta.get("rank")] != ranks:
        refuse(f"rank {meta.get('rank')}", f"hold rank {', '.join(map(str, ranks))}")
    for flag, tensor, says in (("dora", "lora_magnitude", meta.get("dora", False)),
                               ("init pissa", "lora_A0", meta.get("init", "glorot") == "pissa")):
        has = any(f"{n}.{tensor}" in state for n in held)
        if says and not has:
            refuse(flag, f"have no {tensor}")
        if has and not says:
            refuse(f"no {flag}", f"have {tensor}")
