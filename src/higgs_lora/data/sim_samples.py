"""`higgs-lora simulate --samples DIR`: the built-in toy Monte Carlo (data/simulate.py) written as an
analysis sees its input, one file per process with an event weight, so the analysis workflow runs end
to end without a download:

    DIR/signal.root   g g -> H0 (425 GeV) -> W H+-, ...   (label 1)
    DIR/ttbar.root    g g -> t t -> W b W b                (label 0)

each with a TTree `events`: the 28 HIGGS features (float32), `weight` (float64) and `event` (int64, an
event number: an integer branch, so never a feature by default). ROOT files need uproot (the `root`
extra); without it the files are Parquet (DIR/signal.parquet, ...) with the same columns.

The weight is what a real ntuple carries: sigma x luminosity / (sum of generator weights) times a
generator weight of +-1 (an NLO generator's few percent of negative weights) times a scale factor near 1
(lepton and b-tag corrections), so each sample's weights sum to its expected event count in
LUMINOSITY_PB. The cross sections are for the toy processes, of realistic size: ttbar's is the LHC's
13 TeV semileptonic one (831.8 pb x 0.438); the signal's is a small BSM one.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from higgs_lora.data.simulate import NOMINAL, Conditions, simulate
from higgs_lora.data.table import HIGGS_FEATURES
from higgs_lora.errors import UserError

LUMINOSITY_PB = 139_000.0      # 139 fb^-1, the LHC's Run 2
TREE = "events"


@dataclass(frozen=True)
class Process:
    name: str
    label: int
    cross_section_pb: float
    negative_fraction: float   # share of events with generator weight -1


PROCESSES = (
    Process("signal", 1, cross_section_pb=0.05, negative_fraction=0.01),
    Process("ttbar", 0, cross_section_pb=831.76 * 0.438, negative_fraction=0.04),
)


def event_weights(process: Process, n: int, *, seed: int) -> np.ndarray:
    """sigma x L / (sum of generator weights) x generator weight (+-1) x scale factor (float64)."""
    rng = np.random.default_rng([seed, 7, process.label, len(process.name)])
    gen = np.where(rng.random(n) < process.negative_fraction, -1.0, 1.0)
    sf = rng.normal(1.0, 0.03, n)
    return process.cross_section_pb * LUMINOSITY_PB / gen.sum() * gen * sf


def write_samples(out: str | os.PathLike, *, events: int, seed: int, conditions: Conditions = NOMINAL,
                  fmt: str | None = None) -> list[Path]:
    """One file per process in the new directory `out` (complete or absent); `events` per process.
    fmt: "root" or "parquet"; None: ROOT when uproot is installed, else Parquet."""
    out = Path(out)
    if out.exists():
        raise UserError(f"--samples {out}: exists; choose a new directory")
    if fmt is None:
        try:
            import uproot  # noqa: F401
            fmt = "root"
        except ImportError:
            fmt = "parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        paths = []
        for i, p in enumerate(PROCESSES):
            cond = dataclasses.replace(conditions, signal_fraction=float(p.label))  # only this process's events
            features, _ = simulate(events, seed=seed + i, conditions=cond)
            columns = {name: features[:, j] for j, name in enumerate(HIGGS_FEATURES)}
            columns["weight"] = event_weights(p, events, seed=seed)
            columns["event"] = np.arange(events, dtype=np.int64)
            path = tmp / f"{p.name}.{fmt}"
            (_write_root if fmt == "root" else _write_parquet)(path, columns)
            paths.append(out / path.name)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paths


def _write_root(path: Path, columns: dict) -> None:
    import uproot
    with uproot.recreate(path) as f:
        f.mktree(TREE, {k: v.dtype for k, v in columns.items()})
        n = len(columns["event"])
        for start in range(0, max(n, 1), 1 << 18):  # baskets of 256k entries
            f[TREE].extend({k: v[start:start + (1 << 18)] for k, v in columns.items()})


def _write_parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(columns), path)
