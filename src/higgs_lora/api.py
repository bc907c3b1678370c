"""The Python API: every step of `higgs-lora` as a function, for notebooks and scripts.

    import higgs_lora as hl
    data = hl.load_data(events=200_000)              # or path="HIGGS.csv.gz", or a shard directory
    base = hl.fit(data, recipe="notebook")
    print(hl.evaluate(base, data))
    adapted = hl.finetune(hl.adapt(base, recipe="notebook"), data, recipe="notebook")
    hl.compare(base=hl.evaluate(base, data), adapted=hl.evaluate(adapted, data))
    merged = hl.merge(adapted, data=data)            # verified on the test rows

The functions are the ones the command line runs (`higgs_lora.pipeline`): the same defaults, the same
checks, the same errors (`higgs_lora.errors.UserError` and its kinds, with the messages the CLI
prints). Options are keyword-only. Results are small typed objects (`higgs_lora.report.results`).
A recipe is a preset name ("default", "notebook") or a `higgs_lora.config.TrainConfig` (see `recipe`).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from higgs_lora.hardware import distributed
from higgs_lora.config import DEFAULT_PRECISION, ModelConfig, SIM_EVENTS, SIM_SEED, TrainConfig, preset
from higgs_lora.data import Split, Standardizer, split_rows
from higgs_lora.errors import ConfigError, UserError
from higgs_lora.adapters.lora import adapters
from higgs_lora.model.network import ResidualMLP
from higgs_lora.pipeline import phases, steps
from higgs_lora.pipeline.inputs import DataSpec, Prepared, check_features, prepare_data
from higgs_lora.pipeline.rundir import new_model_path
from higgs_lora.report.results import Comparison, History, Metrics, html_table
from higgs_lora.hardware.runtime import predict_probabilities, resolve_device
from higgs_lora.data.sources import DataSource, TableSource
from higgs_lora.adapters.adapter_file import load_adapter
from higgs_lora.model.model_file import model_state
from higgs_lora.model.model_file import load_model as _load_weights
from higgs_lora.adapters.adapter_file import save_adapter as _save_adapter_file
from higgs_lora.model.model_file import save_model as _save_model_file, tensors_fingerprint

PARTS = ("train", "val", "extra", "test", "all")
PREDICT_CHUNK = 65536   # the rows predict() measures bf16's deviation on

__all__ = ["Data", "Model", "load_data", "split", "recipe", "fit", "evaluate", "adapt", "finetune", "merge",
           "compare", "predict", "predict_file", "plot_roc", "save_model", "load_model", "save_adapter", "export_onnx",
           "import_keras", "run"]


# ---------------------------------------------------------------- data

@dataclass
class Data(Prepared):
    """Rows ready to train on: the source (a table in memory, or a shard directory streamed from disk),
    its split (first rows train, last rows test, the middle "extra" for adaptation, optional validation
    rows at the end of train) and the standardizer fitted on the train rows."""
    source: DataSource          # the rows: TableSource (in memory) or ShardSource (a shard directory)
    split: Split                # row ranges: train, val, extra, test
    standardizer: Standardizer  # mean and std of the train rows
    spec: DataSpec = field(default_factory=DataSpec)  # where the rows came from, as the CLI records it

    @property
    def rows(self) -> int:
        return self.source.rows

    def part(self, name: str, *, standardized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(float32 features [n, d], uint8 labels [n]) of a part: train, val, extra, test or all; the raw
        features, or with `standardized` the network's input (train statistics). Read into memory."""
        rows = _rows(self, name)
        block = self.source.table.read(rows.start, rows.stop)
        features, labels = block.features, block.labels
        features = np.array(features, dtype=np.float32)
        return (self.standardizer.transform(features) if standardized else features), np.array(labels)

    def __repr__(self) -> str:
        s = self.split
        return (f"Data({self.source.source}: {self.rows:,} rows x {self.source.n_features} features; "
                f"train {s.train.stop - s.train.start:,}, val {s.val_rows:,}, extra {s.extra_rows:,}, "
                f"test {s.test_rows:,})")


def load_data(path=None, *, label_column=0, cache_dir=None, events: int = SIM_EVENTS, sim_seed: int = SIM_SEED,
              train_rows: int | None = None, test_rows: int | None = None, val_fraction: float = 0.0,
              device: str = "auto", progress: bool = True, signal=(), background=(), weight: str | None = None,
              features=None, tree: str | None = None, split_seed: int | None = None) -> Data:
    """Load a table file (CSV, .csv.gz, Parquet, ROOT "FILE.root[:TREE]"; parsed once, then cached), a
    directory of shards (streamed, never read whole), samples (`signal`/`background`: lists of SPECs
    PATH|GLOB|DIR[:TREE][*FACTOR], split per sample) or, without any, `events` events of the built-in
    simulation; split it as `higgs-lora` does (2/11 train, 0.5/11 test unless `train_rows`/`test_rows` say
    otherwise; `val_fraction` of the train rows, at their end, for validation) and fit the standardizer on
    the train rows. The same as `--data`, `--signal`, `--background`, `--weight` (an expression such as
    "genWeight*sf"), `--features` (names, globs, "@file"), `--tree`, `--sim-events`, `--train-rows`,
    `--test-rows`, `--val-fraction`; docs/analysis-data.md."""
    spec = DataSpec(path=None if path is None else str(path), label_column=label_column,
                    cache_dir=None if cache_dir is None else str(cache_dir), train_rows=train_rows,
                    test_rows=test_rows, sim_events=events, sim_seed=sim_seed, **_sample_fields(
                        signal=signal, background=background, weight=weight, features=features, tree=tree,
                        split_seed=split_seed))
    dev = distributed.local_device(resolve_device(device))
    prepared = prepare_data(spec, device=dev, val_fraction=val_fraction, progress=progress)
    return Data(source=prepared.source, split=prepared.split, standardizer=prepared.standardizer, spec=spec)


def _sample_fields(*, signal, background, weight, features, tree, split_seed) -> dict:
    """DataSpec's sample and column fields from Python values: a SPEC or a list of them; features as a
    comma string or a list."""
    as_tuple = lambda v: (v,) if isinstance(v, (str, Path)) else tuple(v or ())
    if isinstance(features, str):
        features = [features]
    return dict(signal=tuple(map(str, as_tuple(signal))), background=tuple(map(str, as_tuple(background))),
                weight=weight, tree=tree, split_seed=split_seed,
                features=None if features is None else tuple(s.strip() for f in features for s in str(f).split(",")
                                                             if s.strip()))


def split(data: Data, *, train_rows: int | None = None, test_rows: int | None = None,
          val_fraction: float = 0.0) -> Data:
    """The same rows split anew (and the standardizer refitted on the new train rows)."""
    s = split_rows(data.rows, train_rows=train_rows, test_rows=test_rows, val_fraction=val_fraction,
                   source=data.source.source)
    spec = dataclasses.replace(data.spec, train_rows=train_rows, test_rows=test_rows)
    return Data(source=data.source, split=s, standardizer=data.source.fit_standardizer(s.train), spec=spec)


def _rows(data: Prepared, part: str) -> slice:
    if part not in PARTS:
        raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    rows = slice(0, data.source.rows) if part == "all" else getattr(data.split, part)
    if rows.stop <= rows.start:
        raise UserError(f"{data.source.source}: the {part} part is empty")
    return rows


# ---------------------------------------------------------------- models

@dataclass
class Model:
    """A network and what it needs to be used on raw features: the standardizer (train statistics) and
    the feature names; with its training history, and, for a model with adapters, the fingerprint of
    the base they were trained on (which ties a saved adapter file to its base)."""
    network: ResidualMLP
    standardizer: Standardizer
    feature_names: list[str]
    history: History = field(default_factory=History)
    base_fingerprint: str | None = None
    merge_max_abs_diff: float | None = None  # set by merge(..., data=...)
    kind: str = "base"                        # base, merged or imported: what a saved model's JSON says
    provenance: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights and standardizer (what a saved model's JSON records)."""
        return tensors_fingerprint(model_state(self.network, self.standardizer))

    @property
    def adapters(self) -> list[str]:
        """The layers that carry LoRA adapters (empty for a plain network)."""
        return list(adapters(self.network))

    @property
    def trainable_params(self) -> int:
        return self.network.n_params(trainable_only=True)

    @property
    def frozen_params(self) -> int:
        return self.network.n_params() - self.trainable_params

    def __repr__(self) -> str:
        kind = f"with adapters on {len(self.adapters)} layers" if self.adapters else "plain"
        return (f"Model({self.network.config.to_dict()}, {kind}: trainable {self.trainable_params:,}, "
                f"frozen {self.frozen_params:,}; {len(self.history)} epochs trained"
                + (f"; {self.path}" if self.path else "") + ")")

    def _repr_html_(self) -> str:
        c = self.network.config
        rows = [["network", f"{c.n_features} → {c.width} × {c.n_blocks} blocks → {c.head_width} → 1"
                            + (f", {c.embedding} embedding" if c.embedding != "none" else "")],
                ["kind", self.kind + (f", adapters on {len(self.adapters)} layers" if self.adapters else "")],
                ["trainable / frozen parameters", f"{self.trainable_params:,} / {self.frozen_params:,}"],
                ["epochs trained", str(len(self.history))],
                ["fingerprint", self.fingerprint[:16]]]
        if self.base_fingerprint:
            rows.append(["base fingerprint", self.base_fingerprint[:16]])
        if self.merge_max_abs_diff is not None:
            rows.append(["merge max |diff|", f"{self.merge_max_abs_diff:.2e}"])
        if self.path:
            rows.append(["file", str(self.path)])
        return html_table(["Model", ""], rows)


def recipe(name: str = "default", **overrides) -> TrainConfig:
    """A training recipe: the preset `name` ("default" or "notebook") with keyword `overrides` of
    `higgs_lora.config.TrainConfig` fields (epochs=, lr=, rank=, ...) and of the network's sizes
    (width=, n_blocks=, head_width=). The same as `--preset NAME --epochs ...` on the command line."""
    sizes = {k: overrides.pop(k) for k in ("width", "n_blocks", "head_width") if k in overrides}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"unknown recipe settings {sorted(unknown)}")
    cfg = preset(name, **overrides)
    if sizes:
        cfg.model = ModelConfig(**{**cfg.model.to_dict(), **sizes})
    return cfg


def _recipe(value) -> TrainConfig:
    if isinstance(value, TrainConfig):
        return copy.deepcopy(value).validate()
    if isinstance(value, str):
        return recipe(value)
    raise ConfigError(f"recipe must be a preset name or a TrainConfig, got {type(value).__name__}")


def _refuse_track_without_out(track, out) -> None:
    if track is not None and out is None:
        raise ConfigError(f"track={track!r} needs out=: the directory the run's files and tracking go to")


def _weighted(data: Data, sample_weight) -> Data:
    """`data` with its event weights replaced by `sample_weight` (one per row of the whole data set, as
    `data.rows`; the parts take theirs); None: the data's own weights (--weight, or none)."""
    if sample_weight is None:
        return data
    if not isinstance(data.source, TableSource):
        raise UserError(f"{data.source.source}: sample_weight= takes data held in memory; the weights of a shard "
                        "directory come from the weights.npy of its shards")
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (data.rows,):
        raise UserError(f"sample_weight of shape {w.shape}: one weight per row of the data, ({data.rows},)")
    bad = np.flatnonzero(~np.isfinite(w))
    if len(bad):
        raise UserError(f"sample_weight: row {bad[0]}: {w[bad[0]]!r} is not a finite number")
    table = dataclasses.replace(data.source.table, weights=w.astype(np.float32))
    return dataclasses.replace(data, source=TableSource(table, data.source.device))


def fit(data: Data, *, recipe="default", sample_weight=None, out=None, force: bool = False, resume: bool = False,
        track=None, progress: bool = True) -> Model:
    """Build a fresh network and train it on the train rows (validating on the val rows), by `recipe`.
    `sample_weight`: an event weight per row of `data` (all its rows; negative ones allowed), replacing the
    data's own; how they enter the loss is the recipe's class_balance and negative_weights.
    A recipe with a `val_fraction` (the default's 0.1) carves its validation rows from the end of the
    train rows where `data` has none (the standardizer is then refitted on the rest, as the CLI does).

    With `out`, it is `higgs-lora train --out`: writes out/base.safetensors + .json, out/history.jsonl
    and a checkpoint per epoch (`resume=True` continues from it), and `track` ("mlflow", "tensorboard"
    or a `higgs_lora.report.tracking.Tracker`) logs the settings, each epoch and the files."""
    _refuse_track_without_out(track, out)
    cfg = _recipe(recipe)
    data = _weighted(data, sample_weight)
    torch.manual_seed(cfg.seed)
    phases.fit_features(cfg, data.source.n_features)
    if cfg.val_fraction > 0 and not data.split.val_rows:  # the recipe validates (early stopping): carve its rows
        data = split(data, train_rows=data.split.train_rows, test_rows=data.split.test_rows,
                     val_fraction=cfg.val_fraction)
    if out is None:
        cfg, _ = phases.resolve_hardware(cfg, data.source.device, train_rows=data.split.train.stop)
        network, result = phases.train_base(cfg, data, progress=progress)
        history, path = History(rows=tuple(result.history), seconds=result.seconds), None
    else:
        trained = steps.train_prepared(cfg, data, out=out, force=force, resume=resume, progress=progress, track=track)
        network, path = trained.model, trained.path
        history = History(rows=tuple(trained.history), seconds=trained.seconds)
    provenance = dict(data=data.summary() | {"feature_names": None}, seed=cfg.seed, preset=cfg.preset,
                      train=cfg.to_dict(), history=list(history.rows))
    return Model(network=network, standardizer=data.standardizer, feature_names=list(data.source.feature_names),
                 history=history, provenance=provenance, path=path)


def evaluate(model: Model, data: Data, *, part: str = "test", sample_weight=None, precision: str = DEFAULT_PRECISION) -> Metrics:
    """Metrics of `model` on a part of `data` (test, extra, train, val or all), as `higgs-lora evaluate`.
    The data is standardized with the model's own statistics, so any model fits any data of its width.
    `sample_weight`: an event weight per row of `data` (as in `fit`) that the metrics weigh by."""
    data = _weighted(data, sample_weight)
    check_features(data.source, _loaded(model))
    rows = _rows(data, part)
    same = Prepared(source=data.source, split=data.split, standardizer=model.standardizer)
    m = phases.evaluate(model.network.to(data.source.device), same, rows, precision=precision).metrics
    return Metrics.from_dict(m, part=part, rows=rows.stop - rows.start)


def adapt(model: Model, *, recipe="default", rank: int | None = None, scale: float | None = None,
          targets=None) -> Model:
    """A copy of `model`, frozen, with LoRA adapters (B = 0, so it computes exactly what `model` does)
    on `targets` ("all", "blocks" or layer names), of the recipe's rank and scale unless given."""
    if model.adapters:
        raise UserError("this model already has adapters; merge them first (merge) or adapt its base")
    overrides = {k: v for k, v in (("rank", rank), ("scale", scale)) if v is not None}
    if targets is not None:
        overrides["targets"] = (targets,) if isinstance(targets, str) else tuple(targets)
    cfg = dataclasses.replace(_recipe(recipe), **overrides).validate()
    network = phases.adapt(cfg, copy.deepcopy(model.network))
    return dataclasses.replace(model, network=network, base_fingerprint=model.fingerprint, path=None,
                               merge_max_abs_diff=None, feature_names=list(model.feature_names),
                               provenance=dict(model.provenance))


def finetune(model: Model, data: Data, *, recipe="default", sample_weight=None, out=None, force: bool = False,
             resume: bool = False, track=None, progress: bool = True) -> Model:
    """Train the adapters of `model` (from `adapt`) on the extra rows, in place, by the recipe's
    fine-tuning settings (ft_epochs, ft_lr); returns `model` with its history extended. With `out`, it is
    `higgs-lora finetune --out`: writes out/adapter.safetensors + .json, the history and checkpoints,
    and `track` logs as in `fit`. `sample_weight` as in `fit`: the extra rows take theirs."""
    _refuse_track_without_out(track, out)
    if not model.adapters:
        raise UserError("this model has no adapters to fine-tune; call adapt() first")
    cfg = _recipe(recipe)
    data = _weighted(data, sample_weight)
    torch.manual_seed(cfg.seed)
    check_features(data.source, _loaded(model))
    same = Prepared(source=data.source, split=data.split, standardizer=model.standardizer)
    network = model.network.to(data.source.device)
    if out is None:
        steps.check_extra_rows(same)
        result = phases.finetune(cfg, network, same, base_fingerprint=model.base_fingerprint, progress=progress)
        rows, seconds = result.history, result.seconds
    else:
        trained = steps.finetune_prepared(cfg, network, same, base_fingerprint=model.base_fingerprint,
                                          base=str(model.path or "in memory"), out=out, force=force, resume=resume,
                                          progress=progress, track=track)
        rows, seconds = trained.history, trained.seconds
    model.history = model.history + History(rows=tuple(rows), seconds=seconds)
    return model


def merge(model: Model, *, data: Data | None = None) -> Model:
    """A plain network with the adapters folded in (`W + scale·A·B`, float32, checked finite). With
    `data`, verified as `higgs-lora run` does: the merged and adapted probabilities on every test row
    must agree within 1e-5 (else UserError); the largest difference is in `merge_max_abs_diff`."""
    if not model.adapters:
        raise UserError("this model has no adapters to merge")
    merged = phases.merge(model.network)
    diff = None
    if data is not None:
        check_features(data.source, _loaded(model))
        same = Prepared(source=data.source, split=data.split, standardizer=model.standardizer)
        dev = data.source.device
        diff = phases.merge_difference(merged.to(dev), model.network.to(dev), same)
        phases.refuse_inexact_merge(diff, merged=merged, test_rows=data.split.test_rows)
    return Model(network=merged, standardizer=model.standardizer, feature_names=model.feature_names,
                 history=model.history, merge_max_abs_diff=diff, kind="merged",
                 provenance=dict(model.provenance, base=model.base_fingerprint))


def compare(**metrics: Metrics) -> Comparison:
    """The notebook's comparison table: `compare(base=m1, adapted=m2)`, metrics side by side with the
    difference of the last and the first."""
    for name, m in metrics.items():
        if not isinstance(m, Metrics):
            raise TypeError(f"compare({name}=...) takes Metrics (from evaluate), got {type(m).__name__}")
    return Comparison(models=dict(metrics))


def predict(model: Model, features, *, precision: str = DEFAULT_PRECISION, device: str = "auto") -> np.ndarray:
    """P(signal) per row of raw features ([n, d] array or DataFrame, columns in the model's order),
    standardized with the model's statistics; fp32 (exact) unless `precision="bf16"`, which prints its max
    deviation from fp32 on the first 65,536 rows. For files of any size, `higgs_lora.api.predict_file`."""
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    n = model.network.config.n_features
    if x.ndim != 2 or x.shape[1] != n:
        raise UserError(f"features of shape {x.shape}: the model expects [rows, {n}]")
    dev = resolve_device(device)
    xt = torch.from_numpy(model.standardizer.transform(x)).to(dev)
    # batch by batch, sigmoid included: a row's probability depends only on its batch (runtime.py)
    p = predict_probabilities(model.network.to(dev), xt, precision=precision).cpu().numpy()
    if precision == "bf16":  # opt-in rounding: say what it cost on the first chunk, as `higgs-lora predict` does
        head = {"p": model.network}
        distributed.log(phases.deviation_line(phases.bf16_deviation(head, xt[:PREDICT_CHUNK], {"p": p[:PREDICT_CHUNK]}),
                                              min(len(p), PREDICT_CHUNK)))
    return p


def predict_file(model: Model, *, data, out, label_column=0, chunk_rows: int = 1 << 20, precision: str = DEFAULT_PRECISION,
                 force: bool = False, device: str = "auto") -> int:
    """Stream a table file of any size through `model` in chunks into a .csv or .parquet file of
    probabilities (and labels, when the file has them; `label_column=None`: features only), as
    `higgs-lora predict`. Returns the number of rows."""
    return steps.predict_with(model.network, model.standardizer, data=data, out=out, label_column=label_column,
                              chunk_rows=chunk_rows, precision=precision, force=force, device=device,
                              name=model.path or "the model")


def plot_roc(data: Data, *, part: str = "test", **models: Model):
    """ROC curves (and background rejection vs signal efficiency) of `models` on a part, as a matplotlib
    Figure: `plot_roc(data, base=base, adapted=adapted)`, the run report's figure."""
    from higgs_lora.report.metrics import ROC_POINTS, roc_auc, roc_curve
    from higgs_lora.report.plots import roc_figure
    features, labels = data.part(part)
    curves = {}
    for name, m in models.items():
        scores = predict(m, features)
        fpr, tpr, _ = roc_curve(labels=labels, scores=scores, max_points=ROC_POINTS)
        curves[name] = (fpr, tpr, roc_auc(labels=labels, scores=scores))
    return roc_figure(curves)


# ---------------------------------------------------------------- files

def _loaded(model: Model):
    """The (model, standardizer, meta) triple the pipeline's checks take, with a path for messages."""
    from higgs_lora.model.model_file import LoadedModel
    loaded = LoadedModel(model.network, model.standardizer, {"feature_names": model.feature_names})
    loaded.path = model.path or "the model"
    return loaded


def save_model(model: Model, path, *, force: bool = False) -> Path:
    """Write PATH.safetensors + PATH.json (refusing to replace a model unless `force`); a model with
    adapters is saved as its adapter file instead: use `save_adapter` (or `merge` first)."""
    if model.adapters:
        raise UserError("save_model takes a plain network; merge the adapters first or use save_adapter")
    target = new_model_path(path, force=force)
    model.path = _save_model_file(target, copy.deepcopy(model.network).cpu(), model.standardizer,
                                  feature_names=model.feature_names, kind=model.kind, provenance=model.provenance)
    return model.path


def save_adapter(model: Model, path, *, force: bool = False) -> Path:
    """Write only the adapters (PATH.safetensors + PATH.json), bound to the fingerprint of their base."""
    if not model.adapters:
        raise UserError("this model has no adapters to save")
    target = new_model_path(path, force=force)
    return _save_adapter_file(target, copy.deepcopy(model.network).cpu(), base_fingerprint=model.base_fingerprint,
                              provenance=dict(history=list(model.history.rows)))


def load_model(path, *, adapter=None) -> Model:
    """A saved model (PATH.safetensors + PATH.json), checked against its checksum and architecture; with
    `adapter`, that adapter file added (it must have been trained on this very base)."""
    loaded = _load_weights(path)
    base_fingerprint = None
    if adapter is not None:
        load_adapter(adapter, loaded.model, base_fingerprint=loaded.meta["fingerprint"])
        base_fingerprint = loaded.meta["fingerprint"]
    provenance = loaded.meta.get("provenance", {})
    return Model(network=loaded.model, standardizer=loaded.standardizer, feature_names=loaded.meta["feature_names"],
                 history=History(rows=tuple(provenance.get("history", ()))), base_fingerprint=base_fingerprint,
                 kind=loaded.meta.get("kind", "base"), provenance=provenance, path=loaded.path)


def export_onnx(model: Model, *, out, include_standardization: bool = False) -> Path:
    """out/model.onnx (adapters merged in first) and out/preprocess.json, as `higgs-lora export`."""
    from higgs_lora.interop.onnx import export_onnx as write_onnx
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create ({e.strerror})") from None
    return write_onnx(copy.deepcopy(model.network).cpu(), model.standardizer, feature_names=model.feature_names,
                      out_dir=out, include_standardization=include_standardization)


def import_keras(path, *, stats) -> Model:
    """A model saved by the notebook's Keras code (.keras) and its train statistics (stats.json:
    {"mean": [...], "std": [...]}), converted without TensorFlow, as `higgs-lora import-keras`."""
    from higgs_lora.data import default_feature_names
    from higgs_lora.interop.keras import import_keras as convert
    network, standardizer = convert(path, stats_path=stats)
    return Model(network=network, standardizer=standardizer,
                 feature_names=default_feature_names(network.config.n_features), kind="imported",
                 provenance=dict(keras_file=str(path), stats=str(stats)))


def run(path=None, *, out, recipe="default", events: int = SIM_EVENTS, sim_seed: int = SIM_SEED, label_column=0,
        cache_dir=None, train_rows: int | None = None, test_rows: int | None = None, force: bool = False,
        resume: bool = False, report: bool = True, track=None, progress: bool = True, signal=(), background=(),
        weight: str | None = None, features=None, tree: str | None = None, split_seed: int | None = None) -> dict:
    """The whole pipeline into the run directory `out`, exactly as `higgs-lora run`; returns the
    metrics (as metrics.json holds them). `track` as in `fit`; the data options as in `load_data`."""
    from higgs_lora.pipeline.whole_run import run as run_pipeline
    spec = DataSpec(path=None if path is None else str(path), label_column=label_column,
                    cache_dir=None if cache_dir is None else str(cache_dir), train_rows=train_rows,
                    test_rows=test_rows, sim_events=events, sim_seed=sim_seed, **_sample_fields(
                        signal=signal, background=background, weight=weight, features=features, tree=tree,
                        split_seed=split_seed))
    return run_pipeline(_recipe(recipe), spec, out=Path(out), force=force, resume=resume, progress=progress,
                        report=report, track=track, command="higgs_lora.api.run")
