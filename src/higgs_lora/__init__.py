"""higgs-lora: residual MLPs for tabular physics data, adapted with low-rank adapters.

The names below load lazily, so `higgs-lora prepare` or `--help` do not pay for importing PyTorch.
"""
__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "higgs_lora.config", "TrainConfig": "higgs_lora.config", "PRESETS": "higgs_lora.config",
    "ResidualMLP": "higgs_lora.model",
    "LoRALinear": "higgs_lora.lora", "add_adapters": "higgs_lora.lora", "merge_adapters": "higgs_lora.lora",
}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'higgs_lora' has no attribute {name!r}")
