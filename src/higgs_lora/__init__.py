"""higgs-lora: residual MLPs for tabular physics data, adapted with low-rank adapters."""
__version__ = "0.1.0"

from higgs_lora.config import ModelConfig, TrainConfig, PRESETS
from higgs_lora.model import ResidualMLP
from higgs_lora.lora import LoRALinear, add_adapters, merge_adapters

__all__ = ["ModelConfig", "TrainConfig", "PRESETS", "ResidualMLP", "LoRALinear", "add_adapters", "merge_adapters"]
