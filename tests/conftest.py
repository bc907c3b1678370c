import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tests are small; one thread keeps them deterministic and polite on shared CPUs


def synthetic_xy(rows: int, *, n_features: int = 28, seed: int = 0):
    """A learnable toy problem: raw (unstandardized) float32 features and uint8 labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=1.0, scale=2.0, size=(rows, n_features)).astype(np.float32)
    z = x[:, 0] * x[:, 1] - x[:, 2] + 0.5 * rng.normal(size=rows)
    y = (z > np.median(z)).astype(np.uint8)
    return x, y


@pytest.fixture
def xy():
    return synthetic_xy(4000)
