"""Read a numeric table (.csv, .csv.gz, .parquet) into float32 features and uint8 labels, with a cache.

The CSV path: one thread inflates gzip with ISA-L and cuts the text into 8 MiB pieces, each ending at a
line break (data/gzip_stream.py), while a pool of threads, one per usable core, parses them with PyArrow
and converts them to float32 rows; the calling thread checks and appends them in order. Cutting the
pieces ourselves keeps memory bounded and tells us the file line of every row, which PyArrow's own
errors do not (no row for a conversion error, none at all when parsing in parallel). Values are
parsed as float64 and then cast to float32, as the notebook's pandas.read_csv + to_numpy(float32)
does, so the arrays are bit-identical to the notebook's (parsing float32 directly measured no faster).

The rows go into arrays grown with ndarray.resize: for big blocks that is realloc -> mremap on Linux,
which moves pages instead of copying them, so the peak stays about 1x the final arrays.

The cache is a directory of memory-mappable .npy files (features.npy, labels.npy, meta.json) keyed by
the file's fingerprint and the label column; it is built under a temporary name and renamed, so an
entry is complete or absent. Anything off about an entry (missing file, wrong size, bad meta) makes
it be rebuilt.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from higgs_lora.data import gzip_stream
from higgs_lora.data.table import Table, default_feature_names
from higgs_lora.errors import UserError
from higgs_lora.hardware import usable_cores

log = logging.getLogger(__name__)

CACHE_FORMAT = "higgs-lora-cache"
CACHE_VERSION = 1
PIECE_BYTES = 8 << 20           # text handed to PyArrow at once (it splits it into 1 MiB blocks per thread)
PARQUET_BATCH_ROWS = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


# ---------------------------------------------------------------------------------------------- public

def fingerprint_file(path: str | os.PathLike) -> str:
    """Size + mtime (ns) + SHA-256 of the first and last MiB, as 32 hex digits; costs two 1 MiB reads.

    Enough in practice: any rewrite of the file (re-download, re-export, truncation, append) changes
    its size or mtime, and the two hashed ends catch a same-size replacement whose mtime was kept
    (cp -p, rsync -t), since headers and tails of different exports differ. Not caught: an edit in
    the middle that keeps the size and then forges the mtime back; delete the cache entry by hand
    after doing that. Hashing the whole 2.6 GB HIGGS file instead would read it all on every load,
    seconds where a reload from the cache takes milliseconds."""
    path = Path(path)
    st = _stat(path)
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with _open_binary(path) as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:32]


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
    layout = _layout(path, label_column)
    tables = (_parquet_tables(path, layout, progress=progress) if layout.kind == "parquet"
              else _csv_tables(path, layout, progress=progress))
    unit = "row" if layout.kind == "parquet" else "line"
    rows, any_rows = _Rows(len(layout.feature_columns)), False
    for table, first_line, converted in tables:
        _store(path, table, rows, first_line=first_line, layout=layout, unit=unit, converted=converted)
        if rows.n >= chunk_rows:
            features, labels = rows.finish()
            yield features, (labels if layout.label is not None else None)
            rows, any_rows = _Rows(len(layout.feature_columns)), True
    if rows.n:
        features, labels = rows.finish()
        yield features, (labels if layout.label is not None else None)
    elif not any_rows:
        raise UserError(f"{path}: no data rows")


def default_cache_roots(path: str | os.PathLike) -> list[Path]:
    """Where the cache of `path` may go, in order of preference: $HIGGS_LORA_CACHE alone if set, else a
    .higgs-lora-cache/ beside the data, then ~/.cache/higgs-lora ($XDG_CACHE_HOME respected)."""
    if os.environ.get("HIGGS_LORA_CACHE"):
        return [Path(os.environ["HIGGS_LORA_CACHE"])]
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "higgs-lora"
    return [Path(path).resolve().parent / ".higgs-lora-cache", home_cache]


# ------------------------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class _Layout:
    kind: str                   # "csv", "gzip" (CSV inside) or "parquet"
    n_columns: int
    names: list[str] | None     # header names (all columns), or None without a header
    label: int | None           # 0-based index of the label column; None: every column is a feature

    @property
    def header_lines(self) -> int:
        return 1 if self.names is not None and self.kind != "parquet" else 0

    @property
    def feature_columns(self) -> list[int]:
        return [c for c in range(self.n_columns) if c != self.label]

    def feature_names(self) -> list[str]:
        n = len(self.feature_columns)
        if self.names is None or all(s.strip().isdigit() for s in self.names):  # pandas' default 0..n names
            return default_feature_names(n)
        return [self.names[c] for c in self.feature_columns]

    def column_name(self, c: int) -> str:
        """'column 5' or 'column 5 (lepton_eta)', 1-based like an editor shows it."""
        return f"column {c + 1}" + (f" ({self.names[c]})" if self.names else "")


def _load(path: Path, *, label_column, cache_dir, use_cache, progress) -> tuple[Table, dict]:
    if label_column is None:  # only the streaming reader takes feature-only files
        raise ValueError("load_table needs a label column; use iter_chunks(label_column=None) for features only")
    t0 = time.perf_counter()
    fingerprint = fingerprint_file(path)
    layout = _layout(path, label_column)
    key = hashlib.sha256(f"{fingerprint}|label={layout.label}|v{CACHE_VERSION}".encode()).hexdigest()[:16]
    roots = [Path(cache_dir)] if cache_dir is not None else default_cache_roots(path)
    entry_name = f"{path.name}-{key}"

    if use_cache:
        for root in roots:
            cached = _open_entry(root / entry_name, fingerprint=fingerprint, layout=layout)
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
        meta = dict(format=CACHE_FORMAT, version=CACHE_VERSION, source=str(path.resolve()), fingerprint=fingerprint,
                    rows=table.rows, n_features=table.n_features, feature_names=table.feature_names,
                    label_column=layout.label, signal=int(np.count_nonzero(labels)),
                    parse_seconds=round(time.perf_counter() - t0, 3))
        entry = _write_entry(roots, entry_name, features=features, labels=labels, meta=meta,
                             explicit=cache_dir is not None or len(roots) == 1)
        if entry is not None:
            cache_path = str(entry)
            mapped = _open_entry(entry, fingerprint=fingerprint, layout=layout)
            if mapped is not None:  # serve the page-cache copy and free the parsed arrays
                table.features, table.labels, _ = mapped
                del features, labels
    return table, dict(seconds=time.perf_counter() - t0, cache_path=cache_path, from_cache=False)


# ------------------------------------------------------------------------------------ files and layout

def _stat(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    return st


@contextlib.contextmanager
def _open_binary(path: Path):
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        yield f


@contextlib.contextmanager
def _text_stream(path: Path, kind: str):
    """The CSV bytes of `path` (decompressed when gzip) and the raw file, whose position shows progress."""
    with _open_binary(path) as raw:
        if kind == "gzip":
            with gzip_stream.open_gzip(raw) as f:
                yield f, raw
        else:
            yield raw, raw


def _kind(path: Path) -> str:
    # By content, not name: a .csv that is really gzip, or a Parquet file without the suffix, still reads.
    with _open_binary(path) as f:
        magic = f.read(4)
    if magic[:2] == _GZIP_MAGIC:
        return "gzip"
    if magic == _PARQUET_MAGIC:
        return "parquet"
    return "csv"


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _layout(path: Path, label_column) -> _Layout:
    _stat(path)
    kind = _kind(path)
    if kind == "parquet":
        names, n_columns = _parquet_schema(path)
    else:
        first = _first_line(path, kind)
        fields = first.rstrip("\r\n").split(",")
        numeric = [_is_number(s) for s in fields]
        if all(numeric):
            names = None
        elif not any(numeric):
            names = [s.strip().strip('"') for s in fields]
            names[0] = names[0].lstrip("#").strip()  # HEPMASS writes "# label, f0, ..."
        else:
            bad = numeric.index(False)
            raise UserError(f"{path}: line 1, column {bad + 1}: not a number: {fields[bad]!r} (line 1 has both "
                            "numbers and text, so it is neither a header nor a data row)")
        n_columns = len(fields)
    if n_columns < 2 and label_column is not None:
        raise UserError(f"{path}: line 1 has {n_columns} column; need a label column and at least one feature")
    label = None if label_column is None else _label_index(path, label_column, names, n_columns)
    return _Layout(kind=kind, n_columns=n_columns, names=names, label=label)


def _first_line(path: Path, kind: str) -> str:
    from isal.isal_zlib import error as ZlibError

    try:
        with _text_stream(path, kind) as (f, _):
            line = f.readline(1 << 20)
    except EOFError:
        raise UserError(f"{path}: line 1: the gzip stream ends early (file truncated?)") from None
    except (OSError, ZlibError) as e:  # isal's BadGzipFile is an OSError
        raise UserError(f"{path}: not a readable gzip file ({e})") from None
    if not line.strip():
        raise UserError(f"{path}: empty file" if not line else f"{path}: line 1 is empty; expected a header or data")
    return line.decode("utf-8", errors="replace").lstrip("\ufeff")


def _label_index(path: Path, label_column, names: list[str] | None, n_columns: int) -> int:
    if isinstance(label_column, str) and names is not None and label_column in names:
        return names.index(label_column)
    if isinstance(label_column, str) and re.fullmatch(r"-?\d+", label_column.strip()):
        label_column = int(label_column)  # a command line hands indexes over as text
    if isinstance(label_column, str):
        where = f"its columns are {', '.join(names)}" if names else "it has no header line, so give an index"
        raise UserError(f"{path}: no column named {label_column!r}; {where}")
    if not -n_columns <= label_column < n_columns:
        raise UserError(f"{path}: label column {label_column} is out of range: the file has {n_columns} columns "
                        f"(0-based indexes 0..{n_columns - 1}, or negative from the end)")
    return label_column % n_columns


# ------------------------------------------------------------------------------------------- parsing

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


def _csv_options(n_columns: int, *, threads: bool):
    names = [f"c{i}" for i in range(n_columns)]
    return dict(
        read_options=pacsv.ReadOptions(column_names=names, use_threads=threads, block_size=1 << 20),
        # No quoting: a numeric table has none, and without it every line break ends a row, which
        # is what makes the row -> line arithmetic exact. Empty lines are rows (and errors) for the same reason.
        parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
        # No null spellings: an empty field or "NA" is an error, never a silent NaN.
        convert_options=pacsv.ConvertOptions(column_types={n: pa.float64() for n in names}, null_values=[],
                                             strings_can_be_null=False),
    )


def _pieces(stream, *, skip_first_line: bool):
    """Yield (text, blank_tail): the stream in pieces of about PIECE_BYTES that end at a line break, the
    header line left out, trailing whitespace cut off; blank_tail says whether blank lines were cut.

    Each piece is a slice of a buffer of its own, as pieces are parsed by several threads at once;
    Arrow-owned, because a threaded read_csv frees its input on a worker thread after returning, and
    freeing a Python buffer there needs the GIL, which aborts the process when that races with
    interpreter exit (seen with pyarrow 26 + torch 2.13)."""
    kept = b""  # an unfinished line carried over to the front of the next buffer
    while True:
        buf = pa.allocate_buffer(max(PIECE_BYTES, 2 * len(kept)))  # doubles for a line longer than a piece
        view = memoryview(buf).cast("B")
        view[:len(kept)] = kept
        got = stream.readinto(view[len(kept):])
        end = len(kept) + got
        cut = end if not got else _rfind_newline(view, end) + 1  # at the end, the last line needs no break
        if got and not cut:
            kept = bytes(view[:end])
            continue
        start = 0
        if skip_first_line:
            start, skip_first_line = _find_newline(view, cut) + 1 or cut, False
        stop = cut
        while stop > start and view[stop - 1] in b" \t\r\n":
            stop -= 1
        breaks = bytes(view[stop:cut]).count(b"\n")
        if stop > start or breaks:
            yield buf.slice(start, stop - start), breaks > (1 if stop > start else 0)
        if not got:
            return
        kept = bytes(view[cut:end])


def _rfind_newline(view: memoryview, end: int) -> int:
    """Offset of the last line break before `end`, or -1; looks at the tail first (lines are short)."""
    window = 1 << 16
    while True:
        lo = max(0, end - window)
        i = bytes(view[lo:end]).rfind(b"\n")
        if i >= 0 or lo == 0:
            return lo + i if i >= 0 else -1
        window *= 16


def _find_newline(view: memoryview, end: int) -> int:
    i = bytes(view[:min(end, 1 << 20)]).find(b"\n")
    return i if i >= 0 or end <= 1 << 20 else bytes(view[:end]).find(b"\n")


def _read_csv(path: Path, layout: _Layout, *, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = _Rows(len(layout.feature_columns))
    for table, first_line, converted in _csv_tables(path, layout, progress=progress):
        _store(path, table, rows, first_line=first_line, layout=layout, converted=converted)
    if rows.n == 0:
        raise UserError(f"{path}: no data rows" + (" (only a header line)" if layout.header_lines else ""))
    return rows.finish()


def _csv_tables(path: Path, layout: _Layout, *, progress: bool):
    """Yield (parsed piece as an Arrow table of float64 columns, file line of its first row, its arrays)."""
    from isal.isal_zlib import error as ZlibError
    from tqdm import tqdm

    # One thread inflates and cuts pieces (gzip_stream.read_ahead) while single-threaded read_csv calls
    # parse them in a pool of threads, one per usable core: no core idles, and none pays Arrow's
    # intra-parse threading, which on 2 cores measured 25-45% more CPU time for no gain in speed.
    options = _csv_options(layout.n_columns, threads=False)
    line = 1 + layout.header_lines  # file line of the next row
    size = path.stat().st_size
    workers = _parse_threads()
    with _text_stream(path, layout.kind) as (stream, raw), \
            ThreadPoolExecutor(workers, thread_name_prefix="csv-parse") as pool, \
            tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress, file=sys.stderr) as bar:
        try:
            blank_before = False
            parse = functools.partial(_parse_piece, options=options, layout=layout)
            pieces = gzip_stream.read_ahead(_pieces(stream, skip_first_line=bool(layout.header_lines)))
            for (piece, blank_tail), parsed in _ordered_map(pool, parse, pieces, ahead=workers + 1):
                if not piece.size:
                    blank_before |= blank_tail
                    continue
                if blank_before:  # blank lines are only harmless at the end of the file
                    raise UserError(f"{path}: line {line}: empty line")
                blank_before = blank_tail
                if parsed is None:
                    raise _parse_error(path, piece, first_line=line, layout=layout)
                table, converted = parsed
                yield table, line, converted
                line += table.num_rows
                bar.update(raw.tell() - bar.n)
        except EOFError:
            raise UserError(f"{path}: line {_truncation_line(path)}: the gzip stream ends early "
                            "(file truncated, e.g. an interrupted download)") from None
        except (OSError, ZlibError) as e:
            what = "corrupt gzip data" if layout.kind == "gzip" else "read error"
            raise UserError(f"{path}: {what} near line {line} ({e})") from None


def _parse_threads() -> int:
    return max(1, min(8, usable_cores().n))


def _parse_piece(item, *, options, layout) -> tuple[pa.Table, tuple] | None:
    """The parsed piece and its arrays (_convert), or None when PyArrow rejects it (_parse_error then
    finds the line, in order)."""
    piece, _ = item
    if not piece.size:
        return None
    try:
        table = pacsv.read_csv(pa.BufferReader(piece), **options)
    except pa.ArrowInvalid:
        return None
    return table, _convert(table, layout)


def _ordered_map(pool, fn, items, *, ahead: int):
    """Yield (item, fn(item)) in the order of `items`, with up to `ahead` calls running in `pool`. An
    error raised while taking the next item (a truncated gzip stream) is raised after the items taken
    before it have been yielded, where a sequential loop would have raised it."""
    pending: collections.deque = collections.deque()
    items = iter(items)
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except BaseException:
            while pending:
                item, future = pending.popleft()
                yield item, future.result()
            raise
        pending.append((item, pool.submit(fn, item)))
        if len(pending) > ahead:
            item, future = pending.popleft()
            yield item, future.result()
    while pending:
        item, future = pending.popleft()
        yield item, future.result()


def _store(path: Path, table: pa.Table, rows: _Rows, *, first_line: int, layout: _Layout, unit: str = "line",
           converted: tuple | None = None) -> None:
    """Check one parsed piece (labels 0/1, finite float32 features) and append it; `first_line` is the
    file line (or Parquet row, with unit='row') of its first row; `converted`: _convert(table) if done."""
    x, y = _convert(table, layout) if converted is None else converted
    if y is not None:
        bad = np.flatnonzero((y != 0) & (y != 1))
        if len(bad):
            raise UserError(f"{path}: {unit} {first_line + bad[0]}, {layout.column_name(layout.label)}: label is "
                            f"{float(y[bad[0]]):g}; labels must be 0 or 1")
    finite = np.isfinite(x)
    if not finite.all():
        r, j = np.argwhere(~finite)[0]
        c = layout.feature_columns[j]
        value = float(np.concatenate(list(_float64_values(table.column(c))))[r])
        why = "too large for float32" if np.isfinite(value) else "not a finite number"
        raise UserError(f"{path}: {unit} {first_line + r}, {layout.column_name(c)}: {value!r} is {why}")
    features, labels = rows.extend(table.num_rows)
    features[:] = x
    if y is not None:
        labels[:] = y


def _convert(table: pa.Table, layout: _Layout) -> tuple[np.ndarray, np.ndarray | None]:
    """The float32 features [rows, n] (C order) and float64 labels (None without a label column) of a
    parsed piece. Column by column into a [n, rows] block, then one transposing copy: writing each
    column straight into the row-major array measured 3x slower. Runs in the parse threads."""
    by_column = np.empty((len(layout.feature_columns), table.num_rows), dtype=np.float32)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: _store reports it
        for j, c in enumerate(layout.feature_columns):
            start = 0
            for values in _float64_values(table.column(c)):
                by_column[j, start:start + len(values)] = values
                start += len(values)
    y = None if layout.label is None else np.concatenate(list(_float64_values(table.column(layout.label))))
    return np.ascontiguousarray(by_column.T), y


def _float64_values(column: pa.ChunkedArray):
    """NumPy views of a float64 column without nulls, chunk by chunk. Not Arrow's to_numpy: that imports
    pandas when it is installed (~0.4 s and ~60 MB in every process that reads a file)."""
    for chunk in column.chunks:
        assert chunk.type == pa.float64() and chunk.null_count == 0
        yield np.frombuffer(chunk.buffers()[1], dtype=np.float64, count=len(chunk), offset=8 * chunk.offset)


def _parse_error(path: Path, piece: pa.Buffer, *, first_line: int, layout: _Layout) -> UserError:
    """Find the first line of `piece` that PyArrow rejects (bisecting on lines, so PyArrow itself is the
    judge of what parses) and say what is wrong with it."""
    options = _csv_options(layout.n_columns, threads=False)
    # Line i is piece[starts[i]:starts[i + 1]]; pieces come without their final line break.
    starts = np.concatenate([[0], np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == 10) + 1, [piece.size]]).tolist()
    lo, hi = 0, len(starts) - 1  # the first bad line is among lines lo..hi-1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pacsv.read_csv(pa.BufferReader(piece[starts[lo]:starts[mid]]), **options)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    text = bytes(piece[starts[lo]:starts[lo + 1]]).decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        pacsv.read_csv(pa.BufferReader(piece[starts[lo]:starts[lo + 1]]), **options)
        detail = "cannot be parsed"
    except pa.ArrowInvalid as e:
        detail = str(e)
    fields = text.split(",")
    where = f"{path}: line {first_line + lo}"
    if not text.strip():
        return UserError(f"{where}: empty line")
    if len(fields) != layout.n_columns:
        return UserError(f"{where}: expected {layout.n_columns} columns, found {len(fields)}")
    m = re.search(r"column #(\d+)", detail)
    if m:
        c = int(m.group(1))
        return UserError(f"{where}, {layout.column_name(c)}: not a number: {fields[c]!r}")
    return UserError(f"{where}: {detail}")


def _truncation_line(path: Path) -> int:
    """The line in which a truncated gzip file breaks off: inflate all that can be inflated (isal's
    readers drop their last partial block when they hit the end, so do it by hand) and count lines."""
    from isal import isal_zlib

    lines = 0
    with _open_binary(path) as f:
        d = isal_zlib.decompressobj(wbits=31)
        while data := f.read(1 << 20):
            while data:
                lines += d.decompress(data).count(b"\n")
                data = d.unused_data if d.eof else b""
                if d.eof:  # a new gzip member follows
                    d = isal_zlib.decompressobj(wbits=31)
    return lines + 1


# ------------------------------------------------------------------------------------------- parquet

def _parquet_schema(path: Path) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal)
    bad = [f"{f.name} ({f.type})" for f in schema if not any(t(f.type) for t in numeric)]
    if bad:
        raise UserError(f"{path}: non-numeric columns: {', '.join(bad)}; every column must be a number")
    return list(schema.names), len(schema.names)


def _read_parquet(path: Path, layout: _Layout, *, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = _Rows(len(layout.feature_columns))
    for table, first_row, _ in _parquet_tables(path, layout, progress=progress):
        _store(path, table, rows, first_line=first_row, layout=layout, unit="row")
    if rows.n == 0:
        raise UserError(f"{path}: no data rows")
    return rows.finish()


def _parquet_tables(path: Path, layout: _Layout, *, progress: bool):
    """Yield (a batch as an Arrow table of float64 columns, 1-based row of its first row)."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    row = 1
    try:
        pf = pq.ParquetFile(path)
        with tqdm(total=pf.metadata.num_rows, unit="row", unit_scale=True, desc=path.name, disable=not progress,
                  file=sys.stderr) as bar:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for c, col in enumerate(batch.columns):
                    if col.null_count:
                        r = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                        raise UserError(f"{path}: row {row + r}, {layout.column_name(c)}: missing value")
                table = pa.Table.from_batches([batch]).cast(
                    pa.schema([(n, pa.float64()) for n in batch.schema.names]))
                yield table, row, None
                row += batch.num_rows
                bar.update(batch.num_rows)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None


# --------------------------------------------------------------------------------------------- cache

def _open_entry(entry: Path, *, fingerprint: str, layout: _Layout):
    """(features, labels, meta) memory-mapped from a complete, consistent cache entry; None otherwise."""
    if not (entry / "meta.json").exists():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        rows, n = int(meta["rows"]), int(meta["n_features"])
        if (meta.get("format"), meta.get("version"), meta.get("fingerprint"), meta.get("label_column")) != \
                (CACHE_FORMAT, CACHE_VERSION, fingerprint, layout.label) or len(meta["feature_names"]) != n:
            raise ValueError("meta.json does not describe this file")
        features = np.load(entry / "features.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy", mmap_mode="r")
        for arr, name, dtype, shape in ((features, "features.npy", np.float32, (rows, n)),
                                        (labels, "labels.npy", np.uint8, (rows,))):
            # np.load refuses a file too short for its header's shape; a longer one must be caught here.
            if arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous or \
                    arr.offset + arr.nbytes != (entry / name).stat().st_size:
                raise ValueError(f"{name} is {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {shape}")
        if int(np.count_nonzero(labels)) != meta["signal"] or (rows and labels.max() > 1):  # 11 MB: cheap
            raise ValueError("labels.npy does not match meta.json")
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cache entry %s is damaged (%s); rebuilding it", entry, e)
        return None
    return features, labels, meta


def _write_entry(roots: list[Path], name: str, *, features, labels, meta, explicit: bool) -> Path | None:
    """Write the entry under a temporary name in the first usable root, fsync, rename into place.
    An unwritable default location falls through to the next; an unwritable chosen one is an error."""
    errors = []
    for root in roots:
        try:
            return _write_entry_in(root, name, features=features, labels=labels, meta=meta)
        except OSError as e:
            errors.append(f"{root}: {e.strerror or e}")
    if explicit:
        raise UserError(f"cannot write the cache ({'; '.join(errors)}); choose another cache directory")
    log.warning("no cache written (%s)", "; ".join(errors))
    return None


def _write_entry_in(root: Path, name: str, *, features, labels, meta) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    entry = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write_arrays(tmp, features=features, labels=labels, meta=meta)
        if entry.exists():  # damaged (else it had been used) or just written by a concurrent process
            trash = root / f".tmp-trash-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(entry, trash)
                shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent process has just put the same entry there
        fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_superseded(root, keep=entry, source=meta["source"], fingerprint=meta["fingerprint"])
    return entry


def write_arrays(folder: Path, *, features: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    """features.npy, labels.npy and meta.json into the existing `folder`, each fsynced: the layout of a
    cache entry and of an array shard (data/shards.py)."""
    np.save(folder / "features.npy", features)
    np.save(folder / "labels.npy", labels)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    for f in ("features.npy", "labels.npy", "meta.json", "."):
        fsync(folder / f)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_abandoned(root: Path) -> None:
    """Temporary entries whose writing process is gone (killed mid-write) are garbage."""
    for tmp in root.glob(".tmp-*"):
        m = re.search(r"-(\d+)-[0-9a-f]{8}$", tmp.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_superseded(root: Path, *, keep: Path, source: str, fingerprint: str) -> None:
    """Entries of an older version of the same file: each is as big as the data, so do not pile them up."""
    for meta_path in root.glob("*/meta.json"):
        entry = meta_path.parent
        if entry == keep:
            continue
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(meta_path.read_text())
            if meta.get("source") == source and meta.get("fingerprint") != fingerprint:
                shutil.rmtree(entry, ignore_errors=True)
