"""The notebook's own saved Keras model, read without TensorFlow, against Keras' own predictions."""
import copy
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from higgs_lora.data.table import HIGGS_FEATURES
from higgs_lora.errors import UserError
from higgs_lora.io import write_json
from higgs_lora.model.model_file import load_model, save_model
from higgs_lora.interop.keras import import_keras
from higgs_lora.adapters.lora import add_adapters, merge_adapters
from higgs_lora.config import AdapterConfig
from conftest import make_adapters_look_trained

DATA = Path(__file__).parent / "data"  # copied from shared/data with its README (CC BY 4.0)
FIXTURE = DATA / "notebook_model"
KERAS, STATS = FIXTURE / "model.keras", FIXTURE / "stats.json"




@pytest.fixture(scope="module")
def real_features() -> np.ndarray:
    rows = np.loadtxt(DATA / "higgs_real_sample.csv", delimiter=",", dtype=np.float64)
    return rows[:, 1:].astype(np.float32)


@pytest.fixture(scope="module")
def keras_probs() -> np.ndarray:
    return np.loadtxt(FIXTURE / "keras_predictions.txt", dtype=np.float64)


def probabilities(model, standardizer, features) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(standardizer.transform(features)))).double().numpy()


def rewrite_keras(dst: Path, *, edit_h5=None, drop: str | None = None) -> Path:
    """A copy of the real .keras file with its weights edited in place or one member left out."""
    with zipfile.ZipFile(KERAS) as z:
        members = {name: z.read(name) for name in z.namelist() if name != drop}
    if edit_h5 is not None:
        h5 = dst.with_suffix(".h5")
        h5.write_bytes(members["model.weights.h5"])
        with h5py.File(h5, "r+") as f:
            edit_h5(f)
        members["model.weights.h5"] = h5.read_bytes()
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def test_matches_keras_predictions_on_real_rows(real_features, keras_probs):
    model, standardizer = import_keras(KERAS, stats_path=STATS)
    assert model.config.to_dict() == dict(n_features=28, width=128, n_blocks=2, head_width=64)
    assert model.n_params() == 78_081
    ours = probabilities(model, standardizer, real_features)
    assert ours.shape == keras_probs.shape == (1000,)
    assert np.abs(ours - keras_probs).max() < 1e-5


def test_round_trips_through_save_and_load(tmp_path, real_features):
    model, standardizer = import_keras(KERAS, stats_path=STATS)
    save_model(tmp_path / "imported", model, standardizer, feature_names=HIGGS_FEATURES, kind="base",
               provenance={"imported_from": str(KERAS)})
    loaded, loaded_std, meta = load_model(tmp_path / "imported")
    assert meta["model"] == model.config.to_dict()
    np.testing.assert_array_equal(loaded_std.mean, standardizer.mean)
    np.testing.assert_array_equal(loaded_std.std, standardizer.std)
    np.testing.assert_array_equal(probabilities(loaded, loaded_std, real_features),
                                  probabilities(model, standardizer, real_features))


def test_adapters_can_be_added_and_merged(real_features):
    model, standardizer = import_keras(KERAS, stats_path=STATS)
    adapted = add_adapters(copy.deepcopy(model), AdapterConfig(rank=4, scale=0.1))
    make_adapters_look_trained(adapted, std=0.5)
    base_p = probabilities(model, standardizer, real_features)
    adapted_p = probabilities(adapted, standardizer, real_features)
    merged_p = probabilities(merge_adapters(adapted), standardizer, real_features)
    assert np.abs(adapted_p - base_p).max() > 1e-3  # the adapters really change the function
    assert np.abs(merged_p - adapted_p).max() < 1e-5


def test_blocks_are_ordered_by_their_keras_names(tmp_path, real_features, keras_probs):
    def swap_blocks(f):
        # Same network, but the HDF5 groups list res_block2 first: order must come from the layer names.
        f.move("layers/residual_block", "layers/tmp")
        f.move("layers/residual_block_1", "layers/residual_block")
        f.move("layers/tmp", "layers/residual_block_1")

    path = rewrite_keras(tmp_path / "swapped.keras", edit_h5=swap_blocks)
    model, standardizer = import_keras(path, stats_path=STATS)
    assert np.abs(probabilities(model, standardizer, real_features) - keras_probs).max() < 1e-5


def test_text_file_renamed_keras(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("not a model\n")
    with pytest.raises(UserError, match=r"notes\.keras.*not a zip"):
        import_keras(path, stats_path=STATS)


def test_zip_without_weights(tmp_path):
    path = rewrite_keras(tmp_path / "noweights.keras", drop="model.weights.h5")
    with pytest.raises(UserError, match=r"noweights\.keras.*model\.weights\.h5 is missing"):
        import_keras(path, stats_path=STATS)


def test_stats_of_wrong_length(tmp_path):
    stats = json.loads(STATS.read_text())
    write_json(tmp_path / "short.json", {"mean": stats["mean"][:27], "std": stats["std"][:27]})
    with pytest.raises(UserError, match=r"short\.json.*27 entries.*28 features"):
        import_keras(KERAS, stats_path=tmp_path / "short.json")


def test_missing_stats_file(tmp_path):
    with pytest.raises(UserError, match=r"nostats\.json: file not found"):
        import_keras(KERAS, stats_path=tmp_path / "nostats.json")


def test_unknown_layer(tmp_path):
    def add_layer(f):
        f.create_group("capa_extra/vars").create_dataset("0", data=np.zeros((64, 64), np.float32))

    path = rewrite_keras(tmp_path / "extra.keras", edit_h5=add_layer)
    with pytest.raises(UserError, match=r"extra\.keras.*unknown layer.*capa_extra"):
        import_keras(path, stats_path=STATS)


def test_wrong_shapes(tmp_path):
    def shrink(f):
        del f["capa_intermedia/vars/0"]
        f["capa_intermedia/vars"].create_dataset("0", data=np.zeros((100, 64), np.float32))

    path = rewrite_keras(tmp_path / "shapes.keras", edit_h5=shrink)
    with pytest.raises(UserError, match=r"shapes\.keras.*capa_intermedia.*\(100, 64\)"):
        import_keras(path, stats_path=STATS)


def test_predict_without_flags_is_the_fp32_forward_and_matches_keras(tmp_path, monkeypatch, real_features,
                                                                     keras_probs, capsys):
    """`higgs-lora predict` with no flags on a CPU with native, faster bf16 (mocked) runs fp32: the model's
    own forward pass exactly, Keras' to float32 rounding; --precision bf16 is opt-in and says its deviation."""
    from higgs_lora.cli import main
    from higgs_lora.hardware import machine
    monkeypatch.setattr(machine, "native_bf16", lambda device, **kw: (True, "mocked native bf16"))
    monkeypatch.setattr(machine, "cached_probe", lambda **kw: 3.0)
    model, standardizer = import_keras(KERAS, stats_path=STATS)
    save_model(tmp_path / "nb", model, standardizer, feature_names=HIGGS_FEATURES, kind="imported", provenance={})
    sample = DATA / "higgs_real_sample.csv"
    assert main(["predict", str(tmp_path / "nb.safetensors"), "--data", str(sample), "--out",
                 str(tmp_path / "p.csv")]) == 0
    ours = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)[:, 1]
    x = torch.from_numpy(standardizer.transform(real_features))
    with torch.inference_mode():
        forward = torch.sigmoid(model.eval()(x)).numpy()
    np.testing.assert_array_equal(ours.astype(np.float32), forward)
    assert np.abs(ours - keras_probs).max() <= 1e-6
    assert "bf16" not in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "nb.safetensors"), "--data", str(sample), "--out",
                 str(tmp_path / "b.parquet"), "--precision", "bf16"]) == 0
    import pyarrow.parquet as pq
    table = pq.read_table(tmp_path / "b.parquet")
    measured = np.abs(table["probability"].to_numpy().astype(np.float64) - forward).max()
    recorded = float(table.schema.metadata[b"higgs_lora.bf16_max_abs_diff"])
    assert recorded == measured > 0   # bf16 rounds; the file records by how much, exactly
    assert f"max |p_bf16 - p_fp32| = {measured:.2e} on the first 1,000 rows" in capsys.readouterr().out
