"""higgs-lora: residual MLPs for tabular physics data, adapted with low-rank adapters.

The names below load lazily, so `higgs-lora prepare` or `--help` do not pay for importing PyTorch, and
`import higgs_lora` stays light. The Python API (`higgs_lora.api`, docs/python.md) is re-exported here:
`hl.load_data`, `hl.train`, `hl.evaluate`, `hl.adapt`, `hl.finetune`, `hl.merge`, `hl.compare`, ...
"""
__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "higgs_lora.config", "TrainConfig": "higgs_lora.config", "AdapterConfig": "higgs_lora.config",
    "PRESETS": "higgs_lora.config",
    "ResidualMLP": "higgs_lora.model.network",
    **{name: "higgs_lora.adapters.lora" for name in ("LoRALinear", "add_adapters", "merge_adapters")},
    # The Python API (docs/python.md): every step of the command line as a function.
    **{name: "higgs_lora.api" for name in (
        "Data", "Model", "load_data", "split", "recipe", "fit", "evaluate", "adapt", "finetune", "merge", "compare",
        "predict", "predict_file", "plot_roc", "save_model", "load_model", "save_adapter", "export_onnx",
        "import_keras", "run")},
    "Metrics": "higgs_lora.report.results", "History": "higgs_lora.report.results", "Comparison": "higgs_lora.report.results",
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
    """Import every public name now (tools that read the namespace, like documentation generators, do not call __getattr__)."""
    for name in _LAZY:
        __getattr__(name)
