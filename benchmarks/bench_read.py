"""Reading HIGGS-format .csv.gz: pandas as the notebook does it vs higgs_lora's reader and cache.

    .venv/bin/python benchmarks/bench_read.py                 # 11,000,000 rows, like the real file
    .venv/bin/python benchmarks/bench_read.py --rows 200000   # a quick run
    .venv/bin/python benchmarks/bench_read.py --file HIGGS.csv.gz
    .venv/bin/python benchmarks/bench_read.py --file F.csv.gz --processes 3   # whole processes, 3 rounds

--processes N compares whole processes, as a user sees them, in N interleaved rounds (medians):
`python -c "import pandas; pandas.read_csv(FILE, header=None)"` against `higgs-lora prepare FILE` into a
fresh cache (the first read), then `higgs-lora prepare FILE` again (from the cache).

Without --file it writes (once) bench-data/higgs_synth_<rows>.csv.gz: label then 28 features, each
printed `%.18e` like the UCI file. Every case runs in a fresh subprocess so its peak RSS is its own.
Needs pandas (the `bench` extra).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REAL_SAMPLE = ROOT / "tests" / "data" / "higgs_real_sample.csv"
ROWS_PER_PART = 100_000
# Columns of the UCI file (after the label) that are b-tag flags: three discrete values, not smeared.
BTAG_COLUMNS = (8, 12, 16, 20)
ANGLE_COLUMNS = (2, 4, 7, 11, 15, 19)  # the phi angles, in [-1.7438, 1.7438] in the UCI file's units


def _synth_part(args) -> bytes:
    """One gzip member of rows: each column resampled from the real sample and smeared, so every value
    is a distinct float32 (the real file's entropy, not a file of repeated strings)."""
    from isal import igzip

    seed, rows, pool = args
    rng = np.random.default_rng(seed)
    out = np.empty((rows, pool.shape[1]), dtype=np.float64)
    out[:, 0] = rng.random(rows) < 0.53
    for c in range(1, pool.shape[1]):
        v = rng.choice(pool[:, c], size=rows)
        if c - 1 in BTAG_COLUMNS:
            pass
        elif c - 1 in ANGLE_COLUMNS:
            v = np.clip(v + rng.normal(0, 0.05, rows), -1.7438, 1.7438)
        elif pool[:, c].min() >= 0:  # momenta and masses stay positive
            v = v * np.exp(rng.normal(0, 0.05, rows))
        else:  # pseudorapidities
            v = v + rng.normal(0, 0.05, rows)
        out[:, c] = v
    out = out.astype(np.float32).astype(np.float64)  # the UCI values are float32s printed in full
    row_fmt = ",".join(["%.18e"] * pool.shape[1]) + "\n"
    text = "".join([(row_fmt * len(b)) % tuple(b.ravel()) for b in np.array_split(out, max(1, rows // 2000))])
    return igzip.compress(text.encode(), compresslevel=2)


def synthesize(path: Path, *, rows: int) -> float:
    """Write `rows` HIGGS-like rows as concatenated gzip members, in parallel; returns seconds."""
    t0 = time.perf_counter()
    if REAL_SAMPLE.exists():
        pool = np.loadtxt(REAL_SAMPLE, delimiter=",")
    else:  # standalone: rough stand-in pool (positive momenta/masses ~1, angles, btags)
        rng = np.random.default_rng(0)
        pool = np.abs(rng.normal(1, 0.5, (1000, 29)))
        pool[:, [c + 1 for c in ANGLE_COLUMNS]] = rng.uniform(-1.74, 1.74, (1000, len(ANGLE_COLUMNS)))
        pool[:, [c + 1 for c in BTAG_COLUMNS]] = rng.choice([0, 1.0865, 2.173], (1000, len(BTAG_COLUMNS)))
    parts = [(seed, min(ROWS_PER_PART, rows - start), pool) for seed, start in enumerate(range(0, rows, ROWS_PER_PART))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with multiprocessing.Pool(os.cpu_count()) as pool_, open(tmp, "wb") as f:
        for i, blob in enumerate(pool_.imap(_synth_part, parts)):
            f.write(blob)
            print(f"\r  writing {path.name}: {min(rows, (i + 1) * ROWS_PER_PART):,}/{rows:,} rows", end="", file=sys.stderr)
    print(file=sys.stderr)
    os.replace(tmp, path)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------- the cases

def _case(name: str, path: str, cache_dir: str) -> dict:
    """Run one case in this (fresh) process; returns timings, peak RSS and a hash of the arrays."""
    import hashlib
    import resource

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    def cpu_seconds() -> float:  # all threads: a parallel reader's real cost, whatever the load
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    if name == "pandas":
        import pandas as pd
    else:
        from higgs_lora.data.read import load_table
    baseline = peak_mb()
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    extra = {}
    if name == "pandas":  # exactly the notebook's two lines
        higgs = pd.read_csv(path, compression="gzip", header=None)
        X = higgs.iloc[:, 1:].to_numpy(dtype=np.float32)
        y = higgs.iloc[:, 0].to_numpy(dtype=np.float32)
    else:
        table = load_table(path, use_cache=name != "nocache", cache_dir=cache_dir)
        X, y = table.features, table.labels
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    peak = peak_mb()
    if name == "reload":  # what a first pass over the mapped data costs on top (page cache -> memory)
        t1 = time.perf_counter()
        X.sum(dtype=np.float64)
        extra["first_pass_seconds"] = time.perf_counter() - t1
    digest = hashlib.sha256(np.ascontiguousarray(X).data).hexdigest()[:16] + "/" + \
        hashlib.sha256(np.ascontiguousarray(y.astype(np.uint8)).data).hexdigest()[:16]
    return dict(case=name, seconds=seconds, cpu_seconds=cpu, peak_mb=peak, import_mb=baseline, rows=int(X.shape[0]),
                final_mb=(X.shape[0] * X.shape[1] * 4 + X.shape[0]) / 2**20, digest=digest, **extra)


def _run_case(name: str, path: Path, cache_dir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", name, "--file", str(path), "--cache-dir", str(cache_dir)],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    import pyarrow
    try:
        import pandas
        pandas_version = pandas.__version__
    except ImportError:
        pandas_version = "not installed"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    model += " (" + ("AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2") + ")"
    return (f"nproc {os.cpu_count()}, CPU {model}, load average {load}; Python {platform.python_version()}, "
            f"numpy {np.__version__}, pyarrow {pyarrow.__version__}, pandas {pandas_version}")


def _run_process(cmd: list[str]) -> dict:
    """Wall seconds and CPU seconds (all threads, from wait4) of one whole process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(cmd)}\n{err[-2000:]}")
    return dict(seconds=wall, cpu_seconds=usage.ru_utime + usage.ru_stime)


def processes(path: Path, *, rounds: int) -> None:
    import statistics
    cli = str(Path(sys.executable).with_name("higgs-lora"))
    cases = {"pandas": [sys.executable, "-c", f"import pandas; pandas.read_csv({str(path)!r}, header=None)"],
             "prepare": [cli, "prepare", str(path)], "prepare (cached)": [cli, "prepare", str(path)]}
    results: dict[str, list[dict]] = {k: [] for k in cases}
    for r in range(rounds):
        cache = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=ROOT / "bench-data"))
        try:
            for name, cmd in cases.items():
                res = _run_process(cmd + (["--cache-dir", str(cache)] if name != "pandas" else []))
                results[name].append(res)
                print(f"  round {r + 1} {name:18s} {res['seconds']:8.2f} s wall {res['cpu_seconds']:8.2f} s CPU",
                      file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("seconds", "cpu_seconds")} for k, v in results.items()}
    print(f"whole processes, medians of {rounds} interleaved rounds:")
    for name, cmd in cases.items():
        print(f"  {name:18s} {med[name]['seconds']:8.2f} s wall {med[name]['cpu_seconds']:8.2f} s CPU   "
              f"(walls: {', '.join('%.2f' % x['seconds'] for x in results[name])})   $ {' '.join(cmd[:2])} ...")
    ratio = med["pandas"]["seconds"] / med["prepare"]["seconds"]
    print(f"pandas / higgs-lora prepare (first read): {ratio:.2f}x wall (target >= 4x: {'PASS' if ratio >= 4 else 'FAIL'}); "
          f"{med['pandas']['cpu_seconds'] / med['prepare']['cpu_seconds']:.2f}x in CPU seconds")
    cached = med["prepare (cached)"]["seconds"]
    print(f"higgs-lora prepare on the cached file: {cached:.2f} s wall (target <= 0.5 s: {'PASS' if cached <= 0.5 else 'FAIL'})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=11_000_000, help="rows of the synthetic file (default: as many as HIGGS)")
    ap.add_argument("--file", type=Path, help="a HIGGS-format .csv.gz to read instead of the synthetic one")
    ap.add_argument("--cases", default="pandas,nocache,build,reload",
                    help="comma-separated subset of pandas,nocache,build,reload")
    ap.add_argument("--processes", type=int, metavar="N", help="compare whole processes instead, N interleaved rounds")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(_case(args.case, str(args.file), str(args.cache_dir))))
        return

    print(_machine())
    path = args.file
    if path is None:
        path = ROOT / "bench-data" / f"higgs_synth_{args.rows}.csv.gz"
        if path.exists():
            print(f"synthetic file: {path} (reused)")
        else:
            seconds = synthesize(path, rows=args.rows)
            print(f"synthetic file: {path} written in {seconds:.1f} s")
    print(f"file: {path.stat().st_size / 2**30:.2f} GiB")
    if args.processes:
        processes(path, rounds=args.processes)
        print(f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (the cores are shared)")
        return
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=ROOT / "bench-data" if args.file is None else None))
    labels = {"pandas": "(a) pandas.read_csv + to_numpy(float32)", "nocache": "(b) load_table, use_cache=False",
              "build": "(c) load_table, building the cache", "reload": "(d) load_table, from the cache"}
    results = {}
    try:
        for name in args.cases.split(","):
            print(f"  running {labels[name]} ...", file=sys.stderr, flush=True)
            results[name] = _run_case(name, path, cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    final_mb = next(iter(results.values()))["final_mb"]
    print(f"\nrows {next(iter(results.values()))['rows']:,}; final arrays (float32 features + uint8 labels) "
          f"{final_mb:,.0f} MiB\n")
    print(f"{'case':42s} {'seconds':>8s} {'CPU s':>7s} {'peak RSS MiB':>13s} {'after imports':>14s} "
          f"{'peak/final':>11s}  arrays")
    for name, r in results.items():
        print(f"{labels[name]:42s} {r['seconds']:8.2f} {r['cpu_seconds']:7.1f} {r['peak_mb']:13,.0f} "
              f"{r['import_mb']:14,.0f} {r['peak_mb'] / final_mb:11.2f}  {r['digest']}")
    print()
    if "pandas" in results and "nocache" in results:
        print(f"pandas / our first read (no cache): {results['pandas']['seconds'] / results['nocache']['seconds']:.2f}x "
              f"(target >= 5x); in CPU seconds {results['pandas']['cpu_seconds'] / results['nocache']['cpu_seconds']:.2f}x")
    if "pandas" in results and "build" in results:
        print(f"pandas / our first read building the cache: "
              f"{results['pandas']['seconds'] / results['build']['seconds']:.2f}x")
    if "reload" in results:
        r = results["reload"]
        print(f"cached reload: {r['seconds']:.3f} s (target <= 1.5 s); one pass over the mapped features "
              f"afterwards: {r['first_pass_seconds']:.2f} s")
    for name in ("nocache", "build"):
        if name in results:
            r = results[name]
            print(f"{labels[name]}: peak / final arrays {r['peak_mb'] / final_mb:.2f}x (target <= 2x); "
                  f"without the interpreter and imports {(r['peak_mb'] - r['import_mb']) / final_mb:.2f}x")
    digests = {r["digest"] for r in results.values()}
    print("arrays identical across cases: " + ("yes" if len(digests) == 1 else f"NO ({len(digests)} variants)"))
    print(f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (the cores are shared: "
          "wall times depend on what else runs)")


if __name__ == "__main__":
    main()
