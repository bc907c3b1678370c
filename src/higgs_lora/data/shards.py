"""Data sets larger than memory: a directory of shards, read block by block, each rank its own rows.

A shard directory holds, in natural name order (part-2 before part-10), either cached array shards (a folder with features.npy
float32 [rows, n], labels.npy uint8 [rows], optionally weights.npy float32 [rows] (event weights: every
shard of a directory has them or none does) and meta.json, as `higgs-lora shard` writes them and as the
read cache stores them) or table files (.parquet, .csv, .csv.gz), which are parsed once into the read
cache, one at a time, and then read like array shards. Together the shards form one table whose rows
are numbered in that order, so the notebook's split (first rows train, last rows test) still applies.

Nothing holds the whole table: rows are read with plain file reads (not memory maps, whose pages
would count as the process's memory). Under torchrun every part (train, val, extra, test) is cut into
one contiguous range per rank (rank_range), so each rank reads only its own shards (a shard on a
boundary is shared by two neighbours), and ranks differ by at most one row.

This module is storage only: how the rows are streamed into training is train/stream.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from higgs_lora.hardware import distributed
from higgs_lora import io
from higgs_lora.data.cache import write_arrays
from higgs_lora.data.read import feature_names, fingerprint_file, iter_chunks, prepare
from higgs_lora.data.rows import Rows
from higgs_lora.data.table import default_feature_names
from higgs_lora.errors import UserError

SHARD_FORMAT = "higgs-lora-shard"
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")


@dataclass(frozen=True)
class ArrayShard:
    """One shard: where its arrays start in their files, and its place among all rows."""
    name: str
    features_path: Path
    labels_path: Path
    features_offset: int    # byte offset of the data in features.npy (after the .npy header)
    labels_offset: int
    rows: int
    n_features: int
    start: int              # global index of its first row
    weights_path: Path | None = None   # weights.npy, when the shard has event weights
    weights_offset: int = 0


class ShardSet:
    """The shards of a directory as one table: rows, n_features, feature_names, source, fingerprint,
    labels (all of them, 1 byte a row, loaded on first use), weights (likewise, 4 bytes a row; None when
    the shards have none) and read(start, stop) for features."""

    def __init__(self, shards: list[ArrayShard], *, feature_names: list[str], source: str, fingerprint: str,
                 ignored: list[str] = ()):
        self.shards, self.feature_names, self.source, self.fingerprint = shards, feature_names, source, fingerprint
        self.ignored = list(ignored)  # entries of the directory that are not shards (_SUCCESS, README, ...)
        self._starts = np.array([s.start for s in shards], dtype=np.int64)
        self._labels = self._weights = None

    # What a Table says of its samples: shards hold one sample (a table cut into pieces), its weights as read.
    sample = None
    samples: list = []
    weight_expr = None

    @property
    def rows(self) -> int:
        return self.shards[-1].start + self.shards[-1].rows

    @property
    def n_features(self) -> int:
        return self.shards[0].n_features

    @property
    def weighted(self) -> bool:
        return self.shards[0].weights_path is not None

    @property
    def weights(self) -> np.ndarray | None:
        if self._weights is None and self.weighted:
            self._weights = self._whole("weights", np.float32, _check_weights)
        return self._weights

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = self._whole("labels", np.uint8, _check_labels)
        return self._labels

    def _whole(self, column: str, dtype, check) -> np.ndarray:
        """One per-row array (labels, weights) of every shard, read and checked: 1 or 4 bytes a row."""
        values = np.empty(self.rows, dtype=dtype)
        for s in self.shards:
            part = values[s.start:s.start + s.rows]
            _pread(getattr(s, f"{column}_path"), getattr(s, f"{column}_offset"), part)
            check(s, 0, part)
        return values

    def read(self, start: int, stop: int, out: Rows | None = None) -> Rows:
        """Raw features float32 [stop - start, n], labels uint8 and (weighted shards) weights float32 of
        global rows start..stop-1, checked; into `out` when given (its weights too, when it has room for them)."""
        n = self.n_features
        if out is None:
            out = Rows(np.empty((stop - start, n), dtype=np.float32), np.empty(stop - start, dtype=np.uint8),
                       np.empty(stop - start, dtype=np.float32) if self.weighted else None)
        features, labels, weights = out.features, out.labels, out.weights if self.weighted else None
        i = max(0, int(np.searchsorted(self._starts, start, side="right")) - 1)
        pos = start
        while pos < stop:
            s = self.shards[i]
            a, b = pos - s.start, min(stop, s.start + s.rows) - s.start
            dst = slice(pos - start, pos - start + b - a)
            _pread(s.features_path, s.features_offset + a * n * 4, features[dst])
            _pread(s.labels_path, s.labels_offset + a, labels[dst])
            _check_labels(s, a, labels[dst])
            _check_features(s, a, features[dst])
            if weights is not None:
                _pread(s.weights_path, s.weights_offset + a * 4, weights[dst])
                _check_weights(s, a, weights[dst])
            pos += b - a
            i += 1
        return out

    def rank_range(self, rows: slice, rank: int | None = None, world: int | None = None) -> tuple[int, int]:
        """This rank's contiguous share of the global rows `rows`."""
        if rank is None:
            rank, world = distributed.world()
        n = rows.stop - rows.start
        return rows.start + n * rank // world, rows.start + n * (rank + 1) // world

    def shards_between(self, start: int, stop: int) -> list[str]:
        return [s.name for s in self.shards if s.start < stop and s.start + s.rows > start]


# Checked on every read: cheap beside training on the rows, and a shard written by another tool may hold anything.

def _check_labels(s: ArrayShard, first: int, labels: np.ndarray) -> None:
    bad = np.flatnonzero(labels > 1)
    if len(bad):
        raise UserError(f"{s.labels_path}: row {first + bad[0] + 1}: label is {labels[bad[0]]}; labels must be 0 or 1")


def _check_features(s: ArrayShard, first: int, features: np.ndarray) -> None:
    finite = np.isfinite(features)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise UserError(f"{s.features_path}: row {first + r + 1}, column {c + 1}: {float(features[r, c])!r} "
                        "is not a finite number")


def _check_weights(s: ArrayShard, first: int, weights: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(weights))
    if len(bad):
        raise UserError(f"{s.weights_path}: row {first + bad[0] + 1}: weight is {float(weights[bad[0]])!r}; "
                        "weights must be finite numbers")


def _pread(path: Path, offset: int, out: np.ndarray) -> None:
    # Opened per read: a read is >= 64k rows, so the open is noise, and threads never share a file position.
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            got = f.readinto(memoryview(out).cast("B"))
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if got != out.nbytes:
        raise UserError(f"{path}: file ends early (shorter than its header says; truncated copy?)")


# ------------------------------------------------------------------------------------------- opening

def open_shards(directory, *, label_column=0, cache_dir=None, progress: bool = False) -> ShardSet:
    """The shards in `directory`, in name order. Table files are parsed into the read cache first;
    under torchrun rank r parses shards r, r + world, ... and the others wait, so each is parsed once."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    entries = sorted((p for p in directory.iterdir() if not p.name.startswith(".")), key=_natural)
    tables = [p for p in entries if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES)]
    arrays = [p for p in entries if p.is_dir() and (p / "features.npy").exists()]
    ignored = [p.name for p in entries if p not in tables and p not in arrays]
    if not tables and not arrays:
        raise UserError(f"{directory}: no shards (expected .parquet/.csv/.csv.gz files, or folders with "
                        "features.npy and labels.npy as `higgs-lora shard` writes them; ROOT files: convert them "
                        "to Parquet first, e.g. with uproot)" + (f"; found {', '.join(ignored[:5])}" if ignored else ""))
    cached: dict[Path, Path] = {}
    if tables:
        rank, world = distributed.world()
        for i, p in enumerate(tables):
            if i % world == rank:
                cached[p] = _cache(p, label_column=label_column, cache_dir=cache_dir, progress=progress)
        distributed.barrier()
        for p in tables:  # the entries other ranks built: found in the cache at once
            if p not in cached:
                cached[p] = _cache(p, label_column=label_column, cache_dir=cache_dir, progress=False)
    shards, names, first, weighted, start = [], None, None, None, 0
    h = hashlib.sha256()
    for p in sorted([*tables, *arrays], key=_natural):
        folder = cached.get(p, p)
        shard, shard_names, fp = _open_array_shard(folder, name=p.name, start=start)
        if names is None:
            names, first, weighted = shard_names, p.name, shard.weights_path is not None
        elif shard.n_features != len(names):
            raise UserError(f"{p}: {shard.n_features} features, but {first} has {len(names)}")
        elif shard_names != names:
            raise UserError(f"{p}: feature names {shard_names} differ from those of {first}: {names}")
        if (shard.weights_path is not None) != weighted:
            has, other = ("has weights.npy", "has none") if not weighted else ("has no weights.npy", "has one")
            raise UserError(f"{p}: {has}, but {first} {other}; every shard of a directory has event weights "
                            "or none does")
        if shard.rows:
            shards.append(shard)
        start += shard.rows
        h.update(f"{p.name}:{fp};".encode())
    if not shards:
        raise UserError(f"{directory}: the shards hold no rows")
    return ShardSet(shards, feature_names=names, source=str(directory), fingerprint=h.hexdigest()[:32],
                    ignored=ignored)


def _natural(path: Path) -> list:
    """Sort key: numbers inside names compare as numbers, so part-2 comes before part-10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name)]


def _cache(path: Path, *, label_column, cache_dir, progress) -> Path:
    info = prepare(path, label_column=label_column, cache_dir=cache_dir, progress=progress)
    if info["cache_path"] is None:
        raise UserError(f"{path}: could not write its cache, which a shard directory needs (it is read from "
                        "the cache, never all at once); give a writable --cache-dir")
    return Path(info["cache_path"])


def _open_array_shard(folder: Path, *, name: str, start: int) -> tuple[ArrayShard, list[str], str]:
    fpath, lpath = folder / "features.npy", folder / "labels.npy"
    f_shape, f_offset = _npy_header(fpath, np.float32, 2)
    l_shape, l_offset = _npy_header(lpath, np.uint8, 1)
    if l_shape[0] != f_shape[0]:
        raise UserError(f"{folder}: labels.npy has {l_shape[0]:,} rows, features.npy {f_shape[0]:,}")
    rows, n = f_shape
    wpath, w_offset = folder / "weights.npy", 0
    if wpath.exists():
        w_shape, w_offset = _npy_header(wpath, np.float32, 1)
        if w_shape[0] != f_shape[0]:
            raise UserError(f"{folder}: weights.npy has {w_shape[0]:,} rows, features.npy {f_shape[0]:,}")
    shard = ArrayShard(name=name, features_path=fpath, labels_path=lpath, features_offset=f_offset,
                       labels_offset=l_offset, rows=rows, n_features=n, start=start,
                       weights_path=wpath if wpath.exists() else None, weights_offset=w_offset)
    names = default_feature_names(n)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            names = list(meta.get("feature_names") or names)
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f"{meta_path}: unreadable ({e})") from None
        if len(names) != n:
            raise UserError(f"{meta_path}: {len(names)} feature names for {n} columns")
    # size, mtime and both ends, as for any data file
    fingerprint = f"{fingerprint_file(fpath)}:{fingerprint_file(lpath)}"
    if shard.weights_path is not None:
        fingerprint += f":{fingerprint_file(wpath)}"
    return shard, names, fingerprint


def _npy_header(path: Path, dtype, ndim: int) -> tuple[tuple[int, ...], int]:
    """Shape and data offset of a .npy file, checked against what a shard needs and the file's size."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, file_dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise UserError(f"{path.parent}: missing {path.name}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npy array ({e})") from None
    if file_dtype != dtype or len(shape) != ndim or fortran:
        raise UserError(f"{path}: {file_dtype} {shape}{' Fortran-order' if fortran else ''} array; expected "
                        f"C-order {np.dtype(dtype)} with {ndim} dimension(s)")
    if offset + int(np.prod(shape)) * np.dtype(dtype).itemsize != path.stat().st_size:
        raise UserError(f"{path}: file size does not match its header (truncated or appended to)")
    return shape, offset


# ------------------------------------------------------------------------------------------- writing

def write_shards(path, out, *, rows_per_shard: int, label_column=0, features=None, weight=None, tree=None,
                 progress: bool = False) -> list[Path]:
    """Stream the table in `path` into cached array shards of `rows_per_shard` rows in directory `out`,
    never holding more than one shard; `features`, `weight` and `tree` select what is read as load_table's
    do (a ROOT file's branches, an event-weight expression: weights.npy in every shard). The directory is
    built under a temporary name and renamed at the end: it is complete or absent."""
    out = Path(out)
    if rows_per_shard < 1:
        raise UserError(f"--rows-per-shard must be >= 1, got {rows_per_shard}")
    if out.exists():
        raise UserError(f"--out {out}: exists; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = feature_names(path, label_column=label_column, features=features, weight=weight, tree=tree)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    written = []
    try:
        tmp.mkdir()
        buf, held = [], 0
        chunks = iter_chunks(path, label_column=label_column, features=features, weight=weight, tree=tree,
                             chunk_rows=min(rows_per_shard, 1 << 20), progress=progress)
        for chunk in chunks:
            # Rows (with event weights, when the reader gives them) or a (features, labels) pair
            chunk = chunk if isinstance(chunk, Rows) else Rows(*chunk)
            while len(chunk):
                take = min(rows_per_shard - held, len(chunk))
                buf.append(chunk.slice(0, take))
                chunk, held = chunk.slice(take, len(chunk)), held + take
                if held == rows_per_shard:
                    written.append(_write_array_shard(tmp, len(written), buf, names))
                    buf, held = [], 0
        if held:
            written.append(_write_array_shard(tmp, len(written), buf, names))
        io.fsync(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / p.name for p in written]


def _write_array_shard(root: Path, index: int, blocks: list[Rows], names) -> Path:
    """One shard folder; weights.npy beside the arrays when the rows have event weights (the readers have
    checked them finite; a reader of the shard checks them again)."""
    folder = root / f"part-{index:05d}"
    folder.mkdir()
    rows = Rows.concat(blocks)
    features, labels = rows.features, rows.labels
    extra = {} if rows.weights is None else {"weights": rows.weights.astype(np.float32, copy=False)}
    write_arrays(folder, features=features, labels=labels, extra=extra,
                 meta=dict(format=SHARD_FORMAT, rows=len(labels), n_features=features.shape[1], feature_names=names,
                           signal=int(np.count_nonzero(labels))))
    return folder
