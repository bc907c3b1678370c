"""--resume continues only what was started: every checkpoint holds the resolved recipe, the data's
fingerprint and the split, and resuming with other settings is refused with one line naming each
difference, old -> new (run, train, finetune; one process and two)."""
import json

import numpy as np
import pytest

from higgs_lora.cli import main
from higgs_lora.train.checkpoint import differences

from conftest import torchrun, write_higgs_csv

COMMON = ["--preset", "notebook", "--train-rows", "1500", "--test-rows", "500", "--batch-size", "256", "--no-progress"]
TRAIN = [*COMMON, "--epochs", "2"]
FINETUNE = [*COMMON, "--ft-epochs", "1"]
SMALL = [*TRAIN, "--ft-epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_higgs_csv(tmp_path_factory.mktemp("resume") / "h.csv", 3000, seed=5)


def refused(capsys, *argv) -> str:
    """The one error line of a command that must fail."""
    capsys.readouterr()
    assert main([*map(str, argv)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("higgs-lora: error: --resume: settings differ"), err
    return err[0]


def test_differences_name_each_setting_old_and_new():
    old = dict(train=dict(lr=0.001, epochs=2, model=dict(width=128)), split=dict(test_rows=500))
    new = dict(train=dict(lr=0.002, epochs=2, model=dict(width=64)), split=dict(test_rows=500), base="abc")
    assert differences(old, new) == ["base (none) -> abc", "train.lr 0.001 -> 0.002", "train.model.width 128 -> 64"]
    assert differences(old, old) == []


def test_train_resume_refuses_other_settings(data, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 0
    line = refused(capsys, "train", "--data", data, "--out", out, "--resume", *TRAIN, "--lr", "0.002")
    assert "train.lr 0.001 -> 0.002" in line and str(out / "checkpoints" / "base.safetensors") in line
    line = refused(capsys, "train", "--data", data, "--out", out, "--resume", *TRAIN, "--epochs", "3",
                   "--batch-size", "128")
    assert "train.epochs 2 -> 3" in line and "train.batch_size 256 -> 128" in line
    line = refused(capsys, "train", "--data", data, "--out", out, "--resume", *TRAIN, "--train-rows", "1400")
    assert "split.train_rows 1500 -> 1400" in line and "split.extra_rows 1000 -> 1100" in line
    other = write_higgs_csv(tmp_path / "other.csv", 3000, seed=6)
    line = refused(capsys, "train", "--data", other, "--out", out, "--resume", *TRAIN)
    assert "data.fingerprint " in line and "train." not in line
    # The same settings on another device setting resume: the device may change.
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *TRAIN, "--device", "cpu"]) == 0


def test_finetune_resume_refuses_other_settings_and_another_base(data, tmp_path, capsys):
    for name, width in (("a", "32"), ("b", "16")):
        assert main(["train", "--data", str(data), "--out", str(tmp_path / name), *TRAIN, "--width", width]) == 0
    out = tmp_path / "ft"
    ft = ["finetune", str(tmp_path / "a" / "base.safetensors"), "--data", str(data), "--out", str(out), *FINETUNE]
    assert main(ft) == 0
    line = refused(capsys, *ft, "--resume", "--ft-lr", "0.01", "--rank", "2")
    assert "train.ft_lr 0.0005 -> 0.01" in line and "train.rank 4 -> 2" in line
    ft_b = ["finetune", str(tmp_path / "b" / "base.safetensors"), *ft[2:]]
    line = refused(capsys, *ft_b, "--resume")
    assert "base " in line
    assert main([*ft, "--resume"]) == 0


def test_run_resume_refuses_other_settings(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(data), "--out", str(out), "--no-report", *SMALL]) == 0
    line = refused(capsys, "run", "--data", data, "--out", out, "--no-report", "--resume", *SMALL, "--scale", "0.5",
                   "--test-rows", "400")
    assert "train.scale 0.1 -> 0.5" in line and "data.test_rows 500 -> 400" in line
    # config.json tells what the run was started with, before any work.
    assert json.loads((out / "config.json").read_text())["train"]["scale"] == 0.1
    # The same file name with other rows in it: refused once the data is read.
    moved = tmp_path / "data.csv"
    write_higgs_csv(moved, 3000, seed=5)
    assert main(["run", "--data", str(moved), "--out", str(tmp_path / "r2"), "--no-report", *SMALL]) == 0
    write_higgs_csv(moved, 3000, seed=7)
    line = refused(capsys, "run", "--data", moved, "--out", tmp_path / "r2", "--no-report", "--resume", *SMALL)
    assert "data.fingerprint " in line and "train." not in line


def test_run_resume_on_data_with_other_feature_count(tmp_path, capsys):
    # The network's input width follows the data: not a difference to refuse.
    x = np.random.default_rng(0).normal(size=(3000, 11))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float64)
    np.savetxt(tmp_path / "d.csv", np.column_stack([y, x]), delimiter=",")
    argv = ["run", "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "run"), "--no-report", *SMALL]
    assert main(argv) == 0
    assert main([*argv, "--resume"]) == 0
    assert "skipping base training" in capsys.readouterr().out


def test_two_process_resume_refuses_other_settings(data, tmp_path):
    args = ["train", "--data", data, "--out", tmp_path / "t", *TRAIN]
    torchrun(2, *args)
    p = torchrun(2, *args, "--resume", "--lr", "0.003", check=False)
    assert p.returncode != 0
    lines = [s for s in p.stderr.splitlines() if s.startswith("higgs-lora: error:")]
    assert lines and all("settings differ" in s and "train.lr 0.001 -> 0.003" in s for s in lines), p.stderr[-2000:]
    torchrun(2, *args, "--resume")  # the same settings continue (here: nothing left to do)
