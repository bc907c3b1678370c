"""The notebook's residual MLP in PyTorch, and the optional pieces of the default model.

    x[n_features] -> [embedding: x plus an encoding of each feature]
                  -> input: Linear+ReLU [width]
                  -> n_blocks x relu(x + dense2(dropout(relu(dense1(x)))))   [width]
                  -> hidden: Linear+ReLU [head_width]
                  -> output: Linear [1]  (a logit; sigmoid gives the probability)

At the notebook's sizes (28, 128, 2 blocks, 64, no embedding, no dropout) it has 78,081 parameters, like
the Keras model. The embeddings (Gorishniy et al. 2022, "On Embeddings for Numerical Features") widen
only what the `input` layer reads; every trained matrix is still an nn.Linear that adapters can wrap:
  - "piecewise": each standardized feature is also encoded by `embedding_size` bins between fixed edges
    (standard-normal quantiles, so no data is needed to build the network): bin t of feature j is
    clamp((x_j - edge_t) / (edge_{t+1} - edge_t), 0, 1). Exports as Gemm + Relu (clamp = relu(z) - relu(z-1)).
  - "periodic": sin and cos of 2*pi*f*x_j for `embedding_size` trained frequencies f per feature, drawn
    from N(0, frequency_scale^2). Exports with ONNX Sin and Cos.
The network sees standardized features; the statistics travel beside it (see weights.py).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from higgs_lora.config import ModelConfig


def _keras_init(layer: nn.Linear) -> nn.Linear:
    # Keras Dense defaults: Glorot-uniform kernel, zero bias. (PyTorch's own default is Kaiming-uniform.)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualBlock(nn.Module):
    def __init__(self, *, width: int, dropout: float = 0.0):
        super().__init__()
        self.dense1 = _keras_init(nn.Linear(width, width))
        self.dense2 = _keras_init(nn.Linear(width, width))
        # nn.Identity keeps the notebook's module tree (and its forward) exactly as it was.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.dense2(self.dropout(torch.relu(self.dense1(x)))))


def piecewise_edges(n_bins: int) -> torch.Tensor:
    """n_bins + 1 bin edges at evenly spaced standard-normal quantiles (features are standardized)."""
    p = (torch.arange(n_bins + 1, dtype=torch.float64) + 0.5) / (n_bins + 1)
    return torch.special.ndtri(p)


class PiecewiseLinear(nn.Module):
    """[batch, F] -> [batch, F * n_bins]; no parameters (the edges follow from n_bins)."""

    def __init__(self, *, n_bins: int):
        super().__init__()
        edges = piecewise_edges(n_bins)
        inv_width = 1.0 / (edges[1:] - edges[:-1])
        # Not persistent: derived from the config, so model files hold only trained tensors.
        self.register_buffer("inv_width", inv_width.float(), persistent=False)
        self.register_buffer("shift", (-edges[:-1] * inv_width).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.unsqueeze(-1) * self.inv_width + self.shift
        return z.clamp(0.0, 1.0).flatten(1)


class Periodic(nn.Module):
    """[batch, F] -> [batch, F * 2k]: sin and cos of 2*pi*frequencies*x, k trained frequencies per feature."""

    def __init__(self, *, n_features: int, n_frequencies: int, scale: float):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = 2 * math.pi * x.unsqueeze(-1) * self.frequencies
        return torch.cat([torch.sin(v), torch.cos(v)], dim=-1).flatten(1)


def embedding_width(config: ModelConfig) -> int:
    """What the input layer reads: the features, plus their encoding if there is one."""
    per_feature = {"none": 0, "piecewise": config.embedding_size, "periodic": 2 * config.embedding_size}
    return config.n_features * (1 + per_feature[config.embedding])


class ResidualMLP(nn.Module):
    def __init__(self, *, n_features: int = 28, width: int = 128, n_blocks: int = 2, head_width: int = 64,
                 embedding: str = "none", embedding_size: int = 0, frequency_scale: float = 0.1,
                 dropout: float = 0.0):
        super().__init__()
        self.config = ModelConfig(n_features=n_features, width=width, n_blocks=n_blocks, head_width=head_width,
                                  embedding=embedding, embedding_size=embedding_size,
                                  frequency_scale=frequency_scale, dropout=dropout)
        if embedding == "piecewise":
            self.embedding = PiecewiseLinear(n_bins=embedding_size)
        elif embedding == "periodic":
            self.embedding = Periodic(n_features=n_features, n_frequencies=embedding_size, scale=frequency_scale)
        else:
            self.embedding = None
        self.input = _keras_init(nn.Linear(embedding_width(self.config), width))
        self.blocks = nn.ModuleList(ResidualBlock(width=width, dropout=dropout) for _ in range(n_blocks))
        self.hidden = _keras_init(nn.Linear(width, head_width))
        self.output = _keras_init(nn.Linear(head_width, 1))

    @classmethod
    def from_config(cls, config: ModelConfig) -> "ResidualMLP":
        return cls(**config.to_dict())

    def forward(self, x_batch_features: torch.Tensor) -> torch.Tensor:
        """Standardized features [batch, n_features] -> logits [batch]."""
        if x_batch_features.ndim != 2 or x_batch_features.shape[1] != self.config.n_features:
            raise ValueError(
                f"expected features of shape [batch, {self.config.n_features}], got {tuple(x_batch_features.shape)}"
            )
        x = x_batch_features
        if self.embedding is not None:
            x = torch.cat([x, self.embedding(x)], dim=1)
        x = torch.relu(self.input(x))
        for block in self.blocks:
            x = block(x)
        x = torch.relu(self.hidden(x))
        return self.output(x).squeeze(-1)

    def n_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def dense_layer_names(config: ModelConfig) -> list[str]:
    """Names of the dense layers in forward order; adapters and importers refer to them."""
    names = ["input"]
    for i in range(config.n_blocks):
        names += [f"blocks.{i}.dense1", f"blocks.{i}.dense2"]
    return names + ["hidden", "output"]


# The layers after the residual trunk: what "head only" fine-tuning trains (strategies, adapt-study).
HEAD_LAYERS = ("hidden", "output")


def head_only_copy(model: ResidualMLP) -> ResidualMLP:
    """A copy of `model` in which only the head (HEAD_LAYERS) is trainable."""
    head = copy.deepcopy(model).requires_grad_(False)
    for name in HEAD_LAYERS:
        head.get_submodule(name).requires_grad_(True)
    return head
