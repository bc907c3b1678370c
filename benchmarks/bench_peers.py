"""Our networks against gradient-boosted trees (issue 13): LightGBM and XGBoost vs `--preset notebook` and
`--preset default`, same rows, same threads; and the candidate pieces of the default model, chosen on
validation rows at an equal time budget.

    .venv/bin/pip install -e ".[peers]"                      # lightgbm, xgboost (never a package dependency)
    .venv/bin/python benchmarks/bench_peers.py select  --data sim kde --only ...   # candidates, validation rows
    .venv/bin/python benchmarks/bench_peers.py peers   --data sim kde --seeds 1234 1235 1236
    .venv/bin/python benchmarks/bench_peers.py peers   --data sim kde --rows all --seeds 1234

Data (the notebook's split of 1,100,000 rows: first 200,000 train, last 50,000 test), built as
bench_presets.py builds it and cached in bench-data/ as .npy:
  sim  the built-in simulator, simulated_table(1_100_000, seed=2014)
  kde  a smoothed bootstrap of the 1,000 real HIGGS rows in tests/data (higgs_lora.data.kde, seed 2014)
  sim11m  bench-data/sim_11M.csv.gz (`higgs-lora simulate --events 11000000 --seed 2`), 11,000,000 rows
  simw  sim with analysis-like event weights (bench_weight_policies.synthetic_weights: signal 1/100 of the
        background's total, ~5% negative); every model trains on the same weights under the same policy
        (--class-balance, --negative-weights: train/weighting.py), every score is weighted by the signed
        weights. XGBoost refuses negative weights: where the policy keeps them, it says so and zeroes them.
`--rows all` trains on all non-test rows (1,050,000; sim11m: 10,950,000) instead of the first 200,000.

Everyone sees the same train part (first --rows rows). The presets carve their validation rows from its end
(the default preset: the last 10 %) and train on the rest; the trees train on the whole part, untuned, with
the issue's settings: 500 trees, 255 leaves, learning rate 0.1, at least 100 rows a leaf (XGBoost has no
row count: lossguide growth, 255 leaves, min_child_weight 25, i.e. 100 rows of hessian p(1-p) = 1/4).
Trees and networks alike run on --threads threads (default 1: a shared 2-core machine); the network in
fp32 unless --precision says otherwise. Times are the whole fit() / train() call, wall and process CPU.

Curves: the trees' test AUC every 50 trees and the networks' after every epoch, against the cumulative
time at that point (the networks' per-epoch states are kept and scored after training, so scoring costs
no training time). Results: benchmarks/results/peers_<part>_<tag>.txt: tables, then one JSON line a run.
"""
import os
import sys

THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = THREADS  # before numpy and torch start their pools

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_weight_policies import synthetic_weights, weighted_auc, weighted_roc  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from higgs_lora.config import CLASS_BALANCES, NEGATIVE_WEIGHTS, ModelConfig, TrainConfig, preset  # noqa: E402
from higgs_lora.config import DEFAULT_PRECISION, PRECISIONS  # noqa: E402
from higgs_lora.data import Standardizer, split_rows  # noqa: E402
from higgs_lora.data.kde import kde_table, read_higgs_rows  # noqa: E402
from higgs_lora.data.simulate import simulated_table  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402
from higgs_lora.hardware.runtime import predict_logits  # noqa: E402
from higgs_lora.data.sources import TensorData  # noqa: E402
from higgs_lora.train import fit  # noqa: E402
from higgs_lora.data.weighting import AS_READ, Policy, make_plan  # noqa: E402

torch.set_num_threads(int(THREADS))

ROWS, TEST_ROWS, DATA_SEED = 1_100_000, 50_000, 2014
REAL_SAMPLE = common.ROOT / "tests" / "data" / "higgs_real_sample.csv"
RESULTS = common.ROOT / "benchmarks" / "results"
N_TREES, CURVE_EVERY = 500, 50


# ---------------------------------------------------------------- data

BIG_FILE = common.BENCH_DATA / "sim_11M.csv.gz"   # `higgs-lora simulate --events 11000000 --seed 2 --out ...`


def n_rows(name: str) -> int:
    return 11_000_000 if name == "sim11m" else ROWS


def raw_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "simw":
        return raw_table("sim")
    if name == "sim11m":  # the 11M-row HIGGS-format file, read (and cached) as `higgs-lora prepare` reads it
        from higgs_lora.data.read import load_table
        if not BIG_FILE.exists():
            sys.exit(f"{BIG_FILE}: missing; make it with higgs-lora simulate --events 11000000 --seed 2 --out {BIG_FILE}")
        t = load_table(BIG_FILE, progress=True)
        return t.features, t.labels
    cache = common.BENCH_DATA / f"peers_{name}_{ROWS}_seed{DATA_SEED}"
    if (cache / "labels.npy").exists():
        return np.load(cache / "features.npy", mmap_mode="r"), np.load(cache / "labels.npy")
    if name == "sim":
        t = simulated_table(ROWS, seed=DATA_SEED)
    else:
        x, y = read_higgs_rows(REAL_SAMPLE)
        t = kde_table(ROWS, seed=DATA_SEED, source_features=x, source_labels=y)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "features.npy", t.features)
    np.save(cache / "labels.npy", t.labels)
    return t.features, t.labels


def raw_weights(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """The event weights of a data set (simw), or None."""
    if name != "simw":
        return None
    from higgs_lora.data.table import HIGGS_FEATURES, Table
    return synthetic_weights(Table(features=x, labels=y, feature_names=list(HIGGS_FEATURES), source=name,
                                   fingerprint=name), seed=8)


def parts(name: str, *, train_rows: int, val_fraction: float) -> dict:
    """Standardized float32 arrays: train (the rows a network trains on), val, all (train + val, what the
    trees get), test; the standardizer is fit on the network's train rows, as the pipeline does. `weights`:
    the raw event weights of each part (None for unweighted data)."""
    x, y = raw_table(name)
    w = raw_weights(name, np.asarray(x), np.asarray(y))
    split = split_rows(n_rows(name), train_rows=train_rows, test_rows=TEST_ROWS, val_fraction=val_fraction, source=name)
    st = Standardizer.fit(np.asarray(x[split.train]))
    def part(rows):
        return st.transform(np.asarray(x[rows])), np.asarray(y[rows]).astype(np.float32)
    train_all = slice(0, split.train_rows)
    weights = None if w is None else {k: w[rows] for k, rows in
                                      (("train", split.train), ("val", split.val), ("all", train_all), ("test", split.test))}
    return dict(train=part(split.train), val=part(split.val) if split.val_rows else None,
                all=part(train_all), test=part(split.test), split=split.to_dict(), weights=weights)


def part_weights(d: dict, part: str) -> np.ndarray | None:
    return None if d.get("weights") is None else d["weights"][part]


def training_weights(d: dict, part: str, policy: Policy, *, model: str, refuses_negative: bool = False
                     ) -> tuple[np.ndarray | None, str | None]:
    """The weights a model trains `part` on under `policy`, as the network does (None: unweighted), and a note
    when the model cannot take them as they are (XGBoost: no negative weights; then they are set to 0)."""
    w, note = part_weights(d, part), None
    if w is None and policy.class_balance == "none":
        return None, None
    y = d[part][1]
    if refuses_negative and policy.negative_weights == "keep" and w is not None and (w < 0).any():
        note = (f"{model} refuses negative weights ({int((w < 0).sum()):,} of {len(w):,} training rows): "
                "trained with --negative-weights zero instead of keep")
        policy = Policy(class_balance=policy.class_balance, negative_weights="zero")
    plan = make_plan(w, y, policy, what=f"{model} training rows")
    return (None if plan is None else plan.apply(w, y)), note


# ---------------------------------------------------------------- metrics

def scores(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> dict:
    """ROC AUC, accuracy at p > 1/2, and the signal efficiency at 1 % and 10 % background efficiency; with
    event weights `w` (negative ones too), each of them weighted."""
    if w is not None:
        fpr, tpr = weighted_roc(p, y, w)
        return dict(auc=weighted_auc(p, y, w), acc=float(np.sum(w * ((p > 0.5) == (y > 0.5))) / np.sum(w)),
                    sig_eff_at_bkg_1pct=float(np.interp(0.01, fpr, tpr)),
                    sig_eff_at_bkg_10pct=float(np.interp(0.10, fpr, tpr)))
    fpr, tpr, _ = roc_curve(y, p)
    return dict(auc=float(roc_auc_score(y, p)), acc=float(np.mean((p > 0.5) == (y > 0.5))),
                sig_eff_at_bkg_1pct=float(np.interp(0.01, fpr, tpr)),
                sig_eff_at_bkg_10pct=float(np.interp(0.10, fpr, tpr)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------- trees

def run_lightgbm(d: dict, *, seed: int, threads: int, policy: Policy = AS_READ) -> dict:
    import lightgbm as lgb
    x, y = d["all"]
    sample_weight, note = training_weights(d, "all", policy, model="LightGBM")
    wt = part_weights(d, "test")
    stamps = []
    model = lgb.LGBMClassifier(n_estimators=N_TREES, num_leaves=255, learning_rate=0.1, min_child_samples=100,
                               n_jobs=threads, random_state=seed, verbose=-1)
    def stamp(env):
        stamps.append((time.perf_counter(), time.process_time()))
    t, c = time.perf_counter(), time.process_time()
    model.fit(x, y, sample_weight=sample_weight, callbacks=[stamp])
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    xt, yt = d["test"]
    curve = [dict(trees=k, wall_s=stamps[k - 1][0] - t, cpu_s=stamps[k - 1][1] - c,
                  test_auc=scores(model.predict_proba(xt, num_iteration=k)[:, 1], yt, wt)["auc"])
             for k in range(CURVE_EVERY, N_TREES + 1, CURVE_EVERY)]
    row = dict(model="LightGBM", version=lgb.__version__, wall_s=wall, cpu_s=cpu,
               test=scores(model.predict_proba(xt)[:, 1], yt, wt), curve=curve, weights_note=note)
    if d["val"] is not None:   # in-sample for trees: reference only
        row["val"] = scores(model.predict_proba(d["val"][0])[:, 1], d["val"][1], part_weights(d, "val"))
    return row


def run_xgboost(d: dict, *, seed: int, threads: int, policy: Policy = AS_READ) -> dict:
    import xgboost as xgb
    x, y = d["all"]
    sample_weight, note = training_weights(d, "all", policy, model="XGBoost", refuses_negative=True)
    if note:
        print(note, file=sys.stderr, flush=True)
    wt = part_weights(d, "test")
    stamps = []

    class Stamp(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            stamps.append((time.perf_counter(), time.process_time()))
            return False
    model = xgb.XGBClassifier(n_estimators=N_TREES, tree_method="hist", grow_policy="lossguide", max_leaves=255,
                              max_depth=0, learning_rate=0.1, min_child_weight=25, n_jobs=threads, random_state=seed,
                              callbacks=[Stamp()])
    t, c = time.perf_counter(), time.process_time()
    model.fit(x, y, sample_weight=sample_weight)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    xt, yt = d["test"]
    curve = [dict(trees=k, wall_s=stamps[k - 1][0] - t, cpu_s=stamps[k - 1][1] - c,
                  test_auc=scores(model.predict_proba(xt, iteration_range=(0, k))[:, 1], yt, wt)["auc"])
             for k in range(CURVE_EVERY, N_TREES + 1, CURVE_EVERY)]
    return dict(model="XGBoost", version=xgb.__version__, wall_s=wall, cpu_s=cpu,
                test=scores(model.predict_proba(xt)[:, 1], yt, wt), curve=curve, weights_note=note)


# ---------------------------------------------------------------- networks

def run_network(cfg, d: dict, *, label: str, curve: bool = True) -> dict:
    policy = Policy(class_balance=cfg.class_balance, negative_weights=cfg.negative_weights)

    def weights(part):
        w, _ = training_weights(d, part, policy, model=label)
        return None if w is None else torch.from_numpy(w)
    train = TensorData(*(torch.from_numpy(a) for a in d["train"]), batch_size=cfg.batch_size, weights=weights("train"))
    val = [torch.from_numpy(a) for a in d["val"]] if d["val"] is not None and cfg.val_fraction > 0 else (None, None)
    val_part = TensorData(*val, batch_size=cfg.batch_size, weights=weights("val")) if val[0] is not None else None
    wt, wv = part_weights(d, "test"), part_weights(d, "val") if val[0] is not None else None
    torch.manual_seed(cfg.seed)
    model = ResidualMLP.from_config(cfg.model)
    states = []
    t, c = time.perf_counter(), time.process_time()

    def on_epoch(history):
        if curve:  # the clock is read first; the copy is not training time, and is tiny
            stamp = (time.perf_counter() - t, time.process_time() - c)
            states.append((stamp, copy.deepcopy(model.state_dict())))
    r = fit(model, train, cfg.base_recipe(), val=val_part, on_epoch=on_epoch, progress=False, verbose=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    xt, yt = torch.from_numpy(d["test"][0]), d["test"][1]

    def probs(xs):
        return sigmoid(predict_logits(model, xs, precision=cfg.precision).numpy())
    row = dict(model=label, preset=cfg.preset, precision=cfg.precision, epochs=cfg.epochs, epochs_run=len(r.history),
               wall_s=wall, cpu_s=cpu, model_config=cfg.model.to_dict(), n_params=model.n_params(),
               test=scores(probs(xt), yt, wt), history=r.history)
    if val[0] is not None:
        row["val"] = scores(probs(val[0]), d["val"][1], wv)
    final = copy.deepcopy(model.state_dict())
    row["curve"] = []
    for (w, cp), state in states:
        model.load_state_dict(state)
        e = dict(epoch=len(row["curve"]) + 1, wall_s=w, cpu_s=cp, test_auc=scores(probs(xt), yt, wt)["auc"])
        if val[0] is not None:
            e["val_auc"] = scores(probs(val[0]), d["val"][1], wv)["auc"]
        row["curve"].append(e)
    model.load_state_dict(final)
    return row


def network_cfg(name: str, *, seed: int, precision: str, overrides: dict | None = None, policy: Policy | None = None):
    overrides = dict(overrides or {})
    if policy is not None:
        overrides |= dict(class_balance=policy.class_balance, negative_weights=policy.negative_weights)
    model = overrides.pop("model", None)
    cfg = preset(name, seed=seed, precision=precision, **overrides)
    if model:
        cfg.model = ModelConfig(**{**cfg.model.to_dict(), **model})
    return cfg


# ---------------------------------------------------------------- part: peers

def mean_sd(values) -> str:
    values = list(values)
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def part_peers(args) -> tuple[list[str], list[dict]]:
    lines, runs = [], []
    for data_name in args.data:
        d_nb = parts(data_name, train_rows=args.train_rows, val_fraction=0.0)
        de_val = preset("default").val_fraction
        d_de = parts(data_name, train_rows=args.train_rows, val_fraction=de_val)
        # Trees are deterministic here (no row or feature sampling): one run each, whatever the seed.
        trees = []
        policy = Policy(class_balance=args.class_balance, negative_weights=args.negative_weights)
        for runner in (run_lightgbm, run_xgboost):
            if runner.__name__.removeprefix("run_") in args.skip:
                continue
            r = dict(runner(d_nb, seed=args.seeds[0], threads=int(THREADS), policy=policy), data=data_name,
                     seed=args.seeds[0], rows=d_nb["split"])
            trees.append(r)
            runs.append(r)
            print(f"{data_name} {r['model']}: wall {r['wall_s']:.1f}s cpu {r['cpu_s']:.1f}s test AUC {r['test']['auc']:.4f}",
                  file=sys.stderr, flush=True)
        nets = {"notebook": [], "default": []}
        for seed in args.seeds:  # interleaved notebook, default, notebook, ...
            for name, d in (("notebook", d_nb), ("default", d_de)):
                if name in args.skip:
                    continue
                cfg = network_cfg(name, seed=seed, precision=args.precision, policy=policy)
                label = f"--preset {name}"
                if name == "default" and args.default_epochs:  # the default recipe given another time budget
                    cfg.epochs, label = args.default_epochs, f"default, {args.default_epochs} ep"
                r = dict(run_network(cfg, d, label=label), data=data_name, seed=seed, rows=d["split"])
                nets[name].append(r)
                runs.append(r)
                print(f"{data_name} {name} seed {seed}: wall {r['wall_s']:.1f}s cpu {r['cpu_s']:.1f}s "
                      f"test AUC {r['test']['auc']:.4f} acc {r['test']['acc']:.4f}", file=sys.stderr, flush=True)
        split = d_de["split"]
        lines += ["", f"data {data_name}: train part {args.train_rows:,} rows (the default preset trains on "
                  f"{split['train_rows']:,} and validates on {split['val_rows']:,}), test {split['test_rows']:,}; "
                  f"{THREADS} thread(s); networks in {args.precision}"
                  + ("" if d_de["weights"] is None else f"; weighted: --class-balance {args.class_balance} "
                     f"--negative-weights {args.negative_weights}, scores weighted by the signed weights"),
                  *[r["weights_note"] for r in trees if r.get("weights_note")],
                  f"{'model':<18} {'seeds':>5} {'wall s':>7} {'cpu s':>7} {'test AUC':>16} {'acc %':>14} "
                  f"{'sig@bkg1%':>10} {'sig@bkg10%':>10}"]
        for name, rs in [(r["model"], [r]) for r in trees] + [(v[0]["model"], v) for v in nets.values() if v]:
            lines.append(f"{name:<18} {len(rs):>5} {statistics.mean(r['wall_s'] for r in rs):>7.1f} "
                         f"{statistics.mean(r['cpu_s'] for r in rs):>7.1f} {mean_sd(r['test']['auc'] for r in rs):>16} "
                         f"{mean_sd(100 * r['test']['acc'] for r in rs):>14} "
                         f"{statistics.mean(r['test']['sig_eff_at_bkg_1pct'] for r in rs):>10.4f} "
                         f"{statistics.mean(r['test']['sig_eff_at_bkg_10pct'] for r in rs):>10.4f}")
        if trees and nets["default"]:
            lgbm = trees[0]
            gap = statistics.mean(r["test"]["auc"] for r in nets["default"]) - lgbm["test"]["auc"]
            lines.append(f"default - LightGBM test AUC {gap:+.4f} (target >= +0.003 at 200k rows, >= 0 at all rows); "
                         f"time default/LightGBM: wall {statistics.mean(r['wall_s'] for r in nets['default']) / lgbm['wall_s']:.2f}, "
                         f"cpu {statistics.mean(r['cpu_s'] for r in nets['default']) / lgbm['cpu_s']:.2f}")
        lines.append("curves (cumulative CPU s : test AUC):")
        for r in trees + nets["notebook"][:1] + nets["default"][:1]:
            lines.append(f"  {r['model']:<18} " + "  ".join(f"{p['cpu_s']:.1f}:{p['test_auc']:.4f}" for p in r["curve"]))
    return lines, runs


# ---------------------------------------------------------------- part: select (validation rows only)

# Each candidate: overrides (TrainConfig fields, and "model" for ModelConfig fields) of R0, which is the
# default preset as it was when the rounds ran (batch 4096, peak lr 1e-2; today's default is U1), in fp32.
R0_BASE = dict(batch_size=4096, lr=1e-2)
CANDIDATES = {
    "R0": ("fp32 default recipe, plain network", dict()),
    "R1": ("R0 + piecewise-linear encoding, 8 bins", dict(model=dict(embedding="piecewise", embedding_size=8))),
    "R2": ("R0 + piecewise-linear encoding, 16 bins", dict(model=dict(embedding="piecewise", embedding_size=16))),
    "R3": ("R0 + periodic encoding, 8 frequencies, scale 0.1",
           dict(model=dict(embedding="periodic", embedding_size=8, frequency_scale=0.1))),
    "R4": ("R0 + dropout 0.1", dict(model=dict(dropout=0.1))),
    "R5": ("R0 + label smoothing 0.1", dict(label_smoothing=0.1)),
    "R6": ("R0 with batch 8192, peak lr 2e-2", dict(batch_size=8192, lr=2e-2)),
    "R7": ("R0 with width 256", dict(model=dict(width=256))),
    # round 2, at equal epochs (the pieces below cost about the same per epoch as R1)
    "S1": ("R1 + label smoothing 0.1", dict(label_smoothing=0.1, model=dict(embedding="piecewise", embedding_size=8))),
    "S2": ("R1 + dropout 0.1", dict(model=dict(embedding="piecewise", embedding_size=8, dropout=0.1))),
    "S3": ("R1 with peak lr 5e-3", dict(lr=5e-3, model=dict(embedding="piecewise", embedding_size=8))),
    "S4": ("R1 with 4 bins", dict(model=dict(embedding="piecewise", embedding_size=4))),
    "S5": ("R1 with 12 bins", dict(model=dict(embedding="piecewise", embedding_size=12))),
    "S6": ("R1 with batch 2048, peak lr 7e-3", dict(batch_size=2048, lr=7e-3,
                                                   model=dict(embedding="piecewise", embedding_size=8))),
    "S7": ("R1 with weight decay 5e-2", dict(weight_decay=5e-2, model=dict(embedding="piecewise", embedding_size=8))),
    # round 3, at the notebook preset's budget on both data sets
    "T1": ("R1 with batch 2048, peak lr 7e-3", dict(batch_size=2048, lr=7e-3,
                                                   model=dict(embedding="piecewise", embedding_size=8))),
    "T2": ("T1 + label smoothing 0.1", dict(batch_size=2048, lr=7e-3, label_smoothing=0.1,
                                            model=dict(embedding="piecewise", embedding_size=8))),
    # round 4: is it the batch alone? and does a smaller batch still pay?
    "U1": ("R0 with batch 2048, peak lr 7e-3 (no encoding)", dict(batch_size=2048, lr=7e-3)),
    "U2": ("T1 with batch 1024, peak lr 5e-3", dict(batch_size=1024, lr=5e-3,
                                                   model=dict(embedding="piecewise", embedding_size=8))),
}


def seconds_per_epoch(cfg, d) -> float:
    """Least CPU seconds of a one-epoch run of 3, validation pass included: on a shared machine the least
    disturbed run is the best estimate of the cost (the median moved by 1.6x between candidates)."""
    probe = copy.deepcopy(cfg)
    probe.epochs = 1
    times = []
    for e in range(3):
        probe.seed = e
        times.append(run_network(probe, d, label="probe", curve=False)["cpu_s"])
    return min(times)


def part_select(args) -> tuple[list[str], list[dict]]:
    lines, runs = [], []
    chosen = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
    for data_name in args.data:
        d_nb = parts(data_name, train_rows=args.train_rows, val_fraction=0.0)
        d = parts(data_name, train_rows=args.train_rows, val_fraction=preset("default").val_fraction)
        if args.epochs:  # equal epochs: no budget, no calibration; cost = measured CPU s per epoch
            nb, budget, ref = dict(cpu_s=float("nan")), float("nan"), float("nan")
        else:
            nb = run_network(network_cfg("notebook", seed=args.seeds[0], precision=args.precision), d_nb,
                             label="--preset notebook", curve=False)
            budget = nb["cpu_s"] if args.budget is None else args.budget
            ref = seconds_per_epoch(network_cfg("notebook", seed=0, precision=args.precision), d_nb)
        lines += ["", f"data {data_name}: budget {budget:.1f} CPU s (notebook preset: {nb['cpu_s']:.1f}); "
                  f"notebook epoch {ref:.2f} CPU s; {THREADS} thread(s), {args.precision}",
                  f"{'candidate':<52} {'ep':>3} {'cost/ep' if not args.epochs else 'cpu/ep':>7} {'seed':>5} {'cpu s':>6} {'wall s':>6} {'val AUC':>8} "
                  f"{'val acc':>8} {'val loss':>8} {'min-val-loss ep':>15}"]
        for key, (desc, overrides) in chosen.items():
            overrides = {**R0_BASE, **overrides}
            cfg0 = network_cfg("default", seed=0, precision=args.precision, overrides=overrides)
            per_epoch = float("nan") if args.epochs else seconds_per_epoch(cfg0, d)
            epochs = args.epochs or max(1, int(args.safety * budget / per_epoch))
            for seed in args.seeds:
                cfg = network_cfg("default", seed=seed, precision=args.precision, overrides=dict(overrides, epochs=epochs))
                r = dict(run_network(cfg, d, label=key, curve=False), data=data_name, seed=seed, candidate=key,
                         description=desc, per_epoch_cpu_s=per_epoch, budget_cpu_s=budget)
                r.pop("history_full", None)
                runs.append(r)
                vl = [h["val_loss"] for h in r["history"]]
                cost = per_epoch / ref if not args.epochs else r["cpu_s"] / epochs
                line = (f"{key + ' ' + desc:<52} {epochs:>3} {cost:>7.2f} {seed:>5} {r['cpu_s']:>6.1f} "
                        f"{r['wall_s']:>6.1f} {r['val']['auc']:>8.4f} {100 * r['val']['acc']:>7.2f}% {vl[-1]:>8.4f} "
                        f"{1 + int(np.argmin(vl)):>15}")
                lines.append(line)
                print(data_name, line, file=sys.stderr, flush=True)
    return lines, runs


# ---------------------------------------------------------------- part: cost (the time promise)

def part_cost(args) -> tuple[list[str], list[dict]]:
    """Whole base trainings of both presets, interleaved, --seeds times: CPU and wall s, their ratio. Run it
    under the AVX2 environment too (see the README's Presets section) to check the promise there."""
    lines, runs = [], []
    for data_name in args.data:
        d_nb = parts(data_name, train_rows=args.train_rows, val_fraction=0.0)
        d_de = parts(data_name, train_rows=args.train_rows, val_fraction=preset("default").val_fraction)
        pairs = []
        for seed in args.seeds:
            pair = []
            for name, d in (("notebook", d_nb), ("default", d_de)):
                r = dict(run_network(network_cfg(name, seed=seed, precision=args.precision), d, label=name, curve=False),
                         data=data_name, seed=seed)
                r.pop("history")
                pair.append(r)
                runs.append(r)
            pairs.append(pair)
            print(f"{data_name} seed {seed}: notebook cpu {pair[0]['cpu_s']:.1f}s wall {pair[0]['wall_s']:.1f}s | "
                  f"default cpu {pair[1]['cpu_s']:.1f}s wall {pair[1]['wall_s']:.1f}s", file=sys.stderr, flush=True)
        ratio = [b["cpu_s"] / a["cpu_s"] for a, b in pairs]
        ratio_w = [b["wall_s"] / a["wall_s"] for a, b in pairs]
        lines += ["", f"data {data_name}, {args.precision}, {THREADS} thread(s): default / notebook base-training time, "
                  f"paired by seed: CPU {mean_sd(ratio)} (least {min(ratio):.3f}), wall {mean_sd(ratio_w)}; "
                  f"target <= 1.10: {common.verdict(statistics.mean(ratio) <= 1.10)} (CPU)"]
    return lines, runs


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["peers", "select", "cost"])
    p.add_argument("--data", nargs="+", default=["sim", "kde"], choices=["sim", "kde", "sim11m", "simw"],
                   help="sim, kde (1.1M rows each), sim11m (bench-data/sim_11M.csv.gz, 11M rows) or simw (sim "
                        "with synthetic event weights)")
    p.add_argument("--class-balance", default=TrainConfig().class_balance, choices=CLASS_BALANCES,
                   help="weighted data: as the network's --class-balance, for every model")
    p.add_argument("--negative-weights", default=TrainConfig().negative_weights, choices=NEGATIVE_WEIGHTS,
                   help="weighted data: as the network's --negative-weights, for every model (XGBoost: keep "
                        "becomes zero, said in the output)")
    p.add_argument("--rows", default="200000", help="train part: a row count, or 'all' (every non-test row)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1234, 1235, 1236])
    p.add_argument("--threads", default="1", help="threads for torch, LightGBM and XGBoost (default 1)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS, help="the networks' arithmetic")
    p.add_argument("--skip", nargs="*", default=[], choices=["lightgbm", "xgboost", "notebook", "default"])
    p.add_argument("--only", nargs="+", metavar="KEY", help="select: only these candidates")
    p.add_argument("--default-epochs", type=int, help="peers: train the default recipe for this many epochs "
                                                       "(e.g. what fits LightGBM's time) instead of the preset's")
    p.add_argument("--budget", type=float, help="select: CPU seconds (default: the notebook preset's, measured)")
    p.add_argument("--epochs", type=int, help="select: fixed epochs instead of filling the budget")
    p.add_argument("--safety", type=float, default=0.95, help="select: predicted time / budget (default 0.95)")
    p.add_argument("--tag", default="", help="suffix of the results file")
    args = p.parse_args(argv)
    if args.rows == "all" and len({n_rows(d) for d in args.data}) > 1:
        p.error("--rows all: give data sets of one size (sim11m apart from sim and kde)")
    args.train_rows = n_rows(args.data[0]) - TEST_ROWS if args.rows == "all" else int(args.rows)
    t0 = time.perf_counter()
    info = common.machine()
    head = common.machine_lines(info, ["benchmarks/bench_peers.py", *argv])
    head.append(f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}; "
                f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')}")
    lines, runs = {"peers": part_peers, "select": part_select, "cost": part_cost}[args.part](args)
    lines.append(f"\ntotal {time.perf_counter() - t0:.0f}s")
    common.report(head + lines, RESULTS / f"peers_{args.part}{'_' + args.tag if args.tag else ''}.txt", runs=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
