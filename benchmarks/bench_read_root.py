"""Reading a ROOT file: higgs-lora's load_table against bare uproot, side by side in one run.

Writes (once, into bench-data/) a ROOT file of ROWS entries x 28 float32 branches (the simulator's
HIGGS features) plus a float64 `weight` and an int64 `event` branch, with uproot's default compression,
then measures in ROUNDS interleaved rounds, (a) and (b) taking turns to go first (the machine may be
shared; medians are reported):

  (a) bare uproot: tree.iterate(the 28 feature branches + weight, step_size=STEP, library="np"), the
      pieces concatenated into one NumPy array per branch: the least any reader must do;
  (b) load_table(use_cache=False, weight="weight"): the same branches through the reader registry into
      one row-major float32 [rows, 28] matrix, every value checked finite, the weights checked and cast;
  (c) load_table from its cache (a memory-mapped reload).

Target: (b) at >= 0.8x the speed of (a), i.e. wall(a) / wall(b) >= 0.8.
Result: benchmarks/results/read_root_<cpu>.txt (with a JSON line per round).

    PYTHONPATH=src python benchmarks/bench_read_root.py [--rows 1000000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DATA, ROOT, cpu_model, report, verdict  # noqa: E402

TARGET = 0.8


def root_file(rows: int) -> Path:
    from higgs_lora.data.simulate import SIMULATOR_VERSION, simulate
    from higgs_lora.data.table import HIGGS_FEATURES
    import uproot
    path = BENCH_DATA / f"higgs_sim_v{SIMULATOR_VERSION}_{rows}.root"
    if path.exists():
        return path
    features, _ = simulate(rows, seed=1)
    cols = {name: np.ascontiguousarray(features[:, j]) for j, name in enumerate(HIGGS_FEATURES)}
    cols["weight"] = np.random.default_rng(0).normal(1, 0.2, rows)
    cols["event"] = np.arange(rows, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with uproot.recreate(tmp) as f:
        f.mktree("events", {k: v.dtype for k, v in cols.items()})
        for s in range(0, rows, 1 << 18):
            f["events"].extend({k: v[s:s + (1 << 18)] for k, v in cols.items()})
    tmp.rename(path)
    return path


def bare_uproot(path: Path, names: list[str]) -> dict:
    import uproot

    from higgs_lora.data.readers.root import STEP_SIZE
    pieces = {n: [] for n in names}
    with uproot.open(path) as f:
        for arrays in f["events"].iterate(filter_name=names, step_size=STEP_SIZE, library="np"):
            for n in names:
                pieces[n].append(arrays[n])
    return {n: np.concatenate(p) for n, p in pieces.items()}


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="result file (default: benchmarks/results/read_root_<cpu>.txt)")
    args = ap.parse_args(argv)
    import uproot

    from higgs_lora.data.read import load_table
    from higgs_lora.data.readers.root import STEP_SIZE
    from higgs_lora.data.table import HIGGS_FEATURES
    path = root_file(args.rows)
    names = [*HIGGS_FEATURES, "weight"]
    cache = Path(tempfile.mkdtemp(prefix="bench-root-cache-", dir=BENCH_DATA))
    runs = []
    try:
        load_table(path, label_column=None, label_value=1, weight="weight", cache_dir=cache)  # builds the cache
        for r in range(args.rounds):
            # which of (a) and (b) goes first alternates, so neither always meets the other's freed memory
            measure_ours = lambda: timed(lambda: load_table(path, label_column=None, label_value=1, weight="weight",
                                                            use_cache=False))
            if r % 2:
                ours, to, co = measure_ours()
            bare, tb, cb = timed(lambda: bare_uproot(path, names))
            if not r % 2:
                ours, to, co = measure_ours()
            cached, tc, cc = timed(lambda: load_table(path, label_column=None, label_value=1, weight="weight",
                                                      cache_dir=cache))
            same = all(np.array_equal(ours.features[:, j], bare[n]) for j, n in enumerate(HIGGS_FEATURES)) \
                and np.array_equal(ours.weights, bare["weight"].astype(np.float32)) \
                and np.array_equal(cached.features, ours.features)
            runs.append(dict(round=r, bare_s=tb, bare_cpu_s=cb, load_table_s=to, load_table_cpu_s=co, cached_s=tc,
                             cached_cpu_s=cc, identical=bool(same)))
            del bare, ours, cached
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k.endswith("_s")}
    ratio = med["bare_s"] / med["load_table_s"]
    cpu = cpu_model()
    lines = [
        f"bench_read_root: {args.rows:,} entries x 28 float32 branches + float64 weight, {path.stat().st_size / 2**20:.0f} MiB "
        f"(uproot {uproot.__version__} default compression), step {STEP_SIZE}",
        f"machine: {cpu}; medians of {args.rounds} interleaved rounds on a shared machine (other jobs ran meanwhile)",
        f"(a) bare uproot.iterate -> NumPy per branch   {med['bare_s']:7.3f} s wall {med['bare_cpu_s']:7.3f} s CPU",
        f"(b) load_table, no cache (rows x 28 float32)  {med['load_table_s']:7.3f} s wall {med['load_table_cpu_s']:7.3f} s CPU",
        f"(c) load_table, from the cache                {med['cached_s']:7.3f} s wall {med['cached_cpu_s']:7.3f} s CPU",
        f"speed of (b) relative to (a): {ratio:.2f}x (target >= {TARGET}x: {verdict(ratio >= TARGET)}); "
        f"(c) is {med['bare_s'] / med['cached_s']:.0f}x faster than (a)",
        f"arrays identical to bare uproot's in every round: {all(r['identical'] for r in runs)}",
        "walls per round (a/b/c): " + "; ".join(f"{r['bare_s']:.3f}/{r['load_table_s']:.3f}/{r['cached_s']:.4f}" for r in runs),
    ]
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")[:40]
    report(lines, args.out or ROOT / "benchmarks" / "results" / f"read_root_{slug}.txt", runs=runs)


if __name__ == "__main__":
    main()
