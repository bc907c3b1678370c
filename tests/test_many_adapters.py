"""Many adapters on one base: named, listed, evaluated together; an adapter of another base refused."""
import copy

import numpy as np
import pytest
import torch

from higgs_lora import weights
from higgs_lora.adapter_list import list_adapters, table
from higgs_lora.data.standardize import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.lora import add_adapters
from higgs_lora.model import ResidualMLP
from higgs_lora.multi_adapter import load_many, probabilities

NAMES = [f"f{i}" for i in range(28)]


def _save_base(path, seed):
    torch.manual_seed(seed)
    st = Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32))
    weights.save_model(path, ResidualMLP(width=16, head_width=8), st, feature_names=NAMES)
    return weights.load_model(path)


def _save_adapter(path, base, meta, *, seed, name=None, condition=None, **variant):
    torch.manual_seed(seed)
    model = add_adapters(copy.deepcopy(base), rank=2, scale=1.0, **variant)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape))
    weights.save_adapter(path, model, base_fingerprint=meta["fingerprint"], name=name, target_condition=condition,
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
