"""The default model's pieces (feature embeddings, dropout): their math, adapters and merge on every new
linear layer, ONNX Runtime against PyTorch, and files that round-trip; the notebook's network unchanged."""
import json

import numpy as np
import pytest
import torch

from higgs_lora.model import model_file
from higgs_lora.config import ModelConfig, preset
from higgs_lora.data import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.adapters.lora import adapters, add_adapters, merge_adapters
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP, dense_layer_names, piecewise_edges
from conftest import make_adapters_look_trained

EMBEDDINGS = [dict(embedding="piecewise", embedding_size=6), dict(embedding="periodic", embedding_size=5,
                                                                   frequency_scale=0.3)]
N_FEATURES = 28


def _model(seed=0, **kw) -> ResidualMLP:
    torch.manual_seed(seed)
    return ResidualMLP(n_features=N_FEATURES, **kw).eval()


def test_default_fields_are_the_notebook_network():
    # New fields default to today's network: same tensors, same names, same forward.
    m = ResidualMLP()
    assert m.n_params() == 78_081 and m.embedding is None
    assert sorted(m.state_dict()) == sorted(
        [f"{n}.{p}" for n in dense_layer_names(m.config) for p in ("weight", "bias")])
    assert preset("notebook").model == ModelConfig()


def test_piecewise_encoding_matches_its_definition():
    m = _model(embedding="piecewise", embedding_size=4)
    x = torch.randn(50, N_FEATURES) * 2
    edges = piecewise_edges(4)
    assert torch.all(edges[1:] > edges[:-1]) and torch.allclose(edges, -edges.flip(0), atol=1e-12)
    expected = torch.stack([((x.double() - edges[t]) / (edges[t + 1] - edges[t])).clamp(0, 1) for t in range(4)], -1)
    torch.testing.assert_close(m.embedding(x), expected.flatten(1).float(), atol=1e-6, rtol=0)
    assert m.input.in_features == N_FEATURES * 5
    # forward = input layer on [x, encoding], then the notebook's trunk
    h = torch.relu(m.input(torch.cat([x, m.embedding(x)], 1)))
    for b in m.blocks:
        h = torch.relu(h + b.dense2(torch.relu(b.dense1(h))))
    torch.testing.assert_close(m(x), m.output(torch.relu(m.hidden(h))).squeeze(-1))


def test_periodic_encoding_matches_its_definition():
    m = _model(embedding="periodic", embedding_size=3, frequency_scale=0.5)
    x = torch.randn(20, N_FEATURES)
    f = m.embedding.frequencies
    v = 2 * np.pi * x[:, :, None] * f[None]
    torch.testing.assert_close(m.embedding(x), torch.cat([torch.sin(v), torch.cos(v)], -1).flatten(1))
    assert m.input.in_features == N_FEATURES * 7 and f.requires_grad


def test_dropout_is_training_only():
    m = _model(dropout=0.5)
    x = torch.randn(64, N_FEATURES)
    torch.testing.assert_close(m.eval()(x), m(x))
    m.train()
    torch.manual_seed(3)
    assert not torch.allclose(m(x), m.eval()(x))


@pytest.mark.parametrize("bad", [dict(embedding="fourier", embedding_size=4), dict(embedding="piecewise"),
                                 dict(embedding_size=4), dict(dropout=1.0), dict(dropout=-0.1),
                                 dict(embedding="periodic", embedding_size=2, frequency_scale=0.0)])
def test_bad_model_fields_fail_loudly(bad):
    with pytest.raises(UserError, match="model"):
        ModelConfig(**bad)


def test_keyword_only():
    with pytest.raises(TypeError):
        ResidualMLP(28, 128, 2, 64, "piecewise", 8)


@pytest.mark.parametrize("kw", EMBEDDINGS + [dict(embedding="piecewise", embedding_size=4, dropout=0.2)])
def test_adapters_reach_every_linear_layer_and_merge_exactly(kw):
    model = _model(**kw)
    linears = {n for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert linears == set(dense_layer_names(model.config))
    add_adapters(model, AdapterConfig(rank=4, scale=1.0))
    assert set(adapters(model)) == linears
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable)  # the frequencies are frozen too
    make_adapters_look_trained(model, std=0.3, seed=1)
    x = torch.randn(2000, N_FEATURES)
    with torch.no_grad():
        adapted = model(x)
        merged = merge_adapters(model).eval()
        assert not adapters(merged)
        assert (merged(x) - adapted).abs().max() <= 1e-5
        assert (adapted - _model(**kw)(x)).abs().max() > 1e-3  # the adapters changed the function


@pytest.mark.parametrize("kw", EMBEDDINGS)
def test_save_load_round_trip(tmp_path, kw):
    model = _model(**kw, dropout=0.1)
    st = Standardizer(mean=np.arange(N_FEATURES, dtype=np.float32), std=np.ones(N_FEATURES, np.float32))
    model_file.save_model(tmp_path / "m", model, st, feature_names=[f"f{i}" for i in range(N_FEATURES)])
    assert json.loads((tmp_path / "m.json").read_text())["model"] == model.config.to_dict()
    loaded, _, _ = model_file.load_model(tmp_path / "m")
    assert loaded.config == model.config
    x = torch.randn(100, N_FEATURES)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_model_file_without_the_new_fields_still_loads(tmp_path):
    # A file written before the embedding fields existed: its JSON lists only the four sizes.
    model = _model()
    st = Standardizer(mean=np.zeros(N_FEATURES, np.float32), std=np.ones(N_FEATURES, np.float32))
    model_file.save_model(tmp_path / "old", model, st, feature_names=[f"f{i}" for i in range(N_FEATURES)])
    meta = json.loads((tmp_path / "old.json").read_text())
    meta["model"] = {k: meta["model"][k] for k in ("n_features", "width", "n_blocks", "head_width")}
    (tmp_path / "old.json").write_text(json.dumps(meta))
    loaded, _, _ = model_file.load_model(tmp_path / "old")
    assert loaded.config == ModelConfig() and loaded.embedding is None


def test_label_smoothing_moves_the_targets_toward_one_half():
    from higgs_lora.config import Recipe
    from higgs_lora.data.sources import TensorData
    from higgs_lora.train import fit
    x, y = torch.randn(256, N_FEATURES), (torch.rand(256) > 0.5).float()
    losses = {}
    for ls in (0.0, 0.2):
        model = _model(seed=5)
        r = fit(model, TensorData(x, y, batch_size=256), Recipe(epochs=1, lr=1e-9, seed=0, label_smoothing=ls),
                progress=False, verbose=False)
        losses[ls] = r.history[0]["loss"]
        with torch.no_grad():
            logits = _model(seed=5)(x)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y * (1 - ls) + 0.5 * ls)
        assert losses[ls] == pytest.approx(expected.item(), rel=1e-5)
    assert losses[0.0] != losses[0.2]
    with pytest.raises(UserError, match="label smoothing"):
        Recipe(epochs=1, lr=1e-3, label_smoothing=1.0)


# ---------------------------------------------------------------- ONNX

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("kw", EMBEDDINGS)
@pytest.mark.parametrize("include_standardization", [False, True])
@pytest.mark.parametrize("adapted", [False, True])
def test_onnx_runtime_matches_pytorch(tmp_path, kw, include_standardization, adapted):
    from higgs_lora.interop.onnx import export_onnx
    rng = np.random.default_rng(2)
    st = Standardizer(mean=rng.uniform(-2, 5, N_FEATURES).astype(np.float32),
                      std=rng.uniform(0.2, 3, N_FEATURES).astype(np.float32))
    raw = (st.mean + st.std * 1.5 * rng.standard_normal((10_000, N_FEATURES))).astype(np.float32)
    model = _model(**kw)
    if adapted:
        add_adapters(model, AdapterConfig(rank=4, scale=1.0))
        make_adapters_look_trained(model, std=0.3, seed=1)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(st.transform(raw)))).numpy()
    path = export_onnx(model, st, feature_names=[f"f{i}" for i in range(N_FEATURES)], out_dir=tmp_path,
                       include_standardization=include_standardization)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    extra = {"Sin", "Cos"} if kw["embedding"] == "periodic" else set()
    assert ops == {"Gemm", "Relu", "Add", "Sigmoid"} | extra
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": raw if include_standardization else st.transform(raw)})[0]
    assert got.shape == (10_000, 1)
    assert np.abs(got[:, 0] - expected).max() <= 1e-5
