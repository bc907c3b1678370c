"""Test metrics at threshold 0.5, computed by torchmetrics (checked against scikit-learn in the tests)."""
from __future__ import annotations

import torch

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
