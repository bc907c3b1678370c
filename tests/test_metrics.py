"""binary_metrics and the weighted ROC against scikit-learn (sample_weight) and hand computations."""
import time

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from higgs_lora.report.metrics import (METRIC_NAMES, binary_metrics, format_metrics, roc_auc, roc_curve,
                                       undefined_warning, weighted_roc)


def _data(seed, n=20_000, weighted=False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=n).astype(np.float32)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logits + rng.normal(size=n)))).astype(np.int64)
    weights = rng.exponential(size=n).astype(np.float32) if weighted else None
    return logits, labels, weights


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_metrics_match_scikit_learn(seed, weighted):
    logits, labels, weights = _data(seed, weighted=weighted)
    m = binary_metrics(torch.from_numpy(logits), torch.from_numpy(labels), weights)
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    pred = (probs > 0.5).astype(int)
    sw = dict(sample_weight=None if weights is None else weights.astype(np.float64))
    # float64 sums of float32 weights: agreement to ~1e-12 relative; 1e-9 leaves room for summation order
    tol = 1e-9
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred, **sw), abs=tol)
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred, **sw), abs=tol)
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred, **sw), abs=tol)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(labels, pred, **sw), abs=tol)
    assert m["specificity"] == pytest.approx(skm.recall_score(labels, pred, pos_label=0, **sw), abs=tol)
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred, **sw), abs=tol)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred, **sw), abs=tol)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs, **sw), abs=tol)
    # sklearn's log_loss clips probabilities at float eps; ours is exact from logits: equal where |logit| < 30
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, probs, **sw), abs=1e-9)
    assert np.array_equal(np.array(m["confusion"]), skm.confusion_matrix(labels, pred))
    if weighted:
        np.testing.assert_allclose(m["confusion_weighted"], skm.confusion_matrix(labels, pred, **sw), rtol=1e-12)


def test_all_ones_weights_are_bit_identical_to_none():
    logits, labels, _ = _data(5)
    plain = binary_metrics(logits, labels)
    ones = binary_metrics(logits, labels, np.ones(labels.size, np.float32))
    ones.pop("confusion_weighted")
    assert plain == ones  # == on floats: bit for bit
    a, b = roc_curve(labels=labels, scores=logits), roc_curve(labels=labels, scores=logits, weights=np.ones(labels.size))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_threshold_is_strict_like_keras():
    # The notebook's accuracy/precision/recall come from Keras metrics, which count p > 0.5 as signal;
    # a logit of exactly 0 (p = 0.5) is background.
    m = binary_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    assert m["accuracy"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        binary_metrics(torch.zeros(3), torch.zeros(4))


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_roc_matches_scikit_learn(ties):
    rng = np.random.default_rng(7)
    labels = (rng.random(5000) < 0.3).astype(np.uint8)
    scores = rng.random(5000) + 0.4 * labels
    if ties:
        scores = np.round(scores, 1)
    weights = rng.uniform(0.1, 3.0, size=5000)
    fpr, tpr, thr = roc_curve(labels=labels, scores=scores, weights=weights)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(labels, scores, sample_weight=weights, drop_intermediate=False)
    assert fpr.shape == ref_fpr.shape
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(thr, ref_thr)
    assert roc_auc(labels=labels, scores=scores, weights=weights) == pytest.approx(
        skm.roc_auc_score(labels, scores, sample_weight=weights), abs=1e-9)


def test_weighted_roc_with_negative_weights_by_hand():
    # scores 0.9 (signal, w 2), 0.8 (background, w -1), 0.7 (signal, w -1), 0.6 (background, w 3).
    # Σw signal = 1, Σw background = 2. Cutting lower step by step:
    #   tps: 0, 2, 2, 1, 1   fps: 0, 0, -1, -1, 2   -> tpr 0, 2, 2, 1, 1   fpr 0, 0, -0.5, -0.5, 1
    # the curve goes above 1 and left of 0 (backwards). Trapezoids: 0 + (-0.5)(2+2)/2 + 0 + 1.5 (1+1)/2 = -1 + 1.5.
    # Independently, the weighted Mann-Whitney count of (signal, background) pairs ordered right:
    # 0.9 beats 0.8 and 0.6: 2(-1) + 2(3) = 4; 0.7 beats 0.6: (-1)(3) = -3; (4 - 3) / (1 * 2) = 0.5
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    weights = np.array([2.0, -1.0, -1.0, 3.0])
    fpr, tpr, thr, tps, fps = weighted_roc(labels=labels, scores=scores, weights=weights)
    np.testing.assert_array_equal(tps, [0, 2, 2, 1, 1])
    np.testing.assert_array_equal(fps, [0, 0, -1, -1, 2])
    np.testing.assert_array_equal(tpr, [0, 2, 2, 1, 1])
    np.testing.assert_array_equal(fpr, [0, 0, -0.5, -0.5, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.7, 0.6])
    assert roc_auc(labels=labels, scores=scores, weights=weights) == pytest.approx(0.5, abs=1e-15)
    with pytest.raises(ValueError):  # what we replace: scikit-learn refuses these weights
        skm.roc_auc_score(labels, scores, sample_weight=weights)


def test_weighted_roc_groups_ties_across_classes_with_weights():
    # two rows tie at 0.5 (one of each class): one ROC step covering both
    fpr, tpr, thr, tps, fps = weighted_roc(labels=[1, 1, 0, 0], scores=[0.9, 0.5, 0.5, 0.1], weights=[1, 3, 2, 2])
    np.testing.assert_array_equal(tps, [0, 1, 4, 4])
    np.testing.assert_array_equal(fps, [0, 0, 2, 4])


def test_weighted_roc_is_fast_on_half_a_million_rows():
    rng = np.random.default_rng(1)
    n = 500_000
    labels = rng.random(n) < 0.5
    scores = rng.random(n).astype(np.float32)
    weights = rng.uniform(0.1, 2.0, n).astype(np.float32)
    t = time.perf_counter()
    fpr, tpr, _, _, _ = weighted_roc(labels=labels, scores=scores, weights=weights)
    print(f"weighted ROC of {n:,} rows: {time.perf_counter() - t:.3f} s")  # measured, not asserted (shared CPUs)
    assert fpr.size == np.unique(scores).size + 1
    assert roc_auc(labels=labels, scores=scores, weights=weights) == pytest.approx(
        skm.roc_auc_score(labels, scores, sample_weight=weights), abs=1e-9)


def test_one_class_is_undefined_never_zero():
    m = binary_metrics(np.array([1.0, -2.0, 3.0]), np.array([1, 1, 1]))
    assert m["roc_auc"] is None and m["specificity"] is None and m["balanced_accuracy"] is None
    assert m["one_class"] and m["accuracy"] == pytest.approx(2 / 3)
    assert "roc_auc n/a (one class)" in format_metrics(m)
    assert "0.0000" not in format_metrics({k: m[k] for k in ("roc_auc", "specificity")} | {"one_class": True})
    line = undefined_warning(m, "test part")
    assert line.count("\n") == 0 and "roc_auc" in line and "one class" in line
    assert undefined_warning(binary_metrics(np.array([1.0, -1.0]), np.array([1, 0])), "x") is None
    assert set(METRIC_NAMES) <= set(m)


def test_zero_weight_of_a_class_is_one_class():
    m = binary_metrics(np.array([1.0, -1.0, 2.0]), np.array([1, 0, 1]), np.array([1.0, 0.0, 2.0]))
    assert m["one_class"] and m["roc_auc"] is None


def test_no_predicted_signal_makes_precision_undefined_not_zero():
    m = binary_metrics(np.array([-1.0, -2.0, -3.0]), np.array([1, 0, 0]))
    assert m["precision"] is None and m["f1"] == 0.0 and not m["one_class"]
    assert "precision n/a " in format_metrics(m) + " "


def test_evaluate_on_rows_that_are_all_signal_gives_null_and_n_a(tmp_path, capsys):
    """issue 22 item 5: one class -> roc_auc null in JSON, 'n/a (one class)' in the printed line, one warning."""
    import json

    from conftest import synthetic_xy
    from higgs_lora.config import ModelConfig
    from higgs_lora.data.standardize import Standardizer
    from higgs_lora.model.network import ResidualMLP
    from higgs_lora.pipeline import DataSpec, evaluate
    from higgs_lora.model.model_file import save_model

    x, _ = synthetic_xy(300)
    data = tmp_path / "signal.csv"
    np.savetxt(data, np.column_stack([np.ones(len(x)), x]), delimiter=",", fmt="%.9e")
    torch.manual_seed(0)
    model = save_model(tmp_path / "m", ResidualMLP.from_config(ModelConfig(width=8, n_blocks=1, head_width=4)),
                       Standardizer.fit(x), feature_names=[f"f{i}" for i in range(28)])
    m = evaluate(DataSpec(path=str(data)), model_path=model, part="all", device="cpu", json_path=tmp_path / "e.json",
                 progress=False)
    written = json.loads((tmp_path / "e.json").read_text())
    saved = written["metrics"]
    assert saved["roc_auc"] is None and saved["specificity"] is None and saved["balanced_accuracy"] is None
    assert written["figures_of_merit"] == {"undefined": "one class"}
    assert m["accuracy"] == pytest.approx(float(np.mean(m["confusion"][1][1] / len(x))))
    out = capsys.readouterr()
    assert "roc_auc n/a (one class)" in out.out + out.err and "roc_auc 0.0000" not in out.out + out.err
    warnings = [line for line in out.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "one class" in warnings[0]
