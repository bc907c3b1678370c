"""Read a numeric table (.csv, .csv.gz, .parquet) into float32 features and uint8 labels, through the cache.

sniff.py says what the file is, csvfile.py and parquet.py turn it into Arrow tables piece by piece
(gzip inflated in a thread of its own, pieces parsed by a pool: data/gzip_stream.py, csvfile.py),
this module checks each piece (labels 0/1, finite float32 features, naming the line and column of a
bad value) and gathers the rows; cache.py keeps the result for the next run. Values are parsed as
float64 and then cast to float32, as the notebook's pandas.read_csv + to_numpy(float32) does, so the
arrays are bit-identical to the notebook's (parsing float32 directly measured no faster).

The rows go into arrays grown with ndarray.resize: for big blocks that is realloc -> mremap on Linux,
which moves pages instead of copying them, so the peak stays about 1x the final arrays.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from higgs_lora.data import cache
from higgs_lora.data.layout import Layout
from higgs_lora.data.sniff import file_version, fingerprint_file, read_layout
from higgs_lora.data.table import Table
from higgs_lora.errors import UserError

if TYPE_CHECKING:
    import pyarrow as pa

# The parsers (csvfile, parquet: PyArrow) are imported when a file is parsed, not when its cache entry is
# found: a cached `prepare` then starts in about the time NumPy takes to import.

__all__ = ["fingerprint_file", "load_table", "prepare", "iter_chunks", "feature_names"]


def load_table(path: str | os.PathLike, *, label_column: int | str = 0, cache_dir: str | os.PathLike | None = None,
               use_cache: bool = True, progress: bool = False) -> Table:
    """The table in `path`. Features float32 [rows, n] (a read-only memmap when it comes from the cache),
    labels uint8 0/1. `label_column`: 0-based index (negative counts from the end) or header name.
    Raises UserError, naming the file and line, for anything wrong with the file; then no cache is left."""
    return _load(Path(path), label_column=label_column, cache_dir=cache_dir, use_cache=use_cache,
                 progress=progress)[0]


def prepare(path: str | os.PathLike, *, label_column: int | str = 0, cache_dir: str | os.PathLike | None = None,
            use_cache: bool = True, progress: bool = False) -> dict:
    """Build (or find) the cache of `path` and summarize it: rows, columns, signal, background,
    signal_fraction, seconds, cache_path (None without a cache), from_cache."""
    table, info = _load(Path(path), label_column=label_column, cache_dir=cache_dir, use_cache=use_cache,
                        progress=progress)
    signal = int(np.count_nonzero(table.labels))
    return dict(rows=table.rows, columns=table.n_features, signal=signal, background=table.rows - signal,
                signal_fraction=signal / table.rows, seconds=info["seconds"], cache_path=info["cache_path"],
                from_cache=info["from_cache"])


def iter_chunks(path: str | os.PathLike, *, label_column: int | str | None = 0, chunk_rows: int = 1 << 20,
                progress: bool = False):
    """Stream a file of any size: yield (features float32 [k, n], labels uint8 [k] or None) in chunks of
    about `chunk_rows` rows, validated like load_table, without caching or holding the whole table.
    `label_column=None`: the file holds features only."""
    path = Path(path)
    layout = read_layout(path, label_column)
    from higgs_lora.data.csvfile import csv_tables
    from higgs_lora.data.parquet import parquet_tables
    tables = (parquet_tables(path, layout, progress=progress) if layout.kind == "parquet"
              else csv_tables(path, layout, progress=progress))
    unit = "row" if layout.kind == "parquet" else "line"
    rows, any_rows = _Rows(len(layout.feature_columns)), False
    for table, first_line in tables:
        _store(path, table, rows, first_line=first_line, layout=layout, unit=unit)
        if rows.n >= chunk_rows:
            features, labels = rows.finish()
            yield features, (labels if layout.label is not None else None)
            rows, any_rows = _Rows(len(layout.feature_columns)), True
    if rows.n:
        features, labels = rows.finish()
        yield features, (labels if layout.label is not None else None)
    elif not any_rows:
        raise UserError(f"{path}: no data rows")


def _load(path: Path, *, label_column, cache_dir, use_cache, progress) -> tuple[Table, dict]:
    if label_column is None:  # only the streaming reader takes feature-only files
        raise ValueError("load_table needs a label column; use iter_chunks(label_column=None) for features only")
    t0 = time.perf_counter()
    fingerprint = fingerprint_file(path)
    version = file_version(path, fingerprint)  # what the cache checks: any edit since, even with the mtime set back
    layout = read_layout(path, label_column)
    key = hashlib.sha256(f"{fingerprint}|label={layout.label}|v{cache.CACHE_VERSION}".encode()).hexdigest()[:16]
    roots = [Path(cache_dir)] if cache_dir is not None else cache.default_cache_roots(path)
    entry_name = f"{path.name}-{key}"

    if use_cache:
        for root in roots:
            cached = cache.open_entry(root / entry_name, fingerprint=fingerprint, layout=layout, version=version)
            if cached is not None:
                features, labels, meta = cached
                table = Table(features=features, labels=labels, feature_names=meta["feature_names"],
                              source=str(path), fingerprint=fingerprint)
                return table, dict(seconds=time.perf_counter() - t0, cache_path=str(root / entry_name),
                                   from_cache=True)

    if layout.kind == "parquet":
        features, labels = _read_parquet(path, layout, progress=progress)
    else:
        features, labels = _read_csv(path, layout, progress=progress)
    table = Table(features=features, labels=labels, feature_names=layout.feature_names(), source=str(path),
                  fingerprint=fingerprint)
    cache_path = None
    if use_cache:
        meta = dict(format=cache.CACHE_FORMAT, version=cache.CACHE_VERSION, source=str(path.resolve()), fingerprint=fingerprint,
                    file_version=version,
                    rows=table.rows, n_features=table.n_features, feature_names=table.feature_names,
                    label_column=layout.label, signal=int(np.count_nonzero(labels)),
                    parse_seconds=round(time.perf_counter() - t0, 3))
        entry = cache.write_entry(roots, entry_name, features=features, labels=labels, meta=meta,
                             explicit=cache_dir is not None or len(roots) == 1)
        if entry is not None:
            cache_path = str(entry)
            mapped = cache.open_entry(entry, fingerprint=fingerprint, layout=layout, version=version)
            if mapped is not None:  # serve the page-cache copy and free the parsed arrays
                table.features, table.labels, _ = mapped
                del features, labels
    return table, dict(seconds=time.perf_counter() - t0, cache_path=cache_path, from_cache=False)


class _Rows:
    """Features and labels appended block by block. Grown with ndarray.resize, which reallocs; glibc
    serves big blocks with mmap and grows them with mremap, moving pages rather than copying them,
    so growing never holds two copies of the data. resize zero-fills (touches) the new part, so the
    capacity is what counts: growing by 1/8 at a time keeps it within 1.125x the final rows."""

    def __init__(self, n_features: int):
        self.n = 0
        self.features = np.empty((1 << 16, n_features), dtype=np.float32)
        self.labels = np.empty(1 << 16, dtype=np.uint8)

    def extend(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of the next `rows` rows, to be filled in (valid until the next call)."""
        need = self.n + rows
        if need > len(self.labels):
            cap = max(need, len(self.labels) + len(self.labels) // 8)
            self.features.resize((cap, self.features.shape[1]), refcheck=False)
            self.labels.resize(cap, refcheck=False)
        start, self.n = self.n, need
        return self.features[start:need], self.labels[start:need]

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        self.features.resize((self.n, self.features.shape[1]), refcheck=False)
        self.labels.resize(self.n, refcheck=False)
        return self.features, self.labels


def feature_names(path: str | os.PathLike, *, label_column=0) -> list[str]:
    """The feature names of a file (its header's, or the default ones), without reading its rows."""
    return read_layout(Path(path), label_column).feature_names()


def _read_csv(path: Path, layout: Layout, *, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = _Rows(len(layout.feature_columns))
    from higgs_lora.data.csvfile import csv_tables
    for table, first_line in csv_tables(path, layout, progress=progress):
        _store(path, table, rows, first_line=first_line, layout=layout)
    if rows.n == 0:
        raise UserError(f"{path}: no data rows" + (" (only a header line)" if layout.header_lines else ""))
    return rows.finish()


def _read_parquet(path: Path, layout: Layout, *, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = _Rows(len(layout.feature_columns))
    from higgs_lora.data.parquet import parquet_tables
    for table, first_row in parquet_tables(path, layout, progress=progress):
        _store(path, table, rows, first_line=first_row, layout=layout, unit="row")
    if rows.n == 0:
        raise UserError(f"{path}: no data rows")
    return rows.finish()


def _store(path: Path, table: pa.Table, rows: _Rows, *, first_line: int, layout: Layout, unit: str = "line") -> None:
    """Check one parsed piece (labels 0/1, finite float32 features) and append it; `first_line` is the
    file line (or Parquet row, with unit='row') of its first row."""
    n = table.num_rows
    features, labels = rows.extend(n)
    if layout.label is not None:
        y = np.concatenate(list(_float64_values(table.column(layout.label))))
        bad = np.flatnonzero((y != 0) & (y != 1))
        if len(bad):
            raise UserError(f"{path}: {unit} {first_line + bad[0]}, {layout.column_name(layout.label)}: label is "
                            f"{float(y[bad[0]]):g}; labels must be 0 or 1")
        labels[:] = y
    # Column by column into a [features, rows] block, then one transposing copy: writing each column
    # straight into the row-major array (a 112-byte stride) measured 3x slower.
    by_column = np.empty((len(layout.feature_columns), n), dtype=np.float32)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: reported just below
        for j, c in enumerate(layout.feature_columns):
            start = 0
            for values in _float64_values(table.column(c)):
                by_column[j, start:start + len(values)] = values
                start += len(values)
    features[:] = by_column.T
    finite = np.isfinite(features)
    if not finite.all():
        r, j = np.argwhere(~finite)[0]
        c = layout.feature_columns[j]
        value = float(np.concatenate(list(_float64_values(table.column(c))))[r])
        why = "too large for float32" if np.isfinite(value) else "not a finite number"
        raise UserError(f"{path}: {unit} {first_line + r}, {layout.column_name(c)}: {value!r} is {why}")


def _float64_values(column: pa.ChunkedArray):
    """NumPy views of a float64 column without nulls, chunk by chunk. Not Arrow's to_numpy: that imports
    pandas when it is installed (~0.4 s and ~60 MB in every process that reads a file)."""
    import pyarrow as pa
    for chunk in column.chunks:
        assert chunk.type == pa.float64() and chunk.null_count == 0
        yield np.frombuffer(chunk.buffers()[1], dtype=np.float64, count=len(chunk), offset=8 * chunk.offset)
