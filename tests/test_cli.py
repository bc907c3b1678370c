"""End-to-end: the CLI on small HIGGS-format files, in-process and in fresh processes."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from higgs_lora.cli import main
from conftest import cli, write_higgs_csv

SMALL = ["--preset", "notebook", "--train-rows", "1500", "--test-rows", "500", "--epochs", "2", "--ft-epochs", "1",
         "--batch-size", "256",
         "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_higgs_csv(tmp_path_factory.mktemp("data") / "higgs.csv", 4000)


def test_run_end_to_end(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(data), "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "trainable 5,748  frozen 78,081" in printed and "balanced_accuracy" in printed
    for name in ["config.json", "metrics.json", "history.jsonl", "base.safetensors", "base.json", "adapter.safetensors",
                 "adapter.json", "merged.safetensors", "merged.json", "report.md"]:
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["rows"] == 4000 and m["data"]["train_rows"] == 1500 and m["data"]["extra_rows"] == 2000
    assert m["data"]["test_rows"] == 500
    for part in ("base", "adapted", "merged"):
        assert set(m[part]) >= {"accuracy", "precision", "recall", "f1", "balanced_accuracy", "specificity",
                                "sensitivity", "roc_auc", "log_loss"}
    assert m["base"]["accuracy"] > 0.6  # chance is 0.5
    assert m["lora"]["trainable_params"] == 5748 and m["lora"]["frozen_params"] == 78081
    assert m["merge_max_abs_diff"] <= 1e-5
    assert set(m["timings_s"]) >= {"load", "train", "finetune", "evaluate", "merge"}
    assert m["throughput"]["train_samples_per_s"] > 0 and m["throughput"]["finetune_samples_per_s"] > 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [(h["phase"], h["epoch"]) for h in history] == [("base", 1), ("base", 2), ("finetune", 1)]
    # The merged network is a plain base-architecture file that loads like any other.
    merged = load_file(out / "merged.safetensors")
    assert not any("lora" in k for k in merged) and sum(v.numel() for k, v in merged.items()
                                                        if not k.startswith("standardizer")) == 78081


def test_same_seed_gives_identical_metrics(data, tmp_path):
    for name in ("a", "b"):
        assert main(["run", "--data", str(data), "--out", str(tmp_path / name), "--no-report", *SMALL]) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    for part in ("base", "adapted", "merged"):
        assert a[part] == b[part]


def test_steps_in_fresh_processes(data, tmp_path):
    split = ["--preset", "notebook", "--train-rows", "1500", "--test-rows", "500", "--batch-size", "256",
             "--no-progress"]
    cli("train", "--data", data, "--out", tmp_path / "t", "--epochs", "2", *split)
    base = tmp_path / "t" / "base.safetensors"
    cli("finetune", base, "--data", data, "--out", tmp_path / "f", "--ft-epochs", "1", *split)
    adapter = tmp_path / "f" / "adapter.safetensors"
    cli("evaluate", base, "--adapter", adapter, "--data", data, "--json", tmp_path / "eval.json")
    adapted_metrics = json.loads((tmp_path / "eval.json").read_text())
    assert adapted_metrics["rows"] == 500  # the split was taken from the model's provenance
    cli("merge", base, "--adapter", adapter, "--out", tmp_path / "merged", "--data", data)
    cli("evaluate", tmp_path / "merged.safetensors", "--data", data, "--json", tmp_path / "eval_merged.json")
    merged_metrics = json.loads((tmp_path / "eval_merged.json").read_text())
    for k in ("accuracy", "roc_auc"):
        assert merged_metrics["metrics"][k] == pytest.approx(adapted_metrics["metrics"][k], abs=1e-6)
    p = cli("predict", tmp_path / "merged.safetensors", "--data", data, "--out", tmp_path / "p.csv",
            "--precision", "fp32")
    preds = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert preds.shape == (4000, 2) and np.all((preds[:, 1] >= 0) & (preds[:, 1] <= 1)), p.stdout
    # the same probabilities as the model in this process
    from higgs_lora.model.model_file import load_model
    model, std, _ = load_model(tmp_path / "merged.safetensors")
    raw = np.loadtxt(data, delimiter=",", dtype=np.float32)[:, 1:]
    expected = torch.sigmoid(model(torch.from_numpy(std.transform(raw)))).detach().numpy()
    assert np.abs(preds[:, 1] - expected).max() < 1e-6
    # no flag: fp32, the same file byte for byte
    cli("predict", tmp_path / "merged.safetensors", "--data", data, "--out", tmp_path / "default.csv")
    assert (tmp_path / "default.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()
    # --precision auto says what it chose and why, and stays within bf16's rounding
    p = cli("predict", tmp_path / "merged.safetensors", "--data", data, "--out", tmp_path / "auto.csv",
            "--precision", "auto")
    assert re.search(r"^precision: (fp32|bf16) \(auto: .+\)$", p.stdout, re.M), p.stdout
    assert np.abs(np.loadtxt(tmp_path / "auto.csv", delimiter=",", skiprows=1)[:, 1] - expected).max() < 2e-2


def _lines(p):
    return [line for line in p.stderr.splitlines() if line.strip()]


def test_bad_input_one_line_nonzero_no_traceback(data, tmp_path):
    cases = [
        (["run", "--bogus-flag"], 2, "unrecognized arguments"),
        (["run", "--data", data, "--train-rows", "3000", "--test-rows", "2000", "--out", tmp_path / "x"], 1,
         "more than the 4,000 rows"),
        (["run", "--data", tmp_path / "missing.csv", "--out", tmp_path / "y"], 1, "missing.csv"),
        (["evaluate", tmp_path / "nope.safetensors", "--data", data], 1, "nope.json: file not found"),
    ]
    for args, code, message in cases:
        p = cli(*args, check=False)
        assert p.returncode == code, (args, p.stderr)
        assert message in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        if code == 1:
            assert len(_lines(p)) == 1, p.stderr


def test_existing_run_directory_is_not_damaged(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    p = cli("run", "--data", data, "--out", out, check=False)
    assert p.returncode == 1 and "not empty" in p.stderr
    assert [f.name for f in out.iterdir()] == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"


def test_model_of_another_architecture_and_adapter_of_another_base(data, tmp_path):
    split = ["--preset", "notebook", "--train-rows", "1500", "--test-rows", "500", "--batch-size", "512",
             "--no-progress"]
    cli("train", "--data", data, "--out", tmp_path / "a", "--epochs", "1", *split)
    cli("train", "--data", data, "--out", tmp_path / "b", "--epochs", "1", "--width", "64", *split)
    cli("finetune", tmp_path / "a" / "base.safetensors", "--data", data, "--out", tmp_path / "fa", "--ft-epochs", "1",
        *split)
    p = cli("evaluate", tmp_path / "b" / "base.safetensors", "--adapter", tmp_path / "fa" / "adapter.safetensors",
            "--data", data, check=False)
    assert p.returncode == 1 and "trained on another base" in p.stderr and len(_lines(p)) == 1
    # a JSON that claims another architecture than its tensors hold
    meta = json.loads((tmp_path / "b" / "base.json").read_text())
    meta["model"]["width"] = 128
    (tmp_path / "b" / "base.json").write_text(json.dumps(meta))
    p = cli("evaluate", tmp_path / "b" / "base.safetensors", "--data", data, check=False)
    assert p.returncode == 1 and "do not match the architecture" in p.stderr and len(_lines(p)) == 1


@pytest.mark.parametrize("layout", ["file", "shards"])
def test_sigkill_mid_training_then_resume_equals_uninterrupted(tmp_path, layout):
    data = write_higgs_csv(tmp_path / "big.csv", 30000, seed=1)
    if layout == "shards":  # the streamed loop, killed the same way (multi-window resume: test_shards.py)
        cli("shard", data, "--out", tmp_path / "shards", "--rows-per-shard", "4000")
        data = tmp_path / "shards"
    args = ["--data", data, "--preset", "notebook", "--train-rows", "20000", "--test-rows", "1000", "--epochs", "4",
            "--batch-size", "128", "--no-progress"]
    cli("train", *args, "--out", tmp_path / "ref")

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "higgs_lora", "train", *map(str, args), "--out",
                             str(tmp_path / "killed")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "killed" / "checkpoints" / "base.safetensors"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch, between checkpoints
    assert proc.poll() is None, "training finished before it could be killed; make the test data bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "base.safetensors").exists()
    p = cli("train", *args, "--out", tmp_path / "killed", "--resume")
    assert "resuming from" in p.stdout
    ref, resumed = (load_file(tmp_path / d / "base.safetensors") for d in ("ref", "killed"))
    assert ref.keys() == resumed.keys() and all(torch.equal(ref[k], resumed[k]) for k in ref)


def test_sigint_writes_checkpoint_and_says_how_to_resume(tmp_path):
    data = write_higgs_csv(tmp_path / "big.csv", 30000, seed=2)
    args = ["train", "--data", str(data), "--preset", "notebook", "--train-rows", "20000", "--test-rows", "1000",
            "--epochs", "50", "--batch-size", "128", "--no-progress", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen([sys.executable, "-m", "higgs_lora", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while "epoch 1/50" not in proc.stdout.readline() and time.time() < deadline and proc.poll() is None:
        pass
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with: higgs-lora train" in err and "--resume" in err
    assert (tmp_path / "run" / "checkpoints" / "base.safetensors").exists()


def test_unwritable_output_is_reported_before_any_work(data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    p = cli("run", "--data", data, "--out", blocker / "run", check=False)
    assert p.returncode == 1 and "cannot write there" in p.stderr and "Traceback" not in p.stderr
    assert blocker.read_text() == "not a directory"


def test_run_resume_reuses_finished_phases(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(data), "--out", str(out), "--no-report", *SMALL]) == 0
    first = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["run", "--data", str(data), "--out", str(out), "--no-report", "--resume", *SMALL]) == 0
    assert "skipping base training (--resume)" in capsys.readouterr().out
    again = json.loads((out / "metrics.json").read_text())
    assert again["base"] == first["base"]
    assert main(["run", "--data", str(data), "--out", str(out), "--resume", *SMALL, "--seed", "5"]) == 1
    assert "settings differ" in capsys.readouterr().err
