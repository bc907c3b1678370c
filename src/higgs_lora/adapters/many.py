"""Many adapters on one base, evaluated together: one pass over the data gives the base's probability and
every adapter's. Each adapter is loaded through adapter_file.load_adapter, so one trained on another base is refused."""
from __future__ import annotations

import copy

import torch

from higgs_lora import io
from higgs_lora.model import model_file
from higgs_lora.adapters import adapter_file
from higgs_lora.config import DEFAULT_PRECISION
from higgs_lora.errors import UserError
from higgs_lora.hardware.runtime import predict_probabilities


def load_many(model_path, adapter_paths) -> tuple[dict[str, torch.nn.Module], object, dict]:
    """{column name: network} for the base and each adapted copy of it (as `predict --adapter A` runs it, so
    the columns equal single-adapter predictions bit for bit), the standardizer and the base's metadata.
    Names come from the adapters' JSON; two adapters of the same name are refused, naming both files."""
    base, standardizer, meta = model_file.load_model(model_path)
    networks = {"base": base}
    sources = {"base": str(model_path)}
    for path in adapter_paths:
        adapted = adapter_file.load_adapter(path, copy.deepcopy(base), base_fingerprint=meta["fingerprint"])
        name = io.read_json(model_file.model_paths(path)[1]).get("name") or model_file.model_paths(path)[0].stem
        if name in networks:
            raise UserError(f"{path}: adapter name {name!r} is already taken by {sources[name]}; "
                            "rename one (its JSON's \"name\") to predict with both")
        networks[name], sources[name] = adapted.eval(), str(path)
    return networks, standardizer, meta


@torch.inference_mode()
def probabilities(networks: dict[str, torch.nn.Module], x: torch.Tensor, *, precision: str = DEFAULT_PRECISION) -> dict:
    """{name: probabilities [n] as numpy} for standardized features x [n, d]: each network's
    predict_probabilities, batch by batch from row 0 (sigmoid included), as hl.predict computes them."""
    return {name: predict_probabilities(net, x, precision=precision).cpu().numpy() for name, net in networks.items()}
