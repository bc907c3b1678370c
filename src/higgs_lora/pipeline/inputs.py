"""The one preparation path: load -> split -> feature check -> standardize.

`higgs-lora run`, the single-step commands and `strategies` all prepare their data here. Training
commands fit the standardizer on the train rows; commands that use a saved model take its split (when
the data is the one it was trained on) and its standardizer, after checking the feature count.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from higgs_lora.config import SIM_EVENTS, SIM_SEED
from higgs_lora.data import Split, Standardizer, class_balance, format_balance, split_rows
from higgs_lora.hardware.distributed import log
from higgs_lora.errors import DataError, UserError
from higgs_lora.data.sources import DataSource, TableSource
from higgs_lora.data.stream import ShardSource
from higgs_lora.model.model_file import LoadedModel


SPLIT_SEED = 1234  # the per-sample split's seed when neither --seed nor a model gives one (the default --seed)


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from and how they are split: a table file (CSV, Parquet, ROOT: "FILE.root:TREE"),
    a shard directory, samples (`signal`/`background` SPECs, or a `path` that is a glob or a directory of
    ROOT files: one sample labelled by its column; data/samples.py), or (nothing given) the built-in
    simulation. Row counts None: the notebook's fractions (2/11 train, 0.5/11 test), per sample for samples.
    `features`: names/globs/@file (None: the reader's default); `weight`: an expression such as
    "genWeight*sf_lep"; `split_seed`: the seed of the per-sample split (None: the model's when one is
    given, else 1234)."""
    path: str | None = None
    label_column: int | str | None = 0
    cache_dir: str | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    sim_events: int = SIM_EVENTS
    sim_seed: int = SIM_SEED
    signal: tuple[str, ...] = ()
    background: tuple[str, ...] = ()
    weight: str | None = None
    features: tuple[str, ...] | None = None
    tree: str | None = None
    split_seed: int | None = None

    @property
    def simulated(self) -> bool:
        return self.path is None and not self.signal and not self.background

    def sample_specs(self) -> list | None:
        """The samples to assemble (data/samples.py SampleSpecs), or None for a single table or shards."""
        from higgs_lora.data.samples import BACKGROUND, FROM_COLUMN, SIGNAL, parse_spec
        if self.signal or self.background:
            if self.path is not None:
                raise UserError("--data and --signal/--background exclude each other: give the labelled table with "
                                "--data, or the samples with --signal and --background")
            specs = ([parse_spec(t, flag="--signal", label=SIGNAL) for t in self.signal]
                     + [parse_spec(t, flag="--background", label=BACKGROUND) for t in self.background])
        elif self.path is not None and _is_sample_path(self.path):
            specs = [parse_spec(self.path, flag="--data", label=FROM_COLUMN)]
        else:
            return None
        # --tree is every ROOT sample's tree unless its SPEC names its own
        return [s if s.tree or not self.tree else dataclasses.replace(s, tree=self.tree) for s in specs]

    def to_dict(self) -> dict:
        """As recorded in config.json: the simulator settings only when simulated."""
        d = dataclasses.asdict(self)
        d.pop("cache_dir")
        if not self.simulated:
            d.update(sim_events=None, sim_seed=None)
        d.update(signal=list(self.signal), background=list(self.background),
                 features=None if self.features is None else list(self.features))
        return d


def _is_sample_path(path: str) -> bool:
    """A glob, or a directory holding ROOT files: samples; a directory of Parquet/CSV files stays shards."""
    p = Path(path)
    if any(ch in path for ch in "*?[") and not p.exists():
        return True
    return p.is_dir() and any(f.name.endswith(".root") for f in p.iterdir())


@dataclass
class Prepared:
    """Data ready to train on or predict from: the source, its split and the standardizer."""
    source: DataSource
    split: Split
    standardizer: Standardizer
    split_seed: int | None = None   # samples: the seed their per-sample split was drawn with

    def parts(self) -> dict[str, slice]:
        s = self.split
        return {"train": s.train, "val": s.val, "extra": s.extra, "test": s.test}

    def summary(self) -> dict:
        """What metrics.json and a model's provenance say about the data (samples and weights when there are)."""
        src = self.source
        d = dict(path=src.source if not src.source.startswith("simulated:") else None, source=src.source,
                 fingerprint=src.fingerprint, feature_names=src.feature_names, **self.split.to_dict(),
                 balance={k: class_balance(src.labels[s]) for k, s in self.parts().items() if s.stop > s.start})
        table = src.table  # a Table or a ShardSet: both say what they hold of samples and weights
        if table.weight_expr is not None:
            d["weight_expr"] = table.weight_expr
        if table.samples:
            d["samples"] = [info.to_dict() for info in table.samples]
            d["split_seed"] = self.split_seed
        return d

    def log_split(self) -> None:
        s = self.split
        log(f"split: train {s.train.stop - s.train.start:,}" + (f"  val {s.val_rows:,}" if s.val_rows else "")
            + f"  extra {s.extra_rows:,}  test {s.test_rows:,}")

    def log_balance(self) -> None:
        log("class balance:")
        for name, rows in self.parts().items():
            if rows.stop > rows.start:
                log("  " + format_balance(name, self.source.labels[rows]))
        table = self.source.table
        if table.samples or table.weights is not None:
            from higgs_lora.data.samples import balance_lines
            log("per sample and class, raw and weighted (N_eff = (Σw)²/Σw²):")
            for line in balance_lines(table, self.parts()):
                log("  " + line)


def load_data(spec: DataSpec, *, device: torch.device, in_memory: bool = False, progress: bool = True) -> DataSource:
    """The simulated data when nothing is given; samples (assembled and split per sample); a directory of
    shards (streamed, never read whole, refused when `in_memory`); else a table file, read whole through
    the cache."""
    return _load(spec, device=device, in_memory=in_memory, progress=progress)[0]


def _load(spec: DataSpec, *, device, in_memory: bool, progress: bool, split_seed: int | None = None):
    """(source, SampleSplit of an assembled sample table or None)."""
    if spec.simulated:
        from higgs_lora.data.simulate import simulated_table
        log(f"data: no --data given, simulating {spec.sim_events:,} events (seed {spec.sim_seed}) with the built-in "
            "toy Monte Carlo")
        return TableSource(simulated_table(spec.sim_events, seed=spec.sim_seed), device), None
    samples = spec.sample_specs()
    if samples is not None:
        from higgs_lora.data.samples import load_samples
        seed = spec.split_seed if spec.split_seed is not None else split_seed if split_seed is not None else SPLIT_SEED
        table, counts = load_samples(samples, label_column=spec.label_column, features=spec.features,
                                     weight=spec.weight, train_rows=spec.train_rows, test_rows=spec.test_rows,
                                     seed=seed, cache_dir=spec.cache_dir, progress=progress)
        log(f"data: {len(table.samples)} samples, {table.rows:,} rows x {table.n_features} features"
            + (f", weight {spec.weight}" if spec.weight else ""))
        return TableSource(table, device), counts
    if Path(spec.path).is_dir():
        if in_memory:
            raise UserError(f"--data {spec.path}: a directory of shards; this command needs one table file")
        if spec.weight is not None or spec.features is not None or spec.tree is not None:
            raise UserError(f"--data {spec.path}: a directory of shards takes no --weight, --features or --tree "
                            "(yet); give the files as samples (--data 'DIR/*.parquet') or one file")
        from higgs_lora.data.shards import open_shards
        source = ShardSource(open_shards(spec.path, label_column=spec.label_column, cache_dir=spec.cache_dir,
                                         progress=progress), device)
        log(f"data: {source.describe()}")
        return source, None
    from higgs_lora.data.read import load_table
    return TableSource(load_table(spec.path, label_column=spec.label_column, features=spec.features,
                                  weight=spec.weight, tree=spec.tree, cache_dir=spec.cache_dir,
                                  progress=progress), device), None


def check_features(source: DataSource, loaded: LoadedModel) -> None:
    n = loaded.model.config.n_features
    if source.n_features != n:
        raise DataError(f"{source.source}: {source.n_features} features, but {loaded.path} expects {n}")


def split_for_model(source: DataSource, spec: DataSpec, meta: dict) -> Split:
    """The split a model was trained with, when it was trained on this very data and no row counts are
    given; else the split the spec asks for."""
    trained_on = meta.get("provenance", {}).get("data", {})
    if spec.train_rows is None and spec.test_rows is None and trained_on.get("fingerprint") == source.fingerprint:
        split = split_rows(source.rows, train_rows=trained_on["train_rows"] + trained_on.get("val_rows", 0),
                           test_rows=trained_on["test_rows"], source=source.source)
        return dataclasses.replace(split, val_rows=trained_on.get("val_rows", 0))
    return split_rows(source.rows, train_rows=spec.train_rows, test_rows=spec.test_rows, source=source.source)


def prepare_data(spec: DataSpec, *, device: torch.device, val_fraction: float = 0.0,
                 model: LoadedModel | None = None, in_memory: bool = False, progress: bool = True) -> Prepared:
    """Load, split, check the features and standardize. Without `model`: split by the spec (samples: per
    sample) with `val_fraction` of the train rows for validation, and fit the standardizer on the train
    rows. With a saved `model`: its split (and its split seed) and its standardizer, after checking the
    data has its feature count."""
    trained_on = model.meta.get("provenance", {}).get("data", {}) if model is not None else {}
    source, counts = _load(spec, device=device, in_memory=in_memory, progress=progress,
                           split_seed=trained_on.get("split_seed"))
    if model is None:
        train_rows, test_rows = (counts.train_rows, counts.test_rows) if counts else (spec.train_rows, spec.test_rows)
        split = split_rows(source.rows, train_rows=train_rows, test_rows=test_rows,
                           val_fraction=val_fraction, source=source.source)
        return Prepared(source=source, split=split, standardizer=source.fit_standardizer(split.train),
                        split_seed=counts.seed if counts else None)
    check_features(source, model)
    if counts is not None and not (spec.train_rows is None and spec.test_rows is None
                                   and trained_on.get("fingerprint") == source.fingerprint):
        split = split_rows(source.rows, train_rows=counts.train_rows, test_rows=counts.test_rows, source=source.source)
    else:
        split = split_for_model(source, spec, model.meta)
    return Prepared(source=source, split=split, standardizer=model.standardizer, split_seed=counts.seed if counts else None)
