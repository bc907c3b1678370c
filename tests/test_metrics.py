import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from higgs_lora.metrics import binary_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = 20_000
    logits = rng.normal(scale=2.0, size=n).astype(np.float32)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logits + rng.normal(size=n)))).astype(np.int64)
    m = binary_metrics(torch.from_numpy(logits), torch.from_numpy(labels))
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    pred = (probs >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-6)
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred), abs=1e-6)
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred), abs=1e-6)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(labels, pred), abs=1e-6)
    assert m["specificity"] == pytest.approx(skm.recall_score(labels, pred, pos_label=0), abs=1e-6)
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred), abs=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred), abs=1e-6)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs), abs=1e-5)
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, probs), abs=1e-5)
    assert np.array_equal(np.array(m["confusion"]), skm.confusion_matrix(labels, pred))


def test_threshold_is_strict_like_keras():
    # The notebook's accuracy/precision/recall come from Keras metrics, which count p > 0.5 as signal;
    # a logit of exactly 0 (p = 0.5) is background.
    m = binary_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    assert m["accuracy"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        binary_metrics(torch.zeros(3), torch.zeros(4))
