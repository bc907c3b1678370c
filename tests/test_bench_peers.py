"""benchmarks/bench_peers.py's scoring and tree runners on small data: the figures of its tables are
scikit-learn's, and the runners return what the tables print."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_peers", BENCH / "bench_peers.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.standard_normal(3000) > 0.5).astype(np.float32)
    return dict(all=(x[:2000], y[:2000]), train=(x[:2000], y[:2000]), val=None, test=(x[2000:], y[2000:]))


def test_scores_are_sklearns(bench):
    rng = np.random.default_rng(1)
    y = (rng.random(5000) < 0.4).astype(np.float32)
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.standard_normal(5000))))
    s = bench.scores(p, y)
    fpr, tpr, _ = roc_curve(y, p)
    assert s["auc"] == pytest.approx(roc_auc_score(y, p))
    assert s["acc"] == pytest.approx(np.mean((p > 0.5) == (y == 1)))
    # signal efficiency at 10 % background efficiency: between the ROC points around it
    i = np.searchsorted(fpr, 0.10)
    assert tpr[i - 1] <= s["sig_eff_at_bkg_10pct"] <= tpr[i]
    assert 0 < s["sig_eff_at_bkg_1pct"] < s["sig_eff_at_bkg_10pct"] < 1


@pytest.mark.parametrize("runner", ["run_lightgbm", "run_xgboost"])
def test_tree_runners_report_the_model_they_trained(bench, small, runner):
    pytest.importorskip("lightgbm" if runner == "run_lightgbm" else "xgboost",
                        reason="the peers extra (pip install -e '.[peers]') is not installed")
    r = getattr(bench, runner)(small, seed=0, threads=1)
    assert r["test"]["auc"] > 0.75  # learns the toy problem
    assert [c["trees"] for c in r["curve"]] == list(range(50, 501, 50))
    assert r["curve"][-1]["test_auc"] == pytest.approx(r["test"]["auc"])  # the last point is the final model
    times = [c["wall_s"] for c in r["curve"]]
    assert times == sorted(times) and times[-1] <= r["wall_s"]


def _weighted(small, *, negative: bool):
    rng = np.random.default_rng(2)
    w = rng.uniform(0.5, 2.0, 3000).astype(np.float32)
    if negative:
        w[rng.random(3000) < 0.05] *= -1
    # training weights only: the test rows are scored unweighted, as without weights, so scores differ
    # only where the weights changed the model
    return dict(small, weights=dict(all=w[:2000], train=w[:2000], val=None, test=None))


def test_weighted_scores(bench):
    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.3).astype(np.float32)
    p = rng.random(4000).round(2) + 0.3 * y          # ties included
    w = rng.uniform(0.1, 3.0, 4000)
    s = bench.scores(p, y, w)
    assert s["auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-9)
    assert s["acc"] == pytest.approx(np.average((p > 0.5) == (y == 1), weights=w))
    # negative weights: the hand formula, AUC = P(score_s > score_b) + 1/2 P(tie), each pair weighted w_s w_b
    ys, yb = p[y == 1][:300], p[y == 0][:300]
    ws, wb = w[y == 1][:300] * np.where(np.arange(300) % 7 == 0, -1, 1), w[y == 0][:300]
    pair = (ys[:, None] > yb[None, :]) + 0.5 * (ys[:, None] == yb[None, :])
    expect = np.sum(ws[:, None] * wb[None, :] * pair) / (ws.sum() * wb.sum())
    got = bench.scores(np.r_[ys, yb], np.r_[np.ones(300), np.zeros(300)], np.r_[ws, wb])["auc"]
    assert got == pytest.approx(expect, abs=1e-12)


def test_xgboost_refuses_negative_weights_and_says_so(bench, small, monkeypatch):
    pytest.importorskip("xgboost", reason="the peers extra (pip install -e '.[peers]') is not installed")
    monkeypatch.setattr(bench, "N_TREES", 50)   # small forests: what is checked is the weights they got
    keep = bench.run_xgboost(_weighted(small, negative=True), seed=0, threads=1)
    assert "XGBoost refuses negative weights" in keep["weights_note"] and "zero instead of keep" in keep["weights_note"]
    zero = bench.run_xgboost(_weighted(small, negative=True), seed=0, threads=1,
                             policy=bench.Policy(negative_weights="zero"))
    assert zero["weights_note"] is None and zero["test"] == keep["test"]    # the same weights: the same trees
    plain = bench.run_xgboost(small, seed=0, threads=1)   # scored alike (no test weights): other trees
    assert plain["weights_note"] is None and plain["test"] != zero["test"]


def test_lightgbm_takes_the_weights(bench, small, monkeypatch):
    pytest.importorskip("lightgbm", reason="the peers extra (pip install -e '.[peers]') is not installed")
    monkeypatch.setattr(bench, "N_TREES", 50)
    weighted = bench.run_lightgbm(_weighted(small, negative=True), seed=0, threads=1)
    plain = bench.run_lightgbm(small, seed=0, threads=1)
    assert weighted["weights_note"] is None and weighted["test"] != plain["test"]
