"""Training from a shard directory larger than memory: ShardSource streams each part from disk.

Training order (ShardStream): the rank's range is cut into blocks of 65,536 rows; each epoch shuffles
the blocks (seeded by seed, phase, epoch, rank), groups them into windows of >= `window_rows` rows and
visits the rows of each window in a shuffled order. That mixes rows from all over the rank's range
(shards written class by class still give mixed batches) while reading 7 MB contiguous pieces. Every rank
takes the same number of steps per epoch, ceil(part rows / batch size), with its rows spread evenly
over them, so DDP's collectives line up and every row is used once per epoch. The order is a pure
function of (seed, phase, epoch, rank, world size, step): a resumed run continues bit for bit.

Statistics and predictions go window by window too, each rank over its own rows, combined across ranks.
Event weights travel with the rows: a window's weights are read beside its features and turned into
training weights by the part's plan (weighting.py, made from the whole part, so every rank's rows weigh
alike), and each batch gathers them with the same index as its rows.
"""
from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from higgs_lora.config import DEFAULT_PRECISION
from higgs_lora.hardware import distributed
from higgs_lora.data.rows import Rows
from higgs_lora.data.shards import ShardSet
from higgs_lora.data.standardize import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.hardware.machine import usable_cores
from higgs_lora.hardware.runtime import predict_logits
from higgs_lora.data.sources import Batch, DataSource, seed_key, weighted_loss_and_accuracy
from higgs_lora.data.weighting import AS_READ, Plan, Policy

BLOCK_ROWS = 1 << 16
WINDOW_ROWS = 1 << 20


def fit_standardizer(shards: ShardSet, rows: slice, *, device: torch.device) -> Standardizer:
    """Train-row statistics computed block by block, each rank over its own range, summed across ranks:
    the same two float64 passes (mean, then centred squares) as Standardizer.fit on an array."""
    lo, hi = shards.rank_range(rows)
    n = rows.stop - rows.start
    total = torch.zeros(shards.n_features, dtype=torch.float64)
    for a in range(lo, hi, BLOCK_ROWS):  # blocks, not windows: the float64 temporaries stay ~15 MB
        total += torch.from_numpy(shards.read(a, min(hi, a + BLOCK_ROWS)).features.sum(axis=0, dtype=np.float64))
    mean = _all_reduce_cpu(total, device) / n
    sq = torch.zeros(shards.n_features, dtype=torch.float64)
    for a in range(lo, hi, BLOCK_ROWS):
        d = shards.read(a, min(hi, a + BLOCK_ROWS)).features.astype(np.float64) - mean.numpy()
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
        block = shards.read(a, b)
        x, y = block.features, block.labels
        x = torch.from_numpy(standardizer.transform(x, out=x)).to(device)
        logits[a - lo:b - lo] = predict_logits(model, x, precision=precision)
        labels[a - lo:b - lo] = torch.from_numpy(y)
    return logits, labels


def predict_part(model, shards: ShardSet, rows: slice, standardizer: Standardizer, device: torch.device, *,
                 precision: str = DEFAULT_PRECISION) -> tuple[torch.Tensor, torch.Tensor]:
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
    cores = usable_cores().n  # affinity and cgroup quota, not the machine's cores
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
                 rank: int | None = None, world: int | None = None, read_ahead: bool | None = None,
                 plan: Plan | None = None):
        if rank is None:
            rank, world = distributed.world()
        self.shards, self.standardizer, self.device, self.plan = shards, standardizer, device, plan
        self.rank, self.world, self.window_rows, self.batch_size = rank, world, window_rows, batch_size
        self.rows = rows.stop - rows.start
        self.lo, self.hi = shards.rank_range(rows, rank, world)
        self.steps_per_epoch = math.ceil(self.rows / batch_size)
        if self.hi - self.lo < self.steps_per_epoch:
            raise UserError(f"{shards.source}: {self.rows:,} rows over {world} processes leave fewer rows per "
                            f"process than the {self.steps_per_epoch:,} steps of an epoch; use a larger --batch-size")
        self.blocks = [(a, min(a + block_rows, self.hi)) for a in range(self.lo, self.hi, block_rows)]
        self.read_ahead = _core_to_spare(device) if read_ahead is None else read_ahead
        self.exact_resume = False  # the order depends on how the rows are divided among processes

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
        """A window's rows, standardized, their training weights (None without a plan) and the order to
        visit them in. One buffer: the blocks are read straight into place and standardized there; the
        shuffle is a gather per batch, as in TensorData."""
        rows = sum(b - a for a, b in blocks)
        x, y = np.empty((rows, self.shards.n_features), dtype=np.float32), np.empty(rows, dtype=np.uint8)
        w = np.empty(rows, dtype=np.float32) if self.plan is not None and self.shards.weighted else None
        pos = 0
        for a, b in blocks:
            self.shards.read(a, b, out=Rows(x[pos:pos + b - a], y[pos:pos + b - a],
                                            None if w is None else w[pos:pos + b - a]))
            pos += b - a
        self.standardizer.transform(x, out=x)
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(key)).to(self.device)
        weights = None if self.plan is None else torch.from_numpy(self.plan.apply(w, y)).to(self.device)
        return (torch.from_numpy(x).to(self.device), torch.from_numpy(y.astype(np.float32)).to(self.device),
                weights, order)

    def batches(self, *, seed: int, phase: str, epoch: int, first_step: int = 0):
        """Yield the Batch (features, labels, weights) of steps first_step.. of the epoch; with read_ahead,
        the next window is read in a thread meanwhile, else when it is needed."""
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
                    xs, ys, ws = [], [], []
                    while p0 < p1:
                        x, y, wt, order = window(w).result()
                        begin = ends[w] - x.shape[0]
                        take = min(p1, ends[w]) - p0
                        idx = order[p0 - begin:p0 - begin + take]
                        xs.append(x.index_select(0, idx))
                        ys.append(y.index_select(0, idx))
                        if wt is not None:
                            ws.append(wt.index_select(0, idx))
                        p0 += take
                        if p0 == ends[w]:
                            w += 1
                    for old in [i for i in loaded if i < w]:
                        del loaded[old]
                    if self.read_ahead and w < len(windows):
                        window(w)
                        if w + 1 < len(windows):
                            window(w + 1)  # read ahead while this window trains
                    if len(xs) == 1:
                        yield Batch(xs[0], ys[0], ws[0] if ws else None)
                    else:
                        yield Batch(torch.cat(xs), torch.cat(ys), torch.cat(ws) if ws else None)
            finally:
                for f in loaded.values():
                    f.cancel()

    def loss_and_accuracy(self, model, *, precision: str) -> tuple[float, float]:
        """Mean loss and accuracy over the whole part (weighted by its training weights when it has a
        plan), each rank on its own rows, summed across ranks."""
        logits, y = _predict_range(model, self.shards, self.lo, self.hi, self.standardizer, self.device,
                                   precision=precision)
        w = None
        if self.plan is not None:
            weights = self.shards.weights
            w = torch.from_numpy(self.plan.apply(None if weights is None else weights[self.lo:self.hi],
                                                 self.shards.labels[self.lo:self.hi])).to(self.device)
        sums = distributed.all_reduce_(weighted_loss_and_accuracy(logits, y, w))
        return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


class ShardSource(DataSource):
    """A shard directory (ShardSet) on a device: every part is streamed from disk, never held whole."""

    def __init__(self, shards: ShardSet, device: torch.device):
        super().__init__(shards, device)

    def describe(self) -> str:
        ignored = f" (not shards, ignored: {', '.join(self.table.ignored)})" if self.table.ignored else ""
        return f"{len(self.table.shards)} shards in {self.source}, streamed from disk{ignored}"

    def fit_standardizer(self, rows: slice) -> Standardizer:
        return fit_standardizer(self.table, rows, device=self.device)

    def part(self, rows: slice, standardizer: Standardizer, *, batch_size: int, policy: Policy = AS_READ
             ) -> ShardStream:
        return ShardStream(self.table, rows, standardizer, self.device, batch_size=batch_size,
                           plan=self.plan(rows, policy))

    def predict(self, model, rows, standardizer, *, precision=DEFAULT_PRECISION):
        return predict_part(model, self.table, rows, standardizer, self.device, precision=precision)
