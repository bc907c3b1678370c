"""A scikit-learn estimator around the residual MLP: fit, predict, score, and adapt with LoRA adapters.

    from higgs_lora.sklearn import ResidualMLPClassifier
    clf = ResidualMLPClassifier(epochs=5).fit(X_train, y_train)
    clf.adapt(X_new, y_new, rank=8)          # freeze, add adapters, fine-tune them on the new rows
    clf.score(X_test, y_test)
    clf = ResidualMLPClassifier().fit(X, y, sample_weight=w)   # event weights (negative ones too)

It is an ordinary estimator (Pipeline, cross_val_score, GridSearchCV, clone, pickle) for binary
classification. Features arrive raw: the estimator standardizes them with the statistics of the
rows it is fitted on, as the CLI does, and keeps those statistics when it adapts.

Every recipe setting left at None takes the value of `preset` ("default" or "notebook", as
`higgs-lora run --preset`), so the estimator trains exactly what the CLI trains.
Needs scikit-learn (`pip install "higgs-lora[sklearn]"`).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from higgs_lora.config import ModelConfig, preset
from higgs_lora.data.standardize import Standardizer
from higgs_lora.adapters.lora import add_adapters
from higgs_lora.model.network import ResidualMLP
from higgs_lora.hardware.runtime import resolve_device
from higgs_lora.data.sources import TensorData
from higgs_lora.train import fit
from higgs_lora.data.weighting import Policy, make_plan

_RECIPE = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "schedule", "warmup_frac", "precision",
           "rank", "scale", "ft_lr", "ft_epochs", "class_balance", "negative_weights")
_PREDICT_ROWS = 65536


class ResidualMLPClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier: the notebook's residual MLP trained with a higgs-lora recipe.

    Parameters
    ----------
    preset : "default" or "notebook"
        The recipe every setting left at None comes from (see the README's Presets).
    width, n_blocks, head_width : int
        Network sizes (the notebook's 128, 2, 64).
    epochs, batch_size, lr, optimizer, weight_decay, schedule, warmup_frac, precision : optional
        Base-training settings; None takes the preset's. The default preset sizes batch_size, epochs
        (a maximum: early stopping on its 10% validation rows keeps the best epoch) and lr to the rows
        `fit` gets (higgs_lora.config.budget); a value given here is obeyed.
    rank, scale, ft_lr, ft_epochs : optional
        Defaults of `adapt()`; None takes the preset's.
    class_balance : "none" (default) or "equal"
        As scikit-learn does, sample weights enter the loss as given; "equal" scales each class to the same
        total weight (as `--class-balance equal`, which the CLI's "auto" picks for weighted data).
    negative_weights : optional
        "keep", "zero" or "drop-in-training" (as `--negative-weights`); None takes the preset's.
        `score` weighs every row as given.
    device : str
        "cpu" (default), "cuda", "cuda:N" or "auto".
    random_state : int, RandomState or None
        Seeds the initial weights and the batch order; None uses the recipe's seed (1234).

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels; `classes_[1]` is the positive class (signal).
    model_ : ResidualMLP
        The trained network (with LoRALinear layers after `adapt`).
    standardizer_ : Standardizer
        The mean and standard deviation of the rows `fit` saw.
    history_ : list of dict
        One row per epoch (and phase: "base", then "finetune" after `adapt`).
    budget_ : higgs_lora.config.Budget or None
        What the default preset's size rule gave for the rows `fit` trained on (batch, most epochs,
        patience, lr; config.budget); None where every setting was given (or the notebook preset).
    device_ : torch.device
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when X had column names
    """

    def __init__(self, *, preset: str = "default", width: int = 128, n_blocks: int = 2, head_width: int = 64,
                 epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                 optimizer: str | None = None, weight_decay: float | None = None, schedule: str | None = None,
                 warmup_frac: float | None = None, precision: str | None = None, rank: int | None = None,
                 scale: float | None = None, ft_lr: float | None = None, ft_epochs: int | None = None,
                 class_balance: str = "none", negative_weights: str | None = None,
                 device: str = "cpu", random_state=None):
        self.preset = preset
        self.width, self.n_blocks, self.head_width = width, n_blocks, head_width
        self.epochs, self.batch_size, self.lr, self.optimizer = epochs, batch_size, lr, optimizer
        self.weight_decay, self.schedule, self.warmup_frac = weight_decay, schedule, warmup_frac
        self.precision = precision
        self.rank, self.scale, self.ft_lr, self.ft_epochs = rank, scale, ft_lr, ft_epochs
        self.class_balance, self.negative_weights = class_balance, negative_weights
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------ helpers

    def _recipe(self):
        cfg = preset(self.preset, **{k: getattr(self, k) for k in _RECIPE})
        if cfg.precision == "auto":
            # An estimator's result must not hang on a machine measurement (scikit-learn's clone/refit
            # contract): the preset's `auto` runs fp32 here, at the preset's epochs; pass precision="bf16".
            cfg = dataclasses.replace(cfg, precision="fp32", scale_epochs=False)
        if self.random_state is not None:
            rs = self.random_state
            cfg.seed = rs if isinstance(rs, (int, np.integer)) else int(check_random_state(rs).randint(2**31 - 1))
        return cfg

    def _labels(self, y, *, learn: bool) -> np.ndarray:
        check_classification_targets(y)
        if learn:
            y_type = type_of_target(y, input_name="y", raise_unknown=True)
            if y_type != "binary":
                raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
            self.classes_ = np.unique(y)
            if self.classes_.shape[0] != 2:
                raise ValueError(f"{type(self).__name__} needs both classes in y, got only {self.classes_.tolist()}")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels the classifier was not fitted with: {unknown[:5].tolist()}")
        return (y == self.classes_[1]).astype(np.float32)

    def _tensor(self, X) -> torch.Tensor:
        x = np.ascontiguousarray(X, dtype=np.float32)
        return torch.from_numpy(self.standardizer_.transform(x)).to(self.device_)

    def _part(self, X, y01: np.ndarray, *, batch_size: int, sample_weight, cfg) -> TensorData:
        # Sample weights become training weights as on the command line (train/weighting.py); all ones
        # give no plan, hence the unweighted loss: the same network as without them, bit for bit.
        plan = make_plan(sample_weight, y01, Policy(cfg.class_balance, cfg.negative_weights), what="sample_weight")
        weights = None if plan is None else torch.from_numpy(plan.apply(sample_weight, y01)).to(self.device_)
        return TensorData(self._tensor(X), torch.from_numpy(y01).to(self.device_), batch_size=batch_size,
                          weights=weights)

    def _train(self, X, y01: np.ndarray, recipe, *, batch_size: int, sample_weight, cfg, val=None) -> None:
        part = self._part(X, y01, batch_size=batch_size, sample_weight=sample_weight, cfg=cfg)
        result = fit(self.model_, part, recipe, val=val, progress=False, verbose=False)
        self.history_ = [*getattr(self, "history_", []), *result.history]

    # ------------------------------------------------------------ the estimator

    def fit(self, X, y, sample_weight=None):
        """Standardize X with its own statistics, build a fresh network and train it on (X, y), each row
        weighted by `sample_weight` in the loss (None: all alike; negative weights as `negative_weights`)."""
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_min_samples=2)
        y = column_or_1d(y, warn=True)
        y01 = self._labels(y, learn=True)
        sample_weight = _sample_weight(sample_weight, X.shape[0])
        cfg = self._recipe()
        cfg.model = ModelConfig(n_features=X.shape[1], width=self.width, n_blocks=self.n_blocks,
                                head_width=self.head_width)
        self.device_ = resolve_device(self.device)
        # The preset's validation part (the default's 10%, as MLPClassifier's validation_fraction): a seeded
        # random draw, since the caller's rows may come sorted; too few rows for 2 validation rows: none.
        n_val = int(round(len(X) * cfg.val_fraction))
        n_val = n_val if 2 <= n_val <= len(X) - 2 else 0
        order = np.random.RandomState(cfg.seed).permutation(len(X)) if n_val else np.arange(len(X))
        X_val, y_val = X[order[:n_val]], y01[order[:n_val]]
        X, y01 = X[order[n_val:]], y01[order[n_val:]]
        w_val = None if sample_weight is None else sample_weight[order[:n_val]]
        sample_weight = None if sample_weight is None else sample_weight[order[n_val:]]
        cfg, self.budget_ = cfg.sized_to(len(X))
        self.standardizer_ = Standardizer.fit(X)
        with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            self.model_ = ResidualMLP.from_config(cfg.model).to(self.device_)
        self.history_ = []
        if cfg.epochs:
            # The validation loss picks the epoch kept: weighted as the training loss it stands in for.
            val = self._part(X_val, y_val, batch_size=cfg.batch_size, sample_weight=w_val, cfg=cfg) if n_val else None
            self._train(X, y01, cfg.base_recipe(), batch_size=cfg.batch_size, sample_weight=sample_weight, cfg=cfg,
                        val=val)
        return self

    def adapt(self, X_new, y_new, *, rank: int | None = None, scale: float | None = None,
              epochs: int | None = None, lr: float | None = None, targets=("all",), sample_weight=None):
        """Freeze the fitted network, add LoRA adapters to `targets` and train only them on the new rows.

        The features are standardized with the statistics `fit` learned (the notebook's fine-tuning
        keeps the train statistics). Unset arguments take the estimator's rank/scale/ft_epochs/ft_lr.
        `sample_weight` weighs the new rows as in `fit`.
        Returns self; `model_` then holds LoRALinear layers (see `higgs_lora.merge_adapters`)."""
        check_is_fitted(self)
        X_new, y_new = validate_data(self, X_new, y_new, dtype=np.float32, reset=False)
        y01 = self._labels(column_or_1d(y_new, warn=True), learn=False)
        sample_weight = _sample_weight(sample_weight, X_new.shape[0])
        cfg = self._recipe()
        given = {k: v for k, v in (("rank", rank), ("scale", scale)) if v is not None}
        self.model_ = add_adapters(self.model_, dataclasses.replace(cfg.adapter_config(), targets=targets, **given))
        # the estimator has one batch_size: where it is set, adapting uses it too; else the preset's
        batch = cfg.batch_size if self.batch_size is not None else cfg.ft_batch()
        self._train(X_new, y01, cfg.finetune_recipe(epochs=epochs, lr=lr), batch_size=batch,
                    sample_weight=sample_weight, cfg=cfg)
        return self

    def decision_function(self, X) -> np.ndarray:
        """The network's logit per row (> 0 means classes_[1]), shape (n_samples,).

        Computed in float64 on a copy of the network: a float32 GEMM rounds differently for different
        numbers of rows, and an estimator's answer for a row must not depend on which rows came with it."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        x = self._tensor(X).double()
        model = copy.deepcopy(self.model_).double().eval()
        with torch.inference_mode():
            logits = [model(x[i:i + _PREDICT_ROWS]) for i in range(0, x.shape[0], _PREDICT_ROWS)]
        return torch.cat(logits).cpu().numpy() if logits else np.zeros(0)

    def predict_proba(self, X) -> np.ndarray:
        """[P(classes_[0]), P(classes_[1])] per row, shape (n_samples, 2)."""
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(np.intp)]


def _sample_weight(sample_weight, n: int) -> np.ndarray | None:
    """float32 [n] finite weights, or None (every row weighs 1)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:   # scikit-learn allows one number for every row
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},)!")
    if not np.isfinite(w).all():
        raise ValueError(f"sample_weight: row {int(np.flatnonzero(~np.isfinite(w))[0])}: not a finite number")
    return w.astype(np.float32)
