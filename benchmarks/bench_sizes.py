"""The default preset against the trees at every size (issue 21): test AUC and training time of the
default (the Python API's fit, the CLI's path: budget by the training rows, validation rows, early
stopping), LightGBM with its defaults and XGBoost with its defaults, at 3,000 / 30,000 / 200,000 /
1,000,000 training rows, on the built-in simulation (`sim`) and the smoothed bootstrap of the real rows
(`kde`), both as bench_peers.py builds them (1,100,000 rows, cached in bench-data/).

    .venv/bin/python benchmarks/bench_sizes.py --sizes 3000 30000 --seeds 1234 1235 1236
    .venv/bin/python benchmarks/bench_sizes.py --sizes 200000 1000000 --seeds 1234 --tag large

Every model sees the first N rows (the default preset trains on 90 % of them and validates on the last
10 %; the trees train on all N) and is scored on the last 50,000 rows. The trees run with their library
defaults (LGBMClassifier(), XGBClassifier()), seeded. Times are the fit() call: wall and process CPU, on
--threads threads each (default 1). Results: benchmarks/results/sizes_<cpu>[_<tag>].txt (table, then one
JSON line a run) and, with --plot, docs/img/sizes_<cpu>[_<tag>].png (AUC against training rows);
`--replot FILE...` draws one plot from several result files.
A shared machine stretches wall times: compare CPU times there, and read the load average printed.
"""
import os
import sys

THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = THREADS  # before numpy and torch start their pools

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers  # noqa: E402  (the data sets and scores, shared)
import common  # noqa: E402

import numpy as np  # noqa: E402

from higgs_lora import api  # noqa: E402
from higgs_lora.data import split_rows  # noqa: E402
from higgs_lora.data.table import Table  # noqa: E402
from higgs_lora.hardware.runtime import resolve_device  # noqa: E402
from higgs_lora.data.sources import TableSource  # noqa: E402

SIZES = (3_000, 30_000, 200_000, 1_000_000)
TEST_ROWS = bench_peers.TEST_ROWS
MODELS = ("default", "lightgbm", "xgboost")


def rows_of(name: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train features, train labels, test features, test labels): the first n rows and the last 50,000."""
    x, y = bench_peers.raw_table(name)
    if n + TEST_ROWS > len(y):
        sys.exit(f"{name}: {n:,} training rows + {TEST_ROWS:,} test rows is more than its {len(y):,}")
    return (np.asarray(x[:n], dtype=np.float32), np.asarray(y[:n]), np.asarray(x[-TEST_ROWS:], dtype=np.float32),
            np.asarray(y[-TEST_ROWS:]))


def timed(f):
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t, time.process_time() - c


def run_default(name: str, n: int, seed: int) -> dict:
    """The default preset through the Python API (what `higgs-lora train` runs): the table of the n
    training rows and the test rows, split as the CLI splits it."""
    xtr, ytr, xte, yte = rows_of(name, n)
    table = Table(features=np.ascontiguousarray(np.concatenate([xtr, xte])), labels=np.concatenate([ytr, yte]),
                  feature_names=[f"f{i}" for i in range(xtr.shape[1])], source=f"{name}[:{n}]+test",
                  fingerprint=f"{name}-{n}")
    source = TableSource(table, resolve_device("cpu"))
    split = split_rows(table.rows, train_rows=n, test_rows=TEST_ROWS, val_fraction=0.1, source=name)
    data = api.Data(source=source, split=split, standardizer=source.fit_standardizer(split.train))
    recipe = api.recipe("default", seed=seed)
    model, wall, cpu = timed(lambda: api.fit(data, recipe=recipe, progress=False))
    auc = api.evaluate(model, data).roc_auc
    train = model.provenance["train"]
    return dict(auc=auc, wall_s=wall, cpu_s=cpu, epochs_run=len(model.history), epochs_max=train["epochs"],
                batch=train["batch_size"], precision=train["precision"], weight_decay=train["weight_decay"])


def run_tree(kind: str, name: str, n: int, seed: int) -> dict:
    xtr, ytr, xte, yte = rows_of(name, n)
    threads = int(THREADS)
    if kind == "lightgbm":
        import lightgbm as lgb
        model = lgb.LGBMClassifier(random_state=seed, n_jobs=threads, verbose=-1)
    else:
        import xgboost as xgb
        model = xgb.XGBClassifier(random_state=seed, n_jobs=threads)
    _, wall, cpu = timed(lambda: model.fit(xtr, ytr))
    p = model.predict_proba(xte)[:, 1]
    return dict(auc=bench_peers.scores(p, yte.astype(np.float32))["auc"], wall_s=wall, cpu_s=cpu)


def table_lines(runs: list[dict]) -> list[str]:
    lines = ["| data | training rows | model | test AUC (mean ± sd) | seeds | CPU s | wall s | notes |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    keys = sorted({(r["data"], r["rows"], r["model"]) for r in runs},
                  key=lambda k: (k[0], k[1], MODELS.index(k[2])))
    for data, rows, model in keys:
        rs = [r for r in runs if (r["data"], r["rows"], r["model"]) == (data, rows, model)]
        aucs = [r["auc"] for r in rs]
        sd = f" ± {statistics.stdev(aucs):.4f}" if len(aucs) > 1 else ""
        notes = "" if model != "default" else (
            f"batch {rs[0]['batch']}, wd {rs[0]['weight_decay']:.2g}, {rs[0]['precision']}, epochs run/max "
            + ", ".join(f"{r['epochs_run']}/{r['epochs_max']}" for r in rs))
        lines.append(f"| {data} | {rows:,} | {model} | {statistics.mean(aucs):.4f}{sd} | {len(rs)} | "
                     f"{statistics.mean(r['cpu_s'] for r in rs):.1f} | {statistics.mean(r['wall_s'] for r in rs):.1f} | "
                     f"{notes} |")
    return lines


def plot(runs: list[dict], path: Path, cpu: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datas = sorted({r["data"] for r in runs})
    fig, axes = plt.subplots(1, len(datas), figsize=(5.5 * len(datas), 4), squeeze=False)
    for ax, data in zip(axes[0], datas):
        for model in MODELS:
            rs = [r for r in runs if r["data"] == data and r["model"] == model]
            sizes = sorted({r["rows"] for r in rs})
            if not sizes:
                continue
            means = [statistics.mean(r["auc"] for r in rs if r["rows"] == s) for s in sizes]
            ax.plot(sizes, means, marker="o", label=model)
        ax.set_xscale("log")
        ax.set(title=data, xlabel="training rows", ylabel="test ROC AUC")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"default preset vs trees ({cpu})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=["sim", "kde"], choices=["sim", "kde"])
    p.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    p.add_argument("--seeds", nargs="+", type=int, default=[1234, 1235, 1236])
    p.add_argument("--skip", nargs="*", default=[], choices=MODELS)
    p.add_argument("--threads", default="1", help="threads of every model (default 1)")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    p.add_argument("--plot", action="store_true", help="also draw docs/img/sizes_<cpu>[_<tag>].png")
    p.add_argument("--replot", nargs="+", metavar="RESULTS", type=Path,
                   help="measure nothing: draw docs/img/sizes_<cpu>[_<tag>].png from these result files' JSON lines")
    args = p.parse_args(argv)
    info = common.machine()
    cpu = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")[:40]
    stem = f"sizes_{cpu}" + (f"_{args.tag}" if args.tag else "")
    if args.replot:
        runs = [json.loads(line) for f in args.replot for line in f.read_text().splitlines() if line.startswith("{")]
        plot(runs, common.ROOT / "docs" / "img" / f"{stem}.png", info["cpu"])
        return 0
    runs = []
    for data in args.data:
        for n in args.sizes:
            for seed in args.seeds:
                for model in MODELS:
                    if model in args.skip:
                        continue
                    r = run_default(data, n, seed) if model == "default" else run_tree(model, data, n, seed)
                    r |= dict(data=data, rows=n, model=model, seed=seed, load_avg=os.getloadavg()[0])
                    runs.append(r)
                    print(f"{data} {n:>9,} {model:9s} seed {seed}: AUC {r['auc']:.4f}  cpu {r['cpu_s']:.1f}s  "
                          f"wall {r['wall_s']:.1f}s  load {r['load_avg']:.1f}", file=sys.stderr, flush=True)
    lines = common.machine_lines(info, sys.argv) + ["", *table_lines(runs)]
    common.report(lines, bench_peers.RESULTS / f"{stem}.txt", runs=runs)
    if args.plot:
        plot(runs, common.ROOT / "docs" / "img" / f"{stem}.png", info["cpu"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
