"""Test metrics at a threshold and the ROC curve, weighted or not: the one source of every number and
curve a run reports.

Our own implementation (NumPy, float64 inside) because the libraries fall short for physics data:
torchmetrics' classification metrics take no event weights, and scikit-learn's `roc_auc_score` raises
on negative weights (NLO generators give a few percent of them). One code path serves both cases:
weights=None is computed as weights of all ones, so the two give bit-identical numbers, and the
unweighted numbers are scikit-learn's (tests/test_metrics.py, tests/test_report.py).

Undefined values are None, never 0.0: roc_auc when a class is absent (or its total weight is <= 0),
and every ratio whose denominator is zero (precision with no row predicted signal, ...). Tables print
them as "n/a (one class)" (or "n/a" for another cause); metrics.json holds null.
"""
from __future__ import annotations

import math

import numpy as np

ROC_POINTS = 5000  # a 500k-row test set has ~500k ROC points; more than this only slows drawing

METRIC_NAMES = ["accuracy", "precision", "recall", "f1", "balanced_accuracy", "specificity", "sensitivity",
                "roc_auc", "log_loss"]
ONE_CLASS = "n/a (one class)"


def _arrays(labels, scores, weights):
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if weights is None:
        w = np.ones(labels.shape, dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != labels.shape:
            raise ValueError(f"weights {w.shape} and labels {labels.shape} differ in shape")
    return labels.astype(bool), scores, w


def class_sums(labels, weights=None) -> tuple[float, float]:
    """(Σw of signal, Σw of background); without weights, the counts."""
    positive = np.asarray(labels).ravel().astype(bool)
    w = np.ones(positive.shape) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return float(w[positive].sum()), float(w[~positive].sum())


def effective_size(weights) -> float:
    """N_eff = (Σw)² / Σw²: the number of unweighted events with the same statistical power (Kish)."""
    w = np.asarray(weights, dtype=np.float64)
    w2 = float(np.dot(w, w))
    return float(w.sum()) ** 2 / w2 if w2 > 0 else 0.0


def weighted_roc(*, labels, scores, weights=None):
    """(fpr, tpr, thresholds, tps, fps): the ROC of `scores` with one point per distinct score, rows with
    score >= threshold selected, ties grouped (as sklearn's roc_curve(drop_intermediate=False)), starting
    at (0, 0) with threshold +inf. tps/fps are the cumulative weights of selected signal/background rows
    (float64); fpr = fps / Σw_background, tpr = tps / Σw_signal. No monotonicity is assumed: with negative
    weights the curve may step backwards. Raises ValueError when a class has total weight <= 0."""
    positive, scores, w = _arrays(labels, scores, weights)
    order = np.argsort(scores, kind="stable")[::-1]  # one sort: 500k rows in tens of milliseconds
    s = scores[order]
    wp = np.where(positive[order], w[order], 0.0)
    wn = w[order] - wp
    # the last row of each group of equal scores
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1] if s.size else np.zeros(0, np.int64)
    tps = np.r_[0.0, np.cumsum(wp)[last]]
    fps = np.r_[0.0, np.cumsum(wn)[last]]
    if not (tps[-1] > 0 and fps[-1] > 0):
        raise ValueError("ROC needs both classes among the labels (each with total weight > 0)")
    thresholds = np.r_[np.array([np.inf], dtype=s.dtype if s.dtype.kind == "f" else np.float64), s[last]]
    return fps / fps[-1], tps / tps[-1], thresholds, tps, fps


def trapezoid_area(x: np.ndarray, y: np.ndarray) -> float:
    """∫ y dx along the curve, step by step (signed: a step backwards subtracts)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2)


def roc_curve(*, labels, scores, weights=None, max_points: int | None = None):
    """(fpr, tpr, thresholds) of weighted_roc; with max_points, thinned to about that many points, the
    first and last kept."""
    fpr, tpr, thresholds, _, _ = weighted_roc(labels=labels, scores=scores, weights=weights)
    if max_points is not None and fpr.size > max_points:
        keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).astype(np.int64), fpr.size - 1])
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return fpr, tpr, thresholds


def roc_auc(*, labels, scores, weights=None) -> float | None:
    """Area under the weighted ROC by the trapezoid rule; None when a class is absent (or weighs <= 0)."""
    try:
        fpr, tpr, _, _, _ = weighted_roc(labels=labels, scores=scores, weights=weights)
    except ValueError:
        return None
    return trapezoid_area(fpr, tpr)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den != 0 else None


def binary_metrics(logits, labels, weights=None, threshold: float = 0.5) -> dict:
    """logits [n] (pre-sigmoid; a tensor or an array), labels [n] in {0, 1}, weights [n] or None ->
    plain-float metrics (None where undefined), the confusion matrix of counts [[tn, fp], [fn, tp]], and
    with weights its weighted sums (`confusion_weighted`). `one_class` says the labels (or their weights)
    hold a single class.

    A row is predicted signal when p > threshold, as Keras' BinaryAccuracy/Precision/Recall count it."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"expected logits and labels of equal shape [n], got {x.shape} and {y.shape}")
    positive, _, w = _arrays(y, x, weights)
    predicted = 1 / (1 + np.exp(-x)) > threshold
    tp, fp = float(w[positive & predicted].sum()), float(w[~positive & predicted].sum())
    fn, tn = float(w[positive & ~predicted].sum()), float(w[~positive & ~predicted].sum())
    total = tp + fp + fn + tn
    sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    # BCE from logits, not clipped probabilities: exact even for confident mistakes.
    bce = np.maximum(x, 0) - x * positive + np.log1p(np.exp(-np.abs(x)))
    counts = [[int(np.count_nonzero(~positive & ~predicted)), int(np.count_nonzero(~positive & predicted))],
              [int(np.count_nonzero(positive & ~predicted)), int(np.count_nonzero(positive & predicted))]]
    m = dict(
        accuracy=_ratio(tp + tn, total),
        precision=_ratio(tp, tp + fp),
        recall=sensitivity,
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        balanced_accuracy=None if sensitivity is None or specificity is None else (specificity + sensitivity) / 2,
        specificity=specificity,
        sensitivity=sensitivity,
        roc_auc=roc_auc(labels=positive, scores=x, weights=w),
        log_loss=_ratio(float(np.dot(w, bce)), total),
        confusion=counts,
        one_class=not (tp + fn > 0 and tn + fp > 0),
    )
    if weights is not None:
        m["confusion_weighted"] = [[tn, fp], [fn, tp]]
    return m


def undefined(m: dict) -> list[str]:
    """The metrics of `m` that are undefined (None)."""
    return [k for k in METRIC_NAMES if k in m and m[k] is None]


def undefined_warning(m: dict, what: str) -> str | None:
    """One line for stderr when some metrics of `m` are undefined; None when all are defined."""
    names = undefined(m)
    if not names:
        return None
    why = "it holds one class only" if m.get("one_class") else "a denominator is zero"
    return f"higgs-lora: warning: {what}: {', '.join(names)} undefined ({why}); reported as n/a (null in JSON)"


def format_value(value, *, one_class: bool = False, digits: int = 4) -> str:
    """A metric for a table: 4 decimals; None as 'n/a (one class)' (or 'n/a' for another cause)."""
    if value is None:
        return ONE_CLASS if one_class else "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def format_metrics(m: dict) -> str:
    return "  ".join(f"{k} {format_value(m[k], one_class=bool(m.get('one_class')))}" for k in METRIC_NAMES if k in m)
