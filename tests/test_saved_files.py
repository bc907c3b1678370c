"""Files written by an earlier release still load and give that release's predictions.

tests/data/saved_v0.1.0/ was written by higgs-lora 0.1.0 (its make.sh says how) before the package
restructure: a base network, LoRA, DoRA and rsLoRA+PiSSA adapters, a merged network, a PEFT export and a
shard directory, with the probabilities 0.1.0 predicted for 200 rows. A change of JSON field, tensor name
or module path that breaks such files fails here."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import higgs_lora as hl
from conftest import cli, float32_tolerance

OLD = Path(__file__).parent / "data" / "saved_v0.1.0"
PRINTED = 5e-9  # 0.1.0 wrote each probability with 8 significant digits: half a unit of the last one, at p <= 1


def _old_predictions(name: str) -> np.ndarray:
    with open(OLD / f"pred_{name}.csv", newline="") as f:
        return np.array([float(r["probability"]) for r in csv.DictReader(f)])


def _rows() -> np.ndarray:
    return np.loadtxt(OLD / "rows.csv", delimiter=",", dtype=np.float32)[:, 1:]


@pytest.mark.parametrize("name, model, adapter", [
    ("base", "base", None), ("lora", "base", "adapter_lora"), ("dora", "base", "adapter_dora"),
    ("rslora", "base", "adapter_rslora"), ("merged", "merged", None)])
def test_old_models_and_adapters_predict_as_they_did(name, model, adapter):
    loaded = hl.load_model(OLD / f"{model}.safetensors", adapter=adapter and OLD / f"{adapter}.safetensors")
    x = _rows()
    now = hl.predict(loaded, x)
    z = torch.from_numpy(loaded.standardizer.transform(x))
    tol = float32_tolerance(loaded.network, z, probabilities=True) + PRINTED
    assert np.abs(now - _old_predictions(name)).max() <= tol


def test_old_peft_export_imports_and_matches_the_old_adapter(tmp_path):
    cli("import-peft", OLD / "peft_lora", "--base", OLD / "base.safetensors", "--out", tmp_path / "imported.safetensors")
    imported = hl.load_model(OLD / "base.safetensors", adapter=tmp_path / "imported.safetensors")
    x = _rows()
    z = torch.from_numpy(imported.standardizer.transform(x))
    tol = float32_tolerance(imported.network, z, probabilities=True) + PRINTED
    assert np.abs(hl.predict(imported, x) - _old_predictions("lora")).max() <= tol


def test_old_shards_read_as_the_rows_they_were_cut_from(tmp_path):
    p = cli("prepare", OLD / "shards", "--cache-dir", tmp_path)
    assert "6,000 rows" in p.stdout, p.stdout
    data = hl.load_data(OLD / "shards", cache_dir=tmp_path)
    first = data.source.table.read(0, 200)
    np.testing.assert_array_equal(first.features, _rows())  # float32 in both: the same numbers, bit for bit


def test_old_files_list_and_predict_through_the_command_line(tmp_path):
    listing = cli("adapters", OLD).stdout
    for variant in ("lora", "dora", "rslora"):
        assert f"adapter_{variant}" in listing, listing
    cli("predict", OLD / "base.safetensors", "--adapter", OLD / "adapter_dora.safetensors", "--data", OLD / "rows.csv",
        "--out", tmp_path / "p.csv", "--precision", "fp32")
    with open(tmp_path / "p.csv", newline="") as f:
        now = np.array([float(r["probability"]) for r in csv.DictReader(f)])
    loaded = hl.load_model(OLD / "base.safetensors", adapter=OLD / "adapter_dora.safetensors")
    z = torch.from_numpy(loaded.standardizer.transform(_rows()))
    # both sides printed with 8 significant digits, hence the rounding counted twice
    assert np.abs(now - _old_predictions("dora")).max() <= float32_tolerance(loaded.network, z, probabilities=True) + 2 * PRINTED
