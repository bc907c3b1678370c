"""Figures for a run directory: training curves, ROC, score distributions, confusion matrices.

matplotlib is imported inside the functions that draw, so `import higgs_lora` stays fast and works
without it. We draw on bare `matplotlib.figure.Figure` objects (Agg canvas) instead of pyplot: no
global backend switch, no figure registry to leak, safe inside a notebook that uses another backend.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from higgs_lora.errors import UserError
from higgs_lora.io import atomic_path, read_json

DPI = 110
PLOT_FILES = ("training.png", "roc.png", "rejection.png", "scores.png", "overtraining.png", "efficiency_vs.png",
              "confusion.png")
MODELS = (("base", "base", "tab:blue"), ("adapted", "adapted (LoRA)", "tab:orange"))


# ---------------------------------------------------------------- reading the run directory

def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {number} is not valid JSON ({e})") from None
        if not isinstance(row, dict) or row.get("phase") not in ("base", "finetune") or "epoch" not in row:
            raise UserError(f"{path}: line {number} lacks a phase ('base' or 'finetune') and an epoch")
        rows.append(row)
    return rows


ROC_ARRAYS = tuple(f"roc_{key}_{axis}" for key, _, _ in MODELS for axis in ("fpr", "tpr"))
TRAIN_ARRAYS = tuple(f"train_{key}{tail}" for key, _, _ in MODELS for tail in ("", "_labels", "_weights"))


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """labels plus whichever of base/adapted probabilities the file holds, and their ROC curves
    (roc_base_fpr, roc_base_tpr, ...) when the run stored them; {} when there is no file."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in ("labels", "weights", "eff_vs", "base", "adapted", *ROC_ARRAYS,
                                                    *TRAIN_ARRAYS) if k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz file ({e or type(e).__name__})") from None
    if "labels" not in arrays:
        raise UserError(f"{path}: has no 'labels' array")
    n = arrays["labels"].shape
    for name, a in arrays.items():
        if name.startswith("roc_"):
            expected = arrays.get(name.replace("_tpr", "_fpr"), a).shape
        elif name.startswith("train_"):  # the rows a model trained on: their own length
            expected = arrays.get("train_" + name.split("_")[1], a).shape
        else:
            expected = n
        if a.ndim != 1 or a.shape != expected:
            raise UserError(f"{path}: array '{name}' has shape {a.shape}, expected {expected}")
    return arrays


def roc_curves(predictions: dict[str, np.ndarray], metrics: dict) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """{model: (fpr, tpr, AUC)}: the curves and AUCs the run computed (metrics.py, stored in the
    predictions file and metrics.json). A run directory written before the curves were stored has them
    computed here, by the same function."""
    labels = predictions.get("labels")
    curves = {}
    for key, _, _ in MODELS:
        if key not in predictions or labels is None or labels.min() == labels.max():
            continue
        if f"roc_{key}_fpr" in predictions:
            fpr, tpr = predictions[f"roc_{key}_fpr"], predictions[f"roc_{key}_tpr"]
        else:
            from higgs_lora.report.metrics import ROC_POINTS, roc_curve
            fpr, tpr, _ = roc_curve(labels=labels, scores=predictions[key], weights=predictions.get("weights"),
                                    max_points=ROC_POINTS)
        auc = metrics.get(key, {}).get("roc_auc")
        if auc is None:
            from higgs_lora.report.metrics import roc_auc
            auc = roc_auc(labels=labels, scores=predictions[key], weights=predictions.get("weights"))
        if auc is None:  # a class weighs <= 0: no curve to draw
            continue
        curves[key] = (fpr, tpr, auc)
    return curves


# ---------------------------------------------------------------- figures

def new_figure(*, width: float, height: float):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def plot_training(history: list[dict], path: Path) -> Path | None:
    fig = training_figure(history)
    return None if fig is None else save_figure(fig, path)


def training_figure(history: list[dict]):
    """Loss and accuracy per epoch (train, and validation when there is one), a row per phase; None
    without epochs."""
    from matplotlib.ticker import MaxNLocator
    phases = [(p, t) for p, t in (("base", "base training"), ("finetune", "LoRA fine-tuning"))
              if any(r["phase"] == p for r in history)]
    if not phases:
        return None
    fig = new_figure(width=11, height=3.6 * len(phases))
    axes = fig.subplots(len(phases), 2, squeeze=False)
    for (phase, title), (ax_loss, ax_acc) in zip(phases, axes):
        rows = sorted((r for r in history if r["phase"] == phase), key=lambda r: r["epoch"])
        epochs = [r["epoch"] for r in rows]
        for ax, key, label in ((ax_loss, "loss", "binary cross-entropy"), (ax_acc, "accuracy", "accuracy")):
            ax.plot(epochs, [r[key] for r in rows], "o-", color="tab:blue", label="train")
            val = [(r["epoch"], r.get(f"val_{key}")) for r in rows if r.get(f"val_{key}") is not None]
            if val:
                ax.plot(*zip(*val), "s--", color="tab:orange", label="validation")
            ax.set_title(f"{title}: {key}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
    return fig


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> Path | None:
    fig = roc_figure(curves)
    return None if fig is None else save_figure(fig, path)


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]):
    """ROC curves and background rejection vs signal efficiency of every model in `curves`
    ({"base": (fpr, tpr, AUC), "adapted": ..., or any other name}, e.g. from roc_curves); None without any."""
    known = {k: (name, color) for k, name, color in MODELS}
    models = [(k, *known.get(k, (k, None))) for k in curves]
    if not models:
        return None
    fig = new_figure(width=11, height=4.6)
    ax_roc, ax_rej = fig.subplots(1, 2)
    for key, name, color in models:
        fpr, tpr, auc = curves[key]
        ax_roc.plot(fpr, tpr, color=color, label=f"{name}, AUC = {auc:.4f}")
        nonzero = fpr > 0
        ax_rej.plot(tpr[nonzero], 1 / fpr[nonzero], color=color, label=f"{name}, AUC = {auc:.4f}")
    ax_roc.plot([0, 1], [0, 1], ":", color="grey", label="random guess")
    ax_roc.set(title="ROC curve (test set)", xlabel=r"false positive rate (background efficiency $\varepsilon_B$)",
               ylabel=r"true positive rate (signal efficiency $\varepsilon_S$)", xlim=(0, 1), ylim=(0, 1.01))
    eff = np.linspace(0.01, 1, 200)
    ax_rej.plot(eff, 1 / eff, ":", color="grey", label="random guess")
    ax_rej.set_yscale("log")
    ax_rej.set(title="Background rejection vs signal efficiency (test set)", xlabel=r"signal efficiency $\varepsilon_S$",
               ylabel=r"background rejection $1/\varepsilon_B$ (log scale)", xlim=(0, 1))
    for ax in (ax_roc, ax_rej):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "upper right")
    ax_rej.grid(alpha=0.1, which="minor")
    return fig


def plot_scores(predictions: dict[str, np.ndarray], path: Path) -> Path | None:
    labels = predictions.get("labels")
    models = [(k, name) for k, name, _ in MODELS if k in predictions]
    if labels is None or not models:
        return None
    signal = labels.astype(bool)
    fig = new_figure(width=5.5 * len(models), height=4.2)
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    bins = np.linspace(0, 1, 51)
    for ax, (key, name) in zip(axes, models):
        scores = predictions[key]
        for mask, label, color in ((~signal, "background (label 0)", "tab:blue"), (signal, "signal (label 1)", "tab:red")):
            w = _w(predictions)[mask]
            if mask.any() and w.sum() > 0:  # weighted when the run was (each class to area 1)
                _hist(ax, scores[mask], w, bins, histtype="stepfilled", alpha=0.25, color=color)
                _hist(ax, scores[mask], w, bins, histtype="step", linewidth=1.5, color=color,
                      label=f"{label}, n = {int(mask.sum()):,}")
        ax.axvline(0.5, linestyle="--", color="grey", linewidth=1, label="threshold 0.5")
        ax.set(title=f"Score distribution, {name} model (test set)", xlabel="predicted signal probability",
               xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center")
    axes[0].set_ylabel("density (each class normalized to area 1)")
    return save_figure(fig, path)


def plot_confusion(metrics: dict, path: Path) -> Path | None:
    models = [(k, name) for k, name, _ in MODELS if isinstance(metrics.get(k), dict) and "confusion" in metrics[k]]
    if not models:
        return None
    fig = new_figure(width=5.2 * len(models), height=4.4)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    classes = ["background (0)", "signal (1)"]
    for ax, (key, name) in zip(axes, models):
        counts = np.asarray(metrics[key]["confusion"], dtype=np.int64)
        if counts.shape != (2, 2):
            raise UserError(f"metrics.json: {key}.confusion has shape {counts.shape}, expected [[tn, fp], [fn, tp]]")
        totals = counts.sum(axis=1, keepdims=True)
        percent = np.divide(100.0 * counts, totals, out=np.zeros((2, 2)), where=totals > 0)
        ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
        for (i, j), tag in zip(((0, 0), (0, 1), (1, 0), (1, 1)), ("TN", "FP", "FN", "TP")):
            ax.text(j, i, f"{tag}\n{counts[i, j]:,}\n{percent[i, j]:.1f} % of row", ha="center", va="center",
                    fontsize=11, color="white" if percent[i, j] > 55 else "black")
        ax.set_xticks([0, 1], [f"predicted {c}" for c in classes])
        ax.set_yticks([0, 1], [f"true {c}" for c in classes], rotation=90, va="center")
        ax.set_title(f"Confusion matrix, {name} model\n(test set, threshold 0.5; colour = row %)")
    return save_figure(fig, path)


def _fom(metrics: dict, key: str) -> dict:
    fom = (metrics.get(key) or {}).get("figures_of_merit")
    return fom if isinstance(fom, dict) and "undefined" not in fom else {}


def _w(predictions: dict, name: str = "weights") -> np.ndarray:
    labels = predictions["labels"] if name == "weights" else predictions[name.replace("_weights", "_labels")]
    return predictions.get(name, np.ones(labels.shape, dtype=np.float64)).astype(np.float64)


def rejection_figure(curves: dict, metrics: dict):
    """Background rejection 1/ε_B vs signal efficiency ε_S (log y) per model, with the ±1σ binomial band
    σ_R = sqrt(ε_B(1 - ε_B)/N_eff,B) / ε_B² (N_eff of the test background, from metrics.json), and the
    working points of metrics.json marked; None without curves."""
    if not curves:
        return None
    known = {k: (name, color) for k, name, color in MODELS}
    fig = new_figure(width=6.5, height=4.8)
    ax = fig.subplots()
    for key, (fpr, tpr, _) in curves.items():
        name, color = known.get(key, (key, None))
        ok = fpr > 0
        eff_b, eff_s = fpr[ok], tpr[ok]
        line, = ax.plot(eff_s, 1 / eff_b, color=color, label=name)
        n_eff = _fom(metrics, key).get("n_eff", {}).get("background")
        if n_eff:
            sigma = np.sqrt(np.clip(eff_b, 0, 1) * (1 - np.clip(eff_b, 0, 1)) / n_eff) / eff_b ** 2
            ax.fill_between(eff_s, np.maximum(1 / eff_b - sigma, 1e-3), 1 / eff_b + sigma, color=line.get_color(),
                            alpha=0.25, linewidth=0, label=f"{name} ±1σ (binomial, N_eff = {n_eff:,.0f})")
        points = [p for p in _fom(metrics, key).get("rejection_at_eff_s", []) if p.get("rejection") is not None]
        if points:
            ax.errorbar([p["eff_s"] for p in points], [p["rejection"] for p in points],
                        yerr=[p["sigma"] or 0 for p in points], fmt="o", color=line.get_color(), capsize=3)
    ax.set_yscale("log")
    ax.set(title="Background rejection vs signal efficiency (test set)", xlabel=r"signal efficiency $\varepsilon_S$",
           ylabel=r"background rejection $1/\varepsilon_B$", xlim=(0, 1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def _hist(ax, values, weights, bins, **style):
    total = weights.sum()
    if values.size == 0 or not total > 0:
        return
    ax.hist(values, bins=bins, weights=weights / (total * np.diff(bins)[0]), **style)


def overtraining_figure(predictions: dict, metrics: dict):
    """Weighted score distributions of signal and background, train (filled) and test (points) overlaid,
    each normalized to area 1, the KS p-value of train vs test per class in the legend; None without train scores."""
    models = [(k, name) for k, name, _ in MODELS if f"train_{k}" in predictions and k in predictions]
    if not models:
        return None
    fig = new_figure(width=5.8 * len(models), height=4.4)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    bins = np.linspace(0, 1, 41)
    centers = (bins[1:] + bins[:-1]) / 2
    test_labels, test_w = predictions["labels"].astype(bool), _w(predictions)
    for ax, (key, name) in zip(axes, models):
        train_labels, train_w = predictions[f"train_{key}_labels"].astype(bool), _w(predictions, f"train_{key}_weights")
        ks = _fom(metrics, key).get("ks", {})
        part = _fom(metrics, key).get("ks_train_part", {}).get("part", "train")
        for cls, mask_train, mask_test, color in (("signal", train_labels, test_labels, "tab:red"),
                                                  ("background", ~train_labels, ~test_labels, "tab:blue")):
            p = (ks.get(cls) or {}).get("p_value")
            _hist(ax, predictions[f"train_{key}"][mask_train], train_w[mask_train], bins, histtype="stepfilled",
                  alpha=0.3, color=color, label=f"{cls}, {part} part")
            w, v = test_w[mask_test], predictions[key][mask_test]
            if v.size and w.sum() > 0:
                density = np.histogram(v, bins=bins, weights=w)[0] / (w.sum() * np.diff(bins)[0])
                ax.plot(centers, density, "o", markersize=3, color=color,
                        label=f"{cls}, test" + (f" (KS p = {p:.3g})" if p is not None else ""))
        ax.set(title=f"Overtraining check, {name} model", xlabel="predicted signal probability", xlim=(0, 1),
               ylabel="weighted density (area 1 per class)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", fontsize=8)
    return fig


def efficiency_vs_figure(predictions: dict, metrics: dict):
    """Signal and background efficiency at each model's best-AMS cut vs bins of the --eff-vs feature;
    None without that feature in the predictions file."""
    from higgs_lora.report.figures_of_merit import efficiency_vs
    name = metrics.get("eff_vs")
    models = [(k, label, c) for k, label, c in MODELS if k in predictions and (_fom(metrics, k).get("best_ams") or {}).get("cut")
              is not None]
    if "eff_vs" not in predictions or not name or not models:
        return None
    fig = new_figure(width=6.5, height=4.6)
    ax = fig.subplots()
    for key, label, color in models:
        cut = _fom(metrics, key)["best_ams"]["cut"]
        e = efficiency_vs(predictions["eff_vs"], labels=predictions["labels"], scores=predictions[key], cut=cut,
                          weights=predictions.get("weights"))
        centers = (np.asarray(e["edges"][1:]) + np.asarray(e["edges"][:-1])) / 2
        as_float = lambda xs: np.array([np.nan if x is None else x for x in xs])
        ax.plot(centers, as_float(e["eff_s"]), "o-", color=color, label=f"{label}: signal (cut {cut:.3f})")
        ax.plot(centers, as_float(e["eff_b"]), "s--", color=color, label=f"{label}: background")
    ax.set(title=f"Efficiency at the best-AMS cut vs {name} (test set)", xlabel=f"{name} (equal-population bins)",
           ylabel="efficiency", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _save(fig, path: Path) -> Path | None:
    return None if fig is None else save_figure(fig, path)


def make_plots(run_dir) -> list[Path]:
    """Draw every figure the run directory has data for into run_dir/plots/; returns the PNGs written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run directory")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("plots need matplotlib: pip install matplotlib") from None
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    history = read_history(run_dir / "history.jsonl")
    predictions = read_predictions(run_dir / "test_predictions.npz")
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    curves = roc_curves(predictions, metrics)
    written = [plot_training(history, out / "training.png"), plot_roc(curves, out / "roc.png"),
               _save(rejection_figure(curves, metrics), out / "rejection.png"),
               plot_scores(predictions, out / "scores.png"),
               _save(overtraining_figure(predictions, metrics), out / "overtraining.png"),
               _save(efficiency_vs_figure(predictions, metrics), out / "efficiency_vs.png"),
               plot_confusion(metrics, out / "confusion.png")]
    written = [p for p in written if p is not None]
    for name in PLOT_FILES:  # a figure this run has no data for must not survive from an earlier drawing
        if out / name not in written:
            (out / name).unlink(missing_ok=True)
    return written
