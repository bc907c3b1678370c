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
PLOT_FILES = ("training.png", "roc.png", "scores.png", "confusion.png")
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


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """labels plus whichever of base/adapted probabilities the file holds, and their ROC curves
    (roc_base_fpr, roc_base_tpr, ...) when the run stored them; {} when there is no file."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in ("labels", "base", "adapted", *ROC_ARRAYS) if k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz file ({e or type(e).__name__})") from None
    if "labels" not in arrays:
        raise UserError(f"{path}: has no 'labels' array")
    n = arrays["labels"].shape
    for name, a in arrays.items():
        expected = arrays.get(name.replace("_tpr", "_fpr"), a).shape if name.startswith("roc_") else n
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
            from higgs_lora.metrics import ROC_POINTS, roc_curve
            fpr, tpr, _ = roc_curve(labels=labels, scores=predictions[key], max_points=ROC_POINTS)
        auc = metrics.get(key, {}).get("roc_auc")
        if auc is None:
            from higgs_lora.metrics import roc_auc
            auc = roc_auc(labels=labels, scores=predictions[key])
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
            if mask.any():
                ax.hist(scores[mask], bins=bins, density=True, histtype="stepfilled", alpha=0.25, color=color)
                ax.hist(scores[mask], bins=bins, density=True, histtype="step", linewidth=1.5, color=color,
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
    written = [plot_training(history, out / "training.png"), plot_roc(roc_curves(predictions, metrics), out / "roc.png"),
               plot_scores(predictions, out / "scores.png"), plot_confusion(metrics, out / "confusion.png")]
    written = [p for p in written if p is not None]
    for name in PLOT_FILES:  # a figure this run has no data for must not survive from an earlier drawing
        if out / name not in written:
            (out / name).unlink(missing_ok=True)
    return written
