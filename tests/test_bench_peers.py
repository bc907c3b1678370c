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
