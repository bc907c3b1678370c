"""Read a table file (CSV, .csv.gz, Parquet, ROOT) into float32 features, uint8 labels and optional
float32 event weights, through the cache.

sniff.py says what the file is, its reader (data/readers/: one module per format) says what columns it
has and yields them block by block; this module is the one place that checks the values (labels 0/1,
finite float32 features, finite weights, naming the file, line/row/entry and column/branch of a bad
value) and gathers the rows; cache.py keeps the result for the next run. CSV values are parsed as
float64 and then cast to float32, as the notebook's pandas.read_csv + to_numpy(float32) does, so the
arrays are bit-identical to the notebook's (parsing float32 directly measured no faster).

The rows go into arrays grown with ndarray.resize: for big blocks that is realloc -> mremap on Linux,
which moves pages instead of copying them, so the peak stays about 1x the final arrays.

Weights: `weight` is an expression, a product of columns and numbers ("genWeight*sf_lep*0.5"), evaluated
in float64 and stored as float32. Weights that all come out exactly 1 are stored as None: then training
and metrics compute bit for bit what they compute without weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from higgs_lora.data import cache, readers
from higgs_lora.data.gzip_stream import read_ahead
from higgs_lora.data.layout import Layout
from higgs_lora.data.readers import split_tree
from higgs_lora.data.rows import Rows
from higgs_lora.data.sniff import file_version, fingerprint_file
from higgs_lora.data.table import Table
from higgs_lora.errors import UserError

# The parsers (csvfile, parquet: PyArrow; root: uproot) are imported when a file is parsed, not when its
# cache entry is found: a cached `prepare` then starts in about the time NumPy takes to import.

__all__ = ["fingerprint_file", "load_table", "prepare", "iter_chunks", "stream_rows", "feature_names", "split_tree"]


def load_table(path: str | os.PathLike, *, label_column: int | str | None = 0, features=None, weight: str | None = None,
               tree: str | None = None, label_value: int | None = None, cache_dir: str | os.PathLike | None = None,
               use_cache: bool = True, progress: bool = False) -> Table:
    """The table in `path` ("FILE.root:TREE" names a ROOT tree; the one tree of a file is taken without).
    Features float32 [rows, n] (a read-only memmap when it comes from the cache), labels uint8 0/1.

    `label_column`: 0-based index (negative counts from the end) or name; None with `label_value` 0 or 1:
    a sample file, every row of which has that label. `features`: names, glob patterns (matching
    floating-point columns) or "@FILE" (one name a line), as a list or a comma-separated string; default:
    every column but the label and the weight's (ROOT: every flat floating-point branch). `weight`: a
    product of columns and numbers; the table's `weights` (float32, None when all are exactly 1) and
    `weight_expr`. Raises UserError, naming the file and line/row/entry, for anything wrong with the
    file; then no cache is left."""
    return _load(path, label_column=label_column, features=features, weight=weight, tree=tree,
                 label_value=label_value, cache_dir=cache_dir, use_cache=use_cache, progress=progress)[0]


def prepare(path: str | os.PathLike, *, label_column: int | str | None = 0, features=None, weight: str | None = None,
            tree: str | None = None, label_value: int | None = None, cache_dir: str | os.PathLike | None = None,
            use_cache: bool = True, progress: bool = False) -> dict:
    """Build (or find) the cache of `path` and summarize it: rows, columns, signal, background,
    signal_fraction, seconds, cache_path (None without a cache), from_cache."""
    table, info = _load(path, label_column=label_column, features=features, weight=weight, tree=tree,
                        label_value=label_value, cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    signal = int(np.count_nonzero(table.labels))
    return dict(rows=table.rows, columns=table.n_features, signal=signal, background=table.rows - signal,
                signal_fraction=signal / table.rows, seconds=info["seconds"], cache_path=info["cache_path"],
                from_cache=info["from_cache"])


def iter_chunks(path: str | os.PathLike, *, label_column: int | str | None = 0, features=None, weight: str | None = None,
                tree: str | None = None, label_value: int | None = None, chunk_rows: int = 1 << 20,
                progress: bool = False):
    """Stream a file of any size: yield Rows (features float32 [k, n], labels uint8 [k] or None, weights
    float32 [k] or None) in chunks of about `chunk_rows` rows, in file order, validated like load_table,
    without caching or holding the whole table. `label_column=None` without `label_value`: features only."""
    path, tree = split_tree(path, tree)
    layout = readers.read_layout(path, label_column, features=features, weight=weight, tree=tree)
    weighted = weight is not None
    rows, any_rows = _Rows(len(layout.feature_columns), weighted=weighted), False
    for block in readers.blocks(path, layout, progress=progress):
        _store(path, block, rows, layout=layout, label_value=label_value)
        if rows.n >= chunk_rows:
            yield rows.finish(labelled=layout.label is not None or label_value is not None)
            rows, any_rows = _Rows(len(layout.feature_columns), weighted=weighted), True
    if rows.n:
        yield rows.finish(labelled=layout.label is not None or label_value is not None)
    elif not any_rows:
        raise UserError(f"{layout.where(path)}: no data rows")


def stream_rows(path: str | os.PathLike, *, label_column: int | str | None = 0, features=None, weight: str | None = None,
                tree: str | None = None, label_value: int | None = None, chunk_rows: int = 1 << 16, block: int = 1,
                parse_rows: int | None = None, cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                ahead: int = 2, progress: bool = False) -> tuple[Path | None, object]:
    """(cache entry or None, chunks): the rows of `path` as Rows chunks for a forward pass, in file order.

    From the file's cache entry when one exists (memory-mapped slices: nothing is parsed), else parsed and
    checked as iter_chunks does, in a thread of its own up to `ahead` chunks ahead of the caller, so that
    the caller's inference of one chunk overlaps the reading of the next (`ahead=0`: in the caller's
    thread, reading and inference take turns). No cache is written (predict streams files of any size).

    Every chunk but the last has a multiple of `block` rows, at most `chunk_rows` rounded up to `block`
    (the parser works in chunks of about `parse_rows`, default `chunk_rows`, cut into such ones).
    A forward pass in fixed batches of `block` rows from each chunk's start is then aligned to row 0 of
    the file, so it runs on the same batches as one over the whole table in memory: float32 GEMM rounding
    depends on a batch's row count, and the parser's chunk boundaries differ from the cache's, so this is
    what makes the results equal to the bit whichever way the rows came."""
    step = -(-max(1, chunk_rows) // block) * block
    if use_cache and (label_column is not None or label_value in (0, 1)):
        entry = _Entry(path, label_column=label_column, features=features, weight=weight, tree=tree,
                       label_value=label_value, cache_dir=cache_dir)
        table = entry.find()
        if table is not None:
            return entry.found, (table.read(i, min(i + step, table.rows)) for i in range(0, table.rows, step))
    parsed = aligned(iter_chunks(path, label_column=label_column, features=features, weight=weight, tree=tree,
                                 label_value=label_value, chunk_rows=parse_rows or step, progress=progress), block)
    parsed = (rows.slice(i, min(i + step, len(rows))) for rows in parsed for i in range(0, len(rows), step))
    return None, (read_ahead(parsed, depth=ahead) if ahead else parsed)


def aligned(chunks, block: int):
    """`chunks` (Rows) re-cut so that every chunk but the last has a multiple of `block` rows: a chunk's
    tail of fewer than `block` rows is joined with the head of the next one (copying under `block` rows,
    never a whole chunk)."""
    carry = None
    for rows in chunks:
        if carry is not None:
            need = block - len(carry)
            if len(rows) < need:
                carry = Rows.concat([carry, rows])
                continue
            yield Rows.concat([carry, rows.slice(0, need)])
            rows, carry = rows.slice(need, len(rows)), None
        cut = len(rows) // block * block
        if cut:
            yield rows.slice(0, cut)
        if cut < len(rows):
            carry = rows.slice(cut, len(rows))
    if carry is not None:
        yield carry


def _load(path, *, label_column, features, weight, tree, label_value, cache_dir, use_cache,
          progress) -> tuple[Table, dict]:
    if label_column is None and label_value not in (0, 1):  # only the streaming reader takes feature-only files
        raise ValueError("load_table needs a label column or a label_value of 0 or 1; "
                         "use iter_chunks(label_column=None) for features only")
    t0 = time.perf_counter()
    entry = _Entry(path, label_column=label_column, features=features, weight=weight, tree=tree,
                   label_value=label_value, cache_dir=cache_dir)
    if use_cache:
        found = entry.find()
        if found is not None:
            return found, dict(seconds=time.perf_counter() - t0, cache_path=str(entry.found), from_cache=True)
    path, layout, selection, fingerprint, version, roots = (entry.path, entry.layout, entry.selection,
                                                            entry.fingerprint, entry.version, entry.roots)
    entry_name, table_of = entry.name, entry.table_of
    rows = _Rows(len(layout.feature_columns), weighted=weight is not None)
    for block in readers.blocks(path, layout, progress=progress):
        if rows.n == 0 and block.total:
            rows.reserve(block.total)
        _store(path, block, rows, layout=layout, label_value=label_value)
    if rows.n == 0:
        raise UserError(f"{layout.where(path)}: no data rows" + (" (only a header line)" if layout.header_lines else ""))
    block = rows.finish(labelled=True)
    features, labels, weights = block.features, block.labels, block.weights
    table = table_of(features, labels, weights, layout.feature_names())
    cache_path = None
    if use_cache:
        meta = dict(format=cache.CACHE_FORMAT, version=cache.CACHE_VERSION, source=str(path.resolve()), fingerprint=fingerprint,
                    file_version=version,
                    rows=table.rows, n_features=table.n_features, feature_names=table.feature_names,
                    label_column=layout.label, signal=int(np.count_nonzero(labels)), selection=selection,
                    weighted=weights is not None, parse_seconds=round(time.perf_counter() - t0, 3))
        extra = {"weights": weights} if weights is not None else {}
        written = cache.write_entry(roots, entry_name, features=features, labels=labels, meta=meta,
                                    explicit=cache_dir is not None or len(roots) == 1, extra=extra)
        if written is not None:
            cache_path = str(written)
            mapped = _open_cached(written, fingerprint=fingerprint, layout=layout, selection=selection, version=version)
            if mapped is not None:  # serve the page-cache copy and free the parsed arrays
                table.features, table.labels, table.weights, _ = mapped
                del features, labels, weights, block
    return table, dict(seconds=time.perf_counter() - t0, cache_path=cache_path, from_cache=False)


class _Entry:
    """Where the cache entry of a file's selection lives and what it must match: the file's fingerprint
    and version, its layout and the selection (features, weight, tree, label value)."""

    def __init__(self, path, *, label_column, features, weight, tree, label_value, cache_dir):
        self.path, tree = split_tree(path, tree)
        self.fingerprint = fingerprint_file(self.path)
        # what the cache checks: any edit since, even with the mtime set back
        self.version = file_version(self.path, self.fingerprint)
        self.layout = readers.read_layout(self.path, label_column, features=features, weight=weight, tree=tree)
        self.selection = _selection(self.layout, weight, label_value)
        key = hashlib.sha256(f"{self.fingerprint}|label={self.layout.label}{self.selection}|v{cache.CACHE_VERSION}"
                             .encode()).hexdigest()[:16]
        self.roots = [Path(cache_dir)] if cache_dir is not None else cache.default_cache_roots(self.path)
        self.name = f"{self.path.name}-{key}"
        self.weight_expr = None if weight is None else str(weight)
        self.found: Path | None = None

    def table_of(self, features, labels, weights, names) -> Table:
        return Table(features=features, labels=labels, feature_names=names, source=self.layout.where(self.path),
                     fingerprint=self.fingerprint, weights=weights, weight_expr=self.weight_expr)

    def find(self) -> Table | None:
        """The table from the first complete entry of this very file and selection, memory-mapped; else None."""
        for root in self.roots:
            cached = _open_cached(root / self.name, fingerprint=self.fingerprint, layout=self.layout,
                                  selection=self.selection, version=self.version)
            if cached is not None:
                features, labels, weights, meta = cached
                self.found = root / self.name
                return self.table_of(features, labels, weights, meta["feature_names"])
        return None


def _selection(layout: Layout, weight, label_value) -> str:
    """What of the file a cache entry holds beyond the label column; empty for a whole table as before
    (its cache key stays what it was)."""
    parts = dict(features=layout.features, weight=None if weight is None else str(weight), tree=layout.tree,
                 label_value=label_value)
    parts = {k: v for k, v in parts.items() if v is not None}
    return "|" + json.dumps(parts, sort_keys=True) if parts else ""


def _open_cached(entry: Path, *, fingerprint: str, layout: Layout, selection: str, version: str | None = None):
    """(features, labels, weights or None, meta) from a complete entry of this very selection and version of
    the file; else None."""
    cached = cache.open_entry(entry, fingerprint=fingerprint, layout=layout, version=version)
    if cached is None:
        return None
    features, labels, meta = cached
    if meta.get("selection", "") != selection:
        return None
    weights = None
    if meta.get("weighted"):
        try:
            weights = np.load(entry / "weights.npy", mmap_mode="r")
        except (OSError, ValueError):
            return None
        if weights.dtype != np.float32 or weights.shape != labels.shape or \
                cache.checksum(weights) != meta.get("checksums", {}).get("weights.npy"):
            return None
    return features, labels, weights, meta


class _Rows:
    """Features, labels and weights appended block by block. Grown with ndarray.resize, which reallocs;
    glibc serves big blocks with mmap and grows them with mremap, moving pages rather than copying them,
    so growing never holds two copies of the data. resize zero-fills (touches) the new part, so the
    capacity is what counts: growing by 1/8 at a time keeps it within 1.125x the final rows."""

    def __init__(self, n_features: int, *, weighted: bool = False):
        self.n = 0
        self.features = np.empty((1 << 16, n_features), dtype=np.float32)
        self.labels = np.empty(1 << 16, dtype=np.uint8)
        self.weights = np.empty(1 << 16, dtype=np.float32) if weighted else None
        self._scratch = None

    def scratch(self, n_columns: int, n: int) -> np.ndarray:
        """A [n_columns, n] float32 buffer for one block, reused from block to block: a fresh one each
        time costs its page faults again (measured 0.2-0.3 s of CPU a million ROOT rows on a busy machine)."""
        if self._scratch is None or self._scratch.shape[1] < n:
            self._scratch = np.empty((n_columns, n), dtype=np.float32)
        return self._scratch[:, :n]

    def reserve(self, rows: int) -> None:
        """Room for `rows` rows before any is stored, when the file says how many it has (ROOT): fresh,
        untouched arrays, where growing to that size zero-filled and moved pages (measured 0.19 s a
        million rows of 28 features)."""
        assert self.n == 0
        self.features = np.empty((rows, self.features.shape[1]), dtype=np.float32)
        self.labels = np.empty(rows, dtype=np.uint8)
        if self.weights is not None:
            self.weights = np.empty(rows, dtype=np.float32)

    def extend(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Views of the next `rows` rows, to be filled in (valid until the next call)."""
        need = self.n + rows
        if need > len(self.labels):
            cap = max(need, len(self.labels) + len(self.labels) // 8)
            self.features.resize((cap, self.features.shape[1]), refcheck=False)
            self.labels.resize(cap, refcheck=False)
            if self.weights is not None:
                self.weights.resize(cap, refcheck=False)
        start, self.n = self.n, need
        return (self.features[start:need], self.labels[start:need],
                None if self.weights is None else self.weights[start:need])

    def finish(self, *, labelled: bool) -> Rows:
        """The rows gathered; weights None when there are none or every one is exactly 1."""
        self.features.resize((self.n, self.features.shape[1]), refcheck=False)
        self.labels.resize(self.n, refcheck=False)
        weights = self.weights
        if weights is not None:
            weights.resize(self.n, refcheck=False)
            if np.all(weights == 1):
                weights = None
        return Rows(self.features, self.labels if labelled else None, weights)


def feature_names(path: str | os.PathLike, *, label_column=0, features=None, weight: str | None = None,
                  tree: str | None = None) -> list[str]:
    """The feature names of a file (its header's, or the default ones), without reading its rows."""
    path, tree = split_tree(path, tree)
    return readers.read_layout(path, label_column, features=features, weight=weight, tree=tree).feature_names()


def _store(path: Path, block: readers.Block, rows: _Rows, *, layout: Layout, label_value: int | None = None) -> None:
    """Check one block (labels 0/1, finite float32 features and weights) and append it."""
    n, unit, where = block.n, layout.unit, layout.where(path)
    features, labels, weights = rows.extend(n)
    if layout.label is not None:
        y = np.concatenate(block.chunks(layout.label)).astype(np.float64, copy=False)
        bad = np.flatnonzero((y != 0) & (y != 1))
        if len(bad):
            raise UserError(f"{where}: {unit} {block.first + bad[0]}, {layout.column_name(layout.label)}: label is "
                            f"{float(y[bad[0]]):g}; labels must be 0 or 1")
        labels[:] = y
    else:
        labels[:] = label_value or 0
    # Column by column into a [features, rows] block, then one transposing copy: writing each column
    # straight into the row-major array (a 112-byte stride) measured 3x slower.
    by_column = rows.scratch(len(layout.feature_columns), n)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range becomes inf: reported just below
        for j, c in enumerate(layout.feature_columns):
            start = 0
            for values in block.chunks(c):
                by_column[j, start:start + len(values)] = values
                start += len(values)
    features[:] = by_column.T
    finite = np.isfinite(features)
    if not finite.all():
        r, j = np.argwhere(~finite)[0]
        c = layout.feature_columns[j]
        value = float(np.concatenate(block.chunks(c))[r])
        why = "too large for float32" if np.isfinite(value) else "not a finite number"
        raise UserError(f"{where}: {unit} {block.first + r}, {layout.column_name(c)}: {value!r} is {why}")
    if weights is not None:
        weights[:] = _weights(where, block, layout)


def _weights(where: str, block: readers.Block, layout: Layout) -> np.ndarray:
    """The weight of each row of `block`: the product of its weight columns and factor, in float64."""
    w = np.full(block.n, layout.weight_factor, dtype=np.float64)
    for c in layout.weight:
        v = np.concatenate(block.chunks(c)).astype(np.float64, copy=False)
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            raise UserError(f"{where}: {layout.unit} {block.first + bad[0]}, {layout.column_name(c)}: weight factor is "
                            f"{float(v[bad[0]])!r}, not a finite number")
        w *= v
    with np.errstate(over="ignore"):
        w32 = w.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(w32))
    if len(bad):
        raise UserError(f"{where}: {layout.unit} {block.first + bad[0]}: weight {float(w[bad[0]])!r} is too large "
                        "for float32")
    return w32
