"""A block of rows: the one type that carries events from the readers to the loop and the metrics.

Every per-event field lives here, so a new one (a weight, the sample an event came from) is added in
this file and the few places that make or consume it, not threaded as one more positional value
through every function between them. Readers yield Rows, a Table and a ShardSet hold and `read` them,
the data sources batch them, the metrics weigh them.

Weights are optional: None means every row weighs 1, and then every code path computes exactly what it
computed before weights existed (a model trained with weights of all ones is bit-identical to one
trained without: the loss is the same mean).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Rows:
    features: np.ndarray                 # float32 [n, n_features], C-contiguous (may be a read-only memmap)
    labels: np.ndarray | None            # uint8 [n], 0/1; None: a file of features only (predict)
    weights: np.ndarray | None = None    # float32 [n], may be negative; None: every row weighs 1
    sample: np.ndarray | None = None     # int16 [n]: index into Table.samples; None: one sample

    def __post_init__(self):
        n = self.features.shape[0] if self.features.ndim == 2 else -1
        if n < 0:
            raise ValueError(f"features must be 2-D [rows, n_features], got shape {self.features.shape}")
        for name in ("labels", "weights", "sample"):
            a = getattr(self, name)
            if a is not None and a.shape != (n,):
                raise ValueError(f"{name} {a.shape} do not match features {self.features.shape}")

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def weighted(self) -> bool:
        return self.weights is not None

    def slice(self, start: int, stop: int) -> Rows:
        """Rows start..stop-1 as views."""
        return Rows(self.features[start:stop], _cut(self.labels, start, stop), _cut(self.weights, start, stop),
                    _cut(self.sample, start, stop))

    def take(self, index: np.ndarray) -> Rows:
        """The rows at `index` (copies), in that order."""
        return Rows(self.features[index], _pick(self.labels, index), _pick(self.weights, index),
                    _pick(self.sample, index))

    def weights_or_ones(self) -> np.ndarray:
        return self.weights if self.weights is not None else np.ones(len(self), dtype=np.float32)

    @staticmethod
    def concat(blocks: list[Rows]) -> Rows:
        """One block of all `blocks`, in order. Weights and sample ids: kept when any block has them (the
        others weigh 1 / are sample 0); labels: None only when every block has none."""
        if not blocks:
            raise ValueError("no blocks to concatenate")
        features = np.concatenate([b.features for b in blocks]) if len(blocks) > 1 else blocks[0].features

        def joined(name, fill, dtype):
            if all(getattr(b, name) is None for b in blocks):
                return None
            return np.concatenate([getattr(b, name) if getattr(b, name) is not None
                                   else np.full(len(b), fill, dtype=dtype) for b in blocks]).astype(dtype, copy=False)
        if any(b.labels is None for b in blocks) and not all(b.labels is None for b in blocks):
            raise ValueError("cannot concatenate blocks with and without labels")
        return Rows(features, joined("labels", 0, np.uint8), joined("weights", 1.0, np.float32),
                    joined("sample", 0, np.int16))


@dataclass(frozen=True)
class SampleInfo:
    """One physics sample of a table (a process: signal or one background), as given on the command line."""
    name: str                      # e.g. "ttbar" (from the file or folder name) or the --data path
    label: int                     # 1 signal, 0 background; -1: labels come from a column (--data)
    files: tuple[str, ...] = ()
    scale: float = 1.0             # the *FACTOR of its spec, multiplied into every weight
    tree: str | None = None        # ROOT: the TTree read
    extra: dict = field(default_factory=dict, compare=False)   # what its reader records (rows, sum of weights, ...)

    def to_dict(self) -> dict:
        return dict(name=self.name, label=self.label, files=list(self.files), scale=self.scale, tree=self.tree,
                    **self.extra)


def _cut(a, start, stop):
    return None if a is None else a[start:stop]


def _pick(a, index):
    return None if a is None else a[index]
