"""Low-rank adapters: y = x·W + b + scaling·(x·A)·B, with W and b frozen; and the variants PEFT's users ask for.

A is [in, rank] Glorot-uniform, B is [rank, out] zeros, so an adapted network starts out computing
exactly what the base computes. `scale` is the notebook's multiplier; in PEFT's terms lora_alpha = scale·r.

The settings travel as one AdapterConfig (config.py), which checks them. Variants (each a field of it, a
flag on the command line and a field in the adapter's JSON):
  - rslora: rank-stabilised scaling, scaling = lora_alpha/√r = scale·√r instead of lora_alpha/r = scale
    (Kalajdzievski 2023; PEFT's use_rslora). The same lora_alpha, so the update grows with the rank.
  - loraplus_lr_ratio: LoRA+ (Hayou et al. 2024), B learns at ratio × the learning rate of A. Not part
    of the function, only of training: `param_groups` gives the optimizer its groups.
  - dora: weight-decomposed LoRA (Liu et al. 2024; PEFT's use_dora). Each output row of W + ΔW is
    rescaled to a learned magnitude m [out]: W' = m ⊙ (W + ΔW) / ‖W + ΔW‖_row, with m initialised to
    ‖W‖_row. As in PEFT (and the paper's section 4.3), the norm is treated as a constant in the backward
    pass: the forward is the formula exactly, the gradient skips the norm. Its own class, DoRALinear.
  - init="pissa": A and B start as the top-r singular components of W (Meng et al. 2024), scaled so that
    scaling·A·B is W's rank-r part, and the layer computes with the residual W − scaling·A₀·B₀ (A₀, B₀
    the initial factors, kept as buffers and saved with the adapter). The base weights themselves are
    never changed, so the adapter stays bound to its base's fingerprint, and merging folds
    W + scaling·(A·B − A₀·B₀): exactly the adapted network. Components beyond min(in, out) (the output
    layer has out = 1) start as in plain LoRA. An init of the plain layer (or of DoRALinear's).

Each layer's merge is its `adapted_weight()`, the weight it computes with; `merged()` puts it in a plain
nn.Linear. Two forward formulations of that same function, chosen by measurement (benchmarks/bench_train.py):
  - "reform" (default): x @ (W + scaling·A@B) + b, what the notebook does. One GEMM per layer; autograd
    forms the [in, out] gradient of the sum and projects it onto A and B.
  - "factored": base(x) + scaling·(x@A)@B. Never forms dL/dW, but adds four rank-r GEMMs per layer, each a
    memory-bound pass over a [batch, width] activation. On this CPU (AMD EPYC, 1 thread, batch 4096,
    rank 4) it trained at 0.68-0.72x the speed of "reform" in float32 and at par in bf16: the skipped
    weight gradients cost less than the extra passes at width 128.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from higgs_lora.config import AdapterConfig
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP, dense_layer_names


def _row_norm(w_out_in: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(w_out_in, dim=1)


class LoRALinear(nn.Module):
    """Plain LoRA on a frozen nn.Linear: x·(W + scaling·A·B) + b (PiSSA: W + scaling·(A·B − A₀·B₀))."""
    dora = False  # the class, not only the config, decides what the layer computes: adapter_layer() picks it

    def __init__(self, base: nn.Linear, config: AdapterConfig):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"{type(self).__name__} wraps an nn.Linear, got {type(base).__name__}")
        if not isinstance(config, AdapterConfig):
            raise TypeError(f"{type(self).__name__} takes an AdapterConfig, got {type(config).__name__}")
        if config.dora != self.dora:
            raise ValueError(f"{type(self).__name__} is the layer for dora={self.dora}, the config has "
                             f"dora={config.dora}: adapter_layer(base, config) picks the class")
        self.base = base
        self.base.requires_grad_(False)
        self.config = config
        # Stored as the notebook writes them, [in, r] and [r, out], not transposed like nn.Linear.weight.
        self.lora_A = nn.Parameter(torch.empty(base.in_features, config.rank, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(config.rank, base.out_features, device=base.weight.device))
        nn.init.xavier_uniform_(self.lora_A)
        if config.init == "pissa":
            self._pissa_init()

    @property
    def rank(self) -> int:
        return self.config.rank

    @property
    def lora_alpha(self) -> float:
        return self.config.lora_alpha

    @property
    def scaling(self) -> float:
        return self.config.scaling

    @torch.no_grad()
    def _pissa_init(self) -> None:
        w = self.base.weight.detach().double()                       # [out, in] = U S Vh
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        k = min(self.rank, s.shape[0])
        root = torch.sqrt(s[:k] / self.scaling)
        self.lora_A[:, :k] = (vh[:k].T * root).to(self.lora_A.dtype)          # [in, k]
        self.lora_B[:k] = (root[:, None] * u[:, :k].T).to(self.lora_B.dtype)  # [k, out]
        # The layer computes with W - scaling·A0·B0; A0, B0 travel with the adapter.
        self.register_buffer("lora_A0", self.lora_A.detach().clone())
        self.register_buffer("lora_B0", self.lora_B.detach().clone())

    def delta_weight(self) -> torch.Tensor:
        """The LoRA update in nn.Linear's layout [out, in] (PiSSA: relative to the base weight)."""
        product = self.lora_A @ self.lora_B
        if self.config.init == "pissa":
            product = product - self.lora_A0 @ self.lora_B0
        return self.scaling * product.T

    def adapted_weight(self) -> torch.Tensor:
        """The weight the adapted layer computes with, [out, in]: the merge."""
        return self.base.weight + self.delta_weight()

    def _factored(self, x: torch.Tensor) -> torch.Tensor:
        """x·adapted_weightᵀ without the bias and without forming the update."""
        low_rank = (x @ self.lora_A) @ self.lora_B
        if self.config.init == "pissa":
            low_rank = low_rank - (x @ self.lora_A0) @ self.lora_B0
        return nn.functional.linear(x, self.base.weight) + self.scaling * low_rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.formulation == "reform":
            return nn.functional.linear(x, self.adapted_weight(), self.base.bias)
        out = self._factored(x)
        return out if self.base.bias is None else out + self.base.bias

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function; float32, checked finite."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        w = self.adapted_weight().float()
        if not torch.isfinite(w).all():
            raise UserError("merged weights are not finite: the adapter diverged during fine-tuning")
        out.weight.copy_(w)
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias.float())
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """The adapter's own tensors by short name (what is saved)."""
        names = ["lora_A", "lora_B"] + (["lora_A0", "lora_B0"] if self.config.init == "pissa" else [])
        return {n: getattr(self, n) for n in names}


class DoRALinear(LoRALinear):
    """DoRA: LoRA's weight rescaled per output row to a learned magnitude m [out],
    m ⊙ (W + ΔW) / ‖W + ΔW‖_row, m starting at the row norms (so the layer starts as its base)."""
    dora = True

    def __init__(self, base: nn.Linear, config: AdapterConfig):
        super().__init__(base, config)
        with torch.no_grad():
            norm = _row_norm(base.weight.float() + self.delta_weight().float())
        self.lora_magnitude = nn.Parameter(norm.to(base.weight.dtype))

    def _factor(self, weight: torch.Tensor) -> torch.Tensor:
        """m / ‖W + ΔW‖ per output row [out]; the norm is a constant for the gradient (DoRA §4.3, PEFT)."""
        return self.lora_magnitude / _row_norm(weight).detach()

    def adapted_weight(self) -> torch.Tensor:
        w = super().adapted_weight()
        return self._factor(w)[:, None] * w

    def _factored(self, x: torch.Tensor) -> torch.Tensor:
        # the factor scales each output row of the weight, so it scales each output column of x·(W + ΔW)ᵀ
        return super()._factored(x) * self._factor(super().adapted_weight())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**super().tensors(), "lora_magnitude": self.lora_magnitude}


def adapter_layer(base: nn.Linear, config: AdapterConfig) -> LoRALinear:
    """The adapted layer of `config`'s variant around `base`: DoRALinear with dora, else LoRALinear."""
    return (DoRALinear if config.dora else LoRALinear)(base, config)


def variant_name(options: dict) -> str:
    """A short name for a set of adapter options: 'lora', 'dora+rslora+pissa', ..."""
    parts = ["dora" if options.get("dora") else "lora"]
    parts += ["rslora"] if options.get("rslora") else []
    parts += ["pissa"] if options.get("init", "glorot") == "pissa" else []
    ratio = options.get("loraplus_lr_ratio", 1.0)
    parts += [f"lora+{ratio:g}"] if ratio != 1.0 else []
    return "+".join(parts)


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


def add_adapters(model: ResidualMLP, config: AdapterConfig) -> ResidualMLP:
    """Freeze every base parameter and wrap the dense layers `config` targets in its adapters, in place."""
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"add_adapters takes an AdapterConfig, got {type(config).__name__}")
    model.requires_grad_(False)
    for name in resolve_targets(model, config.targets):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, adapter_layer(getattr(parent, attr), config))
    return model


def adapters(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_config(model: nn.Module) -> AdapterConfig:
    """The config of `model`'s adapters, its targets the layers that have them (what an adapter file records)."""
    layers = adapters(model)
    if not layers:
        raise ValueError("model has no adapters")
    return dataclasses.replace(next(iter(layers.values())).config, targets=tuple(layers))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, named '<layer>.lora_A', '<layer>.lora_B' (and the variants' own)."""
    return {f"{name}.{k}": v.detach() for name, m in adapters(model).items() for k, v in m.tensors().items()}


def param_groups(model: nn.Module) -> list[dict]:
    """The trainable parameters as optimizer groups, each with an `lr_scale` (its lr = lr_scale × the lr):
    LoRA+ puts every B at loraplus_lr_ratio; everything else, adapters or not, at 1."""
    fast = {id(m.lora_B): m.config.loraplus_lr_ratio for m in adapters(model).values()
            if m.config.loraplus_lr_ratio != 1.0}
    groups: dict[float, list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(fast.get(id(p), 1.0), []).append(p)
    return [dict(params=ps, lr_scale=ratio) for ratio, ps in groups.items()]


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    layers = adapters(model)
    expected = {f"{n}.{k}": tuple(v.shape) for n, m in layers.items() for k, v in m.tensors().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise UserError(f"adapter tensors do not fit this network: missing {missing}, unexpected {extra}, "
                        f"wrong shape {[(k, got[k], expected[k]) for k in wrong]}")
    with torch.no_grad():
        for name, m in layers.items():
            for k, v in m.tensors().items():
                v.copy_(state[f"{name}.{k}"])


def merge_adapters(model: ResidualMLP) -> ResidualMLP:
    """A new plain ResidualMLP with every adapter folded into its dense layer; the input is untouched."""
    merged = copy.deepcopy(model)
    for name, m in adapters(merged).items():
        parent_name, _, attr = name.rpartition(".")
        parent = merged.get_submodule(parent_name) if parent_name else merged
        setattr(parent, attr, m.merged())
    merged.requires_grad_(True)
    return merged
