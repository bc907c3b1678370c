"""How event weights enter training: the class-balance and negative-weight policies, and the one constant
the weighted loss is normalised by.

A part's training weights are an elementwise function of each row's event weight and label (a Plan), so
a part held in memory applies it once and a streamed part window by window, with the same result. The
plan is made from the whole part: the per-class sums and the normalising constant are properties of the
part, never of a batch.

Why one constant and not each batch's sum of weights: with negative weights a batch's Σw can be ~0 or
negative, and dividing by it would blow up or flip that step's gradient. The loss is mean_i(w_i·ℓ_i) with
the weights scaled to mean 1 over the part's training rows, i.e. Σ w_i·ℓ_i / (batch rows × mean weight):
the unweighted loss's scale and learning rate carry over unchanged.

Where the unweighted path is kept: a plan that would give every row exactly 1 (no weights, or all equal and
positive, and no class balance) is no plan at all (None), and the loop then computes the plain mean BCE, so
weights of all ones train the very same model bit for bit as no weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from higgs_lora.config import CLASS_BALANCES, NEGATIVE_WEIGHTS
from higgs_lora.errors import ConfigError, DataError


@dataclass(frozen=True)
class Policy:
    """class_balance none: the weights as they are; equal: each class scaled to the same total weight
    (TMVA's NormMode=EqualNumEvents); auto: equal when the rows have event weights, none when they have
    none (or all ones), so unweighted data trains as it always did.
    negative_weights keep: as they are; zero: set to 0 in training (the rows still count as training rows
    for the mean weight); drop-in-training: the rows leave the loss and the mean weight (TMVA's
    IgnoreNegWeightsInTraining). Every metric weighs every event as it was read."""
    class_balance: str = "none"
    negative_weights: str = "keep"

    def __post_init__(self):
        if self.class_balance not in CLASS_BALANCES:
            raise ConfigError(f"--class-balance must be one of {', '.join(CLASS_BALANCES)}, got {self.class_balance!r}")
        if self.negative_weights not in NEGATIVE_WEIGHTS:
            raise ConfigError(f"--negative-weights must be one of {', '.join(NEGATIVE_WEIGHTS)}, "
                            f"got {self.negative_weights!r}")


AS_READ = Policy()   # the event weights as they are, negative ones too


@dataclass(frozen=True)
class Plan:
    """Training weight of a row = (its event weight, negative ones set to 0 when `zero_negative`) x
    scale[its label]; the scales include the class balance and 1/the mean weight."""
    zero_negative: bool
    scale: tuple[float, float]   # background, signal

    def apply(self, weights: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
        w = np.ones(len(labels)) if weights is None else weights.astype(np.float64)
        if self.zero_negative:
            w[w < 0] = 0.0
        return (w * np.where(labels == 1, self.scale[1], self.scale[0])).astype(np.float32)


def make_plan(weights: np.ndarray | None, labels: np.ndarray, policy: Policy, *, what: str = "the training rows"
              ) -> Plan | None:
    """The plan of a part (event weights or None, labels 0/1); None when every row would weigh exactly 1."""
    if weights is not None and np.all(weights == 1):
        weights = None   # weights of all ones are no weights, here where they enter: bit-identical to none
    balance = policy.class_balance if policy.class_balance != "auto" else "none" if weights is None else "equal"
    if weights is None and balance == "none":
        return None
    labels = np.asarray(labels)
    w = np.ones(len(labels)) if weights is None else weights.astype(np.float64)
    counted = len(w)
    if policy.negative_weights != "keep":
        negative = w < 0
        w = np.where(negative, 0.0, w)
        if policy.negative_weights == "drop-in-training":
            counted -= int(np.count_nonzero(negative))
    scale = [1.0, 1.0]
    if balance == "equal":
        sums = [float(w[labels == c].sum()) for c in (0, 1)]
        for c, s in enumerate(sums):
            if not s > 0:
                raise DataError(f"{what}: the {('background', 'signal')[c]} weights sum to {s:.6g}; "
                                "--class-balance equal needs both classes with a positive total")
        scale = [(sums[0] + sums[1]) / (2 * s) for s in sums]
    total = float(np.sum(w * np.where(labels == 1, scale[1], scale[0])))
    if not (counted > 0 and total > 0):
        raise DataError(f"{what}: the training weights sum to {total:.6g}, zero or less; training needs a "
                        "positive total")
    mean = total / counted
    plan = Plan(zero_negative=policy.negative_weights != "keep", scale=(scale[0] / mean, scale[1] / mean))
    return None if np.all(plan.apply(weights, labels) == 1.0) else plan
