"""--precision auto inside the commands: the choice and its reason printed and recorded, the default
preset's epochs scaled by the measured speed-up, the notebook preset untouched, an explicit --epochs
obeyed, the emulated-bf16 warning, and --resume reusing what the run started with. The capability and
the probe are replaced both ways (machine.native_bf16, machine.cached_probe)."""
import json
import re

import pytest

from higgs_lora.hardware import machine
from higgs_lora.cli import main
from higgs_lora.config import budget, preset

from conftest import write_higgs_csv

SMALL = ["--train-rows", "1500", "--test-rows", "500", "--batch-size", "256", "--no-progress"]
TRAIN = 1350   # the default preset's train rows of SMALL: 1500 less its 10% validation


def most_epochs(speedup: float) -> int:
    """The default preset's epochs on SMALL at this bf16 speed-up (batch fixed by --batch-size)."""
    return budget(TRAIN, speedup, batch_size=256).epochs


@pytest.fixture
def data(tmp_path_factory):
    return write_higgs_csv(tmp_path_factory.mktemp("data") / "h.csv", 3000, seed=3)


def this_machine(monkeypatch, *, native: bool, speedup: float):
    """This machine as the test wants it; returns the list of probe calls."""
    calls = []

    def probe(**kw):
        calls.append(kw)
        return speedup
    monkeypatch.setattr(machine, "native_bf16", lambda device, **kw: (native, "mocked capability"))
    monkeypatch.setattr(machine, "cached_probe", probe)
    return calls


def test_default_preset_on_native_faster_bf16_scales_its_epochs(data, tmp_path, monkeypatch, capsys):
    calls = this_machine(monkeypatch, native=True, speedup=2.3)
    out = tmp_path / "t"
    assert main(["train", "--data", str(data), "--out", str(out), *SMALL]) == 0
    fp32_epochs, epochs = most_epochs(1.0), most_epochs(2.3)
    assert epochs == int(fp32_epochs * 2.3)
    record = json.loads((out / "hardware.json").read_text())
    assert record["precision"] == "bf16" and record["bf16_speedup"] == 2.3
    assert record["epochs_requested"] == preset("default").epochs and record["epochs"] == epochs
    assert record["epochs_fp32"] == fp32_epochs and record["train_rows"] == TRAIN and record["epochs_scaled"]
    meta = json.loads((out / "base.json").read_text())["provenance"]
    assert meta["train"]["precision"] == "bf16" and meta["train"]["epochs"] == epochs
    # the speed-up buys epochs as a maximum: early stopping ends where validation stops improving
    trained = len([r for r in meta["history"] if r["phase"] == "base"])
    assert trained <= epochs and meta["train"]["patience"] == budget(TRAIN, batch_size=256).patience
    assert len(calls) == 1 and calls[0]["batch_size"] == 256 and calls[0]["n_features"] == 28
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("precision:")]
    assert len(line) == 1 and "bf16 measured 2.30x fp32" in line[0]
    assert f"at most {epochs} epochs ({fp32_epochs} in fp32 x 2.30)" in line[0]


def test_default_preset_without_native_bf16_stays_fp32_and_does_not_probe(data, tmp_path, monkeypatch, capsys):
    calls = this_machine(monkeypatch, native=False, speedup=9.0)
    out = tmp_path / "t"
    assert main(["train", "--data", str(data), "--out", str(out), *SMALL]) == 0
    record = json.loads((out / "hardware.json").read_text())
    assert record["precision"] == "fp32" and record["epochs"] == most_epochs(1.0) and calls == []
    assert "precision: fp32 (auto: mocked capability)" in capsys.readouterr().out


def test_native_but_slower_bf16_stays_fp32(data, tmp_path, monkeypatch):
    this_machine(monkeypatch, native=True, speedup=0.9)
    out = tmp_path / "t"
    assert main(["train", "--data", str(data), "--out", str(out), *SMALL]) == 0
    record = json.loads((out / "hardware.json").read_text())
    assert record["precision"] == "fp32" and record["epochs"] == most_epochs(1.0)


def test_notebook_preset_is_fp32_exactly_and_explicit_epochs_are_obeyed(data, tmp_path, monkeypatch):
    calls = this_machine(monkeypatch, native=True, speedup=2.0)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "nb"), "--preset", "notebook", "--epochs", "2",
                 *SMALL]) == 0
    assert json.loads((tmp_path / "nb" / "hardware.json").read_text())["precision"] == "fp32" and calls == []
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "d"), "--epochs", "2", *SMALL]) == 0
    record = json.loads((tmp_path / "d" / "hardware.json").read_text())
    assert record["precision"] == "bf16" and record["epochs"] == 2 and not record["epochs_scaled"]


def test_explicit_bf16_where_emulated_obeys_with_a_one_line_warning(data, tmp_path, monkeypatch, capsys):
    this_machine(monkeypatch, native=False, speedup=0.12)
    out = tmp_path / "t"
    assert main(["train", "--data", str(data), "--out", str(out), "--precision", "bf16", "--epochs", "1",
                 *SMALL]) == 0
    assert json.loads((out / "hardware.json").read_text())["precision"] == "bf16"
    warnings = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert len(warnings) == 1 and "emulated" in warnings[0] and "8.3x slowdown" in warnings[0]


def test_run_records_the_choice_and_resume_reuses_it(data, tmp_path, monkeypatch, capsys):
    this_machine(monkeypatch, native=True, speedup=2.0)
    out = tmp_path / "run"
    args = ["run", "--data", str(data), "--out", str(out), "--no-report", "--ft-epochs", "1", *SMALL]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    hardware = json.loads((out / "hardware.json").read_text())  # the one record: config.json keeps none
    epochs = most_epochs(2.0)
    assert hardware["precision"] == "bf16" and hardware["epochs"] == epochs and "hardware" not in config
    assert config["train"]["precision"] == "bf16" and config["train"]["epochs"] == epochs
    assert hardware["threads"] >= 1 and hardware["threads_reason"]
    assert config["machine"]["usable_cores"] >= 1 and config["machine"]["isa"]
    assert json.loads((out / "base.json").read_text())["provenance"]["precision"]["precision"] == "bf16"
    capsys.readouterr()
    calls = this_machine(monkeypatch, native=True, speedup=1.0)  # the machine measures otherwise now
    assert main(args + ["--resume"]) == 0
    assert calls == [] and json.loads((out / "hardware.json").read_text())["epochs"] == epochs
    assert re.search(r"^precision: bf16 .*\(as when the run started\)$", capsys.readouterr().out, re.M)
