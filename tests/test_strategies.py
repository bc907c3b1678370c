"""The strategies comparison (LoRA vs full / head-only fine-tuning, from scratch, untouched base) and the
smoothed-bootstrap data set it is benchmarked on."""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.metrics import accuracy_score, roc_auc_score

from higgs_lora.studies import strategies
from higgs_lora.model import model_file
from higgs_lora.commands import comparisons as strategies_command
from higgs_lora.config import AdapterConfig, ModelConfig, preset
from higgs_lora.data import kde
from higgs_lora.data.simulate import simulated_table
from higgs_lora.data.split import split_rows
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP, dense_layer_names

REAL = Path(__file__).parent / "data" / "higgs_real_sample.csv"


@pytest.fixture(scope="module")
def real():
    return kde.read_higgs_rows(REAL)


# ---------------------------------------------------------------- the smoothed bootstrap

def test_kde_rows_are_deterministic_and_higgs_shaped(real):
    x, y = real
    a, la = kde.smoothed_bootstrap(x, y, 20_000, seed=5, bandwidth=0.5)
    b, lb = kde.smoothed_bootstrap(x, y, 20_000, seed=5, bandwidth=0.5)
    c, _ = kde.smoothed_bootstrap(x, y, 20_000, seed=6, bandwidth=0.5)
    assert a.shape == (20_000, 28) and a.dtype == np.float32 and la.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert np.isfinite(a).all()
    assert (a[:, kde.POSITIVE] > 0).all()
    assert np.abs(a[:, kde.PHI]).max() <= kde.PHI_MAX + 1e-6
    for col in kde.BTAG:  # discrete levels are copied, never smeared
        assert set(np.unique(a[:, col])) <= set(np.unique(x[:, col].astype(np.float32)))
    assert abs(la.mean() - y.mean()) < 0.02
    # no generated row is a copy of a real one: the kernel moved every continuous value
    assert not np.isin(a[:, kde.POSITIVE[0]], x[:, kde.POSITIVE[0]].astype(np.float32)).any()


def test_kde_keeps_each_class_covariance_of_the_real_rows(real):
    """In log space the momenta/masses are untouched by the phi/eta symmetries, so their class covariance
    must match the real rows' (a plain KDE would inflate it by 1 + h^2 = 1.81 at h = 0.9)."""
    x, y = real
    g, lg = kde.smoothed_bootstrap(x, y, 200_000, seed=1, bandwidth=0.9)
    for c in (0, 1):
        ref = np.cov(np.log(x[y == c][:, kde.POSITIVE]), rowvar=False)
        got = np.cov(np.log(g[lg == c][:, kde.POSITIVE].astype(np.float64)), rowvar=False)
        assert np.allclose(np.diag(got), np.diag(ref), rtol=0.05)
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_loo_likelihood_matches_scipy_reference(real):
    x, y = real
    x, y = x[:120], y[:120]
    hs = (0.3, 0.9)
    got = kde.loo_log_likelihood(x, y, bandwidths=hs)
    z_all = np.concatenate([np.log(x[:, kde.POSITIVE]), x[:, [i for i in kde.CONTINUOUS if i not in kde.POSITIVE]]],
                           axis=1)  # the same coordinates, another order: densities are order-free
    for h in hs:
        total = 0.0
        for c in (0, 1):
            z = z_all[y == c]
            cov = h**2 * np.cov(z, rowvar=False)
            # The kernel is symmetric: N(z_i; z_j, C) = N(z_j; z_i, C), one call per held-out row.
            logs = [np.log(np.mean(multivariate_normal.pdf(np.delete(z, i, axis=0), mean=z[i], cov=cov)))
                    for i in range(len(z))]
            total += len(z) / len(y) * np.mean(logs)
        assert got[h] == pytest.approx(total, rel=1e-9, abs=1e-9)


def test_kde_table_chooses_the_best_loo_bandwidth(real):
    x, y = real
    scores = kde.loo_log_likelihood(x, y)
    t = kde.kde_table(1000, seed=3, source_features=x, source_labels=y)
    assert f"bandwidth={max(scores, key=scores.get)}" in t.source
    assert t.rows == 1000 and t.fingerprint != kde.kde_table(1000, seed=4, source_features=x, source_labels=y).fingerprint


def test_kde_refuses_too_few_rows(real):
    x, y = real
    with pytest.raises(UserError, match="class 1 has too few rows"):
        kde.smoothed_bootstrap(x[:40], np.zeros(40, np.uint8), 10, seed=0, bandwidth=0.5)


# ---------------------------------------------------------------- strategies

CONFIG = ModelConfig(n_features=6, width=16, n_blocks=1, head_width=8)


def test_trainable_parameters_of_each_strategy():
    torch.manual_seed(0)
    base = ResidualMLP.from_config(CONFIG)
    cfg = preset("notebook", rank=3)
    shapes = {"input": (6, 16), "blocks.0.dense1": (16, 16), "blocks.0.dense2": (16, 16), "hidden": (16, 8),
              "output": (8, 1)}
    assert list(shapes) == dense_layer_names(CONFIG)
    expected = dict(lora=sum(3 * (i + o) for i, o in shapes.values()),
                    full=sum(i * o + o for i, o in shapes.values()),
                    head=16 * 8 + 8 + 8 * 1 + 1, scratch=sum(i * o + o for i, o in shapes.values()), base=0)
    for s in strategies.STRATEGIES:
        model = strategies.prepare(s, base, seed=cfg.seed, adapter=cfg.adapter_config())
        assert model.n_params(trainable_only=True) == expected[s], s
    assert all(p.requires_grad for p in base.parameters())  # the base was never frozen in place


def test_scratch_sees_the_same_number_of_samples():
    cfg = preset("notebook", epochs=10, ft_epochs=3)
    assert strategies.scratch_epochs(cfg, train_rows=200_000, extra_rows=850_000) == round(4_550_000 / 1_050_000)
    assert strategies.scratch_epochs(preset("notebook", epochs=0, ft_epochs=0), train_rows=10, extra_rows=10) == 1


def test_training_state_bytes_counts_parameters_gradients_and_adam_moments():
    torch.manual_seed(0)
    base = ResidualMLP.from_config(CONFIG)
    x, y = torch.randn(64, 6), (torch.rand(64) > 0.5).float()
    for s in ("full", "head", "lora"):
        model = strategies.prepare(s, base, seed=0, adapter=AdapterConfig(rank=2, scale=0.1))
        trainable = [p for p in model.parameters() if p.requires_grad]
        n_train = sum(p.numel() for p in trainable)
        got = strategies.training_state_bytes(model, x, y)
        assert got["parameters"] == 4 * model.n_params()
        assert got["gradients"] == 4 * n_train
        assert got["optimizer"] == 2 * 4 * n_train + 4 * len(trainable)  # exp_avg, exp_avg_sq, a float32 step each
        assert got["total"] == got["parameters"] + got["gradients"] + got["optimizer"] + got["activations"]
    # Activations grow with the batch and hold at least the ReLU outputs backward needs (3 of width 16, 1 of 8).
    full = strategies.prepare("full", base, seed=0)
    a64 = strategies.training_state_bytes(full, x, y)["activations"]
    a128 = strategies.training_state_bytes(full, torch.randn(128, 6), torch.rand(128).round())["activations"]
    assert a128 == 2 * a64 and a64 >= 4 * 64 * (3 * 16 + 8)


def _parser():
    parser = argparse.ArgumentParser()
    strategies_command.add_parsers(parser.add_subparsers(dest="command"))
    return parser


def _run(argv):
    strategies_command.strategies(_parser().parse_args(argv), argv)


TINY = ["--sim-events", "4000", "--epochs", "2", "--ft-epochs", "1", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("strategies")
    _run(["strategies", "--out", str(out), *TINY])
    return out


def test_command_writes_table_json_and_plot(first_run):
    result = json.loads((first_run / "strategies.json").read_text())
    assert [r["strategy"] for r in result["strategies"]] == list(strategies.STRATEGIES)
    md = (first_run / "strategies.md").read_text()
    for r in result["strategies"]:
        assert f"| {r['title']} | {r['test']['roc_auc']:.4f} |" in md
        assert r["samples"] == r["epochs"] * (result["data"]["extra_rows"] if r["strategy"] != "scratch"
                                             else result["data"]["extra_rows"] + result["data"]["train_rows"])
    assert (first_run / "strategies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    base_row = next(r for r in result["strategies"] if r["strategy"] == "base")
    assert base_row["trainable_params"] == 0 and base_row["wall_s"] == 0


def test_base_row_matches_the_saved_base_evaluated_independently(first_run):
    """Reload the base the command saved and score the test rows with scikit-learn."""
    result = json.loads((first_run / "strategies.json").read_text())
    model, standardizer, _ = model_file.load_model(first_run / "base.safetensors")
    table = simulated_table(4000, seed=2014)
    split = split_rows(table.rows)
    x = torch.from_numpy(standardizer.transform(table.features[split.test]))
    with torch.no_grad():
        p = torch.sigmoid(model(x)).numpy()
    y = table.labels[split.test]
    base_row = next(r for r in result["strategies"] if r["strategy"] == "base")
    assert base_row["test"]["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert base_row["test"]["accuracy"] == pytest.approx(accuracy_score(y, p > 0.5), abs=1e-7)


def test_given_base_is_used_as_is_and_out_must_be_empty(first_run, tmp_path):
    with pytest.raises(UserError, match="not an empty directory"):
        _run(["strategies", "--out", str(first_run), *TINY])
    out = tmp_path / "again"
    _run(["strategies", "--out", str(out), "--base", str(first_run / "base.safetensors"), *TINY])
    first = {r["strategy"]: r for r in json.loads((first_run / "strategies.json").read_text())["strategies"]}
    again = {r["strategy"]: r for r in json.loads((out / "strategies.json").read_text())["strategies"]}
    assert again["base"]["test"] == first["base"]["test"]
    assert not (out / "base.safetensors").exists()  # nothing trained, nothing saved
    assert math.isclose(again["lora"]["test"]["roc_auc"], first["lora"]["test"]["roc_auc"], abs_tol=1e-6)
