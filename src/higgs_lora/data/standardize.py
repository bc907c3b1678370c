"""Z-scores with train-only statistics (population std, zero std -> 1), as the notebook does."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK = 1 << 20  # rows per pass: bounds the float64 temporaries to ~ 28 x 8 MB


@dataclass
class Standardizer:
    mean: np.ndarray  # float32 [n_features]
    std: np.ndarray   # float32 [n_features], never 0

    @classmethod
    def fit(cls, features: np.ndarray) -> "Standardizer":
        # Accumulate in float64 chunk by chunk: exact enough on 11M rows without a float64 copy.
        n = features.shape[0]
        if n == 0:
            raise ValueError("cannot fit a standardizer on zero rows")
        total = np.zeros(features.shape[1])
        for i in range(0, n, _CHUNK):
            total += features[i:i + _CHUNK].sum(axis=0, dtype=np.float64)
        mean = total / n
        sq = np.zeros(features.shape[1])
        for i in range(0, n, _CHUNK):
            d = features[i:i + _CHUNK].astype(np.float64) - mean
            sq += np.einsum("ij,ij->j", d, d)
        std = np.sqrt(sq / n)
        std[std == 0] = 1.0
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def transform(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(x - mean) / std as float32, chunked so no float64 copy of the whole table is made."""
        out = np.empty(features.shape, dtype=np.float32) if out is None else out
        for i in range(0, features.shape[0], _CHUNK):
            np.subtract(features[i:i + _CHUNK], self.mean, out=out[i:i + _CHUNK])
            np.divide(out[i:i + _CHUNK], self.std, out=out[i:i + _CHUNK])
        return out

    def to_dict(self) -> dict:
        return dict(mean=self.mean.tolist(), std=self.std.tolist())
