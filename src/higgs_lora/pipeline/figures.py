"""What the pipeline adds to a model's test metrics: the weights of a part, the figures of merit (with
the train-side scores the overtraining check needs) and the "weighting" block of metrics.json."""
from __future__ import annotations

import sys

import numpy as np
import torch

from higgs_lora.hardware.distributed import is_main
from higgs_lora.errors import UserError
from higgs_lora.report.figures_of_merit import figures_of_merit
from higgs_lora.report.metrics import class_sums, effective_size, undefined_warning
from higgs_lora.pipeline.inputs import Prepared
from higgs_lora.hardware.runtime import predict_logits

# The KS test needs the scores of the rows a model trained on; above this many rows it gets a seeded sample
# of them, drawn as windows of WINDOW consecutive rows (cheap to read from shards too).
TRAIN_SAMPLE_ROWS = 200_000
WINDOW = 1000
_warned: set[str] = set()


def part_weights(data: Prepared, rows: slice) -> np.ndarray | None:
    """The event weights of a part (float32), or None when the data has none (every row weighs 1)."""
    weights = data.source.weights
    return None if weights is None else np.asarray(weights[rows])


def warn_undefined(metrics: dict, what: str) -> None:
    """One line on stderr when metrics are undefined (once per message: base and adapted say the same)."""
    line = undefined_warning(metrics, what)
    if line and is_main() and line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr, flush=True)


def sample_slices(rows: slice, *, seed: int) -> list[slice]:
    """The part itself, or for more than TRAIN_SAMPLE_ROWS rows a seeded choice of windows of it."""
    n = rows.stop - rows.start
    if n <= TRAIN_SAMPLE_ROWS:
        return [rows]
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(n // WINDOW, size=TRAIN_SAMPLE_ROWS // WINDOW, replace=False)) * WINDOW + rows.start
    return [slice(int(s), int(s) + WINDOW) for s in starts]


@torch.no_grad()
def scores_of(model: torch.nn.Module, data: Prepared, rows: slice, *, seed: int) -> dict:
    """{labels, scores, weights, rows, sampled}: the probabilities of a part (or of its seeded sample)."""
    blocks = [data.source.table.read(s.start, s.stop) for s in sample_slices(rows, seed=seed)]
    features = np.concatenate([b.features for b in blocks])
    x = torch.from_numpy(data.standardizer.transform(features)).to(data.source.device)
    logits = predict_logits(model, x).float().cpu().numpy().astype(np.float64)
    weights = None if blocks[0].weights is None else np.concatenate([b.weights for b in blocks])
    return dict(labels=np.concatenate([b.labels for b in blocks]), scores=1 / (1 + np.exp(-logits)), weights=weights,
                rows=int(features.shape[0]), sampled=len(blocks) > 1)


def trained_on(data: Prepared, kind: str) -> tuple[str, slice]:
    """The part a model learnt from: the train rows for the base, the extra rows for adapters."""
    if kind != "base" and data.split.extra_rows:
        return "extra", data.split.extra
    return "train", data.split.train


def model_figures(model: torch.nn.Module, data: Prepared, *, kind: str, logits: torch.Tensor, rows: slice,
                  seed: int = 0) -> dict:
    """The figures_of_merit block of one model evaluated on `rows` (its logits given), with the KS test
    against the part it trained on."""
    labels = np.asarray(data.source.labels[rows])
    if labels.min() == labels.max():
        return dict(undefined="one class")
    part_name, train_rows = trained_on(data, kind)
    train = scores_of(model, data, train_rows, seed=seed) if train_rows.stop > train_rows.start else None
    x = logits.float().cpu().numpy().astype(np.float64)
    fom = figures_of_merit(labels=labels, scores=1 / (1 + np.exp(-x)), weights=part_weights(data, rows),
                           totals=class_sums(data.source.labels, data.source.weights),
                           train=None if train is None else (train["labels"], train["scores"], train["weights"]))
    if train is not None:
        fom["ks_train_part"] = dict(part=part_name, rows=train["rows"], sampled=train["sampled"],
                                    note=f"seeded sample of {TRAIN_SAMPLE_ROWS:,} rows" if train["sampled"] else "all rows")
        fom["train_scores"] = train   # for the plots; run.py moves it into test_predictions.npz
    return fom


def weighting(data: Prepared, config: dict | None = None) -> dict:
    """metrics.json's record of how the numbers were weighted: whether, by what expression, the training
    policies (class_balance, negative_weights; absent: "none"/"keep") and Σw and N_eff per class and part."""
    config = config or {}
    weights, labels = data.source.weights, data.source.labels
    parts = {}
    for name, rows in data.parts().items():
        if rows.stop <= rows.start:
            continue
        y = np.asarray(labels[rows]).astype(bool)
        w = np.ones(y.size) if weights is None else np.asarray(weights[rows], dtype=np.float64)
        parts[name] = {cls: dict(rows=int(mask.sum()), sum_w=float(w[mask].sum()), n_eff=effective_size(w[mask]))
                       for cls, mask in (("signal", y), ("background", ~y))}
    return dict(weighted=weights is not None, weight_expr=data.source.table.weight_expr,
                class_balance=config.get("class_balance") or "none",
                negative_weights=config.get("negative_weights") or "keep", parts=parts)


def feature_column(data: Prepared, name: str) -> int:
    """The index of feature `name` (for --eff-vs); a UserError listing the names when there is none."""
    names = list(data.source.feature_names)
    if name not in names:
        raise UserError(f"--eff-vs {name}: no such feature; the features are {', '.join(map(str, names))}")
    return names.index(name)


def raw_column(data: Prepared, rows: slice, column: int) -> np.ndarray:
    """One raw (not standardized) feature of a part, read a block at a time."""
    step = 1 << 18
    return np.concatenate([np.asarray(data.source.table.read(a, min(a + step, rows.stop)).features[:, column])
                           for a in range(rows.start, rows.stop, step)]).astype(np.float32)
