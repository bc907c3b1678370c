"""ONNX export against PyTorch, through ONNX Runtime, on raw-looking random features."""
import copy
import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from higgs_lora.data.standardize import Standardizer  # noqa: E402
from higgs_lora.errors import UserError  # noqa: E402
from higgs_lora.interop.onnx import ALLOWED_OPS, export_onnx  # noqa: E402
from higgs_lora.adapters.lora import adapters, add_adapters  # noqa: E402
from higgs_lora.config import AdapterConfig  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402
from conftest import make_adapters_look_trained  # noqa: E402

N_FEATURES = 28
NAMES = [f"f{i}" for i in range(N_FEATURES)]


@pytest.fixture(scope="module")
def standardizer() -> Standardizer:
    # Raw scales unlike unit z-scores, so folding (x - mean)/std into the first layer is really exercised.
    rng = np.random.default_rng(1)
    return Standardizer(mean=rng.uniform(-2, 5, N_FEATURES).astype(np.float32),
                        std=rng.uniform(0.2, 3, N_FEATURES).astype(np.float32))


@pytest.fixture(scope="module")
def raw(standardizer) -> np.ndarray:
    rng = np.random.default_rng(2)
    return (standardizer.mean + standardizer.std * rng.standard_normal((10_000, N_FEATURES))).astype(np.float32)


def make_model(kind: str) -> ResidualMLP:
    torch.manual_seed(0)
    model = ResidualMLP(n_features=N_FEATURES).eval()
    if kind == "adapted":
        add_adapters(model, AdapterConfig(rank=4, scale=0.1))
        make_adapters_look_trained(model, std=0.5)
    return model


def torch_probabilities(model, standardizer, raw) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(standardizer.transform(raw)))).numpy()


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["random", "adapted"])
@pytest.mark.parametrize("include_standardization", [False, True])
def test_onnx_runtime_matches_pytorch(tmp_path, standardizer, raw, kind, include_standardization):
    model = make_model(kind)
    expected = torch_probabilities(model, standardizer, raw)
    path = export_onnx(model, standardizer, feature_names=NAMES, out_dir=tmp_path / "out",
                       include_standardization=include_standardization)
    assert path == tmp_path / "out" / "model.onnx"
    if kind == "adapted":
        assert adapters(model)  # the caller's model keeps its adapters; export merged a copy
        plain = torch_probabilities(make_model("random"), standardizer, raw)
        assert np.abs(expected - plain).max() > 1e-3

    # Apply preprocess.json as a consumer would, without our Standardizer.
    doc = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert doc["standardization_in_graph"] is include_standardization
    mean, std = np.asarray(doc["mean"], np.float32), np.asarray(doc["std"], np.float32)
    fed = raw if doc["standardization_in_graph"] else (raw - mean) / std
    got = session(path).run(None, {"features": fed})[0]
    assert got.shape == (10_000, 1) and got.dtype == np.float32
    assert np.abs(got[:, 0] - expected).max() < 1e-5


@pytest.mark.parametrize("include_standardization", [False, True])
def test_graph_is_plain_valid_and_batch_is_dynamic(tmp_path, standardizer, raw, include_standardization):
    model = make_model("adapted")
    path = export_onnx(model, standardizer, feature_names=NAMES, out_dir=tmp_path,
                       include_standardization=include_standardization)
    graph_model = onnx.load(path)
    onnx.checker.check_model(graph_model, full_check=True)
    assert {n.op_type for n in graph_model.graph.node} <= ALLOWED_OPS
    assert {n.op_type for n in graph_model.graph.node} == {"Gemm", "Relu", "Add", "Sigmoid"}
    (inp,), (out,) = graph_model.graph.input, graph_model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("features", ["batch", N_FEATURES])
    assert (out.name, dims(out)) == ("probability", ["batch", 1])

    sess = session(path)
    fed = raw if include_standardization else standardizer.transform(raw)
    expected = torch_probabilities(model, standardizer, raw)
    for rows in (1, 10_000):
        got = sess.run(None, {"features": fed[:rows]})[0]
        assert got.shape == (rows, 1)
        assert np.abs(got[:, 0] - expected[:rows]).max() < 1e-5


def test_preprocess_json_describes_the_standardization(tmp_path, standardizer):
    export_onnx(make_model("random"), standardizer, feature_names=NAMES, out_dir=tmp_path / "a")
    export_onnx(make_model("random"), standardizer, feature_names=NAMES, out_dir=tmp_path / "b",
                include_standardization=True)
    outside = json.loads((tmp_path / "a" / "preprocess.json").read_text())
    inside = json.loads((tmp_path / "b" / "preprocess.json").read_text())
    for doc in (outside, inside):
        assert doc["feature_names"] == NAMES
        np.testing.assert_array_equal(np.asarray(doc["mean"], np.float32), standardizer.mean)
        np.testing.assert_array_equal(np.asarray(doc["std"], np.float32), standardizer.std)
        assert "(x[:, j] - mean[j]) / std[j]" in doc["formula"]
        assert doc["input"]["dtype"] == "float32" and doc["input"]["name"] == "features"
    assert outside["standardization_in_graph"] is False and "float32" in outside["how_to_apply"]
    assert "order of feature_names" in outside["how_to_apply"]
    assert inside["standardization_in_graph"] is True and "already applies" in inside["how_to_apply"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.onnx", "preprocess.json"]


def test_refuses_mismatched_names_and_a_file_as_out_dir(tmp_path, standardizer):
    with pytest.raises(ValueError, match="27 feature names"):
        export_onnx(make_model("random"), standardizer, feature_names=NAMES[:27], out_dir=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="file: exists and is not a directory"):
        export_onnx(make_model("random"), standardizer, feature_names=NAMES, out_dir=tmp_path / "file")


def test_export_leaves_the_model_unchanged(tmp_path, standardizer, raw):
    model = make_model("adapted")
    before = copy.deepcopy(model.state_dict())
    export_onnx(model, standardizer, feature_names=NAMES, out_dir=tmp_path, include_standardization=True)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
