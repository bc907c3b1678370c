"""Data sources: what the pipeline trains on and predicts from, whichever way the rows are stored.

A data source wraps the raw rows (a Table in memory, or a ShardSet on disk: both give rows,
n_features, feature_names, source, fingerprint, labels and read(start, stop)) on a device and does
the four things the pipeline needs: fit the standardizer on a part, cut a part into the batches of
an epoch for fit() (it alone owns the batch size), predict a part, and hand out its first rows.
TableSource (here) holds a part as one tensor on the device; ShardSource (stream.py) streams it from
shard files a window at a time. The pipeline never asks which one it has.

Batch order: both orders are pure functions of (seed, phase, epoch, step), so a checkpoint only needs
the weights, the optimizer's moments and the position to continue bit-for-bit.
"""
from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import numpy as np
import torch

from higgs_lora.config import DEFAULT_PRECISION
from higgs_lora.hardware import distributed
from higgs_lora.data.standardize import Standardizer
from higgs_lora.hardware.runtime import predict_logits
from higgs_lora.data.weighting import AS_READ, Plan, Policy, make_plan


def seed_key(*parts) -> int:
    """A generator seed that is a pure function of `parts` (seed, phase, epoch, ...): no state to checkpoint."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def epoch_permutation(n: int, *, seed: int, phase: str, epoch: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed_key(seed, phase, epoch))
    # Drawn on the CPU so that CPU and GPU runs see the same order; one small transfer per epoch.
    return torch.randperm(n, generator=g).to(device)


class Batch(NamedTuple):
    """One step's rows on the device: standardized features, float labels and, for a weighted part, the
    training weights (weighting.py: mean 1 over the part); w None: every row weighs 1, the plain loss."""
    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor | None = None


def weighted_loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
                               ) -> torch.Tensor:
    """[Σ w·loss, Σ w·correct, Σ w] (float64) of a part's rows; w None: each row weighs 1, and the sums are
    then exactly today's unweighted ones."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum")
    hit = (logits > 0) == (labels > 0.5)
    if weights is None:
        return torch.stack([loss.double(), hit.sum().double(),
                            torch.tensor(float(labels.shape[0]), dtype=torch.float64, device=labels.device)])
    return torch.stack([loss.double(), (hit * weights).double().sum(), weights.double().sum()])


class TensorData:
    """A part held as one tensor on the device, cut into batches for fit(). Every rank draws the same
    permutation each epoch and takes its slice of each global batch (and of its weights), so the global
    batch is `batch_size` for any world size. `weights`: the training weights (weighting.Plan.apply) or None."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 weights: torch.Tensor | None = None):
        if features.shape[0] != labels.shape[0]:
            raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
        if weights is not None and weights.shape != labels.shape:
            raise ValueError(f"weights {tuple(weights.shape)} and labels {tuple(labels.shape)} do not match")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.features, self.labels, self.weights, self.batch_size = features, labels, weights, batch_size
        self.rows = features.shape[0]
        self.steps_per_epoch = math.ceil(self.rows / batch_size)
        self.exact_resume = True  # the order does not depend on the number of processes

    def describe(self) -> str | None:
        return None  # nothing to say: every process holds the whole part

    def batches(self, *, seed: int, phase: str, epoch: int, first_step: int = 0):
        rank, world = distributed.world()
        perm = epoch_permutation(self.rows, seed=seed, phase=phase, epoch=epoch, device=self.features.device)
        for step in range(first_step, self.steps_per_epoch):
            idx = perm[step * self.batch_size:(step + 1) * self.batch_size][rank::world]
            yield Batch(self.features.index_select(0, idx), self.labels.index_select(0, idx),
                        None if self.weights is None else self.weights.index_select(0, idx))

    def loss_and_accuracy(self, model: torch.nn.Module, *, precision: str) -> tuple[float, float]:
        """Mean loss and accuracy over the part, weighted by its training weights when it has them."""
        logits = predict_logits(model, self.features, precision=precision)
        if self.weights is None:  # the unweighted numbers exactly as before weights existed
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, self.labels).item()
            return loss, ((logits > 0) == (self.labels > 0.5)).float().mean().item()
        sums = weighted_loss_and_accuracy(logits, self.labels, self.weights)
        return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


class DataSource:
    """The rows of a data set on a device; subclasses say how a part is standardized, batched and predicted."""

    def __init__(self, table, device: torch.device):
        self.table, self.device = table, device

    # What the rows are: the same for both kinds.
    rows = property(lambda self: self.table.rows)
    n_features = property(lambda self: self.table.n_features)
    feature_names = property(lambda self: self.table.feature_names)
    source = property(lambda self: self.table.source)
    fingerprint = property(lambda self: self.table.fingerprint)
    labels = property(lambda self: self.table.labels)
    weights = property(lambda self: self.table.weights)   # float32 [rows] or None (every row weighs 1)

    def describe(self) -> str:
        return f"{self.source}  {self.rows:,} rows x {self.n_features} features"

    def fit_standardizer(self, rows: slice) -> Standardizer:
        raise NotImplementedError

    def part(self, rows: slice, standardizer: Standardizer, *, batch_size: int, policy: Policy = AS_READ):
        """The batches of a part for fit() (TensorData or ShardStream), weighted by the part's event weights
        under `policy` (weighting.py)."""
        raise NotImplementedError

    def plan(self, rows: slice, policy: Policy) -> Plan | None:
        """How the rows of a part weigh in training (None: all alike, the unweighted loss). This is where
        event weights enter training: weights of all ones give None here, hence the unweighted loop."""
        weights = self.weights
        return make_plan(None if weights is None else np.asarray(weights[rows]), np.asarray(self.labels[rows]),
                         policy, what=f"{self.source} rows {rows.start:,}..{rows.stop - 1:,}")

    def predict(self, model: torch.nn.Module, rows: slice, standardizer: Standardizer, *,
                precision: str = DEFAULT_PRECISION) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and float labels of every row of a part, in order, on every rank."""
        raise NotImplementedError

    def head(self, rows: slice, standardizer: Standardizer, n: int) -> torch.Tensor:
        """The first n rows of a part, standardized (for checks and speed measurements)."""
        features = self.table.read(rows.start, min(rows.stop, rows.start + n)).features
        return torch.from_numpy(standardizer.transform(features)).to(self.device)


class TableSource(DataSource):
    """A table in memory (or memory-mapped from the cache): parts become tensors on the device."""

    def tensors(self, rows: slice, standardizer: Standardizer) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized features and float labels of a part, on the device."""
        x = torch.from_numpy(standardizer.transform(self.table.features[rows])).to(self.device)
        y = torch.from_numpy(np.asarray(self.table.labels[rows], dtype=np.float32)).to(self.device)
        return x, y

    def fit_standardizer(self, rows: slice) -> Standardizer:
        return Standardizer.fit(self.table.features[rows])

    def part(self, rows: slice, standardizer: Standardizer, *, batch_size: int, policy: Policy = AS_READ
             ) -> TensorData:
        plan, weights = self.plan(rows, policy), self.weights
        w = None if plan is None else torch.from_numpy(
            plan.apply(None if weights is None else weights[rows], np.asarray(self.labels[rows]))).to(self.device)
        return TensorData(*self.tensors(rows, standardizer), batch_size=batch_size, weights=w)

    def predict(self, model, rows, standardizer, *, precision=DEFAULT_PRECISION):
        x, y = self.tensors(rows, standardizer)
        return predict_logits(model, x, precision=precision), y
