"""PEFT's adapter format both ways, checked with the real `peft` library on our ResidualMLP."""
import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from higgs_lora.model import model_file
from higgs_lora.adapters import adapter_file
from higgs_lora.cli import main
from higgs_lora.data.standardize import Standardizer
from higgs_lora.adapters.lora import add_adapters
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP, dense_layer_names
from conftest import save_base

from conftest import float32_tolerance

peft = pytest.importorskip("peft", reason="peft is not installed (optional extra 'peft'; part of 'test')")

VARIANTS = [dict(), dict(rslora=True), dict(dora=True), dict(init="pissa"), dict(init="pissa", dora=True, rslora=True)]


def _ids(v):
    return "+".join(f"{k}={val}" for k, val in v.items()) or "plain"


def _base(tmp_path):
    torch.manual_seed(0)
    base = ResidualMLP(width=32, head_width=16)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return save_base(tmp_path / "base", base)


def _trained_adapter(tmp_path, variant, targets=("all",)):
    base, _, meta = _base(tmp_path)
    torch.manual_seed(1)
    model = add_adapters(copy.deepcopy(base), AdapterConfig(rank=3, scale=0.5, targets=targets, **variant))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    adapter_file.save_adapter(tmp_path / "adapter", model, base_fingerprint=meta["fingerprint"])
    return base, model, meta


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_export_loads_in_peft_and_predicts_like_us(tmp_path, variant):
    from peft import PeftModel
    base, ours, _ = _trained_adapter(tmp_path, variant)
    out = tmp_path / "peft"
    assert main(["export", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter"), "--format", "peft",
                 "--out", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    tensors = load_file(str(out / "adapter_model.safetensors"))
    r = 6 if variant.get("init") == "pissa" else 3          # PiSSA goes out as the equivalent rank-2r LoRA
    assert config["r"] == r and config["use_dora"] == variant.get("dora", False)
    assert config["use_rslora"] == variant.get("rslora", False)
    assert config["target_modules"] == dense_layer_names(base.config)
    assert tensors["base_model.model.input.lora_A.weight"].shape == (r, 28)          # [r, in]
    assert tensors["base_model.model.hidden.lora_B.weight"].shape == (16, r)         # [out, r]
    assert ("base_model.model.output.lora_magnitude_vector" in tensors) == variant.get("dora", False)
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    x = torch.randn(4000, 28)
    with torch.no_grad():
        p_ours, p_theirs = torch.sigmoid(ours(x)), torch.sigmoid(theirs(x))
    assert (p_ours - p_theirs).abs().max().item() <= float32_tolerance(ours, x, probabilities=True)


def test_export_of_the_adapter_file_alone_and_a_subset_of_layers(tmp_path):
    from peft import PeftModel
    base, ours, _ = _trained_adapter(tmp_path, dict(), targets=("blocks",))
    out = tmp_path / "peft"
    assert main(["export", str(tmp_path / "adapter"), "--format", "peft", "--out", str(out)]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"] == [
        "blocks.0.dense1", "blocks.0.dense2", "blocks.1.dense1", "blocks.1.dense2"]
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    x = torch.randn(1000, 28)
    with torch.no_grad():
        assert (torch.sigmoid(ours(x)) - torch.sigmoid(theirs(x))).abs().max().item() <= \
            float32_tolerance(ours, x, probabilities=True)


@pytest.mark.parametrize("rslora, dora", [(False, False), (True, True)])
def test_peft_adapter_imports_and_predicts_like_peft(tmp_path, rslora, dora):
    from peft import LoraConfig, get_peft_model
    base, _, meta = _base(tmp_path)
    cfg = LoraConfig(r=4, lora_alpha=6, target_modules=["dense1", "dense2", "hidden"], use_rslora=rslora,
                     use_dora=dora)
    theirs = get_peft_model(copy.deepcopy(base), cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_" in name:  # a trained adapter's size
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    theirs.save_pretrained(str(tmp_path / "from_peft"))
    assert main(["import-peft", str(tmp_path / "from_peft"), "--base", str(tmp_path / "base"),
                 "--out", str(tmp_path / "imported")]) == 0
    saved = json.loads((tmp_path / "imported.json").read_text())
    assert saved["rank"] == 4 and saved["lora_alpha"] == 6 and saved["rslora"] == rslora and saved["dora"] == dora
    assert saved["targets"] == ["blocks.0.dense1", "blocks.0.dense2", "blocks.1.dense1", "blocks.1.dense2", "hidden"]
    ours, _, meta2 = model_file.load_model(tmp_path / "base")
    adapter_file.load_adapter(tmp_path / "imported", ours, base_fingerprint=meta2["fingerprint"])
    x = torch.randn(4000, 28)
    theirs.eval()
    with torch.no_grad():
        assert (torch.sigmoid(ours(x)) - torch.sigmoid(theirs(x))).abs().max().item() <= \
            float32_tolerance(ours, x, probabilities=True)
    # and back out: our export of the imported adapter holds the same tensors PEFT wrote
    assert main(["export", str(tmp_path / "imported"), "--format", "peft", "--out", str(tmp_path / "again")]) == 0
    a, b = load_file(str(tmp_path / "from_peft" / "adapter_model.safetensors")), \
        load_file(str(tmp_path / "again" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_import_refuses_another_base_and_unsupported_configs(tmp_path, capsys):
    _trained_adapter(tmp_path, dict())
    assert main(["export", str(tmp_path / "adapter"), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    other = tmp_path / "other"
    other.mkdir()
    torch.manual_seed(9)
    model_file.save_model(other / "base", ResidualMLP(width=32, head_width=16),
                  Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32)),
                  feature_names=[f"f{i}" for i in range(28)])
    assert main(["import-peft", str(tmp_path / "peft"), "--base", str(other / "base"), "--out",
                 str(tmp_path / "x")]) == 1
    assert "another base model" in capsys.readouterr().err
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps(dict(config, rank_pattern={"hidden": 2})))
    assert main(["import-peft", str(tmp_path / "peft"), "--base", str(tmp_path / "base"), "--out",
                 str(tmp_path / "x")]) == 1
    assert "rank_pattern is not supported" in capsys.readouterr().err
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps(dict(config, target_modules=["nope"])))
    assert main(["import-peft", str(tmp_path / "peft"), "--base", str(tmp_path / "base"), "--out",
                 str(tmp_path / "x")]) == 1
    assert "target_modules ['nope']" in capsys.readouterr().err
