"""Low-rank adapters: y = x·W + b + scale·(x·A)·B, with W and b frozen.

A is [in, rank] Glorot-uniform, B is [rank, out] zeros, so an adapted network starts out computing
exactly what the base computes. In PEFT's terms, scale = lora_alpha / r (so lora_alpha = scale·r).

Two forward formulations, chosen by measurement (benchmarks/bench_train.py):
  - "reform" (default): x @ (W + scale·A@B) + b, what the notebook does. One GEMM per layer; autograd
    forms the [in, out] gradient of the sum and projects it onto A and B.
  - "factored": base(x) + scale·(x@A)@B. Never forms dL/dW, but adds four rank-r GEMMs per layer, each a
    memory-bound pass over a [batch, width] activation. On this CPU (AMD EPYC, 1 thread, batch 4096,
    rank 4) it trained at 0.68-0.72x the speed of "reform" in float32 and at par in bf16: the skipped
    weight gradients cost less than the extra passes at width 128.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from higgs_lora.errors import UserError
from higgs_lora.model import ResidualMLP, dense_layer_names

FORMULATIONS = ("factored", "reform")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, *, rank: int, scale: float, formulation: str = "reform"):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank, self.scale, self.formulation = rank, float(scale), formulation
        # Stored as the notebook writes them, [in, r] and [r, out], not transposed like nn.Linear.weight.
        self.lora_A = nn.Parameter(torch.empty(base.in_features, rank))
        self.lora_B = nn.Parameter(torch.zeros(rank, base.out_features))
        nn.init.xavier_uniform_(self.lora_A)

    def delta_weight(self) -> torch.Tensor:
        """The update in nn.Linear's layout [out, in]."""
        return self.scale * (self.lora_A @ self.lora_B).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.formulation == "reform":
            return nn.functional.linear(x, self.base.weight + self.delta_weight(), self.base.bias)
        return self.base(x) + self.scale * ((x @ self.lora_A) @ self.lora_B)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function; float32, checked finite."""
        out = nn.Linear(self.base.in_features, self.base.out_features)
        w = self.base.weight.float() + self.delta_weight().float()
        if not torch.isfinite(w).all():
            raise UserError("merged weights are not finite: the adapter diverged during fine-tuning")
        out.weight.copy_(w)
        out.bias.copy_(self.base.bias.float())
        return out


def resolve_targets(model: ResidualMLP, targets) -> list[str]:
    names = dense_layer_names(model.config)
    if list(targets) in (["all"], ("all",)) or targets == "all":
        return names
    chosen = []
    for t in targets:
        if t == "blocks":
            chosen += [n for n in names if n.startswith("blocks.")]
        elif t in names:
            chosen.append(t)
        else:
            raise UserError(f"unknown adapter target {t!r}; choose from 'all', 'blocks', {', '.join(names)}")
    return [n for n in names if n in chosen]


def add_adapters(model: ResidualMLP, *, rank: int, scale: float, targets=("all",),
                 formulation: str = "reform") -> ResidualMLP:
    """Freeze every base parameter and wrap the targeted dense layers in LoRALinear, in place."""
    model.requires_grad_(False)
    for name in resolve_targets(model, targets):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank=rank, scale=scale, formulation=formulation))
    return model


def adapters(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, named '<layer>.lora_A' / '<layer>.lora_B'."""
    state = {}
    for name, m in adapters(model).items():
        state[f"{name}.lora_A"] = m.lora_A.detach()
        state[f"{name}.lora_B"] = m.lora_B.detach()
    return state


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    layers = adapters(model)
    expected = {f"{n}.{p}": tuple(getattr(m, p).shape) for n, m in layers.items() for p in ("lora_A", "lora_B")}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise UserError(f"adapter tensors do not fit this network: missing {missing}, unexpected {extra}, "
                        f"wrong shape {[(k, got[k], expected[k]) for k in wrong]}")
    with torch.no_grad():
        for name, m in layers.items():
            m.lora_A.copy_(state[f"{name}.lora_A"])
            m.lora_B.copy_(state[f"{name}.lora_B"])


def merge_adapters(model: ResidualMLP) -> ResidualMLP:
    """A new plain ResidualMLP with every adapter folded into its dense layer; the input is untouched."""
    merged = copy.deepcopy(model)
    for name, m in adapters(merged).items():
        parent_name, _, attr = name.rpartition(".")
        parent = merged.get_submodule(parent_name) if parent_name else merged
        setattr(parent, attr, m.merged())
    merged.requires_grad_(True)
    return merged
