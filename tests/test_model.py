import io
import math
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from higgs_lora.config import ModelConfig
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP, dense_layer_names

KERAS = Path(__file__).parent / "data" / "notebook_model" / "model.keras"


def _keras_weights() -> list[np.ndarray]:
    """Every weight array of the model the notebook's own code saved (tests/data/notebook_model)."""
    with zipfile.ZipFile(KERAS) as z:
        h5 = z.read("model.weights.h5")
    arrays = []
    with h5py.File(io.BytesIO(h5), "r") as f:
        f.visititems(lambda name, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def test_notebook_architecture_has_the_keras_models_parameters():
    # The reference: the notebook's saved Keras model (78,081 parameters, as its summary says).
    keras = _keras_weights()
    assert sum(a.size for a in keras) == 78_081
    assert ResidualMLP().n_params() == sum(a.size for a in keras)
    # the same tensors, Keras' kernels [in, out] being our weights [out, in] transposed
    ours = sorted(tuple(p.shape[::-1]) for p in ResidualMLP().parameters())
    assert ours == sorted(a.shape for a in keras)


def test_keras_initialisation_glorot_uniform_and_zero_bias():
    torch.manual_seed(0)
    m = ResidualMLP()
    for name in dense_layer_names(m.config):
        layer = m.get_submodule(name)
        fan_out, fan_in = layer.weight.shape
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= limit
        assert layer.weight.abs().max() > 0.9 * limit  # uniform over the whole range, not a narrower init
        # the spread of U(-limit, limit), not e.g. Kaiming's (PyTorch's default) or a normal draw
        assert layer.weight.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.15 if fan_out == 1 else 0.05)
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
