"""Read a model saved by the notebook's Keras code (a `.keras` file) without TensorFlow.

A `.keras` file is a zip of config.json, metadata.json and model.weights.h5. The notebook's
ResidualNetwork keeps no layer sizes in its config, so the architecture is read from the weight
shapes. Keras 3 lays the weights out in the HDF5 file like this:

    capa_entrada/vars/{0: kernel [n_features, width], 1: bias [width]}
    layers/residual_block{,_1,_2,...}/vars                  (attrs name = "res_block<k>")
    layers/residual_block{,_1,...}/dense1/vars/{0, 1}       [width, width], [width]
    layers/residual_block{,_1,...}/dense2/vars/{0, 1}
    layers/residual_block{,_1,...}/{add,activation}/vars    (no weights)
    capa_intermedia/vars/{0, 1}                              [width, head_width], [head_width]
    capa_salida/vars/{0, 1}                                  [head_width, 1], [1]  (sigmoid in Keras)
    vars                                                     (the model's own, empty)

Keras Dense computes x @ kernel + bias with kernel [in, out]; nn.Linear.weight is [out, in].
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from higgs_lora.data.standardize import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.io import read_json
from higgs_lora.model.network import ResidualMLP, dense_layer_names

_WEIGHTS = "model.weights.h5"
_CONFIG = "config.json"
_HEAD_LAYERS = ("capa_entrada", "capa_intermedia", "capa_salida")
_BLOCK_NAME = re.compile(r"res_block(\d+)")


def import_keras(keras_path, *, stats_path) -> tuple[ResidualMLP, Standardizer]:
    """The notebook's Keras model as a ResidualMLP (eval mode, returns logits) and its train statistics."""
    keras_path, stats_path = Path(keras_path), Path(stats_path)
    config, weights_bytes = _read_archive(keras_path)
    if config.get("class_name") != "ResidualNetwork":
        raise UserError(f"{keras_path}: expected the notebook's ResidualNetwork model, "
                        f"config.json describes {config.get('class_name')!r}")
    layers = _read_layers(keras_path, weights_bytes)
    model = _build_model(keras_path, layers)
    standardizer = _read_stats(stats_path, n_features=model.config.n_features, keras_path=keras_path)
    return model, standardizer


def _read_archive(path: Path) -> tuple[dict, bytes]:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            for needed in (_CONFIG, _WEIGHTS):
                if needed not in names:
                    raise UserError(f"{path}: not a complete .keras file, {needed} is missing "
                                    f"(the archive holds {sorted(names)})")
            config_text, weights = z.read(_CONFIG), z.read(_WEIGHTS)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a .keras file") from None
    except zipfile.BadZipFile:
        raise UserError(f"{path}: not a .keras file (it is not a zip archive)") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        config = json.loads(config_text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {_CONFIG} inside it is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: {_CONFIG} inside it is not a JSON object")
    return config, weights


def _read_layers(path: Path, weights: bytes) -> dict[str, list[np.ndarray]]:
    """{keras layer name: [kernel, bias]} in the notebook's names; block layers as 'res_block<k>/dense<j>'."""
    import h5py  # optional dependency: only importing Keras files needs it

    try:
        with h5py.File(io.BytesIO(weights), "r") as f:
            return _walk(path, f)
    except OSError as e:
        raise UserError(f"{path}: {_WEIGHTS} inside it is not a readable HDF5 file ({e})") from None


def _walk(path: Path, f) -> dict[str, list[np.ndarray]]:
    import h5py

    unexpected = sorted(set(f.keys()) - {*_HEAD_LAYERS, "layers", "vars"})
    if unexpected:
        raise UserError(f"{path}: unknown layer(s) {unexpected} in {_WEIGHTS}; the notebook's network has "
                        f"{', '.join(_HEAD_LAYERS)} and residual blocks res_block<k>")
    if "vars" in f and len(f["vars"]):
        raise UserError(f"{path}: unexpected model-level weights {sorted(f['vars'].keys())} in {_WEIGHTS}")

    def dense(group, where: str) -> list[np.ndarray]:
        if not isinstance(group, h5py.Group) or "vars" not in group:
            raise UserError(f"{path}: layer {where} has no weights in {_WEIGHTS}")
        extra = sorted(set(group.keys()) - {"vars"})
        keys = sorted(group["vars"].keys())
        if extra or keys != ["0", "1"]:
            raise UserError(f"{path}: layer {where} is not a plain Dense layer "
                            f"(sub-groups {extra}, weights {keys}; expected kernel and bias only)")
        arrays = [np.asarray(group["vars"][k]) for k in ("0", "1")]
        if arrays[0].ndim != 2 or arrays[1].ndim != 1:
            raise UserError(f"{path}: layer {where} has kernel {arrays[0].shape} and bias {arrays[1].shape}, "
                            "expected a 2-D kernel [in, out] and a 1-D bias [out]")
        for a in arrays:
            if a.dtype.kind != "f" or not np.isfinite(a).all():
                raise UserError(f"{path}: layer {where} has non-float or non-finite weights ({a.dtype})")
        return [a.astype(np.float32) for a in arrays]

    layers = {}
    for name in _HEAD_LAYERS:
        if name not in f:
            raise UserError(f"{path}: layer {name} is missing from {_WEIGHTS}")
        layers[name] = dense(f[name], name)

    blocks = {}
    for group_name, group in (f["layers"].items() if "layers" in f else []):
        is_layer = isinstance(group, h5py.Group) and isinstance(group.get("vars"), h5py.Group)
        keras_name = group["vars"].attrs.get("name", "") if is_layer else ""
        keras_name = keras_name.decode() if isinstance(keras_name, bytes) else str(keras_name)
        m = _BLOCK_NAME.fullmatch(keras_name)
        if not m:
            raise UserError(f"{path}: unknown layer layers/{group_name} (named {keras_name!r}) in {_WEIGHTS}; "
                            "expected residual blocks named res_block<k>")
        unexpected = sorted(set(group.keys()) - {"dense1", "dense2", "add", "activation", "vars"})
        if unexpected or len(group["vars"]):
            raise UserError(f"{path}: residual block {keras_name} has unexpected parts "
                            f"{unexpected or sorted(group['vars'].keys())} in {_WEIGHTS}")
        for weightless in ("add", "activation"):
            if weightless in group and "vars" in group[weightless] and len(group[weightless]["vars"]):
                raise UserError(f"{path}: {keras_name}/{weightless} should hold no weights")
        if int(m.group(1)) in blocks:
            raise UserError(f"{path}: residual block {keras_name} appears twice in {_WEIGHTS}")
        blocks[int(m.group(1))] = {j: dense(group.get(j), f"{keras_name}/{j}") for j in ("dense1", "dense2")}
    # The notebook applies res_block1, res_block2, ... in that order; a gap means a layer we do not know.
    if sorted(blocks) != list(range(1, len(blocks) + 1)):
        raise UserError(f"{path}: residual blocks are {['res_block%d' % k for k in sorted(blocks)]}, "
                        "expected res_block1 .. res_block<n> without gaps")
    for k in sorted(blocks):
        for j in ("dense1", "dense2"):
            layers[f"res_block{k}/{j}"] = blocks[k][j]
    return layers


def _build_model(path: Path, layers: dict[str, list[np.ndarray]]) -> ResidualMLP:
    n_blocks = sum(1 for name in layers if name.endswith("/dense1"))
    n_features, width = layers["capa_entrada"][0].shape
    head_width = layers["capa_intermedia"][0].shape[-1]
    model = ResidualMLP(n_features=n_features, width=width, n_blocks=n_blocks, head_width=head_width)
    # The notebook's Keras layers in forward order, beside ours (the same order: dense_layer_names).
    keras_names = ["capa_entrada", *(f"res_block{k}/dense{j}" for k in range(1, n_blocks + 1) for j in (1, 2)),
                   "capa_intermedia", "capa_salida"]
    state = {}
    for keras_name, name in zip(keras_names, dense_layer_names(model.config), strict=True):
        layer = model.get_submodule(name)
        n_in, n_out = layer.in_features, layer.out_features
        kernel, bias = layers[keras_name]
        if kernel.shape != (n_in, n_out) or bias.shape != (n_out,):
            raise UserError(f"{path}: layer {keras_name} has kernel {kernel.shape} and bias {bias.shape}, "
                            f"expected ({n_in}, {n_out}) and ({n_out},) for a network with {n_features} "
                            f"features, width {width}, {n_blocks} blocks, head width {head_width}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T))
        state[f"{name}.bias"] = torch.from_numpy(bias)
    model.load_state_dict(state)
    return model.eval()


def _read_stats(path: Path, *, n_features: int, keras_path: Path) -> Standardizer:
    stats = read_json(path)
    if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
        raise UserError(f"{path}: expected a JSON object with 'mean' and 'std' lists "
                        "(the train statistics the notebook standardized with)")
    arrays = {}
    for key in ("mean", "std"):
        try:
            a = np.asarray(stats[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError(f"{path}: '{key}' must be a list of numbers") from None
        if a.shape != (n_features,):
            raise UserError(f"{path}: '{key}' has {a.size} entries but the model in {keras_path} "
                            f"takes {n_features} features")
        if not np.isfinite(a).all():
            raise UserError(f"{path}: '{key}' holds non-finite values")
        arrays[key] = a.astype(np.float32)
    if (arrays["std"] <= 0).any():
        raise UserError(f"{path}: 'std' must be positive, entry {int(np.argmax(arrays['std'] <= 0))} is not")
    return Standardizer(mean=arrays["mean"], std=arrays["std"])
