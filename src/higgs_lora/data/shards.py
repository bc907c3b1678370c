"""Data sets larger than memory: a directory of shards, read block by block, each rank its own rows.

A shard directory holds, in natural name order (part-2 before part-10), either cached array shards (a folder with features.npy
float32 [rows, n], labels.npy uint8 [rows] and meta.json, as `higgs-lora shard` writes them and as the
read cache stores them) or table files (.parquet, .csv, .csv.gz), which are parsed once into the read
cache, one at a time, and then read like array shards. Together the shards form one table whose rows
are numbered in that order, so the notebook's split (first rows train, last rows test) still applies.

Nothing holds the whole table: rows are read with plain file reads (not memory maps, whose pages
would count as the process's memory) into windows of about a million rows. Under torchrun every part
(train, val, extra, test) is cut into one contiguous range per rank, so each rank reads only its own
shards (a shard on a boundary is shared by two neighbours), and ranks differ by at most one row.

Training order (ShardStream): the rank's range is cut into blocks of 65,536 rows; each epoch shuffles
the blocks (seeded by seed, phase, epoch, rank), groups them into windows of >= `window_rows` rows and
visits the rows of each window in a shuffled order. That mixes rows from all over the rank's range
(shards written class by class still give mixed batches) while reading 7 MB contiguous pieces. Every rank
takes the same number of steps per epoch, ceil(part rows / --batch-size), with its rows spread evenly
over them, so DDP's collectives line up and every row is used once per epoch. The order is a pure
function of (seed, phase, epoch, rank, world size, step): a resumed run continues bit for bit.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from higgs_lora import distributed
from higgs_lora.data.standardize import Standardizer
from higgs_lora.data.table import default_feature_names
from higgs_lora.errors import UserError
from higgs_lora.train import predict_logits, seed_key

SHARD_FORMAT = "higgs-lora-shard"
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
BLOCK_ROWS = 1 << 16
WINDOW_ROWS = 1 << 20


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


class ShardSet:
    """The shards of a directory as one table: rows, n_features, feature_names, source, fingerprint,
    labels (all of them, 1 byte a row, loaded on first use) and read(start, stop) for features."""

    def __init__(self, shards: list[ArrayShard], *, feature_names: list[str], source: str, fingerprint: str,
                 ignored: list[str] = ()):
        self.shards, self.feature_names, self.source, self.fingerprint = shards, feature_names, source, fingerprint
        self.ignored = list(ignored)  # entries of the directory that are not shards (_SUCCESS, README, ...)
        self._starts = np.array([s.start for s in shards], dtype=np.int64)
        self._labels = None

    @property
    def rows(self) -> int:
        return self.shards[-1].start + self.shards[-1].rows

    @property
    def n_features(self) -> int:
        return self.shards[0].n_features

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            labels = np.empty(self.rows, dtype=np.uint8)
            for s in self.shards:
                _pread(s.labels_path, s.labels_offset, labels[s.start:s.start + s.rows])
                _check_labels(s, 0, labels[s.start:s.start + s.rows])
            self._labels = labels
        return self._labels

    def read(self, start: int, stop: int, out: tuple[np.ndarray, np.ndarray] | None = None):
        """Raw features float32 [stop - start, n] and labels uint8 of global rows start..stop-1, checked;
        into `out` (features, labels) when given."""
        n = self.n_features
        if out is None:
            out = np.empty((stop - start, n), dtype=np.float32), np.empty(stop - start, dtype=np.uint8)
        features, labels = out
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
            pos += b - a
            i += 1
        return features, labels

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
        raise UserError(f"{s.features_path}: row {first + r + 1}, column {c + 1}: {float(features[r, c])!r} is not a finite number")


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
    shards, names, first, start = [], None, None, 0
    h = hashlib.sha256()
    for p in sorted([*tables, *arrays], key=_natural):
        folder = cached.get(p, p)
        shard, shard_names, fp = _open_array_shard(folder, name=p.name, start=start)
        if names is None:
            names, first = shard_names, p.name
        elif shard.n_features != len(names):
            raise UserError(f"{p}: {shard.n_features} features, but {first} has {len(names)}")
        elif shard_names != names:
            raise UserError(f"{p}: feature names {shard_names} differ from those of {first}: {names}")
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
    from higgs_lora.data.read import prepare
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
    shard = ArrayShard(name=name, features_path=fpath, labels_path=lpath, features_offset=f_offset,
                       labels_offset=l_offset, rows=rows, n_features=n, start=start)
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
    from higgs_lora.data.read import fingerprint_file  # size, mtime and both ends, as for any data file
    return shard, names, f"{fingerprint_file(fpath)}:{fingerprint_file(lpath)}"


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

def write_shards(path, out, *, rows_per_shard: int, label_column=0, progress: bool = False) -> list[Path]:
    """Stream the table in `path` into cached array shards of `rows_per_shard` rows in directory `out`,
    never holding more than one shard. The directory is built under a temporary name and renamed at
    the end: it is complete or absent."""
    from higgs_lora.data.read import fsync, iter_chunks
    out = Path(out)
    if rows_per_shard < 1:
        raise UserError(f"--rows-per-shard must be >= 1, got {rows_per_shard}")
    if out.exists():
        raise UserError(f"--out {out}: exists; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = _names_of(path, label_column)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    written = []
    try:
        tmp.mkdir()
        buf_x, buf_y, held = [], [], 0
        chunks = iter_chunks(path, label_column=label_column, chunk_rows=min(rows_per_shard, 1 << 20),
                             progress=progress)
        for features, labels in chunks:
            while len(features):
                take = min(rows_per_shard - held, len(features))
                buf_x.append(features[:take]); buf_y.append(labels[:take])
                features, labels, held = features[take:], labels[take:], held + take
                if held == rows_per_shard:
                    written.append(_write_array_shard(tmp, len(written), buf_x, buf_y, names))
                    buf_x, buf_y, held = [], [], 0
        if held:
            written.append(_write_array_shard(tmp, len(written), buf_x, buf_y, names))
        fsync(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / p.name for p in written]


def _names_of(path, label_column) -> list[str]:
    from higgs_lora.data.read import _layout
    return _layout(Path(path), label_column).feature_names()


def _write_array_shard(root: Path, index: int, xs, ys, names) -> Path:
    from higgs_lora.data.read import write_arrays
    folder = root / f"part-{index:05d}"
    folder.mkdir()
    features, labels = np.concatenate(xs), np.concatenate(ys)
    write_arrays(folder, features=features, labels=labels,
                 meta=dict(format=SHARD_FORMAT, rows=len(labels), n_features=features.shape[1], feature_names=names,
                           signal=int(np.count_nonzero(labels))))
    return folder


# ------------------------------------------------------------------------------------------- using

def fit_standardizer(shards: ShardSet, rows: slice, *, device: torch.device) -> Standardizer:
    """Train-row statistics computed block by block, each rank over its own range, summed across ranks:
    the same two float64 passes (mean, then centred squares) as Standardizer.fit on an array."""
    lo, hi = shards.rank_range(rows)
    n = rows.stop - rows.start
    total = torch.zeros(shards.n_features, dtype=torch.float64)
    for a in range(lo, hi, BLOCK_ROWS):  # blocks, not windows: the float64 temporaries stay ~15 MB
        total += torch.from_numpy(shards.read(a, min(hi, a + BLOCK_ROWS))[0].sum(axis=0, dtype=np.float64))
    mean = _all_reduce_cpu(total, device) / n
    sq = torch.zeros(shards.n_features, dtype=torch.float64)
    for a in range(lo, hi, BLOCK_ROWS):
        d = shards.read(a, min(hi, a + BLOCK_ROWS))[0].astype(np.float64) - mean.numpy()
        sq += torch.from_numpy(np.einsum("ij,ij->j", d, d))
    std = np.sqrt(_all_reduce_cpu(sq, device).numpy() / n)
    std[std == 0] = 1.0
    return Standardizer(mean=mean.numpy().astype(np.float32), std=std.astype(np.float32))


def _all_reduce_cpu(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return distributed.all_reduce_(t.to(device)).cpu()


@torch.inference_mode()
def _predict_range(model, shards: ShardSet, lo: int, hi: int, standardizer: Standardizer, device: torch.device, *,
                   precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and float labels of global rows lo..hi-1, a window at a time."""
    logits = torch.empty(hi - lo, dtype=torch.float32, device=device)
    labels = torch.empty(hi - lo, dtype=torch.float32, device=device)
    for a in range(lo, hi, WINDOW_ROWS):
        b = min(hi, a + WINDOW_ROWS)
        x, y = shards.read(a, b)
        x = torch.from_numpy(standardizer.transform(x, out=x)).to(device)
        logits[a - lo:b - lo] = predict_logits(model, x, precision=precision)
        labels[a - lo:b - lo] = torch.from_numpy(y)
    return logits, labels


def predict_part(model, shards: ShardSet, rows: slice, standardizer: Standardizer, device: torch.device, *,
                 precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels (float) of global rows `rows`, in order, on every rank: each rank predicts its
    own range window by window, then the ranks exchange their logits."""
    lo, hi = shards.rank_range(rows)
    logits, _ = _predict_range(model, shards, lo, hi, standardizer, device, precision=precision)
    logits = _gather_ranges(logits, rows, shards, device)
    labels = torch.from_numpy(shards.labels[rows].astype(np.float32)).to(device)
    return logits, labels


def _gather_ranges(local: torch.Tensor, rows: slice, shards: ShardSet, device) -> torch.Tensor:
    rank, world = distributed.world()
    if world == 1:
        return local
    import torch.distributed as dist
    sizes = [b - a for a, b in (shards.rank_range(rows, r, world) for r in range(world))]
    padded = torch.zeros(max(sizes), dtype=local.dtype, device=device)
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def _core_to_spare(device: torch.device) -> bool:
    """Whether a thread can read ahead without slowing training. Not when PyTorch's threads (times the
    processes on this node) fill every core: on 2 busy cores the reading thread stalled PyTorch's
    spinning OpenMP threads, and reading ahead trained at 0.85x the speed of reading when needed (medians
    of 5 interleaved runs, 3M rows), which itself matched training from memory. On a GPU the CPU is free."""
    if device.type == "cuda":
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores > torch.get_num_threads() * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


class _Done:
    """A finished 'future': the window read in place, when there is no thread to read ahead."""

    def __init__(self, fn, *args):
        self._value = fn(*args)

    def result(self):
        return self._value

    def cancel(self):
        return False


class ShardStream:
    """Training batches of one part of a ShardSet for fit(): this rank's rows, a window at a time."""

    def __init__(self, shards: ShardSet, rows: slice, standardizer: Standardizer, device: torch.device, *,
                 batch_size: int, window_rows: int = WINDOW_ROWS, block_rows: int = BLOCK_ROWS,
                 rank: int | None = None, world: int | None = None, read_ahead: bool | None = None):
        if rank is None:
            rank, world = distributed.world()
        self.shards, self.standardizer, self.device = shards, standardizer, device
        self.rank, self.world, self.window_rows, self.batch_size = rank, world, window_rows, batch_size
        self.rows = rows.stop - rows.start
        self.lo, self.hi = shards.rank_range(rows, rank, world)
        self.steps_per_epoch = math.ceil(self.rows / batch_size)
        if self.hi - self.lo < self.steps_per_epoch:
            raise UserError(f"{shards.source}: {self.rows:,} rows over {world} processes leave fewer rows per "
                            f"process than the {self.steps_per_epoch:,} steps of an epoch; use a larger --batch-size")
        self.blocks = [(a, min(a + block_rows, self.hi)) for a in range(self.lo, self.hi, block_rows)]
        self.read_ahead = _core_to_spare(device) if read_ahead is None else read_ahead

    def describe(self) -> str:
        names = self.shards.shards_between(self.lo, self.hi)
        return (f"rank {self.rank}: rows {self.lo:,}..{self.hi - 1:,} ({self.hi - self.lo:,}) from "
                + (names[0] if len(names) == 1 else f"{len(names)} shards {names[0]}..{names[-1]}"))

    def _windows(self, *, seed, phase, epoch) -> list[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(seed_key(seed, phase, epoch, self.rank, self.world))
        order = [self.blocks[i] for i in torch.randperm(len(self.blocks), generator=g).tolist()]
        windows, current, held = [], [], 0
        for block in order:
            current.append(block)
            held += block[1] - block[0]
            if held >= self.window_rows:
                windows.append(current)
                current, held = [], 0
        if current:
            windows.append(current)
        return windows

    def _load(self, blocks, key: int):
        """A window's rows, standardized, and the order to visit them in. One buffer: the blocks are read
        straight into place and standardized there; the shuffle is a gather per batch, as in TensorData."""
        rows = sum(b - a for a, b in blocks)
        x, y = np.empty((rows, self.shards.n_features), dtype=np.float32), np.empty(rows, dtype=np.uint8)
        pos = 0
        for a, b in blocks:
            self.shards.read(a, b, out=(x[pos:pos + b - a], y[pos:pos + b - a]))
            pos += b - a
        self.standardizer.transform(x, out=x)
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(key)).to(self.device)
        return (torch.from_numpy(x).to(self.device), torch.from_numpy(y.astype(np.float32)).to(self.device), order)

    def batches(self, *, seed: int, phase: str, epoch: int, first_step: int = 0):
        """Yield (features, labels) of steps first_step.. of the epoch; with read_ahead, the next window
        is read in a thread meanwhile, else when it is needed."""
        windows = self._windows(seed=seed, phase=phase, epoch=epoch)
        ends = np.cumsum([sum(b - a for a, b in w) for w in windows])
        m, steps = self.hi - self.lo, self.steps_per_epoch
        keys = [seed_key(seed, phase, epoch, self.rank, self.world, "window", i) for i in range(len(windows))]
        with ThreadPoolExecutor(max_workers=1) if self.read_ahead else contextlib.nullcontext() as pool:
            loaded = {}  # window index -> future of its tensors; at most the current two are kept

            def window(i):
                if i not in loaded:
                    args = (self._load, windows[i], keys[i])
                    loaded[i] = pool.submit(*args) if pool else _Done(*args)
                return loaded[i]

            try:
                for step in range(first_step, steps):
                    p0, p1 = step * m // steps, (step + 1) * m // steps
                    w = int(np.searchsorted(ends, p0, side="right"))
                    xs, ys = [], []
                    while p0 < p1:
                        x, y, order = window(w).result()
                        begin = ends[w] - x.shape[0]
                        take = min(p1, ends[w]) - p0
                        idx = order[p0 - begin:p0 - begin + take]
                        xs.append(x.index_select(0, idx)); ys.append(y.index_select(0, idx))
                        p0 += take
                        if p0 == ends[w]:
                            w += 1
                    for old in [i for i in loaded if i < w]:
                        del loaded[old]
                    if self.read_ahead and w < len(windows):
                        window(w)
                        if w + 1 < len(windows):
                            window(w + 1)  # read ahead while this window trains
                    yield (xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))
            finally:
                for f in loaded.values():
                    f.cancel()

    def loss_and_accuracy(self, model, *, precision: str) -> tuple[float, float]:
        """Mean loss and accuracy over the whole part, each rank on its own rows, summed across ranks."""
        logits, y = _predict_range(model, self.shards, self.lo, self.hi, self.standardizer, self.device,
                                   precision=precision)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        sums = torch.stack([loss.double(), ((logits > 0) == (y > 0.5)).sum().double(),
                            torch.tensor(float(y.shape[0]), dtype=torch.float64, device=self.device)])
        sums = distributed.all_reduce_(sums)
        return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()
