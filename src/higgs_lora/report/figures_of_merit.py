"""The figures of merit a physics analysis quotes, from the weighted ROC of metrics.py (docs/metrics.md):

- working points: signal efficiency ε_S at background efficiency ε_B = 0.001, 0.01, 0.1, 0.3, and
  background rejection R = 1/ε_B at ε_S = 0.3, 0.5, 0.7, 0.9, linearly interpolated between the two
  ROC points around the first crossing of the target (no monotonicity assumed: with negative weights the
  curve may step back), each with a binomial uncertainty σ_ε = sqrt(ε(1 - ε) / N_eff) from the effective
  size N_eff = (Σw)²/Σw² of the class, and σ_R = σ_εB / ε_B² for the rejection;
- the Approximate Median Significance of the best cut on the score (HiggsML challenge, b_reg = 10):
  AMS = sqrt(2((s + b + b_reg) ln(1 + s / (b + b_reg)) - s)), s and b the weighted signal and background
  above the cut in the test part, each scaled to the full sample by Σw(class, all rows) / Σw(class,
  test rows); without weights they are event counts, scaled the same way;
- the overtraining check: a weighted two-sample Kolmogorov-Smirnov test of train vs test scores per
  class, D = max |F_train - F_test| of the weighted empirical CDFs, p-value from the asymptotic
  Kolmogorov distribution at sqrt(n m / (n + m)) D with n, m the effective sizes N_eff.

Everything is NumPy (float64), no SciPy (not a core dependency); the Kolmogorov series is tested against
scipy.stats.kstwobign in tests/test_figures_of_merit.py.
"""
from __future__ import annotations

import math

import numpy as np

from higgs_lora.report.metrics import effective_size, weighted_roc

EFF_B_POINTS = (0.001, 0.01, 0.1, 0.3)
EFF_S_POINTS = (0.3, 0.5, 0.7, 0.9)
B_REG = 10.0


def binomial_sigma(eff: float, n_eff: float) -> float | None:
    """sqrt(ε(1 - ε) / N_eff); None without effective events. ε outside [0, 1] (negative weights) counts as 0 or 1."""
    if not n_eff > 0:
        return None
    e = min(max(eff, 0.0), 1.0)
    return math.sqrt(e * (1 - e) / n_eff)


def at_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """y interpolated linearly at the first point where x reaches `target` along the curve (x from the
    tightest cut to the loosest); None when x never does."""
    reached = np.flatnonzero(x >= target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0 or x[i] == x[i - 1]:
        return float(y[i])
    t = (target - x[i - 1]) / (x[i] - x[i - 1])
    return float(y[i - 1] + t * (y[i] - y[i - 1]))


def working_points(fpr: np.ndarray, tpr: np.ndarray, *, n_eff_signal: float, n_eff_background: float) -> dict:
    """{"eff_s_at_eff_b": [{eff_b, eff_s, sigma}], "rejection_at_eff_s": [{eff_s, eff_b, rejection, sigma}]}."""
    at_b = []
    for eff_b in EFF_B_POINTS:
        eff_s = at_crossing(fpr, tpr, eff_b)
        at_b.append(dict(eff_b=eff_b, eff_s=eff_s,
                         sigma=None if eff_s is None else binomial_sigma(eff_s, n_eff_signal)))
    at_s = []
    for eff_s in EFF_S_POINTS:
        eff_b = at_crossing(tpr, fpr, eff_s)
        ok = eff_b is not None and eff_b > 0
        sigma_b = binomial_sigma(eff_b, n_eff_background) if ok else None
        at_s.append(dict(eff_s=eff_s, eff_b=eff_b, rejection=1 / eff_b if ok else None,
                         sigma=sigma_b / eff_b ** 2 if sigma_b is not None else None))
    return dict(eff_s_at_eff_b=at_b, rejection_at_eff_s=at_s)


def ams(s, b, b_reg: float = B_REG):
    """The Approximate Median Significance (HiggsML challenge formula); NaN where b + b_reg <= 0."""
    s, c = np.asarray(s, dtype=np.float64), np.asarray(b, dtype=np.float64) + b_reg
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = 2 * ((s + c) * np.log1p(s / c) - s)
        return np.where(c > 0, np.sqrt(np.maximum(inner, 0.0)), np.nan)


def best_ams(tps: np.ndarray, fps: np.ndarray, thresholds: np.ndarray, *, scale_signal: float,
             scale_background: float) -> dict:
    """The cut (select score >= cut) of the highest AMS over every ROC point, with its s and b (scaled)."""
    s, b = tps[1:] * scale_signal, fps[1:] * scale_background
    values = ams(s, b)
    if not np.isfinite(values).any():
        return dict(ams=None, cut=None, s=None, b=None)
    i = int(np.nanargmax(values))
    return dict(ams=float(values[i]), cut=float(thresholds[1:][i]), s=float(s[i]), b=float(b[i]), b_reg=B_REG,
                scale_signal=scale_signal, scale_background=scale_background)


def kolmogorov_sf(z: float) -> float:
    """P(K > z) of the Kolmogorov distribution (the limit of sqrt(n) D_n): the alternating series
    2 Σ (-1)^(k-1) exp(-2 k² z²) for z >= 1, else 1 - sqrt(2π)/z Σ exp(-(2k-1)² π² / (8 z²))
    (both converge to double precision within a few terms there)."""
    if z <= 0:
        return 1.0
    if z >= 1:
        k = np.arange(1, 101)
        return float(min(1.0, max(0.0, 2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * k ** 2 * z * z)))))
    k = np.arange(1, 101)
    cdf = math.sqrt(2 * math.pi) / z * np.sum(np.exp(-((2 * k - 1) ** 2) * math.pi ** 2 / (8 * z * z)))
    return float(min(1.0, max(0.0, 1 - cdf)))


def weighted_ks(a, b, weights_a=None, weights_b=None) -> dict:
    """Two-sample Kolmogorov-Smirnov test of samples a and b with optional weights: D over the weighted
    empirical CDFs (evaluated after every distinct value), p from kolmogorov_sf(sqrt(n m / (n + m)) D)
    with n, m the effective sizes. None values when a sample is empty or weighs <= 0."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    wa = np.ones(a.size) if weights_a is None else np.asarray(weights_a, dtype=np.float64).ravel()
    wb = np.ones(b.size) if weights_b is None else np.asarray(weights_b, dtype=np.float64).ravel()
    if not (wa.sum() > 0 and wb.sum() > 0):
        return dict(statistic=None, p_value=None, n_eff=[effective_size(wa), effective_size(wb)])
    values = np.concatenate([a, b])
    order = np.argsort(values, kind="stable")
    v = values[order]
    step_a = np.concatenate([wa / wa.sum(), np.zeros(b.size)])[order]
    step_b = np.concatenate([np.zeros(a.size), wb / wb.sum()])[order]
    last = np.r_[np.flatnonzero(v[1:] != v[:-1]), v.size - 1]
    d = float(np.max(np.abs(np.cumsum(step_a)[last] - np.cumsum(step_b)[last])))
    n, m = effective_size(wa), effective_size(wb)
    return dict(statistic=d, p_value=kolmogorov_sf(math.sqrt(n * m / (n + m)) * d), n_eff=[n, m])


def efficiency_vs(values, *, labels, scores, cut: float, weights=None, bins: int = 10) -> dict:
    """Signal and background efficiency of `scores >= cut` in bins of `values` (equal-population edges
    over all rows, so every bin holds data): {"edges", "eff_s", "eff_b"} (None in a bin whose class
    weighs <= 0 there)."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    w = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max(edges.size - 2, 0))
    selected = np.asarray(scores) >= cut
    out = dict(edges=edges.tolist(), eff_s=[], eff_b=[])
    for i in range(max(edges.size - 1, 1)):
        inside = index == i
        for key, cls in (("eff_s", labels), ("eff_b", ~labels)):
            total = w[inside & cls].sum()
            out[key].append(float(w[inside & cls & selected].sum() / total) if total > 0 else None)
    return out


def figures_of_merit(*, labels, scores, weights=None, totals: tuple[float, float] | None = None,
                     train: tuple | None = None) -> dict:
    """Every figure of merit of one model on the test part: `labels`, `scores` (probabilities or logits:
    only their order matters, but the AMS cut is quoted in them) and `weights` of the test rows;
    `totals` = (Σw signal, Σw background) over every row of the data (None: the test part is the whole
    sample); `train` = (labels, scores, weights) of the rows the model was trained on, for the KS test.
    Returns {"undefined": reason} when the test part lacks a class."""
    labels = np.asarray(labels).astype(bool)
    w = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=np.float64)
    try:
        fpr, tpr, thresholds, tps, fps = weighted_roc(labels=labels, scores=scores, weights=w)
    except ValueError:
        return dict(undefined="one class")
    n_sig, n_bkg = effective_size(w[labels]), effective_size(w[~labels])
    test_s, test_b = tps[-1], fps[-1]
    total_s, total_b = totals if totals is not None else (test_s, test_b)
    out = working_points(fpr, tpr, n_eff_signal=n_sig, n_eff_background=n_bkg)
    out["n_eff"] = dict(signal=n_sig, background=n_bkg)
    out["best_ams"] = best_ams(tps, fps, thresholds, scale_signal=total_s / test_s, scale_background=total_b / test_b)
    if train is not None:
        tl, ts, tw = train
        tl = np.asarray(tl).astype(bool)
        ts = np.asarray(ts)
        tw = np.ones(tl.size) if tw is None else np.asarray(tw, dtype=np.float64)
        scores = np.asarray(scores)
        out["ks"] = {name: weighted_ks(ts[tl == cls], scores[labels == cls], tw[tl == cls], w[labels == cls])
                     for name, cls in (("signal", True), ("background", False))}
    return out
