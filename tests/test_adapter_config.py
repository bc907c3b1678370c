"""AdapterConfig: the adapters' settings as one object, checked once, recorded in the adapter's JSON, and
what every caller passes; the layer class follows its variant; one switch builds the studies' networks."""
import json
from pathlib import Path

import pytest
import torch

from higgs_lora.adapters.adapter_file import saved_config
from higgs_lora.adapters.lora import DoRALinear, LoRALinear, adapter_config, adapter_layer, add_adapters
from higgs_lora.config import AdapterConfig, preset
from higgs_lora.errors import ConfigError, UserError
from higgs_lora.model.network import ResidualMLP
from higgs_lora.studies import adapt_study, strategies

OLD = Path(__file__).parent / "data" / "saved_v0.1.0"


def test_to_dict_and_back():
    config = AdapterConfig(rank=3, scale=2, targets=["blocks", "output"], rslora=True, dora=True, init="pissa",
                           loraplus_lr_ratio=4, formulation="factored")
    assert config.to_dict() == dict(rank=3, scale=2.0, targets=["blocks", "output"], rslora=True, dora=True,
                                    init="pissa", loraplus_lr_ratio=4.0, formulation="factored")
    assert AdapterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert (config.lora_alpha, config.scaling) == (6.0, pytest.approx(6.0 / 3 ** 0.5))
    with pytest.raises(ConfigError, match=r"unknown adapter settings \['alpha'\]"):
        AdapterConfig.from_dict(dict(rank=3, scale=1.0, alpha=2))


def test_the_settings_of_a_0_1_0_adapter_file():
    meta = json.loads((OLD / "adapter_dora.json").read_text())
    layers = ("input", "blocks.0.dense1", "blocks.0.dense2", "blocks.1.dense1", "blocks.1.dense2", "hidden", "output")
    assert saved_config(OLD / "adapter_dora.json", meta) == AdapterConfig(rank=8, scale=1.0, targets=layers, dora=True)
    # written before the variants existed: plain LoRA
    assert saved_config(Path("a.json"), dict(rank=2, scale=0.5, targets=["hidden"], name="a")) == \
        AdapterConfig(rank=2, scale=0.5, targets=("hidden",), rslora=False, dora=False, init="glorot",
                      loraplus_lr_ratio=1.0, formulation="reform")
    with pytest.raises(UserError, match=r"a\.json: bad adapter settings \(adapter rank must be a whole number"):
        saved_config(Path("a.json"), dict(rank="4", scale=0.5))


@pytest.mark.parametrize("flags, words", [
    (dict(rank=0), "adapter rank must be a whole number >= 1, got 0"),
    (dict(scale=0.0), "adapter scale must be a finite number > 0, got 0.0"),
    (dict(lora_init="olora"), "adapter init must be one of ('glorot', 'pissa'), got 'olora'"),
    (dict(loraplus_lr_ratio=-1.0), "adapter loraplus_lr_ratio must be a finite number > 0, got -1.0"),
    (dict(targets=()), "adapter targets must be dense layer names, 'blocks' or 'all', got ()"),
])
def test_a_recipe_is_refused_with_the_adapter_setting_named(flags, words):
    with pytest.raises(ConfigError) as e:
        preset("notebook", **flags)
    assert str(e.value) == words


def test_a_recipe_gives_its_adapters():
    cfg = preset("notebook", rank=2, scale=0.5, targets=["blocks"], rslora=True, dora=True, lora_init="pissa",
                 loraplus_lr_ratio=8.0)
    assert cfg.adapter_config() == AdapterConfig(rank=2, scale=0.5, targets=("blocks",), rslora=True, dora=True,
                                                 init="pissa", loraplus_lr_ratio=8.0)
    assert preset("notebook").adapter_config() == AdapterConfig(rank=4, scale=0.1)


def test_the_layer_class_follows_the_variant():
    lin = torch.nn.Linear(8, 4)
    assert type(adapter_layer(lin, AdapterConfig(rank=2, scale=1.0))) is LoRALinear
    assert type(adapter_layer(lin, AdapterConfig(rank=2, scale=1.0, dora=True))) is DoRALinear
    with pytest.raises(ValueError, match="LoRALinear is the layer for dora=False, the config has dora=True"):
        LoRALinear(lin, AdapterConfig(rank=2, scale=1.0, dora=True))
    with pytest.raises(ValueError, match="DoRALinear is the layer for dora=True"):
        DoRALinear(lin, AdapterConfig(rank=2, scale=1.0))
    with pytest.raises(TypeError, match="add_adapters takes an AdapterConfig, got dict"):
        add_adapters(ResidualMLP(), dict(rank=2, scale=1.0))


def test_a_model_tells_its_adapters():
    model = add_adapters(ResidualMLP(), AdapterConfig(rank=2, scale=1.0, targets=("blocks",), dora=True))
    assert adapter_config(model) == AdapterConfig(rank=2, scale=1.0, dora=True, targets=(
        "blocks.0.dense1", "blocks.0.dense2", "blocks.1.dense1", "blocks.1.dense2"))
    with pytest.raises(ValueError, match="model has no adapters"):
        adapter_config(ResidualMLP())


def test_the_study_networks_come_from_the_one_switch():
    settings = adapt_study.QUICK
    torch.manual_seed(0)
    base = adapt_study._new_network(settings, seed=5)
    # the fresh networks: what the study drew before the switch was shared, weight for weight
    fresh = adapt_study._prepare("fresh-target", base, settings, seed=7)
    reference = adapt_study._new_network(settings, seed=7)
    assert fresh.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(fresh.state_dict()[k], reference.state_dict()[k]) for k in reference.state_dict())
    # an adapter method: its settings on the base, A drawn from the seed as strategies' lora draws it
    dora = adapt_study._prepare("dora-r4", base, settings, seed=7)
    same = strategies.prepare("lora", base, seed=7, adapter=AdapterConfig(rank=4, scale=settings.adapter_scale,
                                                                         dora=True))
    assert adapter_config(dora) == adapter_config(same) and type(dora.hidden) is DoRALinear
    assert torch.equal(dora.hidden.lora_A, same.hidden.lora_A)
    with pytest.raises(ValueError, match="strategy 'lora' needs adapter=AdapterConfig"):
        strategies.prepare("lora", base, seed=7)
