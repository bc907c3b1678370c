"""The LoRA variants: rsLoRA, LoRA+, DoRA, PiSSA. Each against a reference formula written out here in
float64, against PEFT's own layers on identical weights, and merged against unmerged."""
import itertools
import json
import math

import pytest
import torch

from higgs_lora.model import model_file
from higgs_lora.adapters import adapter_file
from higgs_lora.adapters.lora import (DoRALinear, LoRALinear, adapter_layer, add_adapters, adapters, merge_adapters,
                                      param_groups, variant_name)
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP, dense_layer_names
from higgs_lora.config import Recipe
from higgs_lora.data.sources import TensorData
from higgs_lora.train import fit, make_optimizer
from conftest import save_base

from conftest import float32_tolerance

VARIANTS = [dict(rslora=r, dora=d, init=i) for r, d, i in itertools.product([False, True], [False, True],
                                                                              ["glorot", "pissa"])]


def _train_like(model, seed=0, size=0.3):
    """Move every adapter tensor away from its initial value, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * size * (p.abs().mean() + 0.1))


def _trained_base(seed=0):
    torch.manual_seed(seed)
    base = ResidualMLP(width=32, head_width=16)
    with torch.no_grad():  # not Glorot-symmetric: a trained network's weights have structure
        for p in base.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return base


@pytest.mark.parametrize("kwargs, words", [
    (dict(rank=0, scale=1.0), "rank must be a whole number >= 1"),
    (dict(rank=2.5, scale=1.0), "rank must be a whole number"),
    (dict(rank=True, scale=1.0), "rank must be a whole number"),
    (dict(rank=4, scale=float("nan")), "scale must be a finite number > 0"),
    (dict(rank=4, scale=0.0), "scale must be a finite number > 0"),
    (dict(rank=4, scale=1.0, init="olora"), "init must be one of"),
    (dict(rank=4, scale=1.0, formulation="fast"), "formulation must be one of"),
    (dict(rank=4, scale=1.0, loraplus_lr_ratio=0), "loraplus_lr_ratio must be a finite number > 0"),
    (dict(rank=4, scale=1.0, dora="yes"), "rslora and dora must be True or False"),
])
def test_lora_linear_validates_its_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        LoRALinear(torch.nn.Linear(8, 4), AdapterConfig(**kwargs))
    with pytest.raises(ValueError, match="wraps an nn.Linear"):
        LoRALinear(torch.nn.Conv1d(2, 2, 1), AdapterConfig(rank=1, scale=1.0))


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_name)
@pytest.mark.parametrize("formulation", ["reform", "factored"])
def test_variant_starts_as_the_base_and_merges_to_the_adapted_network(variant, formulation):
    base = _trained_base()
    x = torch.randn(3000, 28)
    with torch.no_grad():
        before = base(x)
    torch.manual_seed(1)
    model = add_adapters(base, AdapterConfig(rank=4, scale=0.5, formulation=formulation, **variant))
    with torch.no_grad():
        start = model(x)
    if formulation == "reform":
        assert torch.equal(start, before)          # B = 0, or W + (A·B - A0·B0) with A = A0: exactly the base
    else:
        torch.testing.assert_close(start, before, rtol=0, atol=1e-5)
    _train_like(model)
    merged = merge_adapters(model)
    assert type(merged) is ResidualMLP and not adapters(merged)
    with torch.no_grad():
        adapted, folded = model(x), merged(x)
    assert not torch.allclose(adapted, before, atol=1e-3)   # training moved it
    assert (torch.sigmoid(adapted) - torch.sigmoid(folded)).abs().max().item() <= \
        float32_tolerance(model, x, probabilities=True)
    assert (adapted - folded).abs().max().item() <= float32_tolerance(model, x)


def test_formulations_agree_for_every_variant():
    lin = _trained_base().hidden
    for variant in VARIANTS:
        torch.manual_seed(2)
        a = adapter_layer(lin, AdapterConfig(rank=3, scale=0.7, formulation="reform", **variant))
        _train_like(a)
        b = adapter_layer(lin, AdapterConfig(rank=3, scale=0.7, formulation="factored", **variant))
        b.load_state_dict(a.state_dict())
        x = torch.randn(64, 32)
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def _reference(layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
    """The variants' formulas, written out in float64 from the papers (W in nn.Linear's [out, in] layout)."""
    d = lambda t: t.detach().double()  # noqa: E731
    w, b = d(layer.base.weight), d(layer.base.bias)
    alpha, r = layer.config.scale * layer.rank, layer.rank
    scaling = alpha / math.sqrt(r) if layer.config.rslora else alpha / r
    delta = scaling * (d(layer.lora_A) @ d(layer.lora_B)).T
    if layer.config.init == "pissa":
        delta = delta - scaling * (d(layer.lora_A0) @ d(layer.lora_B0)).T
    w_new = w + delta
    if layer.dora:
        w_new = d(layer.lora_magnitude)[:, None] * w_new / w_new.norm(dim=1, keepdim=True)
    return d(x) @ w_new.T + b


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_name)
def test_forward_equals_the_reference_formula(variant):
    torch.manual_seed(3)
    layer = adapter_layer(_trained_base().blocks[0].dense1, AdapterConfig(rank=4, scale=0.4, **variant))
    _train_like(layer, size=1.0)
    x = torch.randn(200, 32)
    torch.testing.assert_close(layer(x).double(), _reference(layer, x), rtol=1e-5, atol=1e-5)


def test_rslora_scaling_is_alpha_over_root_r():
    for r in (1, 4, 16):
        layer = LoRALinear(torch.nn.Linear(32, 32), AdapterConfig(rank=r, scale=0.5, rslora=True))
        assert layer.lora_alpha == 0.5 * r and layer.scaling == pytest.approx(0.5 * r / math.sqrt(r))
        assert LoRALinear(torch.nn.Linear(32, 32), AdapterConfig(rank=r, scale=0.5)).scaling == 0.5


def test_dora_magnitude_starts_at_the_row_norms_and_the_norm_gets_no_gradient():
    lin = _trained_base().hidden
    layer = DoRALinear(lin, AdapterConfig(rank=2, scale=1.0, dora=True))
    torch.testing.assert_close(layer.lora_magnitude, lin.weight.norm(dim=1))
    _train_like(layer)
    x = torch.randn(50, 32)
    layer(x).sum().backward()
    # Reference gradient of m with the norm a constant: d/dm_o sum(y) = sum_n (x·W'_o)/||W'_o|| per row o
    w = (lin.weight + layer.delta_weight()).detach()
    expected = (x @ w.T).sum(0) / w.norm(dim=1)
    torch.testing.assert_close(layer.lora_magnitude.grad, expected, rtol=1e-5, atol=1e-5)


def test_pissa_starts_from_the_principal_components():
    lin = _trained_base().blocks[1].dense2
    layer = LoRALinear(lin, AdapterConfig(rank=4, scale=0.5, init="pissa"))
    u, s, vh = torch.linalg.svd(lin.weight.detach().double())
    top = (u[:, :4] * s[:4]) @ vh[:4]
    start = layer.scaling * (layer.lora_A @ layer.lora_B).T.double()
    torch.testing.assert_close(start, top, rtol=1e-5, atol=1e-5)
    # A and B carry the same singular values (sqrt each): balanced, as PiSSA prescribes
    torch.testing.assert_close(layer.lora_A.norm(dim=0), layer.lora_B.norm(dim=1), rtol=1e-5, atol=1e-6)
    residual = lin.weight.detach().double() - top
    torch.testing.assert_close(torch.linalg.svdvals(residual)[0], s[4], rtol=1e-5, atol=1e-6)
    # the base weights themselves are never changed (the adapter stays bound to its base's fingerprint)
    assert torch.equal(layer.base.weight, lin.weight)
    # a layer narrower than the rank (the output layer, out = 1): the rest starts as plain LoRA
    out = LoRALinear(_trained_base().output, AdapterConfig(rank=4, scale=1.0, init="pissa"))
    assert torch.all(out.lora_B[1:] == 0) and out.lora_B[0].abs().sum() > 0


def test_loraplus_gives_b_its_own_learning_rate():
    torch.manual_seed(0)
    model = add_adapters(_trained_base(), AdapterConfig(rank=4, scale=1.0, loraplus_lr_ratio=16.0))
    groups = param_groups(model)
    assert sorted(g["lr_scale"] for g in groups) == [1.0, 16.0]
    fast = next(g for g in groups if g["lr_scale"] == 16.0)
    assert {id(p) for p in fast["params"]} == {id(m.lora_B) for m in adapters(model).values()}
    opt = make_optimizer(groups, name="adam", lr=1e-3, weight_decay=0.0, device=torch.device("cpu"))
    assert sorted(g["lr"] for g in opt.param_groups) == [1e-3, 16e-3]
    # through fit(): Adam's first step moves each weight by ~lr; B starts at 0, so A gets no gradient yet
    x, y = torch.randn(256, 28), (torch.rand(256) < 0.5).float()
    b_before = {n: m.lora_B.detach().clone() for n, m in adapters(model).items()}
    fit(model, TensorData(x, y, batch_size=256), Recipe(epochs=1, lr=1e-3, seed=0), progress=False, verbose=False)
    moved = max((m.lora_B - b_before[n]).abs().max().item() for n, m in adapters(model).items())
    assert moved == pytest.approx(16e-3, rel=0.05)


@pytest.mark.parametrize("variant", [dict(), dict(rslora=True), dict(dora=True), dict(init="pissa", rslora=True),
                                     dict(dora=True, init="pissa", loraplus_lr_ratio=4.0)], ids=variant_name)
def test_save_and_load_adapter_keeps_variant_and_outputs(tmp_path, variant):
    base = _trained_base()
    loaded, _, meta = save_base(tmp_path / "base", base)
    model = add_adapters(loaded, AdapterConfig(rank=3, scale=0.5, **variant))
    _train_like(model)
    adapter_file.save_adapter(tmp_path / "adapter", model, base_fingerprint=meta["fingerprint"])
    saved = json.loads((tmp_path / "adapter.json").read_text())
    for key in ("rslora", "dora", "init", "loraplus_lr_ratio", "scaling", "lora_alpha"):
        assert key in saved
    assert saved["dora"] == variant.get("dora", False) and saved["init"] == variant.get("init", "glorot")
    again, _, meta2 = model_file.load_model(tmp_path / "base")
    adapter_file.load_adapter(tmp_path / "adapter", again, base_fingerprint=meta2["fingerprint"])
    x = torch.randn(500, 28)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


# ---------------------------------------------------------------- against PEFT's layers

peft = pytest.importorskip("peft", reason="peft is not installed (optional extra 'peft'; part of 'test')")


def _peft_model(base, *, r, alpha, rslora, dora):
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=dense_layer_names(base.config), use_rslora=rslora,
                     use_dora=dora, lora_dropout=0.0)
    return get_peft_model(base, cfg)


@pytest.mark.parametrize("rslora, dora", [(False, False), (True, False), (False, True), (True, True)])
def test_our_forward_equals_peft_on_identical_weights(rslora, dora):
    import copy
    base = _trained_base()
    torch.manual_seed(5)
    ours = add_adapters(copy.deepcopy(base), AdapterConfig(rank=4, scale=0.75, rslora=rslora, dora=dora))
    _train_like(ours, size=1.0)
    theirs = _peft_model(copy.deepcopy(base), r=4, alpha=0.75 * 4, rslora=rslora, dora=dora)
    with torch.no_grad():
        for name, layer in adapters(ours).items():
            p = theirs.base_model.model.get_submodule(name)
            p.lora_A["default"].weight.copy_(layer.lora_A.T)
            p.lora_B["default"].weight.copy_(layer.lora_B.T)
            if dora:
                p.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude)
    x = torch.randn(2000, 28)
    theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
        # and PEFT's own merge of the same weights gives our merged network
        torch.testing.assert_close(merge_adapters(ours)(x), theirs.merge_and_unload()(x), rtol=1e-5, atol=1e-5)


def test_pissa_init_equals_peft_pissa():
    import copy
    from peft import LoraConfig, get_peft_model
    base = _trained_base()
    ours = add_adapters(copy.deepcopy(base), AdapterConfig(rank=4, scale=0.5, init="pissa"))
    cfg = LoraConfig(r=4, lora_alpha=2.0, target_modules=dense_layer_names(base.config), init_lora_weights="pissa")
    theirs = get_peft_model(copy.deepcopy(base), cfg)
    for name, layer in adapters(ours).items():
        p = theirs.base_model.model.get_submodule(name)
        # SVD signs are arbitrary: compare the products and PEFT's residual base weight with ours
        ba = p.lora_B["default"].weight @ p.lora_A["default"].weight
        torch.testing.assert_close(layer.lora_B.T @ layer.lora_A.T, ba, rtol=1e-4, atol=1e-5)
        residual = layer.base.weight - layer.scaling * (layer.lora_A0 @ layer.lora_B0).T
        torch.testing.assert_close(residual, p.base_layer.weight, rtol=1e-4, atol=1e-5)
