"""The rows of `predict`'s output file, in batches of a fixed row count whatever the chunks they were
computed in: the file's row groups (Parquet) are then the same whether the rows came from the cache or
the parser, so the two outputs are equal byte for byte, not only value for value."""
from __future__ import annotations

import numpy as np


class OutputBatches:
    """Columns (name -> 1-D NumPy array) added chunk by chunk, handed out as Arrow tables of exactly
    `rows` rows (the last one: what is left)."""

    def __init__(self, rows: int):
        self.rows = rows
        self._parts: list[dict] = []
        self._n = 0

    def add(self, columns: dict):
        """Add a chunk's columns; yield every full batch it completes."""
        n = len(next(iter(columns.values())))
        start = 0
        while start < n:
            take = min(n - start, self.rows - self._n)
            self._parts.append({k: v[start:start + take] for k, v in columns.items()})
            self._n += take
            start += take
            if self._n == self.rows:
                yield self._take()

    def flush(self):
        """The last, partial batch, if any."""
        if self._n:
            yield self._take()

    def _take(self):
        import pyarrow as pa
        names = list(self._parts[0])
        joined = [np.concatenate([p[k] for p in self._parts]) if len(self._parts) > 1 else self._parts[0][k]
                  for k in names]
        self._parts, self._n = [], 0
        return pa.Table.from_arrays([arrow_array(a) for a in joined], names=names)


def arrow_array(values: np.ndarray):
    """A NumPy array of numbers as an Arrow array, sharing its memory. Not pa.array: that imports pandas
    when it is installed (measured 0.3 s of a `predict` process)."""
    import pyarrow as pa
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
