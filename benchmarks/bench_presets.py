"""The evidence behind `--preset default`: candidate recipes, the equal-budget comparison, the adapter sweep.

    .venv/bin/python benchmarks/bench_presets.py kde        # the bandwidth choice of the second data set
    .venv/bin/python benchmarks/bench_presets.py select --only A B C D E F G H I          # round 1 (presets_select.txt)
    .venv/bin/python benchmarks/bench_presets.py select --only J K M --safety 0.95 \
        --out benchmarks/results/presets_select2.txt                                     # round 2
    .venv/bin/python benchmarks/bench_presets.py select --only N O P --safety 0.95 \
        --out benchmarks/results/presets_select3.txt                                     # round 3
    .venv/bin/python benchmarks/bench_presets.py select --only Q --safety 0.95 \
        --out benchmarks/results/presets_select4.txt                                     # round 4
    .venv/bin/python benchmarks/bench_presets.py compare    # notebook vs default, 3 seeds, both data sets
    .venv/bin/python benchmarks/bench_presets.py adapters   # adapter / fine-tuning sweep on the extra rows
    .venv/bin/python benchmarks/bench_presets.py ft_budget  # fine-tuning epochs, batch and lr by extra rows

(Round 1 ran before J-P were in the list, as plain `select`.) About 26 minutes in all on one thread.

Each part writes benchmarks/results/presets_<part>.txt (tables, then one JSON line per run).

Data sets (1,100,000 rows each, the notebook's split: first 200k train, last 50k test, 850k extra):
  sim  the built-in simulator, simulated_table(1_100_000, seed=2014)
  kde  a smoothed bootstrap of the 1,000 real HIGGS rows in tests/data (higgs_lora.data.kde, seed 2014)

Everything runs on ONE thread (torch and BLAS), runs one after another, so timings of different recipes
are comparable. The budget is the notebook preset's own base-training time (the whole fit() call,
validation passes included for recipes that have them), counted as the CPU time of the process: this
machine's 2 cores are shared with other jobs (load average 4-5 during these runs), which stretches wall
time by whatever else runs at that moment, while one thread's CPU time is what the training itself costs,
and it equals the wall time on an otherwise idle core. Wall times are printed too.
`select` measures the budget twice per data set, around the candidates; a candidate's epochs are set from
a calibration (CPU seconds per epoch of its precision, batch and width, measured back to back with the
notebook's) so that its predicted time is at most 90% of the budget, and its measured time is printed
beside the budget. `compare` interleaves notebook and default runs seed by seed and prints every pair.

Choices are made on validation rows only (the last 10% of the train rows, as --val-fraction does);
the test rows are reported, never used to choose.
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"  # before numpy and torch start their pools

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from higgs_lora.studies import strategies  # noqa: E402
from higgs_lora.config import BUDGET_MIN_STEPS, ModelConfig, budget, preset  # noqa: E402
from higgs_lora.data import Standardizer, split_rows  # noqa: E402
from higgs_lora.data.kde import choose_bandwidth, kde_table, loo_log_likelihood, read_higgs_rows  # noqa: E402
from higgs_lora.data.simulate import simulated_table  # noqa: E402
from higgs_lora.report.metrics import binary_metrics  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402
from higgs_lora.hardware.runtime import predict_logits  # noqa: E402
from higgs_lora.data.sources import TensorData  # noqa: E402
from higgs_lora.train import fit  # noqa: E402
import dataclasses  # noqa: E402

torch.set_num_threads(1)

ROWS, DATA_SEED = 1_100_000, 2014
REAL_SAMPLE = common.ROOT / "tests" / "data" / "higgs_real_sample.csv"
RESULTS = common.ROOT / "benchmarks" / "results"
SEEDS = (1234, 1235, 1236)
VAL_FRACTION = 0.1
BUDGET_SAFETY = 0.9


# ---------------------------------------------------------------- data

_TABLES: dict = {}
_TENSORS: dict = {}


def table(name: str):
    if name not in _TABLES:
        if name == "sim":
            _TABLES[name] = simulated_table(ROWS, seed=DATA_SEED)
        else:
            x, y = read_higgs_rows(REAL_SAMPLE)
            _TABLES[name] = kde_table(ROWS, seed=DATA_SEED, source_features=x, source_labels=y)
    return _TABLES[name]


def tensors(name: str, val_fraction: float) -> dict:
    """Standardized (x, y) for train, val, extra, test; standardizer fit on the train rows, as the pipeline does."""
    key = (name, val_fraction)
    if key not in _TENSORS:
        t = table(name)
        split = split_rows(t.rows, val_fraction=val_fraction, source=t.source)
        st = Standardizer.fit(t.features[split.train])

        def part(rows):
            if rows.stop <= rows.start:
                return None
            return (torch.from_numpy(st.transform(t.features[rows])),
                    torch.from_numpy(t.labels[rows].astype(np.float32)))
        _TENSORS[key] = dict(train=part(split.train), val=part(split.val), extra=part(split.extra),
                             test=part(split.test), split=split)
    return _TENSORS[key]


# ---------------------------------------------------------------- one base training

def metrics_of(model, xy) -> dict:
    m = binary_metrics(predict_logits(model, xy[0]), xy[1])
    return dict(auc=m["roc_auc"], acc=m["accuracy"], loss=m["log_loss"])


def train_base(cfg, data_name: str, *, keep_model: bool = False) -> dict:
    d = tensors(data_name, cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    model = ResidualMLP.from_config(cfg.model)
    val = TensorData(*d["val"], batch_size=cfg.batch_size) if d["val"] is not None else None
    t, c = time.perf_counter(), time.process_time()
    r = fit(model, TensorData(*d["train"], batch_size=cfg.batch_size), cfg.base_recipe(), val=val, progress=False,
            verbose=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    row = dict(data=data_name, seed=cfg.seed, preset=cfg.preset, epochs=cfg.epochs, epochs_run=len(r.history),
               best_epoch=r.best_epoch, cpu_s=cpu, wall_s=wall, epoch_s=[h["seconds"] for h in r.history],
               test=metrics_of(model, d["test"]), val=metrics_of(model, d["val"]) if d["val"] is not None else None)
    if keep_model:
        row["model"] = model
    return row


def seconds_per_epoch(cfg, data_name: str, *, epochs: int = 2) -> float:
    """Median CPU seconds of an epoch of this recipe's arithmetic (after one warm-up epoch), validation pass included."""
    d = tensors(data_name, cfg.val_fraction)
    torch.manual_seed(0)
    model = ResidualMLP.from_config(cfg.model)
    val = TensorData(*d["val"], batch_size=cfg.batch_size) if d["val"] is not None else None
    times = []
    for e in range(epochs + 1):
        t = time.process_time()
        recipe = dataclasses.replace(cfg.base_recipe(), epochs=1, seed=e, weight_decay=0.0, schedule="constant",
                                     warmup_frac=0.0, patience=0)
        fit(model, TensorData(*d["train"], batch_size=cfg.batch_size), recipe, val=val, progress=False, verbose=False)
        times.append(time.process_time() - t)
    return statistics.median(times[1:])


# ---------------------------------------------------------------- part 1: candidates on validation

def candidates() -> list[tuple[str, dict]]:
    """A cumulative ladder from the notebook's recipe, then alternatives to its top. `epochs` is filled in
    from the budget. Every candidate carves 10% validation rows."""
    v = dict(val_fraction=VAL_FRACTION)
    ladder = [
        ("A notebook recipe (fp32, 10 ep) + val rows", dict(v, epochs=10)),
        ("B + bf16 autocast, epochs to fill the budget", dict(v, precision="bf16")),
        ("C + cosine, 5% warm-up", dict(v, precision="bf16", schedule="cosine", warmup_frac=0.05)),
        ("D + peak lr 2e-3", dict(v, precision="bf16", schedule="cosine", warmup_frac=0.05, lr=2e-3)),
        ("E + AdamW, weight decay 1e-2", dict(v, precision="bf16", schedule="cosine", warmup_frac=0.05, lr=2e-3,
                                             optimizer="adamw", weight_decay=1e-2)),
        ("F + best-epoch restore (patience 3)", dict(v, precision="bf16", schedule="cosine", warmup_frac=0.05,
                                                    lr=2e-3, optimizer="adamw", weight_decay=1e-2, patience=3)),
    ]
    top = ladder[-1][1]
    alts = [
        ("G = F with 3 residual blocks", dict(top, model=dict(n_blocks=3))),
        ("H = F with batch 2048, lr 1.4e-3", dict(top, batch_size=2048, lr=1.4e-3)),
        ("I = F with batch 8192, lr 2.8e-3", dict(top, batch_size=8192, lr=2.8e-3)),
        # second round (presets_select2.txt), after the first showed lr and epochs matter most
        ("J = E with peak lr 3e-3", dict(ladder[4][1], lr=3e-3)),
        ("K = E with best-epoch restore, patience 5", dict(ladder[4][1], patience=5)),
        ("M = E with weight decay 5e-2", dict(ladder[4][1], weight_decay=5e-2)),
        # third round (presets_select3.txt): how far the learning rate goes
        ("N = E with peak lr 5e-3", dict(ladder[4][1], lr=5e-3)),
        ("O = E with peak lr 1e-2", dict(ladder[4][1], lr=1e-2)),
        ("P = J with a constant lr (no cosine)", dict(ladder[4][1], lr=3e-3, schedule="constant")),
        # fourth round (presets_select4.txt): is the cosine decay still worth it at the chosen peak lr?
        ("Q = O with a constant lr (no cosine)", dict(ladder[4][1], lr=1e-2, schedule="constant")),
    ]
    return ladder + alts


def make_cfg(values: dict, *, seed: int, epochs: int | None = None):
    values = dict(values)
    model = values.pop("model", None)
    cfg = preset("notebook", seed=seed, **values)
    if epochs is not None:
        cfg.epochs = epochs
    if model:
        cfg.model = ModelConfig(**{**cfg.model.to_dict(), **model})
    return cfg


def part_select(args) -> list[str]:
    lines, runs = [], []
    chosen = [(n, v) for n, v in candidates() if not args.only or n.split()[0] in args.only]
    for data_name in args.data:
        budgets = []
        nb = train_base(make_cfg({}, seed=SEEDS[0]), data_name)
        budgets.append(nb["cpu_s"])
        runs.append(dict(nb, name="notebook preset (no val rows)"))
        # Calibration: seconds per epoch of each distinct arithmetic, next to the notebook's own.
        calib, ref = {}, seconds_per_epoch(make_cfg({}, seed=0), data_name)
        for _, values in chosen:
            cfg = make_cfg(values, seed=0)
            key = (cfg.precision, cfg.batch_size, cfg.model.n_blocks, cfg.model.width)
            if key not in calib:
                calib[key] = seconds_per_epoch(cfg, data_name) / ref
        budget = nb["cpu_s"]
        table_rows = []
        for name, values in chosen:
            cfg = make_cfg(values, seed=SEEDS[0])
            ratio = calib[(cfg.precision, cfg.batch_size, cfg.model.n_blocks, cfg.model.width)]
            epochs = values.get("epochs") or max(1, int(args.safety * nb["epochs"] / ratio))
            cfg.epochs = epochs
            r = dict(train_base(cfg, data_name), name=name, epoch_cost_vs_notebook=ratio)
            runs.append(r)
            table_rows.append(r)
            print(f"{data_name} {name}: {epochs} ep, cpu {r['cpu_s']:.1f}s wall {r['wall_s']:.1f}s (budget {budget:.1f}s), "
                  f"val AUC {r['val']['auc']:.4f}", file=sys.stderr, flush=True)
        nb2 = train_base(make_cfg({}, seed=SEEDS[0]), data_name)
        budgets.append(nb2["cpu_s"])
        runs.append(dict(nb2, name="notebook preset (no val rows), again"))
        lines += ["", f"data {data_name}: {table(data_name).source}",
                  f"budget = notebook preset's base-training CPU time: {budgets[0]:.1f}s before the candidates, "
                  f"{budgets[1]:.1f}s after; notebook preset test AUC {nb['test']['auc']:.4f} acc {100 * nb['test']['acc']:.2f}%",
                  f"{'candidate':<46} {'ep':>3} {'cost/ep':>7} {'cpu s':>6} {'wall s':>7} {'best':>4} {'val AUC':>8} {'val acc':>8}"
                  f" {'test AUC':>8} {'test acc':>8}"]
        for r in table_rows:
            lines.append(f"{r['name']:<46} {r['epochs']:>3} {r['epoch_cost_vs_notebook']:>7.2f} {r['cpu_s']:>6.1f} {r['wall_s']:>7.1f} "
                         f"{r['best_epoch'] or '-':>4} {r['val']['auc']:>8.4f} {100 * r['val']['acc']:>7.2f}% "
                         f"{r['test']['auc']:>8.4f} {100 * r['test']['acc']:>7.2f}%")
    return lines, runs


# ---------------------------------------------------------------- part 2: notebook vs default, 3 seeds

def mean_spread(values) -> str:
    values = list(values)
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def part_compare(args) -> list[str]:
    lines, runs = [], []
    for data_name in args.data:
        pairs = []
        for seed in SEEDS:  # interleaved: notebook, default, notebook, default, ...
            nb = dict(train_base(preset("notebook", seed=seed), data_name), name="notebook")
            de = dict(train_base(preset("default", precision="fp32", seed=seed), data_name), name="default")
            runs += [nb, de]
            pairs.append((nb, de))
            print(f"{data_name} seed {seed}: notebook cpu {nb['cpu_s']:.1f}s AUC {nb['test']['auc']:.4f} | default "
                  f"cpu {de['cpu_s']:.1f}s AUC {de['test']['auc']:.4f}", file=sys.stderr, flush=True)
        d_auc = [de["test"]["auc"] - nb["test"]["auc"] for nb, de in pairs]
        d_acc = [100 * (de["test"]["acc"] - nb["test"]["acc"]) for nb, de in pairs]
        lines += ["", f"data {data_name}: {table(data_name).source}",
                  f"{'seed':>5} {'nb cpu s':>8} {'def cpu s':>9} {'nb wall s':>9} {'def wall s':>10} {'def ep':>6} {'best':>4} {'nb AUC':>7} {'def AUC':>7}"
                  f" {'nb acc':>7} {'def acc':>7}"]
        for nb, de in pairs:
            lines.append(f"{nb['seed']:>5} {nb['cpu_s']:>8.1f} {de['cpu_s']:>9.1f} {nb['wall_s']:>9.1f} {de['wall_s']:>10.1f} {de['epochs_run']:>6} "
                         f"{de['best_epoch'] or '-':>4} {nb['test']['auc']:>7.4f} {de['test']['auc']:>7.4f} "
                         f"{100 * nb['test']['acc']:>6.2f}% {100 * de['test']['acc']:>6.2f}%")
        lines += [f"notebook  test AUC {mean_spread(p[0]['test']['auc'] for p in pairs)}   test acc % "
                  f"{mean_spread(100 * p[0]['test']['acc'] for p in pairs)}   cpu s {mean_spread(p[0]['cpu_s'] for p in pairs)}",
                  f"default   test AUC {mean_spread(p[1]['test']['auc'] for p in pairs)}   test acc % "
                  f"{mean_spread(100 * p[1]['test']['acc'] for p in pairs)}   cpu s {mean_spread(p[1]['cpu_s'] for p in pairs)}",
                  f"default - notebook (paired by seed): AUC {mean_spread(d_auc)} (target >= 0.005: "
                  f"{common.verdict(statistics.mean(d_auc) >= 0.005)}), accuracy points {mean_spread(d_acc)} "
                  f"(target >= 0.5: {common.verdict(statistics.mean(d_acc) >= 0.5)})",
                  f"time: default CPU <= notebook CPU in {sum(de['cpu_s'] <= nb['cpu_s'] for nb, de in pairs)} of "
                  f"{len(pairs)} pairs (wall: {sum(de['wall_s'] <= nb['wall_s'] for nb, de in pairs)}); ratio of means: "
                  f"CPU {statistics.mean(p[1]['cpu_s'] for p in pairs) / statistics.mean(p[0]['cpu_s'] for p in pairs):.2f}, "
                  f"wall {statistics.mean(p[1]['wall_s'] for p in pairs) / statistics.mean(p[0]['wall_s'] for p in pairs):.2f}"]
    return lines, runs


# ---------------------------------------------------------------- part 3: adapters on the extra rows

ADAPTER_SWEEP = [  # (strategy, rank, scale, lr, targets)
    ("lora", 4, 0.1, 5e-4, ("all",)),     # the notebook's
    ("lora", 4, 1.0, 1e-3, ("all",)),
    ("lora", 8, 1.0, 1e-3, ("all",)),
    ("lora", 16, 1.0, 1e-3, ("all",)),
    ("lora", 8, 1.0, 3e-3, ("all",)),
    ("lora", 8, 1.0, 1e-3, ("blocks",)),
    ("lora", 8, 1.0, 1e-3, ("hidden", "output")),
    ("full", None, None, 1e-4, None),
    ("full", None, None, 3e-4, None),
    ("head", None, None, 1e-3, None),
    ("head", None, None, 3e-3, None),
]
ADAPTER_VAL_ROWS = 50_000


def adapter_base(data_name: str):
    """The base the adapter parts fine-tune (default preset, fp32, first seed), its data, the held-out last
    ADAPTER_VAL_ROWS extra rows that choose, and the base's metrics there."""
    cfg = preset("default", precision="fp32", seed=SEEDS[0])
    base_row = train_base(cfg, data_name, keep_model=True)
    base = base_row.pop("model").eval()
    d = tensors(data_name, cfg.val_fraction)
    x_extra, y_extra = d["extra"]
    held = (x_extra[-ADAPTER_VAL_ROWS:], y_extra[-ADAPTER_VAL_ROWS:])
    return base_row, base, d, held, metrics_of(base, held)


def part_adapters(args) -> list[str]:
    """One base per data set (default preset, first seed); fine-tune on the extra rows minus their last
    ADAPTER_VAL_ROWS, which choose; one epoch each (a short fine-tuning), same batch and precision."""
    lines, runs = [], []
    for data_name in args.data:
        base_row, base, d, held, base_held = adapter_base(data_name)
        x_extra, y_extra = d["extra"]
        ft = (x_extra[:-ADAPTER_VAL_ROWS], y_extra[:-ADAPTER_VAL_ROWS])
        lines += ["", f"data {data_name}: base = default preset, seed {SEEDS[0]}, test AUC {base_row['test']['auc']:.4f}; "
                  f"fine-tuning on {ft[0].shape[0]:,} extra rows for 1 epoch, chosen on the last {ADAPTER_VAL_ROWS:,} "
                  f"extra rows (base there: AUC {base_held['auc']:.4f}, acc {100 * base_held['acc']:.2f}%)",
                  f"{'strategy':<8} {'rank':>4} {'scale':>5} {'lr':>7} {'targets':<14} {'trainable':>9} {'wall s':>6}"
                  f" {'held AUC':>8} {'held acc':>8} {'dAUC':>7} {'test AUC':>8}"]
        for strategy, rank, scale, lr, targets in ADAPTER_SWEEP:
            c = preset("default", precision="fp32", seed=SEEDS[0], ft_epochs=1, ft_lr=lr, rank=rank, scale=scale, targets=targets)
            model = strategies.prepare(strategy, base, seed=c.seed, adapter=c.adapter_config() if strategy == "lora" else None)
            torch.manual_seed(c.seed)
            t = time.perf_counter()
            fit(model, TensorData(*ft, batch_size=c.batch_size), c.finetune_recipe(epochs=1, lr=lr), progress=False,
                verbose=False)
            wall = time.perf_counter() - t
            r = dict(data=data_name, strategy=strategy, rank=rank, scale=scale, lr=lr, targets=targets,
                     trainable=model.n_params(trainable_only=True), wall_s=wall, held=metrics_of(model, held),
                     test=metrics_of(model, d["test"]))
            runs.append(r)
            lines.append(f"{strategy:<8} {rank or '-':>4} {scale or '-':>5} {lr:>7.0e} {' '.join(targets or ['-']):<14} "
                         f"{r['trainable']:>9,} {wall:>6.1f} {r['held']['auc']:>8.4f} {100 * r['held']['acc']:>7.2f}% "
                         f"{r['held']['auc'] - base_held['auc']:>+7.4f} {r['test']['auc']:>8.4f}")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines, runs


FT_ROWS = (800_000, 80_000, 8_000)   # fine-tuning rows: the built-in run's extra part, and smaller ones
FT_LRS = (1e-3, 3e-3)
FT_MAX_EPOCHS = 8


def part_ft_budget(args) -> list[str]:
    """Issue 21 item 5: how long should the adapters train? One base per data set (default preset, first
    seed); the default adapters (rank 8, scale 1, every layer) fine-tuned on the first N extra rows, the
    last ADAPTER_VAL_ROWS extra rows held out to choose, at the default's batch 4096 and at the batch the
    base's budget() gives N rows (lr sqrt-scaled), each lr of FT_LRS. The learning rate is constant, so the
    state after epoch k of one long run is the state of a run of k epochs: one run gives the whole curve.
    An epoch's cost is its CPU seconds (one thread)."""
    lines, runs = [], []
    for data_name in args.data:
        base_row, base, d, held, base_held = adapter_base(data_name)
        x_extra, y_extra = d["extra"]
        lines += ["", f"data {data_name}: base = default preset, seed {SEEDS[0]}, test AUC {base_row['test']['auc']:.4f},"
                  f" held-out extra AUC {base_held['auc']:.4f}; adapters rank 8, scale 1, all layers"]
        for n in FT_ROWS:
            ft = (x_extra[:n], y_extra[:n])
            sized = budget(n).batch_size
            for batch in sorted({4096, sized}, reverse=True):
                for lr0 in FT_LRS:
                    lr = lr0 * math.sqrt(batch / 4096)
                    steps = -(-n // batch)
                    epochs = min(100, max(FT_MAX_EPOCHS, -(-BUDGET_MIN_STEPS // steps)))
                    c = preset("default", precision="fp32", seed=SEEDS[0], ft_lr=lr)
                    model = strategies.prepare("lora", base, seed=c.seed, adapter=c.adapter_config())
                    curve, clock = [], {"cpu": time.process_time()}

                    def on_epoch(history, model=model, curve=curve, clock=clock, held=held, test=d["test"]):
                        cpu = time.process_time() - clock["cpu"]
                        h, t = metrics_of(model, held), metrics_of(model, test)
                        curve.append(dict(epoch=len(history), cpu_s=cpu, held=h, test=t))
                        clock["cpu"] = time.process_time() - cpu   # evaluation is not the fine-tuning's cost
                    torch.manual_seed(c.seed)
                    fit(model, TensorData(*ft, batch_size=batch), c.finetune_recipe(epochs=epochs, lr=lr),
                        on_epoch=on_epoch, progress=False, verbose=False)
                    best = min(curve, key=lambda r: r["held"]["loss"])
                    r = dict(data=data_name, rows=n, batch=batch, lr=lr, steps_per_epoch=steps, curve=curve,
                             best_epoch=best["epoch"], base_held=base_held)
                    runs.append(r)
                    at = {k: next((c_ for c_ in curve if c_["epoch"] == k), None) for k in (1, 2, 3, 5)}
                    lines.append(
                        f"  rows {n:>7,} batch {batch:>4} lr {lr:.1e} ({steps:>3} steps/epoch, {epochs} epochs): held AUC "
                        + " ".join(f"e{k} {v['held']['auc']:.4f}" for k, v in at.items() if v)
                        + f" | best held loss at epoch {best['epoch']}: held AUC {best['held']['auc']:.4f} "
                        f"(dAUC {best['held']['auc'] - base_held['auc']:+.4f}), test AUC {best['test']['auc']:.4f}, "
                        f"{best['cpu_s']:.1f} cpu s")
                    print(lines[-1], file=sys.stderr, flush=True)
    return lines, runs


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["select", "compare", "adapters", "ft_budget", "kde"])
    p.add_argument("--data", nargs="+", default=["sim", "kde"], choices=["sim", "kde"])
    p.add_argument("--only", nargs="+", metavar="LETTER", help="select: only these candidates (A B ...)")
    p.add_argument("--safety", type=float, default=BUDGET_SAFETY,
                   help=f"select: predicted time / budget for the epoch count (default {BUDGET_SAFETY})")
    p.add_argument("--out", type=Path, help="results file (default: benchmarks/results/presets_<part>.txt)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    info = common.machine()
    head = common.machine_lines(info, ["benchmarks/bench_presets.py", *argv])
    if args.part == "kde":
        x, y = read_higgs_rows(REAL_SAMPLE)
        scores = loo_log_likelihood(x, y)
        lines = ["leave-one-out mean log density of the 1,000 real rows (per class, weighted) by bandwidth h:"]
        lines += [f"  h {h:.2f}  {s:10.3f}" for h, s in scores.items()]
        lines.append(f"chosen h = {choose_bandwidth(x, y)}")
        runs = []
    else:
        lines, runs = {"select": part_select, "compare": part_compare, "adapters": part_adapters,
                       "ft_budget": part_ft_budget}[args.part](args)
    lines.append(f"\ntotal {time.perf_counter() - t0:.0f}s")
    common.report(head + lines, args.out or RESULTS / f"presets_{args.part}.txt", runs=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
