import pytest
import torch

from higgs_lora.errors import UserError
from higgs_lora.adapters.lora import LoRALinear, add_adapters, adapter_state, merge_adapters
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP

from conftest import float32_tolerance, make_adapters_look_trained


def test_notebook_adapter_counts():
    m = add_adapters(ResidualMLP(), AdapterConfig(rank=4, scale=0.1))
    trainable = m.n_params(trainable_only=True)
    assert trainable == 5_748  # the notebook's summary
    assert m.n_params() - trainable == 78_081
    assert all(not p.requires_grad for n, p in m.named_parameters() if "lora_" not in n)


def test_adapted_network_equals_base_exactly_before_training():
    torch.manual_seed(0)
    base = ResidualMLP()
    x = torch.randn(1000, 28)
    before = base(x).detach().clone()
    adapted = add_adapters(base, AdapterConfig(rank=4, scale=0.1))
    assert torch.equal(adapted(x), before)


@pytest.mark.parametrize("formulation", ["factored", "reform"])
def test_merge_matches_adapted_outputs(formulation):
    torch.manual_seed(0)
    m = add_adapters(ResidualMLP(), AdapterConfig(rank=4, scale=0.1, formulation=formulation))
    make_adapters_look_trained(m)
    x = torch.randn(5000, 28)
    merged = merge_adapters(m)
    assert type(merged) is ResidualMLP and merged.n_params() == 78_081
    assert not any(isinstance(mod, LoRALinear) for mod in merged.modules())
    diff = (torch.sigmoid(merged(x)) - torch.sigmoid(m(x))).abs().max().item()
    assert diff <= float32_tolerance(m, x, probabilities=True)


def test_notebook_formula_w_plus_scale_a_b():
    # The notebook: out = x @ (W + alfa * A @ B) + b with W as Keras' [in, out] kernel.
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    layer = LoRALinear(lin, AdapterConfig(rank=2, scale=0.1))
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    w_keras = lin.weight.T
    expected = x @ (w_keras + 0.1 * layer.lora_A @ layer.lora_B) + lin.bias
    torch.testing.assert_close(layer(x), expected)


def test_formulations_agree_and_freeze_the_base():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    a = LoRALinear(lin, AdapterConfig(rank=4, scale=0.5, formulation="factored"))
    b = LoRALinear(torch.nn.Linear(16, 8), AdapterConfig(rank=4, scale=0.5, formulation="reform"))
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        a.lora_B.normal_()
        b.lora_B.copy_(a.lora_B)
    x = torch.randn(32, 16)
    torch.testing.assert_close(a(x), b(x))
    a(x).sum().backward()
    assert lin.weight.grad is None and a.lora_A.grad is not None and a.lora_B.grad is not None


def test_glorot_init_of_a():
    """A is drawn like torch.nn.init.xavier_uniform_ draws a [in, r] tensor: U(-bound, bound) with
    bound = sqrt(6 / (in + r)); so its largest value is near the bound and its spread that of the uniform
    distribution (std = bound / sqrt(3)). B starts at zero."""
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(128, 128), AdapterConfig(rank=16, scale=0.1))
    a = layer.lora_A.detach()
    reference = torch.nn.init.xavier_uniform_(torch.empty(128, 16))
    bound = (6 / (128 + 16)) ** 0.5
    assert reference.abs().max() <= bound  # the formula is xavier_uniform_'s own
    assert 0.95 * bound < a.abs().max() <= bound
    assert a.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
    assert a.std().item() == pytest.approx(reference.std().item(), rel=0.08)
    assert abs(a.mean().item()) < 0.05 * bound
    assert torch.all(layer.lora_B == 0)


def test_target_subsets_and_unknown_target():
    m = add_adapters(ResidualMLP(), AdapterConfig(rank=2, scale=1.0, targets=["blocks", "output"]))
    assert sorted(k.rsplit(".", 1)[0] for k in adapter_state(m))[::2] == [
        "blocks.0.dense1", "blocks.0.dense2", "blocks.1.dense1", "blocks.1.dense2", "output"]
    with pytest.raises(UserError, match="unknown adapter target"):
        add_adapters(ResidualMLP(), AdapterConfig(rank=2, scale=1.0, targets=["nope"]))


def test_merge_refuses_non_finite():
    m = add_adapters(ResidualMLP(), AdapterConfig(rank=2, scale=1.0))
    with torch.no_grad():
        m.output.lora_B.fill_(float("inf"))
    with pytest.raises(UserError, match="not finite"):
        merge_adapters(m)
