"""A second HIGGS-format data set that does not come from our simulator: a smoothed bootstrap of real rows.

Each class of a small real sample (tests/data/higgs_real_sample.csv: 1,000 UCI HIGGS events) is treated
as a kernel density estimate, and rows are drawn from it:

  1. pick a real row of the class at random (the label is drawn first, with the sample's signal fraction);
  2. in a space where a Gaussian kernel is sensible (log of the momenta, energies and masses, which are
     positive and skewed; eta and phi as they are), add Gaussian noise N(0, h^2 * Sigma_class), where
     Sigma_class is the class covariance of those coordinates and h the bandwidth, and shrink the result
     toward the class mean by 1/sqrt(1 + h^2) so the class covariance stays that of the real rows;
  3. apply two exact symmetries of the collisions: rotate every phi by one common random angle (the
     physics does not depend on the azimuth) and, with probability 1/2, flip the sign of every eta
     (the beams are symmetric), then wrap phi into HIGGS' range and map back (exp of the logs);
  4. the b-tag columns are discrete (three levels) and are copied from the picked row, without noise.

The bandwidth is chosen by leave-one-out likelihood on the real rows (`choose_bandwidth`): the h whose
kernel density gives the held-out real rows the highest mean log density, summed over the two classes.
It is the smoothing that best predicts unseen real events, not one picked to make the task easy or hard.

Deterministic for a seed: one NumPy PCG64 stream, drawn in a fixed order.
"""
from __future__ import annotations

import hashlib

import numpy as np

from higgs_lora.data.table import HIGGS_FEATURES, Table
from higgs_lora.errors import UserError

KDE_VERSION = 1  # bump when anything below changes the rows a seed produces (part of the fingerprint)

_COL = {name: i for i, name in enumerate(HIGGS_FEATURES)}
BTAG = [_COL[n] for n in HIGGS_FEATURES if n.endswith("_btag")]
PHI = [_COL[n] for n in HIGGS_FEATURES if n.endswith("_phi")]
ETA = [_COL[n] for n in HIGGS_FEATURES if n.endswith("_eta")]
POSITIVE = [_COL[n] for n in HIGGS_FEATURES if n.endswith(("_pT", "_pt", "_magnitude")) or n.startswith("m_")]
CONTINUOUS = [i for i in range(len(HIGGS_FEATURES)) if i not in BTAG]
PHI_MAX = 1.7425  # HIGGS writes phi scaled onto [-1.7425, 1.7425]
BANDWIDTH_GRID = tuple(np.round(np.arange(0.10, 1.01, 0.05), 2))


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=1, keepdims=True)))[:, 0]


def _to_kernel_space(features: np.ndarray) -> np.ndarray:
    z = features[:, CONTINUOUS].astype(np.float64)
    pos = [CONTINUOUS.index(i) for i in POSITIVE]
    if (z[:, pos] <= 0).any():
        raise UserError("KDE source rows: momenta, energies and masses must be > 0")
    z[:, pos] = np.log(z[:, pos])
    return z


def _check_source(features: np.ndarray, labels: np.ndarray) -> None:
    if features.ndim != 2 or features.shape[1] != len(HIGGS_FEATURES) or labels.shape != (features.shape[0],):
        raise UserError(f"KDE source: expected features [n, {len(HIGGS_FEATURES)}] and labels [n], "
                        f"got {features.shape} and {labels.shape}")
    for c in (0, 1):
        if np.count_nonzero(labels == c) < len(CONTINUOUS) + 2:
            raise UserError(f"KDE source: class {c} has too few rows for a covariance in {len(CONTINUOUS)} dimensions")


def loo_log_likelihood(features: np.ndarray, labels: np.ndarray, *, bandwidths=BANDWIDTH_GRID) -> dict[float, float]:
    """Mean leave-one-out log density of the real rows (continuous coordinates, kernel space) per bandwidth,
    class by class and summed with the class weights: {h: mean log density}."""
    _check_source(features, labels)
    z_all = _to_kernel_space(features)
    out = {float(h): 0.0 for h in bandwidths}
    for c in (0, 1):
        z = z_all[labels == c]
        n, d = z.shape
        cov = np.cov(z, rowvar=False)
        chol = np.linalg.cholesky(cov)
        w = np.linalg.solve(chol, (z - z.mean(0)).T).T           # whitened: kernel N(0, h^2 I)
        sq = ((w[:, None, :] - w[None, :, :]) ** 2).sum(-1)       # [n, n] squared Mahalanobis distances
        np.fill_diagonal(sq, np.inf)                              # leave the row itself out
        log_det = 2 * np.log(np.diag(chol)).sum()
        for h in bandwidths:
            log_k = -0.5 * sq / h**2 - d * np.log(h) - 0.5 * (d * np.log(2 * np.pi) + log_det)
            out[float(h)] += (n / len(labels)) * float(np.mean(_logsumexp_rows(log_k) - np.log(n - 1)))
    return out


def choose_bandwidth(features: np.ndarray, labels: np.ndarray, *, bandwidths=BANDWIDTH_GRID) -> float:
    scores = loo_log_likelihood(features, labels, bandwidths=bandwidths)
    return max(scores, key=scores.get)


def smoothed_bootstrap(features: np.ndarray, labels: np.ndarray, n_rows: int, *, seed: int,
                       bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """n_rows rows drawn from the per-class kernel density of (features [n, 28], labels [n]):
    float32 features [n_rows, 28], uint8 labels [n_rows]. Same inputs and seed, same rows."""
    _check_source(features, labels)
    if n_rows < 0 or bandwidth <= 0:
        raise UserError(f"KDE: need n_rows >= 0 and bandwidth > 0, got {n_rows} and {bandwidth}")
    labels = np.asarray(labels).astype(np.uint8)
    z_all = _to_kernel_space(features)
    rng = np.random.default_rng(seed)
    out_labels = (rng.random(n_rows) < labels.mean()).astype(np.uint8)
    out = np.empty((n_rows, len(HIGGS_FEATURES)), dtype=np.float32)
    pos = [CONTINUOUS.index(i) for i in POSITIVE]
    phi = [CONTINUOUS.index(i) for i in PHI]
    eta = [CONTINUOUS.index(i) for i in ETA]
    for c in (0, 1):
        source = np.flatnonzero(labels == c)
        chol = np.linalg.cholesky(np.cov(z_all[source], rowvar=False))
        mean = z_all[source].mean(axis=0)
        rows = np.flatnonzero(out_labels == c)
        for start in range(0, rows.size, 1 << 18):  # bounded float64 temporaries
            dst = rows[start:start + (1 << 18)]
            pick = source[rng.integers(0, source.size, dst.size)]
            # Shrunk toward the class mean by 1/sqrt(1 + h^2) so the class covariance stays the real one
            # (Silverman's variance-corrected smoothed bootstrap); a plain KDE would inflate it by 1 + h^2.
            noise = bandwidth * rng.standard_normal((dst.size, z_all.shape[1])) @ chol.T
            z = mean + (z_all[pick] - mean + noise) / np.sqrt(1 + bandwidth**2)
            z[:, phi] += rng.uniform(-PHI_MAX, PHI_MAX, (dst.size, 1))
            z[:, phi] = (z[:, phi] + PHI_MAX) % (2 * PHI_MAX) - PHI_MAX
            z[:, eta] *= np.where(rng.random((dst.size, 1)) < 0.5, -1.0, 1.0)
            z[:, pos] = np.exp(z[:, pos])
            block = np.empty((dst.size, len(HIGGS_FEATURES)))
            block[:, CONTINUOUS] = z
            block[:, BTAG] = features[pick][:, BTAG]
            out[dst] = block
    return out, out_labels


def kde_table(n_rows: int, *, seed: int, source_features: np.ndarray, source_labels: np.ndarray,
              bandwidth: float | None = None) -> Table:
    """The smoothed-bootstrap data set as a Table; bandwidth None = chosen by leave-one-out likelihood."""
    h = choose_bandwidth(source_features, source_labels) if bandwidth is None else float(bandwidth)
    features, labels = smoothed_bootstrap(source_features, source_labels, n_rows, seed=seed, bandwidth=h)
    digest = hashlib.sha256(np.ascontiguousarray(source_features, dtype=np.float64).tobytes()
                            + np.ascontiguousarray(source_labels, dtype=np.uint8).tobytes()).hexdigest()[:16]
    fp = hashlib.sha256(f"higgs-lora-kde:{KDE_VERSION}:{digest}:{n_rows}:{seed}:{h!r}".encode()).hexdigest()[:16]
    return Table(features=features, labels=labels, feature_names=list(HIGGS_FEATURES),
                 source=f"kde:rows={n_rows}:seed={seed}:bandwidth={h}:source={digest}", fingerprint=fp)


def read_higgs_rows(path) -> tuple[np.ndarray, np.ndarray]:
    """A small HIGGS CSV (label first, no header) as float64 features [n, 28] and uint8 labels [n]."""
    rows = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    if rows.shape[1] != len(HIGGS_FEATURES) + 1:
        raise UserError(f"{path}: expected {len(HIGGS_FEATURES) + 1} columns (label + features), got {rows.shape[1]}")
    return rows[:, 1:], rows[:, 0].astype(np.uint8)
