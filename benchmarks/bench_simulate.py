"""Speed of the built-in simulator on one core, and of the HIGGS-format writer.

usage: python benchmarks/bench_simulate.py [--events N] [--repeats R] [--write ROWS] [--workers W]

Prints events/s for simulate() (best of R, wall clock and process CPU time: on a busy machine the CPU
time is the fairer single-core figure), then, with --write, rows/s for write_higgs_csv to .csv and .csv.gz.
"""
import os

# One thread everywhere, before numpy or torch start their pools.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from higgs_lora.data.simulate import simulate, write_higgs_csv  # noqa: E402

torch.set_num_threads(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=int, default=0, metavar="ROWS", help="also time writing this many rows")
    parser.add_argument("--workers", type=int, default=None, help="writer processes (default: all CPUs)")
    args = parser.parse_args()

    simulate(10_000, seed=0)                              # warm-up: imports, first allocations
    best_wall = best_cpu = float("inf")
    for r in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        simulate(args.events, seed=r)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    print(f"simulate: {args.events:,} events, best of {args.repeats}: "
          f"{args.events / best_wall:,.0f} events/s wall, {args.events / best_cpu:,.0f} events/s CPU (1 thread)")

    if args.write:
        x, y = simulate(args.write, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("sim.csv", "sim.csv.gz"):
                path = Path(tmp) / name
                wall = time.perf_counter()
                write_higgs_csv(path, x, y, workers=args.workers)
                wall = time.perf_counter() - wall
                print(f"write {name}: {args.write:,} rows in {wall:.1f} s = {args.write / wall:,.0f} rows/s, "
                      f"{path.stat().st_size / 1e6:,.0f} MB (workers={args.workers or len(os.sched_getaffinity(0))})")


if __name__ == "__main__":
    main()
