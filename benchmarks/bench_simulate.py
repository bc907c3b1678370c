"""Speed of the built-in simulator on one core, and of the HIGGS-format writer.

usage: python benchmarks/bench_simulate.py [--events N] [--repeats R] [--write ROWS] [--workers W] [--auc]

Prints events/s for simulate() (best of R, wall clock and process CPU time: on a busy machine the CPU
time is the fairer single-core figure); with --write, rows/s for write_higgs_csv to .csv and .csv.gz;
with --auc, the test ROC AUC of the notebook's network trained on simulated data (1.1M events: the first
200k train it, the last 200k test it; Adam 1e-3, batch 1024, 10 epochs).
"""
import os

# One thread everywhere, before numpy or torch start their pools.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from higgs_lora.data.simulate import simulate, write_higgs_csv  # noqa: E402
from higgs_lora.data.standardize import Standardizer  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402

torch.set_num_threads(1)


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=int, default=0, metavar="ROWS", help="also time writing this many rows")
    parser.add_argument("--workers", type=int, default=None, help="writer threads (default: one per CPU)")
    parser.add_argument("--auc", action="store_true", help="also measure how learnable the data are")
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

    if args.auc:
        learnability()


def learnability(events=1_100_000, n_train=200_000, n_test=200_000, epochs=10, batch=1024):
    from sklearn.metrics import roc_auc_score     # a test dependency: only needed here
    torch.manual_seed(0)
    x, y = simulate(events, seed=2024)
    standardizer = Standardizer.fit(x[:n_train])
    train = torch.from_numpy(standardizer.transform(x[:n_train]))
    test = torch.from_numpy(standardizer.transform(x[-n_test:]))
    target = torch.from_numpy(y[:n_train].astype(np.float32))
    model = ResidualMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(n_train).split(batch):
            opt.zero_grad()
            loss_fn(model(train[idx]), target[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            auc = roc_auc_score(y[-n_test:], model(test).numpy())
        print(f"epoch {epoch + 1}: test ROC AUC {auc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
