import math

import pytest
import torch

from higgs_lora.config import ModelConfig
from higgs_lora.errors import UserError
from higgs_lora.model import ResidualMLP, dense_layer_names


def test_notebook_architecture_has_78081_parameters():
    # Keras' summary in the notebook: 78,081 parameters (28*128+128 + 2*2*(128*128+128) + 128*64+64 + 64+1).
    expected = 28 * 128 + 128 + 4 * (128 * 128 + 128) + 128 * 64 + 64 + 64 + 1
    assert expected == 78_081
    assert ResidualMLP().n_params() == expected


def test_keras_initialisation_glorot_uniform_and_zero_bias():
    torch.manual_seed(0)
    m = ResidualMLP()
    for name in dense_layer_names(m.config):
        layer = m.get_submodule(name)
        fan_out, fan_in = layer.weight.shape
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= limit
        assert layer.weight.abs().max() > 0.9 * limit  # uniform over the whole range, not a narrower init
        assert torch.all(layer.bias == 0)


def test_forward_matches_handwritten_residual_math():
    torch.manual_seed(1)
    m = ResidualMLP(n_features=5, width=8, n_blocks=1, head_width=4)
    for p in m.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(7, 5)
    relu = torch.relu
    h = relu(x @ m.input.weight.T + m.input.bias)
    b = m.blocks[0]
    h = relu(h + (relu(h @ b.dense1.weight.T + b.dense1.bias) @ b.dense2.weight.T + b.dense2.bias))
    h = relu(h @ m.hidden.weight.T + m.hidden.bias)
    expected = (h @ m.output.weight.T + m.output.bias).squeeze(-1)
    torch.testing.assert_close(m(x), expected)


def test_sizes_are_arguments():
    m = ResidualMLP(n_features=18, width=32, n_blocks=3, head_width=16)
    assert len(m.blocks) == 3 and m.input.in_features == 18 and m.output.in_features == 16
    assert m(torch.zeros(2, 18)).shape == (2,)


def test_wrong_input_shape_fails_loudly():
    m = ResidualMLP()
    with pytest.raises(ValueError, match=r"\[batch, 28\]"):
        m(torch.zeros(4, 27))
    with pytest.raises(ValueError):
        m(torch.zeros(28))


def test_keyword_only_arguments_and_config_validation():
    with pytest.raises(TypeError):
        ResidualMLP(28, 128)  # positional sizes are too easy to swap
    with pytest.raises(UserError):
        ModelConfig(width=0)
