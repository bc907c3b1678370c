"""The notebook's residual MLP in PyTorch.

    x[n_features] -> input: Linear+ReLU [width]
                  -> n_blocks x relu(x + dense2(relu(dense1(x))))   [width]
                  -> hidden: Linear+ReLU [head_width]
                  -> output: Linear [1]  (a logit; sigmoid gives the probability)

At the notebook's sizes (28, 128, 2 blocks, 64) it has 78,081 parameters, like the Keras model.
The network sees standardized features; the statistics travel beside it (see weights.py).
"""
from __future__ import annotations

import torch
from torch import nn

from higgs_lora.config import ModelConfig


def _keras_init(layer: nn.Linear) -> nn.Linear:
    # Keras Dense defaults: Glorot-uniform kernel, zero bias. (PyTorch's own default is Kaiming-uniform.)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualBlock(nn.Module):
    def __init__(self, *, width: int):
        super().__init__()
        self.dense1 = _keras_init(nn.Linear(width, width))
        self.dense2 = _keras_init(nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.dense2(torch.relu(self.dense1(x))))


class ResidualMLP(nn.Module):
    def __init__(self, *, n_features: int = 28, width: int = 128, n_blocks: int = 2, head_width: int = 64):
        super().__init__()
        self.config = ModelConfig(n_features=n_features, width=width, n_blocks=n_blocks, head_width=head_width)
        self.input = _keras_init(nn.Linear(n_features, width))
        self.blocks = nn.ModuleList(ResidualBlock(width=width) for _ in range(n_blocks))
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
        x = torch.relu(self.input(x_batch_features))
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
