"""Which class-balance and negative-weight policies train the best network on weighted data?

The built-in simulation with synthetic event weights that look like an analysis's: the background
reweighted along one kinematic variable, signal 1/100 of the background's total weight (a cross-section
ratio far from 1), and ~5% negative weights concentrated where an NLO generator puts them (here: at high
jet1 pT, so dropping them changes the weighted distribution). Every policy (--class-balance none|equal x
--negative-weights keep|zero|drop-in-training) trains the default recipe (fp32, a few epochs) over several
seeds; the score is the weighted test AUC with the true, signed weights (cumulative weighted TPR/FPR; no
library AUC takes negative weights). The result chose the defaults in config.py (docs/analysis-data.md).

    python benchmarks/bench_weight_policies.py --events 150000 --epochs 4 --seeds 3 \
        --out benchmarks/results/weight_policies.txt
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_lines, report  # noqa: E402

from higgs_lora.config import preset  # noqa: E402
from higgs_lora.data import split_rows  # noqa: E402
from higgs_lora.data.simulate import simulated_table  # noqa: E402
from higgs_lora.pipeline import phases  # noqa: E402
from higgs_lora.pipeline.inputs import Prepared  # noqa: E402
from higgs_lora.data.sources import TableSource  # noqa: E402

POLICIES = [(c, n) for c in ("none", "equal") for n in ("keep", "zero", "drop-in-training")]


def synthetic_weights(table, *, seed: int, signal_share: float = 0.01, negative_share: float = 0.05) -> np.ndarray:
    """Analysis-like event weights for the simulated table (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    x, y = table.features, table.labels

    def z(name):
        v = np.log1p(np.abs(x[:, table.feature_names.index(name)]).astype(np.float64))
        return (v - v.mean()) / v.std()
    w = np.where(y == 1, rng.lognormal(0.0, 0.3, len(y)), np.exp(0.6 * z("lepton_pT")) * rng.lognormal(0, 0.3, len(y)))
    # negative weights where jet1 pT is high: P(negative) grows with it, ~negative_share overall
    logit = 2.0 * z("jet1_pt")
    p = 1 / (1 + np.exp(-logit))
    p *= negative_share / p.mean()
    w = np.where(rng.random(len(y)) < np.clip(p, 0, 0.45), -w, w)
    signal, background = w[y == 1].sum(), w[y == 0].sum()
    w[y == 1] *= signal_share * background / signal
    return w.astype(np.float32)


def weighted_roc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) from (0, 0): cumulative weighted counts over the scores from high to low, tied scores one
    step; negative weights allowed, so no monotonicity is assumed."""
    order = np.argsort(-scores, kind="stable")
    s, y, w = scores[order], labels[order], weights[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]      # the end of each run of equal scores
    tp, fp = np.cumsum(w * (y == 1))[last], np.cumsum(w * (y == 0))[last]
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Area under the weighted ROC (weighted_roc), by trapezoids."""
    fpr, tpr = weighted_roc(scores, labels, weights)
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=150_000)
    p.add_argument("--test-rows", type=int, default=40_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = simulated_table(args.events, seed=7)
    weights = synthetic_weights(table, seed=8)
    table = dataclasses.replace(table, weights=weights)
    source = TableSource(table, torch.device("cpu"))
    split = split_rows(table.rows, train_rows=args.events - args.test_rows, test_rows=args.test_rows,
                       val_fraction=0.1, source=table.source)
    data = Prepared(source=source, split=split, standardizer=source.fit_standardizer(split.train))
    test_w, test_y = weights[split.test], table.labels[split.test]
    lines = machine_lines(machine(), sys.argv)
    neg = weights < 0
    lines += [f"data: simulated {args.events:,} events (seed 7), train {split.train.stop - split.train.start:,} "
              f"(val {split.val_rows:,}), test {split.test_rows:,}; synthetic weights (seed 8): "
              f"{neg.mean():.1%} negative (carrying {-weights[neg].sum() / np.abs(weights).sum():.1%} of |w|), "
              f"sum w signal/background {weights[table.labels == 1].sum() / weights[table.labels == 0].sum():.4f}",
              f"recipe: default preset, fp32, {args.epochs} epochs, {args.threads} thread(s); score: weighted "
              "test AUC with the signed weights", ""]
    runs, table_lines = [], []
    for class_balance, negative in POLICIES:
        aucs, seconds = [], []
        for seed in range(args.seeds):
            cfg = dataclasses.replace(preset("default", precision="fp32", epochs=args.epochs, seed=seed),
                                      scale_epochs=False, class_balance=class_balance, negative_weights=negative)
            phases.fit_features(cfg, table.n_features)
            torch.manual_seed(seed)
            t = time.perf_counter()
            model, _ = phases.train_base(cfg, data, progress=False)
            seconds.append(time.perf_counter() - t)
            logits, _ = source.predict(model, split.test, data.standardizer)
            aucs.append(weighted_auc(logits.numpy(), test_y, test_w))
            runs.append(dict(class_balance=class_balance, negative_weights=negative, seed=seed, weighted_auc=aucs[-1],
                             seconds=seconds[-1]))
        m, sd = float(np.mean(aucs)), float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0
        table_lines.append((m, f"class-balance {class_balance:5s}  negative-weights {negative:17s}  weighted AUC "
                               f"{m:.4f} +- {sd / np.sqrt(len(aucs)):.4f} (sd {sd:.4f}; "
                               + ", ".join(f"{a:.4f}" for a in aucs) + f")  {np.mean(seconds):.0f}s/run"))
        print(table_lines[-1][1], flush=True)
    best = max(table_lines)[1]
    report(lines + [t for _, t in table_lines] + ["", f"best: {best}"], args.out, runs=runs)


if __name__ == "__main__":
    main()
