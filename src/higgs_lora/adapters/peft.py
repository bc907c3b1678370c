"""Adapters in Hugging Face PEFT's file format, both ways, without needing `peft` itself.

PEFT keeps a LoRA adapter as a directory with two files:
  adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules", "use_rslora",
                               "use_dora", ...}
  adapter_model.safetensors   base_model.model.<layer>.lora_A.weight      [r, in]
                              base_model.model.<layer>.lora_B.weight      [out, r]
                              base_model.model.<layer>.lora_magnitude_vector [out]   (DoRA)
Ours are A [in, r] and B [r, out] (the notebook's layout), so each is transposed; PEFT's scaling is
lora_alpha / r (or / √r with use_rslora), ours the same with lora_alpha = scale · r.

A PiSSA adapter computes with the residual W − s·A₀B₀. PEFT's own answer for sharing such an adapter
(`path_initial_model_for_weight_conversion`) is to turn it into a plain LoRA of rank 2r that applies to
the untouched base: A' = [A, A₀], B' = [B; −B₀], so s'·A'B' = s·(AB − A₀B₀). We write that update as a
rank-2r product too, factored from its float64 SVD (more exact than the concatenation, see
_pissa_as_lora), with lora_alpha chosen so that s' = s; the DoRA magnitude, if any, is unchanged.
Importing such a file gives a plain (rank-2r) adapter computing the same function.

LoRA+ (a learning-rate ratio) and our forward formulation concern training only and are not written.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from higgs_lora import io
from higgs_lora.model import model_file
from higgs_lora.errors import UserError
from higgs_lora.adapters import adapter_file
from higgs_lora.adapters.lora import add_adapters, load_adapter_state, resolve_targets
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


def _pissa_as_lora(a, b, a0, b0):
    """A·B − A₀·B₀ as one product A'·B' of rank 2r, in float64. The two products are each about as large as
    W's principal part and nearly cancel, so [A, A₀]·[B; −B₀] in float32 would carry an error of the
    size of W's rounding; the SVD of the (small) difference carries an error of the difference's."""
    rank2 = a.shape[1] + a0.shape[1]
    delta = a.double() @ b.double() - a0.double() @ b0.double()                  # [in, out]
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(rank2, s.shape[0])
    root = torch.sqrt(s[:k])
    a_new = torch.zeros(a.shape[0], rank2, dtype=torch.float64)
    b_new = torch.zeros(rank2, b.shape[1], dtype=torch.float64)
    a_new[:, :k], b_new[:k] = u[:, :k] * root, root[:, None] * vh[:k]
    return a_new.float(), b_new.float()


def _peft_tensors(state: dict[str, torch.Tensor], layers: list[str], *, dora: bool, pissa: bool) -> dict:
    out = {}
    for layer in layers:
        a, b = state[f"{layer}.lora_A"], state[f"{layer}.lora_B"]
        if pissa:
            a, b = _pissa_as_lora(a, b, state[f"{layer}.lora_A0"], state[f"{layer}.lora_B0"])
        out[f"{PREFIX}{layer}.lora_A.weight"] = a.T.contiguous().float()
        out[f"{PREFIX}{layer}.lora_B.weight"] = b.T.contiguous().float()
        if dora:
            out[f"{PREFIX}{layer}.lora_magnitude_vector"] = state[f"{layer}.lora_magnitude"].contiguous().float()
    return out


def export_adapter(adapter_path, out_dir) -> Path:
    """Write a saved higgs-lora adapter (NAME.safetensors + NAME.json) as a PEFT adapter directory."""
    st_path, js_path = model_file.saved_paths(adapter_path)
    meta = io.read_json(js_path)
    if meta.get("format") != model_file.ADAPTER_FORMAT:
        raise UserError(f"{js_path}: not a higgs-lora adapter file")
    model_file.refuse_newer(js_path, meta, "adapter")
    state = model_file.load_tensors(st_path, meta)
    ours = adapter_file.saved_config(js_path, meta)
    layers, pissa = list(ours.targets), ours.init == "pissa"
    r = 2 * ours.rank if pissa else ours.rank
    alpha = ours.scaling * (math.sqrt(r) if ours.rslora else r)   # PEFT's scaling (alpha/r or alpha/√r) is ours
    tensors = _peft_tensors(state, layers, dora=ours.dora, pissa=pissa)
    config = dict(peft_type="LORA", task_type=None, base_model_name_or_path=None, r=r, lora_alpha=alpha,
                  target_modules=layers, lora_dropout=0.0, bias="none", fan_in_fan_out=False,
                  use_rslora=ours.rslora, use_dora=ours.dora, init_lora_weights=True, modules_to_save=None,
                  rank_pattern={}, alpha_pattern={}, inference_mode=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(out / WEIGHTS_FILE) as tmp:
        # PEFT writes {"format": "pt"}; the base fingerprint lets our importer check the binding.
        save_file(tensors, str(tmp), metadata={"format": "pt", "higgs_lora_base_fingerprint": meta["base_fingerprint"],
                                                "higgs_lora_model": json.dumps(meta["model"])})
    io.write_json(out / CONFIG_FILE, config)
    return out


def _config(path: Path) -> dict:
    cfg = io.read_json(path / CONFIG_FILE)
    where = path / CONFIG_FILE
    if cfg.get("peft_type") != "LORA":
        raise UserError(f"{where}: peft_type {cfg.get('peft_type')!r}; only LORA adapters can be imported")
    for key, allowed in (("bias", ("none", None)), ("fan_in_fan_out", (False, None))):
        if cfg.get(key) not in allowed:
            raise UserError(f"{where}: {key} = {cfg.get(key)!r} is not supported (only {allowed[0]!r})")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise UserError(f"{where}: a per-layer {key} is not supported (every layer must share r and lora_alpha)")
    if cfg.get("modules_to_save"):
        raise UserError(f"{where}: modules_to_save {cfg['modules_to_save']} is not supported (adapters only)")
    for key in ("r", "lora_alpha"):
        if not isinstance(cfg.get(key), (int, float)) or isinstance(cfg.get(key), bool) or cfg[key] <= 0:
            raise UserError(f"{where}: {key} must be a number > 0, got {cfg.get(key)!r}")
    return cfg


def import_adapter(peft_dir, model: ResidualMLP) -> ResidualMLP:
    """Add the adapters of a PEFT LoRA directory to `model` (a plain ResidualMLP base), in place."""
    path = Path(peft_dir)
    cfg = _config(path)
    try:
        tensors = load_file(str(path / WEIGHTS_FILE))
    except FileNotFoundError:
        raise UserError(f"{path / WEIGHTS_FILE}: file not found") from None
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path / WEIGHTS_FILE}: not a readable safetensors file ({e})") from None
    targets = cfg.get("target_modules")
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    # PEFT matches a target by the end of a module's name; our layer names are matched the same way.
    layers = sorted({k[len(PREFIX):].rsplit(".lora_", 1)[0] for k in tensors if k.startswith(PREFIX)})
    unknown = [k for k in tensors if not k.startswith(PREFIX) or ".lora_" not in k]
    if unknown:
        raise UserError(f"{path / WEIGHTS_FILE}: tensors that are not LoRA weights: {unknown[:4]}")
    if not layers:
        raise UserError(f"{path / WEIGHTS_FILE}: no LoRA tensors")
    missing = [t for t in targets if not any(layer == t or layer.endswith("." + t) for layer in layers)]
    if missing:
        raise UserError(f"{path / CONFIG_FILE}: target_modules {missing} have no tensors in {WEIGHTS_FILE}")
    layers = resolve_targets(model, layers)   # checks the names against the network, forward order
    r = int(cfg["r"])
    add_adapters(model, AdapterConfig(rank=r, scale=float(cfg["lora_alpha"]) / r, targets=layers,
                                      rslora=bool(cfg.get("use_rslora")), dora=bool(cfg.get("use_dora"))))
    state = {}
    for layer in layers:
        for ours, theirs, transpose in (("lora_A", "lora_A.weight", True), ("lora_B", "lora_B.weight", True),
                                        ("lora_magnitude", "lora_magnitude_vector", False)):
            key = f"{PREFIX}{layer}.{theirs}"
            if key in tensors:
                state[f"{layer}.{ours}"] = tensors[key].T.float() if transpose else tensors[key].float()
    load_adapter_state(model, state)       # names every missing, extra or wrongly shaped tensor
    return model


def peft_base_fingerprint(peft_dir) -> str | None:
    """The base fingerprint our exporter wrote into the weights' metadata (None for PEFT's own files)."""
    from safetensors import safe_open
    try:
        with safe_open(str(Path(peft_dir) / WEIGHTS_FILE), framework="pt") as f:
            return (f.metadata() or {}).get("higgs_lora_base_fingerprint")
    except (SafetensorError, OSError):
        return None

