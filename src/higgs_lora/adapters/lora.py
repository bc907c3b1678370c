"""Low-rank adapters: y = x·W + b + scaling·(x·A)·B, with W and b frozen; and the variants PEFT's users ask for.

A is [in, rank] Glorot-uniform, B is [rank, out] zeros, so an adapted network starts out computing
exactly what the base computes. `scale` is the notebook's multiplier; in PEFT's terms lora_alpha = scale·r.

Variants (each an argument here, a flag on the command line and a field in the adapter's JSON):
  - rslora: rank-stabilised scaling, scaling = lora_alpha/√r = scale·√r instead of lora_alpha/r = scale
    (Kalajdzievski 2023; PEFT's use_rslora). The same lora_alpha, so the update grows with the rank.
  - loraplus_lr_ratio: LoRA+ (Hayou et al. 2024), B learns at ratio × the learning rate of A. Not part
    of the function, only of training: `param_groups` gives the optimizer its groups.
  - dora: weight-decomposed LoRA (Liu et al. 2024; PEFT's use_dora). Each output row of W + ΔW is
    rescaled to a learned magnitude m [out]: W' = m ⊙ (W + ΔW) / ‖W + ΔW‖_row, with m initialised to
    ‖W‖_row. As in PEFT (and the paper's section 4.3), the norm is treated as a constant in the backward
    pass: the forward is the formula exactly, the gradient skips the norm.
  - init="pissa": A and B start as the top-r singular components of W (Meng et al. 2024), scaled so that
    scaling·A·B is W's rank-r part, and the layer computes with the residual W − scaling·A₀·B₀ (A₀, B₀
    the initial factors, kept as buffers and saved with the adapter). The base weights themselves are
    never changed, so the adapter stays bound to its base's fingerprint, and merging folds
    W + scaling·(A·B − A₀·B₀): exactly the adapted network. Components beyond min(in, out) (the output
    layer has out = 1) start as in plain LoRA.

Two forward formulations, chosen by measurement (benchmarks/bench_train.py):
  - "reform" (default): x @ (W + scaling·A@B) + b, what the notebook does. One GEMM per layer; autograd
    forms the [in, out] gradient of the sum and projects it onto A and B.
  - "factored": base(x) + scaling·(x@A)@B. Never forms dL/dW, but adds four rank-r GEMMs per layer, each a
    memory-bound pass over a [batch, width] activation. On this CPU (AMD EPYC, 1 thread, batch 4096,
    rank 4) it trained at 0.68-0.72x the speed of "reform" in float32 and at par in bf16: the skipped
    weight gradients cost less than the extra passes at width 128.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP, dense_layer_names

FORMULATIONS = ("factored", "reform")
INITS = ("glorot", "pissa")


def _check_options(*, rank, scale, formulation, rslora, dora, init, loraplus_lr_ratio) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if not isinstance(rslora, bool) or not isinstance(dora, bool):
        raise ValueError(f"rslora and dora must be True or False, got {rslora!r} and {dora!r}")
    if isinstance(loraplus_lr_ratio, bool) or not isinstance(loraplus_lr_ratio, (int, float)) \
            or not math.isfinite(loraplus_lr_ratio) or loraplus_lr_ratio <= 0:
        raise ValueError(f"loraplus_lr_ratio must be a finite number > 0, got {loraplus_lr_ratio!r}")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, *, rank: int, scale: float, formulation: str = "reform",
                 rslora: bool = False, dora: bool = False, init: str = "glorot", loraplus_lr_ratio: float = 1.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_options(rank=rank, scale=scale, formulation=formulation, rslora=rslora, dora=dora, init=init,
                       loraplus_lr_ratio=loraplus_lr_ratio)
        self.base = base
        self.base.requires_grad_(False)
        self.rank, self.scale, self.formulation = rank, float(scale), formulation
        self.rslora, self.dora, self.init, self.loraplus_lr_ratio = rslora, dora, init, float(loraplus_lr_ratio)
        # Stored as the notebook writes them, [in, r] and [r, out], not transposed like nn.Linear.weight.
        self.lora_A = nn.Parameter(torch.empty(base.in_features, rank, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(rank, base.out_features, device=base.weight.device))
        nn.init.xavier_uniform_(self.lora_A)
        if init == "pissa":
            self._pissa_init()
        if dora:
            with torch.no_grad():
                norm = self._row_norm(base.weight.float() + self.delta_weight().float())
            self.lora_magnitude = nn.Parameter(norm.to(base.weight.dtype))

    @property
    def lora_alpha(self) -> float:
        return self.scale * self.rank

    @property
    def scaling(self) -> float:
        """The multiplier of A·B: lora_alpha / r (= scale), or lora_alpha / √r with rsLoRA."""
        return self.lora_alpha / math.sqrt(self.rank) if self.rslora else self.scale

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

    @staticmethod
    def _row_norm(w_out_in: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(w_out_in, dim=1)

    def delta_weight(self) -> torch.Tensor:
        """The LoRA update in nn.Linear's layout [out, in] (PiSSA: relative to the base weight)."""
        product = self.lora_A @ self.lora_B
        if self.init == "pissa":
            product = product - self.lora_A0 @ self.lora_B0
        return self.scaling * product.T

    def _dora_factor(self, weight: torch.Tensor) -> torch.Tensor:
        """m / ‖W + ΔW‖ per output row [out]; the norm is a constant for the gradient (DoRA §4.3, PEFT)."""
        return self.lora_magnitude / self._row_norm(weight).detach()

    def adapted_weight(self) -> torch.Tensor:
        """The weight the adapted layer computes with, [out, in]."""
        w = self.base.weight + self.delta_weight()
        return self._dora_factor(w)[:, None] * w if self.dora else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.formulation == "reform":
            return nn.functional.linear(x, self.adapted_weight(), self.base.bias)
        low_rank = (x @ self.lora_A) @ self.lora_B
        if self.init == "pissa":
            low_rank = low_rank - (x @ self.lora_A0) @ self.lora_B0
        out = nn.functional.linear(x, self.base.weight) + self.scaling * low_rank
        if self.dora:
            out = out * self._dora_factor(self.base.weight + self.delta_weight())
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

    def options(self) -> dict:
        """What the adapter's JSON records, besides its tensors."""
        return dict(rank=self.rank, scale=self.scale, lora_alpha=self.lora_alpha, scaling=self.scaling,
                    rslora=self.rslora, dora=self.dora, init=self.init, loraplus_lr_ratio=self.loraplus_lr_ratio,
                    formulation=self.formulation)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The adapter's own tensors by short name (what is saved)."""
        names = ["lora_A", "lora_B"] + (["lora_magnitude"] if self.dora else []) \
            + (["lora_A0", "lora_B0"] if self.init == "pissa" else [])
        return {n: getattr(self, n) for n in names}


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


def add_adapters(model: ResidualMLP, *, rank: int, scale: float, targets=("all",), formulation: str = "reform",
                 rslora: bool = False, dora: bool = False, init: str = "glorot",
                 loraplus_lr_ratio: float = 1.0) -> ResidualMLP:
    """Freeze every base parameter and wrap the targeted dense layers in LoRALinear, in place."""
    model.requires_grad_(False)
    for name in resolve_targets(model, targets):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank=rank, scale=scale, formulation=formulation,
                                         rslora=rslora, dora=dora, init=init, loraplus_lr_ratio=loraplus_lr_ratio))
    return model


def adapters(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, named '<layer>.lora_A', '<layer>.lora_B' (and the variants' own)."""
    return {f"{name}.{k}": v.detach() for name, m in adapters(model).items() for k, v in m.tensors().items()}


def param_groups(model: nn.Module) -> list[dict]:
    """The trainable parameters as optimizer groups, each with an `lr_scale` (its lr = lr_scale × the lr):
    LoRA+ puts every B at loraplus_lr_ratio; everything else, adapters or not, at 1."""
    fast = {id(m.lora_B): m.loraplus_lr_ratio for m in adapters(model).values() if m.loraplus_lr_ratio != 1.0}
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
