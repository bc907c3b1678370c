"""ONNX export: the network as a plain Gemm/Relu/Add/Sigmoid graph, plus preprocess.json.

The graph is written with onnx.helper straight from the weights rather than with torch.onnx.export:
torch 2.13's default (dynamo) exporter needs the extra onnxscript package, and the legacy TorchScript
exporter is deprecated ("will be removed") and emits Identity/Constant/Squeeze/Unsqueeze nodes around
the layers. Eight dense layers and their activations are a few lines of onnx.helper; the tests hold
the result to PyTorch's output through ONNX Runtime.

    features [batch, n_features] float32
      -> Gemm+Relu (input) -> n_blocks x Relu(x + Gemm(Relu(Gemm(x)))) -> Gemm+Relu (hidden)
      -> Gemm (output) -> Sigmoid -> probability [batch, 1]

With include_standardization the z-score is folded into the first Gemm:
W·((x - mean)/std) + b = (W/std)·x + (b - (W/std)·mean), computed in float64 and stored as float32.

A model with a feature embedding (model.py) gets its encoding as Gemms from the features, and its input
layer as one Gemm per part of what it reads, summed (no Concat, so no new operator for "piecewise"):
  piecewise: z = x·S + c per (feature, bin); clamp(z, 0, 1) = Relu(z) - Relu(z - 1), so
             input = Gemm(x; W_x, b) + Gemm(Relu(z); W_e) + Gemm(Relu(z - 1); -W_e)   (Gemm, Relu, Add)
  periodic:  v = x·F (2·pi·frequencies, block-diagonal);
             input = Gemm(x; W_x, b) + Gemm(Sin(v); W_sin) + Gemm(Cos(v); W_cos)    (adds Sin, Cos)
The standardization folds into every Gemm that reads x, the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from higgs_lora.data.standardize import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.io import atomic_path, write_json
from higgs_lora.adapters.lora import adapters, merge_adapters
from higgs_lora.hardware.runtime import versions
from higgs_lora.model.network import ResidualMLP, dense_layer_names

ALLOWED_OPS = frozenset({"Gemm", "Relu", "Add", "Sigmoid", "Sin", "Cos"})  # Sin, Cos: periodic embedding only
INPUT_NAME, OUTPUT_NAME, BATCH_AXIS = "features", "probability", "batch"
PREPROCESS_FORMAT = "higgs-lora-onnx-preprocess"


def export_onnx(model: ResidualMLP, standardizer: Standardizer, *, feature_names: list[str], out_dir,
                include_standardization: bool = False, opset: int = 17) -> Path:
    """Write out_dir/model.onnx and out_dir/preprocess.json (each atomically); returns the .onnx path.
    Adapters, if any, are merged first; the model passed in is not changed."""
    import onnx  # optional dependency: only exporting needs it

    n_features = model.config.n_features
    if len(feature_names) != n_features:
        raise ValueError(f"{len(feature_names)} feature names for a model with {n_features} features")
    mean = np.asarray(standardizer.mean, dtype=np.float32)
    std = np.asarray(standardizer.std, dtype=np.float32)
    if mean.shape != (n_features,) or std.shape != (n_features,):
        raise ValueError(f"standardizer shapes {mean.shape}, {std.shape} do not match {n_features} features")
    if adapters(model):
        model = merge_adapters(model)

    graph_model = _build_graph(_dense_weights(model), mean=mean, std=std, encoding=_encoding(model),
                               include_standardization=include_standardization, opset=opset)
    onnx.checker.check_model(graph_model, full_check=True)
    used = {node.op_type for node in graph_model.graph.node}
    if not used <= ALLOWED_OPS:
        raise RuntimeError(f"exported graph uses operators {sorted(used - ALLOWED_OPS)} outside {sorted(ALLOWED_OPS)}")

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{out_dir}: exists and is not a directory") from None
    onnx_path = out_dir / "model.onnx"
    with atomic_path(onnx_path) as tmp:
        onnx.save_model(graph_model, str(tmp))
    write_json(out_dir / "preprocess.json", _preprocess_doc(feature_names, mean=mean, std=std,
                                                            include_standardization=include_standardization))
    return onnx_path


def _dense_weights(model: ResidualMLP) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer name: (weight [out, in], bias [out])} as float64 numpy, in forward order."""
    layers = {name: model.get_submodule(name) for name in dense_layer_names(model.config)}
    out = {}
    for name, layer in layers.items():
        if not isinstance(layer, torch.nn.Linear):
            raise TypeError(f"layer {name} is {type(layer).__name__}, expected a plain nn.Linear")
        w, b = (t.detach().cpu().double().numpy() for t in (layer.weight, layer.bias))
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise UserError(f"layer {name} has non-finite weights; the model cannot be exported")
        out[name] = (w, b)
    return out


def _encoding(model: ResidualMLP) -> dict | None:
    """The embedding as float64 numpy: {"kind", "scale" [E], "shift" [E]} per (feature, slot) in the input
    layer's column order (slot fastest), or None. piecewise: z = x_j·scale + shift; periodic: v = x_j·scale."""
    cfg = model.config
    if cfg.embedding == "none":
        return None
    per_feature = lambda t: np.tile(t.detach().cpu().double().numpy(), cfg.n_features)  # noqa: E731
    if cfg.embedding == "piecewise":
        return dict(kind="piecewise", scale=per_feature(model.embedding.inv_width),
                    shift=per_feature(model.embedding.shift))
    frequencies = 2 * np.pi * model.embedding.frequencies.detach().cpu().double().numpy()  # [F, k]
    if not np.isfinite(frequencies).all():
        raise UserError("the periodic embedding has non-finite frequencies; the model cannot be exported")
    return dict(kind="periodic", scale=frequencies.reshape(-1), shift=np.zeros(frequencies.size))


def _build_graph(weights, *, mean: np.ndarray, std: np.ndarray, include_standardization: bool, opset: int,
                 encoding: dict | None = None):
    from onnx import TensorProto, helper, numpy_helper

    initializers, nodes = [], []
    n_features = mean.shape[0]

    def gemm(name: str, x: str) -> str:
        w, b = weights[name]
        initializers.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.weight"))
        initializers.append(numpy_helper.from_array(b.astype(np.float32), f"{name}.bias"))
        # transB: nn.Linear stores [out, in]; Gemm computes x·Bᵀ + C.
        nodes.append(helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.out"],
                                      name=f"{name}.gemm", transB=1))
        return f"{name}.out"

    def op(kind: str, inputs: list[str], out: str) -> str:
        nodes.append(helper.make_node(kind, inputs, [out], name=out))
        return out

    def raw_input(name: str, w: np.ndarray, b: np.ndarray):
        """A Gemm that reads the features: with the standardization folded in when asked."""
        if include_standardization:
            w = w / std.astype(np.float64)
            b = b - w @ mean.astype(np.float64)
        weights[name] = (w, b)
        return gemm(name, INPUT_NAME)

    weights = dict(weights)
    w_in, b_in = weights["input"]
    if encoding is None:
        x = op("Relu", [raw_input("input", w_in, b_in)], "input.relu")
    else:
        w_x, w_e = w_in[:, :n_features], w_in[:, n_features:]
        slots = encoding["scale"].shape[0] // n_features
        # [features * slots, features]: row (j, slot) reads feature j only.
        spread = np.kron(np.eye(n_features), np.ones((slots, 1))) * encoding["scale"][:, None]
        no_bias = np.zeros(w_in.shape[0])
        terms = [raw_input("input.features", w_x, b_in)]
        if encoding["kind"] == "piecewise":
            low = op("Relu", [raw_input("embedding.z", spread, encoding["shift"])], "embedding.relu_z")
            high = op("Relu", [raw_input("embedding.z_minus_1", spread, encoding["shift"] - 1)], "embedding.relu_z_minus_1")
            weights["input.bins"], weights["input.bins_minus_1"] = (w_e, no_bias), (-w_e, no_bias)
            terms += [gemm("input.bins", low), gemm("input.bins_minus_1", high)]
        else:
            v = raw_input("embedding.phase", spread, encoding["shift"])
            k = slots  # the input layer reads, per feature, k sines then k cosines
            sin_cols = np.concatenate([np.arange(j * 2 * k, j * 2 * k + k) for j in range(n_features)])
            weights["input.sin"], weights["input.cos"] = (w_e[:, sin_cols], no_bias), (w_e[:, sin_cols + k], no_bias)
            terms += [gemm("input.sin", op("Sin", [v], "embedding.sin")),
                      gemm("input.cos", op("Cos", [v], "embedding.cos"))]
        total = terms[0]
        for i, t in enumerate(terms[1:]):
            total = op("Add", [total, t], f"input.sum{i}")
        x = op("Relu", [total], "input.relu")
    n_blocks = sum(1 for name in weights if name.endswith(".dense1"))
    for i in range(n_blocks):
        h = op("Relu", [gemm(f"blocks.{i}.dense1", x)], f"blocks.{i}.relu1")
        s = op("Add", [x, gemm(f"blocks.{i}.dense2", h)], f"blocks.{i}.add")
        x = op("Relu", [s], f"blocks.{i}.relu2")
    x = op("Relu", [gemm("hidden", x)], "hidden.relu")
    op("Sigmoid", [gemm("output", x)], OUTPUT_NAME)

    graph = helper.make_graph(
        nodes, "higgs_lora_residual_mlp",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, n_features])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_AXIS, 1])],
        initializer=initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets,
                              # The oldest IR version the opset allows, so older runtimes can load the file.
                              ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="higgs-lora", producer_version=versions()["higgs_lora"],
                              doc_string="Residual MLP for the HIGGS data: probability that an event is signal. "
                                         "See preprocess.json for the input standardization.")
    helper.set_model_props(model, {"standardization_in_graph": str(include_standardization).lower()})
    return model


def _preprocess_doc(feature_names, *, mean: np.ndarray, std: np.ndarray, include_standardization: bool) -> dict:
    if include_standardization:
        how = ("Feed the raw features: the graph already applies the standardization (x - mean) / std, "
               "folded into its first layer. mean and std are listed for reference only; do not apply them again.")
    else:
        how = ("Standardize before feeding the graph: for each row, subtract mean and divide by std, "
               "element by element, in float32, with the columns in the order of feature_names.")
    return dict(
        format=PREPROCESS_FORMAT, format_version=1, model_file="model.onnx",
        standardization_in_graph=include_standardization,
        how_to_apply=how,
        formula="features[:, j] = (x[:, j] - mean[j]) / std[j]  for j in range(n_features)",
        input=dict(name=INPUT_NAME, dtype="float32", shape=[BATCH_AXIS, len(feature_names)],
                   contents="raw features" if include_standardization else "standardized features"),
        output=dict(name=OUTPUT_NAME, dtype="float32", shape=[BATCH_AXIS, 1],
                    contents="probability that the event is signal (label 1)"),
        feature_names=list(feature_names), mean=mean.tolist(), std=std.tolist(),
    )
