"""Each setting is checked by one rule with one message naming its flag, wherever it is given (a Recipe,
a TrainConfig); precision's request and resolved value are checked by one function; a run directory keeps
one hardware record."""
import json

import pytest
import torch

from higgs_lora.config import Recipe, check_precision, preset
from higgs_lora.errors import ConfigError
from higgs_lora.hardware.machine import choose_precision
from higgs_lora.hardware.runtime import autocast
from higgs_lora.pipeline.rundir import hardware_record


@pytest.mark.parametrize("setting, value, message", [
    ("epochs", -1, "--epochs must be >= 0, got -1"),
    ("lr", 0.0, "--lr must be > 0, got 0.0"),
    ("optimizer", "sgd", "--optimizer must be adam or adamw, got 'sgd'"),
    ("schedule", "step", "--schedule must be constant or cosine, got 'step'"),
    ("warmup_frac", 1.5, "--warmup-frac must be in [0, 1], got 1.5"),
    ("weight_decay", -1.0, "--weight-decay must be >= 0, got -1.0"),
    ("patience", -2, "--patience must be >= 0, got -2"),
    ("label_smoothing", 1.0, "--label-smoothing must be in [0, 1)"),
])
def test_a_recipe_and_a_config_refuse_a_setting_with_the_same_message(setting, value, message):
    with pytest.raises(ConfigError) as from_recipe:
        Recipe(**dict(dict(epochs=1, lr=1e-3), **{setting: value}))
    with pytest.raises(ConfigError) as from_config:
        preset("notebook", **{setting: value})
    assert str(from_recipe.value) == str(from_config.value)
    assert str(from_recipe.value).startswith(message)


def test_precision_is_checked_by_one_function_request_and_resolved_apart():
    assert preset("default").precision == "auto"  # a request
    with pytest.raises(ConfigError, match="--precision must be fp32 or bf16, got 'auto'; auto is resolved"):
        Recipe(epochs=1, lr=1e-3, precision="auto")  # what runs is resolved
    for refuse in (lambda: preset("notebook", precision="fp16"), lambda: check_precision("fp16"),
                   lambda: choose_precision("fp16", device="cpu", make_model=None, n_features=28, batch_size=1)):
        with pytest.raises(ConfigError, match=r"^--precision must be auto, fp32 or bf16, got 'fp16'$"):
            refuse()
    with pytest.raises(ConfigError, match=r"^--precision must be fp32 or bf16, got 'fp16'$"):
        autocast(torch.device("cpu"), "fp16")


def test_a_run_directory_has_one_hardware_record_and_older_ones_still_resume(tmp_path):
    assert hardware_record(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps(dict(train={}, hardware=dict(precision="bf16", epochs=7))))
    assert hardware_record(tmp_path) == dict(precision="bf16", epochs=7)  # written before hardware.json existed
    (tmp_path / "hardware.json").write_text(json.dumps(dict(precision="fp32", epochs=9)))
    assert hardware_record(tmp_path) == dict(precision="fp32", epochs=9)
