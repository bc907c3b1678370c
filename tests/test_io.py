import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from higgs_lora import io
from higgs_lora.model import model_file
from higgs_lora.adapters import adapter_file
from higgs_lora.data import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.adapters.lora import add_adapters
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP
from conftest import make_adapters_look_trained


def _saved(tmp_path, name="m", **sizes):
    torch.manual_seed(0)
    model = ResidualMLP(**sizes)
    n = model.config.n_features
    std = Standardizer(mean=np.arange(n, dtype=np.float32), std=np.full(n, 2.0, np.float32))
    path = model_file.save_model(tmp_path / name, model, std, feature_names=[f"f{i}" for i in range(n)],
                         provenance={"seed": 1})
    return model, std, path


def test_round_trip_is_exact(tmp_path):
    model, std, path = _saved(tmp_path)
    loaded, std2, meta = model_file.load_model(path)
    x = torch.randn(100, 28)
    assert torch.equal(model(x), loaded(x))
    assert np.array_equal(std.mean, std2.mean) and np.array_equal(std.std, std2.std)
    assert meta["model"] == model.config.to_dict() and meta["provenance"] == {"seed": 1}
    assert set(p.name for p in tmp_path.iterdir()) == {"m.safetensors", "m.json"}  # no temp files left


def test_no_pickle_in_files(tmp_path):
    _, _, path = _saved(tmp_path)
    raw = path.read_bytes()
    assert raw[:1] != b"\x80" and not raw.startswith(b"PK")  # neither a pickle stream nor torch.save's zip
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])  # a safetensors file is a JSON header + raw bytes
    assert "input.weight" in header and "standardizer.mean" in header


class _Payload:
    """Unpickling this object would run its __reduce__: it would create the file named `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_handed_over_as_a_model_is_never_unpickled(tmp_path, kind):
    """A pickle (or torch.save's zip of pickles) in place of the tensor file, with a valid JSON beside it:
    loading must refuse it with the file's name, and the payload must never run."""
    import pickle
    _, _, path = _saved(tmp_path)
    marker = tmp_path / "payload-ran"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"input.weight": _Payload(marker)}))
    else:
        torch.save({"input.weight": _Payload(marker)}, path)
    with pytest.raises(UserError, match="m.safetensors"):
        model_file.load_model(path)
    assert not marker.exists()
    # The check above can fail: unpickling that very file does run the payload.
    if kind == "pickle":
        pickle.loads(path.read_bytes())
    else:
        copy = tmp_path / "copy.pt"  # torch.load reads a *.safetensors name with safetensors, not pickle
        copy.write_bytes(path.read_bytes())
        torch.load(copy, weights_only=False)
    assert marker.exists()


def test_corrupt_tensor_file_is_detected(tmp_path):
    _, _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="do not match the checksum"):
        model_file.load_model(path)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(UserError, match="m.safetensors"):
        model_file.load_model(path)


def test_other_architecture_is_refused(tmp_path):
    _, _, path = _saved(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["model"]["width"] = 64  # JSON claims another width than the tensors hold
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="do not match the architecture"):
        model_file.load_model(path)


def test_missing_and_wrong_kind_of_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        model_file.load_model(tmp_path / "nothing.safetensors")
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(UserError, match="not a higgs-lora model"):
        model_file.load_model(tmp_path / "x")


def test_adapter_round_trip_and_refusal_on_another_base(tmp_path):
    model, std, path = _saved(tmp_path)
    base, _, meta = model_file.load_model(path)
    adapted = add_adapters(base, AdapterConfig(rank=3, scale=0.2, targets=["blocks"]))
    make_adapters_look_trained(adapted)
    ap = adapter_file.save_adapter(tmp_path / "ad", adapted, base_fingerprint=meta["fingerprint"])
    fresh, _, meta2 = model_file.load_model(path)
    adapter_file.load_adapter(ap, fresh, base_fingerprint=meta2["fingerprint"])
    x = torch.randn(50, 28)
    assert torch.equal(fresh(x), adapted(x))
    ameta = json.loads(ap.with_suffix(".json").read_text())
    assert ameta["rank"] == 3 and ameta["lora_alpha"] == pytest.approx(0.6) and len(ameta["targets"]) == 4

    _, _, other = _saved(tmp_path, name="other", width=64)
    other_model, _, other_meta = model_file.load_model(other)
    with pytest.raises(UserError, match="trained on another base"):
        adapter_file.load_adapter(ap, other_model, base_fingerprint=other_meta["fingerprint"])


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with io.atomic_path(tmp_path / "g.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "g.txt").stat().st_mode & 0o777 == 0o644


def test_save_into_a_directory_that_does_not_exist_yet(tmp_path):
    _, _, path = _saved(tmp_path / "new" / "dir")
    assert path == tmp_path / "new" / "dir" / "m.safetensors" and model_file.load_model(path)[0].n_params() == 78_081
