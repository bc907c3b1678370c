"""Many adapters on one base: named, listed, evaluated together; an adapter of another base refused."""
import copy

import numpy as np
import pytest
import torch

from higgs_lora.adapters import adapter_file
from higgs_lora.adapters.catalog import list_adapters, table
from higgs_lora.errors import UserError
from higgs_lora.adapters.lora import add_adapters
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP
from higgs_lora.adapters.many import load_many, probabilities
from conftest import save_base

NAMES = [f"f{i}" for i in range(28)]


def _save_base(path, seed):
    torch.manual_seed(seed)
    return save_base(path, ResidualMLP(width=16, head_width=8))


def _save_adapter(path, base, meta, *, seed, name=None, condition=None, **variant):
    torch.manual_seed(seed)
    model = add_adapters(copy.deepcopy(base), AdapterConfig(rank=2, scale=1.0, **variant))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape))
    adapter_file.save_adapter(path, model, base_fingerprint=meta["fingerprint"], name=name, target_condition=condition,
                    metrics=dict(roc_auc=0.9 + seed / 100, accuracy=0.8))
    return model


@pytest.fixture
def shelf(tmp_path):
    base, _, meta = _save_base(tmp_path / "base", 0)
    models = {"mass": _save_adapter(tmp_path / "adapters" / "mass", base, meta, seed=1, condition="mass-600-450"),
              "jes": _save_adapter(tmp_path / "adapters" / "jes", base, meta, seed=2, name="jes", dora=True,
                                   condition="jes-up")}
    other, _, other_meta = _save_base(tmp_path / "other" / "base", 5)
    _save_adapter(tmp_path / "adapters" / "foreign", other, other_meta, seed=3, init="pissa")
    return tmp_path, base, meta, models


def test_list_names_base_rank_variant_size_condition_metrics(shelf):
    tmp_path, _, meta, _ = shelf
    rows = {r["name"]: r for r in list_adapters(tmp_path / "adapters")}
    assert set(rows) == {"mass", "jes", "foreign"}
    assert rows["mass"]["base"] == rows["jes"]["base"] == meta["fingerprint"] != rows["foreign"]["base"]
    assert rows["jes"]["variant"] == "dora" and rows["foreign"]["variant"] == "lora+pissa"
    assert rows["mass"]["variant"] == "lora" and rows["mass"]["rank"] == 2
    assert rows["mass"]["condition"] == "mass-600-450" and rows["mass"]["metrics"]["roc_auc"] == pytest.approx(0.91)
    assert rows["mass"]["bytes"] == (tmp_path / "adapters" / "mass.safetensors").stat().st_size
    text = table(list(rows.values()))
    assert "roc_auc 0.9100" in text and "dora" in text and text.splitlines()[0].startswith("name")


def test_probabilities_of_many_adapters_in_one_pass_equal_each_alone(shelf):
    tmp_path, base, _, models = shelf
    networks, _, _ = load_many(tmp_path / "base", [tmp_path / "adapters" / "mass", tmp_path / "adapters" / "jes"])
    assert list(networks) == ["base", "mass", "jes"]
    x = torch.randn(3000, 28)
    p = probabilities(networks, x)
    with torch.no_grad():
        np.testing.assert_array_equal(p["base"], torch.sigmoid(base(x)).numpy())
        for name, model in models.items():
            np.testing.assert_array_equal(p[name], torch.sigmoid(model.eval()(x)).numpy())


def test_an_adapter_of_another_base_is_refused_and_names_must_differ(shelf):
    tmp_path, _, _, _ = shelf
    with pytest.raises(UserError, match="trained on another base model"):
        load_many(tmp_path / "base", [tmp_path / "adapters" / "mass", tmp_path / "adapters" / "foreign"])
    with pytest.raises(UserError, match="adapter name 'mass' is already taken"):
        load_many(tmp_path / "base", [tmp_path / "adapters" / "mass", tmp_path / "adapters" / "mass"])


def test_cli_names_lists_and_predicts_with_many_adapters(tmp_path):
    """finetune --name/--condition writes them and the test metrics into the JSON; `adapters DIR` lists
    them; `predict --adapter A --adapter B` gives the base's and each adapter's column in one file, equal
    to single-adapter predictions; an adapter of another base is refused."""
    import json

    from conftest import cli, write_higgs_csv
    data = write_higgs_csv(tmp_path / "data.csv", 3000)
    split = ["--preset", "notebook", "--train-rows", "1500", "--test-rows", "500", "--batch-size", "256",
             "--no-progress", "--width", "16", "--head-width", "8"]
    cli("train", "--data", data, "--out", tmp_path / "t", "--epochs", "1", *split)
    base = tmp_path / "t" / "base.safetensors"
    tune = [a for a in split if a not in ("--width", "16", "--head-width", "8")]
    cli("finetune", base, "--data", data, "--out", tmp_path / "shelf" / "a", "--ft-epochs", "1", "--name", "alpha",
        "--condition", "jes-up", *tune)
    cli("finetune", base, "--data", data, "--out", tmp_path / "shelf" / "b", "--ft-epochs", "1", "--dora",
        "--rank", "2", "--seed", "7", *tune)
    meta = json.loads((tmp_path / "shelf" / "a" / "adapter.json").read_text())
    assert meta["name"] == "alpha" and meta["target_condition"] == "jes-up"
    assert 0 <= meta["metrics"]["roc_auc"] <= 1 and meta["metrics"]["rows"] == 500
    meta_b = json.loads((tmp_path / "shelf" / "b" / "adapter.json").read_text())
    assert meta_b["name"] == "b" and meta_b["dora"] and str(data) in meta_b["target_condition"]

    listing = cli("adapters", tmp_path / "shelf").stdout
    lines = listing.splitlines()
    assert lines[0].split() == ["name", "base", "rank", "variant", "bytes", "condition", "metrics", "path"]
    alpha = next(line for line in lines if line.startswith("alpha"))
    assert "lora" in alpha and "jes-up" in alpha and "roc_auc" in alpha and meta["base_fingerprint"][:16] in alpha
    assert any(line.startswith("b ") and " dora " in line for line in lines)
    rows = json.loads(cli("adapters", tmp_path / "shelf", "--json").stdout)
    assert {r["name"] for r in rows} == {"alpha", "b"}

    a, b = tmp_path / "shelf" / "a" / "adapter", tmp_path / "shelf" / "b" / "adapter"
    cli("predict", base, "--data", data, "--adapter", a, "--adapter", b, "--out", tmp_path / "many.csv")
    many = np.genfromtxt(tmp_path / "many.csv", delimiter=",", names=True)
    assert many.dtype.names == ("label", "probability_base", "probability_alpha", "probability_b")
    for column, adapter in (("probability_base", None), ("probability_alpha", a), ("probability_b", b)):
        cli("predict", base, "--data", data, *(["--adapter", adapter] if adapter else []), "--out",
            tmp_path / f"{column}.csv")
        alone = np.genfromtxt(tmp_path / f"{column}.csv", delimiter=",", names=True)
        np.testing.assert_array_equal(many[column], alone["probability"])
    assert not np.array_equal(many["probability_alpha"], many["probability_base"])

    cli("train", "--data", data, "--out", tmp_path / "t2", "--epochs", "1", "--seed", "99", *split)
    refused = cli("predict", tmp_path / "t2" / "base.safetensors", "--data", data, "--adapter", a, "--adapter", b,
                  "--out", tmp_path / "x.csv", check=False)
    assert refused.returncode == 1 and "trained on another base model" in refused.stderr
