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
        value = globals()[name] = getattr(importlib.import_module(_LAZY[name]), name)  # once: next time a plain lookup
        return value
    raise AttributeError(f"module 'higgs_lora' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


def load_all() -> None:
    """Import every public name now (tools that read the namespace, like pdoc, do not call __getattr__)."""
    for name in _LAZY:
        __getattr__(name)
