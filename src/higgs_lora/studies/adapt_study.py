"""When does adapting a trained network pay? A measurement on shifted conditions and few target rows.

A base network is trained on nominal simulated events (the source). For each target condition (a
named shift of the simulator: another heavy-Higgs mass, a detector recalibration, more pile-up) and
each number of target training rows, every method below is trained on those rows and measured on the
target's own test rows:

    base                  the base, untouched
    lora-r1/r4/r16        LoRA adapters on every dense layer, rank 1, 4, 16 (scale 1: scaling 1)
    rslora-r16            rank 16 with rsLoRA scaling (lora_alpha/√r = 4)
    dora-r4, pissa-r4     DoRA; PiSSA initialisation
    loraplus-r4           LoRA+ (B at 16 × A's learning rate)
    full                  every weight of the base fine-tuned
    head                  only the head (hidden + output layers) fine-tuned
    fresh-target          a new network on the target rows alone
    fresh-source+target   a new network on the source rows and the target rows together
    lightgbm              gradient-boosted trees on the target rows (optional extra 'peers')

The same choice for every method, from the target's training rows only: the last `val_fraction` of
them are validation rows; each method is trained once per learning rate of the grid, with early
stopping on the validation loss (best epoch kept), and the learning rate with the lowest validation
loss is the one reported (LightGBM: boosting rounds and its learning-rate grid, the same way). The
target's test rows are never seen before the final measurement. The same goes for the choice among the
adapter settings: `adapter (val)` is, per condition, size and seed, the adapter setting with the lowest
validation loss, and it is what the crossovers compare (picking the best adapter by its test AUC would
flatter adapters). Every run gets the same sample budget
(at most `sample_budget` samples and `max_epochs` epochs, at least one epoch), so the cost is bounded
on a small machine; wall time is the whole grid's.

Metrics: ROC AUC, accuracy, signal efficiency at background efficiency `bkg_eff` (a fixed background
rejection), test log loss; trainable parameters; bytes stored per adaptation (the safetensors bytes of
what must be kept besides the base: the adapter, the head, a whole network, or the tree model's text);
wall time. Seeds vary the source and target samples and every initialisation.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from higgs_lora.data.simulate import CONDITION_PRESETS, NOMINAL, simulate
from higgs_lora.data.standardize import Standardizer
from higgs_lora.adapters.lora import adapter_state
from higgs_lora.report.metrics import binary_metrics
from higgs_lora.model.network import HEAD_LAYERS, ResidualMLP
from higgs_lora.config import AdapterConfig, Recipe
from higgs_lora.studies.strategies import prepare
from higgs_lora.hardware.machine import cpuinfo_fields
from higgs_lora.hardware.runtime import predict_logits
from higgs_lora.data.sources import TensorData
from higgs_lora.train import fit

ADAPTERS = {
    "lora-r1": dict(rank=1), "lora-r4": dict(rank=4), "lora-r16": dict(rank=16),
    "rslora-r16": dict(rank=16, rslora=True), "dora-r4": dict(rank=4, dora=True),
    "pissa-r4": dict(rank=4, init="pissa"), "loraplus-r4": dict(rank=4, loraplus_lr_ratio=16.0),
}
OTHERS = ("base", "full", "head", "fresh-target", "fresh-source+target", "lightgbm")
METHODS = ("base", *ADAPTERS, "full", "head", "fresh-target", "fresh-source+target", "lightgbm")
TARGETS = ("mass-600-450", "jes-up", "pileup-high")


@dataclass(frozen=True)
class StudySettings:
    conditions: tuple[str, ...] = TARGETS
    sizes: tuple[int, ...] = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    source_rows: int = 200_000          # nominal rows the base is trained on (and fresh-source+target sees)
    source_val_rows: int = 20_000
    test_rows: int = 50_000             # target test rows per condition and seed
    width: int = 64                     # a small network: the study must run in ~30 min on 2 cores
    n_blocks: int = 2
    head_width: int = 32
    base_epochs: int = 15
    base_lr: float = 3e-3
    lrs: tuple[float, ...] = (1e-3, 1e-2)
    lgbm_lrs: tuple[float, ...] = (0.1, 0.3)
    lgbm_rounds: int = 300
    sample_budget: int = 150_000
    max_epochs: int = 40
    patience: int = 3
    val_fraction: float = 0.2
    max_batch: int = 1024
    adapter_scale: float = 1.0
    loraplus_ratio: float = 16.0
    bkg_eff: float = 0.1

    def validate(self) -> "StudySettings":
        from higgs_lora.errors import UserError
        unknown = [c for c in self.conditions if c not in CONDITION_PRESETS]
        if unknown:
            raise UserError(f"unknown condition(s) {unknown}; choose from {sorted(CONDITION_PRESETS)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise UserError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
        if not self.sizes or min(self.sizes) < 20:
            raise UserError(f"target sizes must be >= 20 rows, got {list(self.sizes)}")
        if not self.seeds:
            raise UserError("at least one seed")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        return self


QUICK = StudySettings(sizes=(300, 1_200), seeds=(0,), source_rows=4_000, source_val_rows=1_000, test_rows=2_000,
                      width=16, head_width=8, base_epochs=3, sample_budget=4_000, max_epochs=4, patience=2,
                      lgbm_rounds=30)


def is_adapter(method: str) -> bool:
    return method in ADAPTERS


# ---------------------------------------------------------------- data

@dataclass
class Part:
    x: torch.Tensor          # standardized with the source's statistics
    y: torch.Tensor          # float labels
    raw: np.ndarray          # raw features (the trees take them as they are)


def _part(features: np.ndarray, labels: np.ndarray, standardizer: Standardizer) -> Part:
    return Part(x=torch.from_numpy(standardizer.transform(features)), y=torch.from_numpy(labels.astype(np.float32)),
                raw=features)


def _rows(part: Part, rows: slice) -> Part:
    return Part(x=part.x[rows], y=part.y[rows], raw=part.raw[rows])


def source_data(settings: StudySettings, seed: int):
    """(standardizer, train part, validation part) of nominal events for this seed."""
    n = settings.source_rows + settings.source_val_rows
    x, y = simulate(n, seed=10_000 + seed)
    standardizer = Standardizer.fit(x[:settings.source_rows])
    part = _part(x, y, standardizer)
    return standardizer, _rows(part, slice(0, settings.source_rows)), _rows(part, slice(settings.source_rows, n))


def target_data(settings: StudySettings, condition: str, seed: int, standardizer: Standardizer) -> tuple[Part, Part]:
    """(training pool of max(sizes) rows, test rows) of a condition; size n takes the pool's first n rows."""
    index = TARGETS.index(condition) if condition in TARGETS else sorted(CONDITION_PRESETS).index(condition) + 10
    pool = max(settings.sizes)
    x, y = simulate(pool + settings.test_rows, seed=20_000 + 100 * seed + index,
                    conditions=CONDITION_PRESETS[condition])
    part = _part(x, y, standardizer)
    return _rows(part, slice(0, pool)), _rows(part, slice(pool, pool + settings.test_rows))


# ---------------------------------------------------------------- training

def _batch_size(rows: int, settings: StudySettings) -> int:
    # ~10 steps per epoch on the smallest targets, the full batch on large ones
    return int(min(settings.max_batch, max(32, rows // 10)))


def _epochs(rows: int, settings: StudySettings) -> int:
    return int(min(settings.max_epochs, max(1, math.ceil(settings.sample_budget / rows))))


def _train(model: torch.nn.Module, fit_part: Part, val: Part, *, lr: float, settings: StudySettings,
           seed: int, phase: str) -> dict:
    rows = fit_part.x.shape[0]
    batch = _batch_size(rows, settings)
    recipe = Recipe(epochs=_epochs(rows, settings), lr=lr, seed=seed, phase=phase, patience=settings.patience)
    result = fit(model, TensorData(fit_part.x, fit_part.y, batch_size=batch), recipe,
                 val=TensorData(val.x, val.y, batch_size=batch), progress=False, verbose=False)
    val_losses = [r["val_loss"] for r in result.history]
    return dict(val_loss=min(val_losses), epochs_run=len(result.history),
                best_epoch=result.best_epoch or int(np.argmin(val_losses)) + 1, samples=result.samples_seen)


def _new_network(settings: StudySettings, seed: int) -> ResidualMLP:
    torch.manual_seed(seed)
    return ResidualMLP(width=settings.width, n_blocks=settings.n_blocks, head_width=settings.head_width)


def train_base(settings: StudySettings, seed: int, source: Part, source_val: Part) -> tuple[ResidualMLP, dict]:
    model = _new_network(settings, seed)
    t = time.perf_counter()
    recipe = Recipe(epochs=settings.base_epochs, lr=settings.base_lr, seed=seed, phase="study-base",
                    patience=settings.patience)
    result = fit(model, TensorData(source.x, source.y, batch_size=settings.max_batch), recipe,
                 val=TensorData(source_val.x, source_val.y, batch_size=settings.max_batch), progress=False,
                 verbose=False)
    model.eval().requires_grad_(False)
    return model, dict(wall_s=time.perf_counter() - t, epochs_run=len(result.history), best_epoch=result.best_epoch)


def adapters_of(method: str, settings: StudySettings) -> AdapterConfig:
    """The adapters of an adapter method."""
    options = dict(ADAPTERS[method])
    if "loraplus_lr_ratio" in options:
        options["loraplus_lr_ratio"] = settings.loraplus_ratio
    return AdapterConfig(scale=settings.adapter_scale, **options)


def _prepare(method: str, base: ResidualMLP, settings: StudySettings, seed: int) -> ResidualMLP:
    """The network a method trains (a copy: the base is never touched), by strategies.prepare: the fresh
    networks are its `scratch` (the base's shape, drawn from `seed`)."""
    if is_adapter(method):
        return prepare("lora", base, seed=seed, adapter=adapters_of(method, settings))
    if method in ("full", "head"):
        return prepare(method, base, seed=seed)
    if method in ("fresh-target", "fresh-source+target"):
        return prepare("scratch", base, seed=seed)
    raise ValueError(f"not a network method: {method!r}")


def _stored_bytes(method: str, model: torch.nn.Module) -> int:
    """Bytes of what one adaptation must keep besides the base, as a safetensors file."""
    from safetensors.torch import save
    if is_adapter(method):
        state = adapter_state(model)
    elif method == "head":
        state = {f"{n}.{k}": v for n in HEAD_LAYERS for k, v in model.get_submodule(n).state_dict().items()}
    else:
        state = model.state_dict()
    return len(save({k: v.detach().float().contiguous() for k, v in state.items()}))


def signal_efficiency(scores: np.ndarray, labels: np.ndarray, *, bkg_eff: float) -> float:
    """Fraction of signal above the threshold that keeps a fraction `bkg_eff` of the background."""
    threshold = np.quantile(scores[labels == 0], 1.0 - bkg_eff)
    return float(np.mean(scores[labels == 1] > threshold))


def _measure(logits: torch.Tensor, test: Part, settings: StudySettings) -> dict:
    m = binary_metrics(logits, test.y)
    return dict(roc_auc=m["roc_auc"], accuracy=m["accuracy"], log_loss=m["log_loss"],
                signal_efficiency=signal_efficiency(logits.numpy(), test.y.numpy(), bkg_eff=settings.bkg_eff))


def run_network_method(method: str, base: ResidualMLP, settings: StudySettings, *, seed: int, fit_part: Part,
                       val: Part, test: Part, source: Part) -> dict:
    if method == "base":
        return dict(_measure(predict_logits(base, test.x), test, settings), trainable_params=0, stored_bytes=0,
                    wall_s=0.0, lr=None, epochs_run=0, best_epoch=None, samples=0)
    train_part = fit_part
    if method == "fresh-source+target":
        train_part = Part(x=torch.cat([source.x, fit_part.x]), y=torch.cat([source.y, fit_part.y]), raw=None)
    t = time.perf_counter()
    best = None
    for lr in settings.lrs:
        model = _prepare(method, base, settings, seed)
        run = _train(model, train_part, val, lr=lr, settings=settings, seed=seed, phase=f"study-{method}")
        if best is None or run["val_loss"] < best[1]["val_loss"]:
            best = (model, dict(run, lr=lr))
    wall = time.perf_counter() - t
    model, run = best
    return dict(_measure(predict_logits(model, test.x), test, settings),
                trainable_params=model.n_params(trainable_only=True), stored_bytes=_stored_bytes(method, model),
                wall_s=wall, **run)


def lightgbm_available() -> bool:
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        return False
    return True


def run_lightgbm(settings: StudySettings, *, seed: int, fit_part: Part, val: Part, test: Part) -> dict:
    import lightgbm as lgb
    t = time.perf_counter()
    best = None
    for lr in settings.lgbm_lrs:
        params = dict(objective="binary", learning_rate=lr, num_leaves=31, min_data_in_leaf=20, seed=seed,
                      num_threads=torch.get_num_threads(), verbose=-1, deterministic=True, force_col_wise=True)
        train_set = lgb.Dataset(fit_part.raw, label=fit_part.y.numpy())
        val_set = lgb.Dataset(val.raw, label=val.y.numpy(), reference=train_set)
        booster = lgb.train(params, train_set, num_boost_round=settings.lgbm_rounds, valid_sets=[val_set],
                            callbacks=[lgb.early_stopping(settings.patience * 5, verbose=False)])
        val_loss = booster.best_score["valid_0"]["binary_logloss"]
        if best is None or val_loss < best[1]:
            best = (booster, val_loss, lr)
    wall = time.perf_counter() - t
    booster, val_loss, lr = best
    p = np.clip(booster.predict(test.raw, num_iteration=booster.best_iteration), 1e-7, 1 - 1e-7)
    logits = torch.from_numpy(np.log(p / (1 - p)).astype(np.float32))
    return dict(_measure(logits, test, settings), trainable_params=None,
                stored_bytes=len(booster.model_to_string(num_iteration=booster.best_iteration).encode()),
                wall_s=wall, lr=lr, epochs_run=booster.current_iteration(), best_epoch=booster.best_iteration,
                samples=None, val_loss=val_loss)


# ---------------------------------------------------------------- the study

def run_study(settings: StudySettings, *, log=print) -> dict:
    """Every (condition, size, seed, method): one row of metrics. Returns rows, bases and settings."""
    settings = settings.validate()
    methods = list(settings.methods)
    if "lightgbm" in methods and not lightgbm_available():
        log("lightgbm is not installed (optional extra 'peers'): its rows are left out")
        methods.remove("lightgbm")
    rows, bases = [], []
    t_study = time.perf_counter()
    for seed in settings.seeds:
        standardizer, source, source_val = source_data(settings, seed)
        base, info = train_base(settings, seed, source, source_val)
        x_nominal, y_nominal = simulate(settings.test_rows, seed=30_000 + seed)
        nominal = _part(x_nominal, y_nominal, standardizer)
        info |= dict(seed=seed, nominal_test=_measure(predict_logits(base, nominal.x), nominal, settings),
                     params=base.n_params())
        bases.append(info)
        log(f"seed {seed}: base trained in {info['wall_s']:.1f}s ({info['epochs_run']} epochs), "
            f"nominal test AUC {info['nominal_test']['roc_auc']:.4f}")
        for condition in settings.conditions:
            pool, test = target_data(settings, condition, seed, standardizer)
            for size in settings.sizes:
                n_val = max(10, int(round(size * settings.val_fraction)))
                fit_part, val = _rows(pool, slice(0, size - n_val)), _rows(pool, slice(size - n_val, size))
                for method in methods:
                    if method == "lightgbm":
                        r = run_lightgbm(settings, seed=seed, fit_part=fit_part, val=val, test=test)
                    else:
                        r = run_network_method(method, base, settings, seed=seed, fit_part=fit_part, val=val,
                                               test=test, source=source)
                    rows.append(dict(condition=condition, size=size, seed=seed, method=method,
                                     family="adapter" if is_adapter(method) else method, **r))
                done = [r for r in rows if r["condition"] == condition and r["size"] == size and r["seed"] == seed]
                best = max(done, key=lambda r: r["roc_auc"])
                log(f"  {condition:>13} {size:>7,} rows seed {seed}: base {done[0]['roc_auc']:.4f}  best "
                    f"{best['method']} {best['roc_auc']:.4f}  ({sum(r['wall_s'] for r in done):.1f}s)")
    return dict(settings=dataclasses.asdict(settings), methods=methods, rows=rows, bases=bases,
                conditions={c: CONDITION_PRESETS[c].shifts() for c in settings.conditions},
                nominal=dataclasses.asdict(NOMINAL), wall_s=time.perf_counter() - t_study,
                threads=torch.get_num_threads())


# ---------------------------------------------------------------- summaries

CHOSEN = "adapter (val)"   # the adapter setting chosen on the target's validation rows, per seed


def chosen_adapter_rows(rows: list[dict]) -> list[dict]:
    """Per (condition, size, seed): the adapter row with the lowest validation loss, as method CHOSEN (its
    setting in `chosen`). Only validation rows decide, as for the learning rate inside each method. Its
    wall time is every adapter setting's: the choice costs them all."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if is_adapter(r["method"]):
            cells.setdefault((r["condition"], r["size"], r["seed"]), []).append(r)
    out = []
    for rs in cells.values():
        pick = min(rs, key=lambda r: r["val_loss"])
        out.append(dict(pick, method=CHOSEN, chosen=pick["method"], wall_s=sum(r["wall_s"] for r in rs)))
    return out


def with_chosen(result: dict) -> dict:
    """The result with the CHOSEN rows added (once), after the adapters in the method order."""
    if CHOSEN in result["methods"]:
        return result
    methods = list(result["methods"])
    last_adapter = max((i for i, m in enumerate(methods) if is_adapter(m)), default=None)
    if last_adapter is None:
        return result
    methods.insert(last_adapter + 1, CHOSEN)
    return dict(result, methods=methods, rows=result["rows"] + chosen_adapter_rows(result["rows"]))


def summarize(result: dict) -> list[dict]:
    """Mean and spread (standard deviation over seeds) per (condition, size, method), the CHOSEN adapter
    included."""
    result = with_chosen(result)
    groups: dict[tuple, list[dict]] = {}
    for r in result["rows"]:
        groups.setdefault((r["condition"], r["size"], r["method"]), []).append(r)
    out = []
    for (condition, size, method), rs in groups.items():
        s = dict(condition=condition, size=size, method=method, seeds=len(rs),
                 trainable_params=rs[0]["trainable_params"], stored_bytes=rs[0]["stored_bytes"],
                 wall_s=float(np.mean([r["wall_s"] for r in rs])))
        for k in ("roc_auc", "accuracy", "signal_efficiency"):
            values = np.array([r[k] for r in rs])
            s[k], s[k + "_std"] = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
        if method == CHOSEN:
            s["chosen"] = {m: sum(r["chosen"] == m for r in rs) for m in dict.fromkeys(r["chosen"] for r in rs)}
        out.append(s)
    return out


RETRAINING = ("fresh-target", "fresh-source+target", "lightgbm")   # the methods that do not start from the base


def crossovers(summary: list[dict], *, against: tuple[str, ...] | None = None) -> dict:
    """Per condition and size: the adapter chosen on validation rows (CHOSEN) against the strongest other
    method by mean test AUC (`against`: only these others, e.g. RETRAINING), and the crossover: the
    smallest size from which adapters no longer win at any larger size. The other side is the best of
    several on the test rows: a bar that favours the alternatives, never the adapters."""
    out = {}
    for condition in dict.fromkeys(s["condition"] for s in summary):
        per_size = []
        for size in sorted({s["size"] for s in summary if s["condition"] == condition}):
            cell = [s for s in summary if s["condition"] == condition and s["size"] == size]
            chosen = [s for s in cell if s["method"] == CHOSEN]
            others = [s for s in cell if not is_adapter(s["method"]) and s["method"] != CHOSEN
                      and (against is None or s["method"] in against)]
            if not chosen or not others:
                continue
            a = chosen[0]
            o = max(others, key=lambda s: s["roc_auc"])
            per_size.append(dict(size=size, adapter=a.get("chosen"), adapter_auc=a["roc_auc"],
                                 best_other=o["method"], other_auc=o["roc_auc"], margin=a["roc_auc"] - o["roc_auc"],
                                 adapters_win=a["roc_auc"] >= o["roc_auc"]))
        crossover = None
        for i, p in enumerate(per_size):
            if not p["adapters_win"] and not any(q["adapters_win"] for q in per_size[i:]):
                crossover = p["size"]
                break
        out[condition] = dict(sizes=per_size, crossover=crossover,
                              adapters_win_at=[p["size"] for p in per_size if p["adapters_win"]])
    return out


def paired(result: dict, method: str, reference: str) -> dict:
    """AUC(method) − AUC(reference) seed by seed (same base, same target rows), per (condition, size):
    (mean, std over seeds). Pairing removes the base's and the sample's share of the spread."""
    rows = result["rows"] + (chosen_adapter_rows(result["rows"]) if CHOSEN in (method, reference) else [])
    auc = {(r["condition"], r["size"], r["seed"], r["method"]): r["roc_auc"] for r in rows}
    out: dict[tuple, list] = {}
    for (condition, size, seed, m), value in auc.items():
        if m == method and (condition, size, seed, reference) in auc:
            out.setdefault((condition, size), []).append(value - auc[condition, size, seed, reference])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for k, v in out.items()}


PAIRED_METHODS = (CHOSEN, "lora-r4", "lora-r16", "dora-r4", "pissa-r4")


def _chosen_text(counts: dict) -> str:
    return ", ".join(f"{m} ×{n}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def markdown(result: dict) -> str:
    result = with_chosen(result)
    summary = summarize(result)
    sizes = sorted({s["size"] for s in summary})
    lines = []
    for condition in dict.fromkeys(s["condition"] for s in summary):
        shifts = ", ".join(f"{k} {v:g}" for k, v in result["conditions"][condition].items())
        lines += [f"### {condition} ({shifts})", "",
                  "Test ROC AUC on the target, mean ± std over seeds; **bold**: best in the column.", "",
                  "| method | " + " | ".join(f"{n:,}" for n in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        cell = {(s["method"], s["size"]): s for s in summary if s["condition"] == condition}
        best = {n: max(s["roc_auc"] for (m, k), s in cell.items() if k == n) for n in sizes}
        for method in result["methods"]:
            values = []
            for n in sizes:
                s = cell.get((method, n))
                text = "–" if s is None else f"{s['roc_auc']:.4f} ± {s['roc_auc_std']:.4f}"
                values.append(f"**{text}**" if s is not None and s["roc_auc"] == best[n] else text)
            lines.append(f"| {method} | " + " | ".join(values) + " |")
        c = crossovers(summary)[condition]
        lines += ["", f"`{CHOSEN}`: the adapter setting with the lowest loss on the target's validation rows, "
                  "seed by seed (chosen: " + "; ".join(
                      f"{n:,}: {_chosen_text(cell[CHOSEN, n]['chosen'])}" for n in sizes if (CHOSEN, n) in cell)
                  + ").", "",
                  f"`{CHOSEN}` against the strongest other method at each size: " + "; ".join(
            f"{p['size']:,}: {p['adapter_auc']:.4f} vs {p['best_other']} {p['other_auc']:.4f} "
            f"({p['margin']:+.4f})" for p in c["sizes"]) + ".",
            f"Crossover (adapters stop winning): {c['crossover']:,} target rows." if c["crossover"] else
            "Adapters win at every size measured."]
        r = crossovers(summary, against=RETRAINING)[condition]
        lines += [("Against retraining without the base (fresh networks, LightGBM) only: adapters stop winning "
                   f"at {r['crossover']:,} target rows." if r["crossover"] else
                   "Against retraining without the base (fresh networks, LightGBM) only: adapters win at every "
                   "size measured."), ""]
    if "full" in result["methods"]:
        lines += ["### Adapters against full fine-tuning, seed by seed", "",
                  "AUC(adapter) − AUC(full fine-tuning) in units of 0.001, mean ± std of the paired differences "
                  "over seeds (same base, same target rows); positive: the adapter is better.", "",
                  "| condition | adapter | " + " | ".join(f"{n:,}" for n in sizes) + " |",
                  "|---|---|" + "---:|" * len(sizes)]
        for condition in dict.fromkeys(s["condition"] for s in summary):
            for method in (m for m in PAIRED_METHODS if m in result["methods"]):
                d = paired(result, method, "full")
                cells = [f"{1e3 * d[condition, n][0]:+.1f} ± {1e3 * d[condition, n][1]:.1f}" if (condition, n) in d
                         else "–" for n in sizes]
                lines.append(f"| {condition} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    # cost table: per method, at the largest size (adapters' cost does not depend on the condition)
    largest = max(sizes)
    lines += [f"### Cost per adaptation (mean over conditions and seeds; wall time at {largest:,} and "
              f"{min(sizes):,} target rows, the whole learning-rate grid)", "",
              "| method | trainable params | bytes stored | wall s (largest) | wall s (smallest) | "
              "signal eff. at bkg eff. {:g} (largest) | accuracy (largest) |".format(result["settings"]["bkg_eff"]),
              "|---|---:|---:|---:|---:|---:|---:|"]
    for method in result["methods"]:
        big = [s for s in summary if s["method"] == method and s["size"] == largest]
        small = [s for s in summary if s["method"] == method and s["size"] == min(sizes)]
        params = big[0]["trainable_params"]
        lines.append(f"| {method} | {'–' if params is None else f'{params:,}'} | "
                     f"{int(np.mean([s['stored_bytes'] for s in big])):,} | "
                     f"{np.mean([s['wall_s'] for s in big]):.1f} | {np.mean([s['wall_s'] for s in small]):.1f} | "
                     f"{np.mean([s['signal_efficiency'] for s in big]):.4f} | "
                     f"{100 * np.mean([s['accuracy'] for s in big]):.2f}% |")
    return "\n".join(lines)


COLORS = {"base": "tab:blue", "full": "tab:red", "head": "tab:green", "fresh-target": "tab:purple",
          "fresh-source+target": "tab:brown", "lightgbm": "tab:gray"}


def plot(result: dict, path) -> None:
    from matplotlib.figure import Figure
    result = with_chosen(result)
    summary = summarize(result)
    conditions = list(dict.fromkeys(s["condition"] for s in summary))
    fig = Figure(figsize=(5 * len(conditions), 4.2))
    axes = fig.subplots(1, len(conditions), squeeze=False)[0]
    for ax, condition in zip(axes, conditions):
        for method in result["methods"]:
            pts = sorted((s["size"], s["roc_auc"], s["roc_auc_std"]) for s in summary
                         if s["condition"] == condition and s["method"] == method)
            if not pts:
                continue
            n, auc, std = map(np.array, zip(*pts))
            style = dict(color="tab:orange", lw=1.0, alpha=0.55, ls="-") if is_adapter(method) else \
                dict(color=COLORS.get(method, "k"), lw=1.8)
            if method == CHOSEN:
                style = dict(color="tab:orange", lw=2.4)
            ax.errorbar(n, auc, yerr=std, label=method, marker="o", ms=3, capsize=2, **style)
        ax.set_xscale("log")
        ax.set_xlabel("target training rows")
        ax.set_ylabel("target test ROC AUC")
        ax.set_title(condition)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Adapting a nominal base to shifted conditions (orange: adapters, thick: {CHOSEN}; "
                 "bars: std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")


# ---------------------------------------------------------------- outputs

def set_threads(n: int) -> None:
    """PyTorch's threads for the study (one is fastest where other jobs share the cores)."""
    torch.set_num_threads(n)


def machine() -> dict:
    """The CPU (and GPU) the study ran on: results name it."""
    import platform
    name = platform.processor() or platform.machine()
    fields = cpuinfo_fields()
    if "model name" in fields:   # "Intel(R) Xeon(R) Processor" alone does not say which: add family and model
        name = f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"
    import os
    return dict(cpu=name, cpu_capability=torch.backends.cpu.get_cpu_capability(), cores=os.cpu_count(),
                torch_threads=torch.get_num_threads(), torch=torch.__version__,
                cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


OUTPUT_FILES = ("adapt_study.json", "adapt_study.md", "adapt_study.png")


def write_outputs(out, result: dict) -> list:
    from pathlib import Path

    from higgs_lora import io
    out = Path(out)
    summary = summarize(result)
    io.write_json(out / "adapt_study.json", dict(result, summary=summary, crossovers=crossovers(summary),
                                                 crossovers_vs_retraining=crossovers(summary, against=RETRAINING)))
    m = result.get("machine", {})
    head = [f"# Adaptation study: {', '.join(result['settings']['conditions'])}", "",
            f"Machine: {m.get('cpu')} ({m.get('cpu_capability')}), {m.get('torch_threads')} PyTorch thread(s); "
            f"whole study {result['wall_s'] / 60:.1f} min. Network width {result['settings']['width']}, "
            f"{result['settings']['n_blocks']} blocks, head {result['settings']['head_width']}; base trained on "
            f"{result['settings']['source_rows']:,} nominal rows; seeds {result['settings']['seeds']}.", ""]
    with io.atomic_path(out / "adapt_study.md") as tmp:
        tmp.write_text("\n".join(head) + "\n" + markdown(result) + "\n")
    with io.atomic_path(out / "adapt_study.png") as tmp:
        plot(result, tmp)
    return [out / f for f in OUTPUT_FILES]
