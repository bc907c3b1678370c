"""Figures of merit against hand computations, scikit-learn's ROC and SciPy's Kolmogorov distribution."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from higgs_lora.report.figures_of_merit import (EFF_B_POINTS, EFF_S_POINTS, ams, binomial_sigma, efficiency_vs,
                                                figures_of_merit, kolmogorov_sf, weighted_ks)
from higgs_lora.report.metrics import effective_size


def _sample(seed=0, n=40_000):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    scores = rng.normal(size=n) + 1.5 * labels
    weights = rng.uniform(0.2, 2.0, n)
    return labels, scores, weights


def test_working_points_interpolate_scikit_learns_roc():
    labels, scores, weights = _sample()
    fom = figures_of_merit(labels=labels, scores=scores, weights=weights)
    fpr, tpr, _ = skm.roc_curve(labels, scores, sample_weight=weights, drop_intermediate=False)
    n_s, n_b = effective_size(weights[labels]), effective_size(weights[~labels])
    for point, eff_b in zip(fom["eff_s_at_eff_b"], EFF_B_POINTS):
        ref = np.interp(eff_b, fpr, tpr)  # monotone here, so np.interp is a valid reference
        assert point["eff_s"] == pytest.approx(ref, abs=1e-12)
        assert point["sigma"] == pytest.approx(math.sqrt(ref * (1 - ref) / n_s), rel=1e-9)
    for point, eff_s in zip(fom["rejection_at_eff_s"], EFF_S_POINTS):
        eff_b = np.interp(eff_s, tpr, fpr)
        assert point["rejection"] == pytest.approx(1 / eff_b, rel=1e-9)
        assert point["sigma"] == pytest.approx(math.sqrt(eff_b * (1 - eff_b) / n_b) / eff_b ** 2, rel=1e-9)


def test_effective_size_and_binomial_sigma_by_hand():
    assert effective_size([1, 1, 1, 1]) == 4
    assert effective_size([1, 3]) == pytest.approx(16 / 10)
    assert binomial_sigma(0.2, 100) == pytest.approx(0.04)


def test_ams_formula_by_hand():
    # s = 10, b = 90: c = 100, 2 ((110) ln 1.1 - 10) = 2 (10.4841... - 10)
    assert float(ams(10, 90)) == pytest.approx(math.sqrt(2 * (110 * math.log(1.1) - 10)), rel=1e-12)
    # for s << b the AMS tends to s / sqrt(b + b_reg)
    assert float(ams(1, 1e6)) == pytest.approx(1 / math.sqrt(1e6 + 10), rel=1e-5)


def test_best_ams_is_the_brute_force_maximum_and_scales_to_the_full_sample():
    labels, scores, weights = _sample(1, n=3000)
    scores = np.round(scores, 2)  # ties: a cut selects whole groups
    totals = (3 * weights[labels].sum(), 5 * weights[~labels].sum())  # the test part is 1/3 and 1/5 of the classes
    best = figures_of_merit(labels=labels, scores=scores, weights=weights, totals=totals)["best_ams"]
    brute = []
    for cut in np.unique(scores):
        sel = scores >= cut
        s, b = 3 * weights[sel & labels].sum(), 5 * weights[sel & ~labels].sum()
        brute.append((math.sqrt(2 * ((s + b + 10) * math.log(1 + s / (b + 10)) - s)), cut, s, b))
    ref = max(brute)
    assert best["ams"] == pytest.approx(ref[0], rel=1e-9)
    assert best["cut"] == ref[1]
    assert best["s"] == pytest.approx(ref[2], rel=1e-9) and best["b"] == pytest.approx(ref[3], rel=1e-9)
    assert best["scale_signal"] == pytest.approx(3) and best["scale_background"] == pytest.approx(5)


def test_kolmogorov_series_matches_scipy():
    for z in np.r_[np.linspace(0.05, 3.0, 60), 0.999, 1.0, 1.001]:
        assert kolmogorov_sf(z) == pytest.approx(stats.kstwobign.sf(z), abs=1e-12)


def test_unweighted_ks_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=3000), rng.normal(0.05, 1, size=2000)
    a[:50] = np.round(a[:50], 1)  # some ties
    ks = weighted_ks(a, b)
    ref = stats.ks_2samp(a, b)
    assert ks["statistic"] == pytest.approx(ref.statistic, abs=1e-12)
    en = 3000 * 2000 / 5000
    assert ks["p_value"] == pytest.approx(stats.kstwobign.sf(math.sqrt(en) * ref.statistic), abs=1e-12)
    # SciPy's own asymptotic p uses a finite-n distribution: close, not equal
    assert ks["p_value"] == pytest.approx(stats.ks_2samp(a, b, method="asymp").pvalue, abs=0.02)


def test_integer_weights_give_the_statistic_of_the_repeated_sample():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=400), rng.normal(size=300)
    wa, wb = rng.integers(1, 4, 400), rng.integers(1, 4, 300)
    ks = weighted_ks(a, b, wa, wb)
    assert ks["statistic"] == pytest.approx(stats.ks_2samp(np.repeat(a, wa), np.repeat(b, wb)).statistic, abs=1e-12)
    assert ks["n_eff"] == [pytest.approx(effective_size(wa)), pytest.approx(effective_size(wb))]


def test_one_class_has_no_figures_of_merit():
    assert figures_of_merit(labels=np.ones(5), scores=np.arange(5.0)) == dict(undefined="one class")


def test_negative_weights_are_accepted():
    labels, scores, weights = _sample(4, n=5000)
    weights[::20] *= -1
    fom = figures_of_merit(labels=labels, scores=scores, weights=weights, train=(labels, scores, weights))
    assert fom["best_ams"]["ams"] > 0
    assert fom["ks"]["signal"]["statistic"] == 0.0 and fom["ks"]["signal"]["p_value"] == 1.0  # same sample


def test_efficiency_vs_a_variable_by_hand():
    values = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0])
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    scores = np.array([0.9, 0.1, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1])
    weights = np.array([1, 3, 1, 1, 1, 1, 2, 2])
    e = efficiency_vs(values, labels=labels, scores=scores, cut=0.5, weights=weights, bins=2)
    assert e["edges"] == [0.0, 6.5, 13.0]
    assert e["eff_s"] == [0.25, 1.0] and e["eff_b"] == [0.5, 0.0]


def test_pipeline_weights_the_metrics_and_records_the_weighting():
    """phases.evaluate and figures.* on a weighted table: the numbers are scikit-learn's with sample_weight,
    Σw and N_eff per class and part are recorded, and the AMS scale is Σw(all) / Σw(test) per class."""
    import torch

    from conftest import synthetic_xy
    from higgs_lora.config import ModelConfig
    from higgs_lora.data.split import Split
    from higgs_lora.data.standardize import Standardizer
    from higgs_lora.data.table import Table
    from higgs_lora.model.network import ResidualMLP
    from higgs_lora.pipeline import phases
    from higgs_lora.pipeline.inputs import Prepared
    from higgs_lora.pipeline.figures import model_figures, weighting
    from higgs_lora.data.sources import TableSource

    x, y = synthetic_xy(1200)
    w = np.random.default_rng(0).uniform(-0.2, 2.0, len(y)).astype(np.float32)
    table = Table(x, y, [f"f{i}" for i in range(28)], "test", "fp", weights=w, weight_expr="w")
    data = Prepared(TableSource(table, torch.device("cpu")), Split(rows=1200, train_rows=600, test_rows=400),
                    Standardizer.fit(x[:600]))
    torch.manual_seed(0)
    model = ResidualMLP.from_config(ModelConfig(width=8, n_blocks=1, head_width=4))
    e = phases.evaluate(model, data, data.split.test)
    logits = e.logits.double().numpy()
    test = slice(800, 1200)
    assert np.array_equal(e.weights, w[test])
    assert e.metrics["accuracy"] == pytest.approx(
        skm.accuracy_score(y[test], logits > 0, sample_weight=w[test].astype(np.float64)), abs=1e-9)
    # AUC with negative weights, by an independent path: the weighted Mann-Whitney sum over all pairs
    ws, wb = w[test][y[test] == 1].astype(np.float64), w[test][y[test] == 0].astype(np.float64)
    ls, lb = logits[y[test] == 1], logits[y[test] == 0]
    wins = (ls[:, None] > lb[None, :]) + 0.5 * (ls[:, None] == lb[None, :])
    ref_auc = float(ws @ wins @ wb) / (ws.sum() * wb.sum())
    assert e.metrics["roc_auc"] == pytest.approx(ref_auc, abs=1e-9)
    record = weighting(data, {"class_balance": "equal"})
    assert record["weighted"] and record["weight_expr"] == "w" and record["class_balance"] == "equal"
    assert record["negative_weights"] == "keep"
    sig = y[test] == 1
    assert record["parts"]["test"]["signal"]["sum_w"] == pytest.approx(float(w[test][sig].astype(np.float64).sum()))
    assert record["parts"]["test"]["background"]["n_eff"] == pytest.approx(effective_size(w[test][~sig]))
    fom = model_figures(model, data, kind="base", logits=e.logits, rows=test)
    best = fom["best_ams"]
    assert best["scale_signal"] == pytest.approx(w[y == 1].astype(np.float64).sum() / w[test][sig].astype(np.float64).sum())
    assert fom["ks_train_part"]["part"] == "train" and fom["train_scores"]["rows"] == 600


def test_train_sample_is_seeded_windows_inside_the_part():
    from higgs_lora.pipeline.figures import TRAIN_SAMPLE_ROWS, WINDOW, sample_slices
    assert sample_slices(slice(5, 1000), seed=1) == [slice(5, 1000)]
    a, b = sample_slices(slice(100, 700_100), seed=1), sample_slices(slice(100, 700_100), seed=1)
    assert a == b and sum(s.stop - s.start for s in a) == TRAIN_SAMPLE_ROWS
    assert all(100 <= s.start and s.stop <= 700_100 and s.stop - s.start == WINDOW for s in a)
    assert len({s.start for s in a}) == len(a)


def test_run_writes_figures_weighting_and_the_new_plots(tmp_path):
    """`run` on a small simulation: every model's metrics carry figures_of_merit and weighting, the
    predictions file the overtraining check's train-side scores, and the report the new plots."""
    import json

    from higgs_lora.config import preset
    from higgs_lora.pipeline import DataSpec, run
    from higgs_lora.report.plots import read_predictions

    cfg = preset("notebook", epochs=1, ft_epochs=1, batch_size=512, device="cpu", precision="fp32")
    run(cfg, DataSpec(sim_events=4000), out=tmp_path / "r", progress=False, eff_vs="m_bb")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    for key in ("base", "adapted", "merged"):
        fom = metrics[key]["figures_of_merit"]
        assert [p["eff_b"] for p in fom["eff_s_at_eff_b"]] == list(EFF_B_POINTS)
        assert fom["best_ams"]["ams"] > 0 and set(fom["ks"]) == {"signal", "background"}
        assert metrics[key]["weighting"]["weighted"] is False
        assert metrics[key]["weighting"]["parts"]["test"]["signal"]["n_eff"] == metrics["data"]["balance"]["test"]["signal"]
    assert fom["ks_train_part"]["part"] == "extra" and metrics["eff_vs"] == "m_bb"
    predictions = read_predictions(tmp_path / "r" / "test_predictions.npz")
    assert predictions["train_base"].size == metrics["data"]["balance"]["train"]["rows"] and "eff_vs" in predictions
    plots = {p.name for p in (tmp_path / "r" / "plots").glob("*.png")}
    assert {"rejection.png", "overtraining.png", "efficiency_vs.png"} <= plots
