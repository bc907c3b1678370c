"""Test metrics at threshold 0.5 and the ROC curve, computed by torchmetrics (checked against scikit-learn
in the tests): the one source of every number and curve a run reports."""
from __future__ import annotations

import numpy as np
import torch

ROC_POINTS = 5000  # a 500k-row test set has ~500k ROC points; more than this only slows drawing

METRIC_NAMES = ["accuracy", "precision", "recall", "f1", "balanced_accuracy", "specificity", "sensitivity",
                "roc_auc", "log_loss"]


@torch.no_grad()
def binary_metrics(logits: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict:
    """logits [n] (pre-sigmoid), labels [n] in {0, 1} -> plain-float metrics plus the confusion matrix.

    A row is predicted signal when p > threshold, as Keras' BinaryAccuracy/Precision/Recall count it."""
    # Imported here: torchmetrics pulls in scipy, ~1.2 s and ~100 MB that train/predict/export never need.
    from torchmetrics.functional import classification as C
    if logits.ndim != 1 or logits.shape != labels.shape:
        raise ValueError(f"expected logits and labels of equal shape [n], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    logits = logits.float()
    target = labels.long()
    probs = torch.sigmoid(logits)
    cm = C.binary_confusion_matrix(probs, target, threshold=threshold)  # [[tn, fp], [fn, tp]]
    specificity = C.binary_specificity(probs, target, threshold=threshold).item()
    sensitivity = C.binary_recall(probs, target, threshold=threshold).item()
    return dict(
        accuracy=C.binary_accuracy(probs, target, threshold=threshold).item(),
        precision=C.binary_precision(probs, target, threshold=threshold).item(),
        recall=sensitivity,
        f1=C.binary_f1_score(probs, target, threshold=threshold).item(),
        balanced_accuracy=(specificity + sensitivity) / 2,
        specificity=specificity,
        sensitivity=sensitivity,
        roc_auc=C.binary_auroc(probs, target).item(),
        # From logits, not clipped probabilities: exact even for confident mistakes.
        log_loss=torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float()).item(),
        confusion=cm.tolist(),
    )


def format_metrics(m: dict) -> str:
    return "  ".join(f"{k} {m[k]:.4f}" for k in METRIC_NAMES if k in m)


@torch.no_grad()
def roc_curve(*, labels: np.ndarray, scores: np.ndarray, max_points: int | None = None):
    """(fpr, tpr, thresholds) of scores [n] against labels [n] in {0, 1} by torchmetrics' binary_roc: one
    point per distinct score, as sklearn's roc_curve(drop_intermediate=False), starting at (0, 0) (whose
    threshold torchmetrics gives as 1.0 where sklearn says inf); fpr and tpr in float32. With max_points,
    thinned to about that many points, the first and last kept."""
    from torchmetrics.functional.classification import binary_roc
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    positives = labels.astype(bool)
    if positives.all() or not positives.any():
        raise ValueError("ROC needs both classes among the labels")
    fpr, tpr, thresholds = (t.numpy() for t in binary_roc(torch.from_numpy(scores),
                                                          torch.from_numpy(positives.astype(np.int64))))
    if max_points is not None and fpr.size > max_points:
        keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).astype(np.int64), fpr.size - 1])
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return fpr, tpr, thresholds


@torch.no_grad()
def roc_auc(*, labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by torchmetrics' binary_auroc, as binary_metrics reports it."""
    from torchmetrics.functional.classification import binary_auroc
    return binary_auroc(torch.from_numpy(np.asarray(scores)), torch.from_numpy(np.asarray(labels).astype(np.int64))).item()
