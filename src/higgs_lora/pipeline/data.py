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
from higgs_lora.distributed import log
from higgs_lora.errors import DataError, UserError
from higgs_lora.train import DataSource, ShardSource, TableSource
from higgs_lora.weights import LoadedModel


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from and how they are split: a table file, a shard directory, or (path None)
    the built-in simulation. Row counts None: the notebook's fractions (2/11 train, 0.5/11 test)."""
    path: str | None = None
    label_column: int | str = 0
    cache_dir: str | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    sim_events: int = SIM_EVENTS
    sim_seed: int = SIM_SEED

    def to_dict(self) -> dict:
        """As recorded in config.json: the simulator settings only when simulated."""
        d = dataclasses.asdict(self)
        d.pop("cache_dir")
        if self.path is not None:
            d.update(sim_events=None, sim_seed=None)
        return d


@dataclass
class Prepared:
    """Data ready to train on or predict from: the source, its split and the standardizer."""
    source: DataSource
    split: Split
    standardizer: Standardizer

    def parts(self) -> dict[str, slice]:
        s = self.split
        return {"train": s.train, "val": s.val, "extra": s.extra, "test": s.test}

    def summary(self) -> dict:
        """What metrics.json and a model's provenance say about the data."""
        src = self.source
        return dict(path=src.source if not src.source.startswith("simulated:") else None, source=src.source,
                    fingerprint=src.fingerprint, feature_names=src.feature_names, **self.split.to_dict(),
                    balance={k: class_balance(src.labels[s]) for k, s in self.parts().items() if s.stop > s.start})

    def log_split(self) -> None:
        s = self.split
        log(f"split: train {s.train.stop - s.train.start:,}" + (f"  val {s.val_rows:,}" if s.val_rows else "")
            + f"  extra {s.extra_rows:,}  test {s.test_rows:,}")

    def log_balance(self) -> None:
        log("class balance:")
        for name, rows in self.parts().items():
            if rows.stop > rows.start:
                log("  " + format_balance(name, self.source.labels[rows]))


def load_data(spec: DataSpec, *, device: torch.device, in_memory: bool = False, progress: bool = True) -> DataSource:
    """The simulated data without a path; a directory of shards (streamed, never read whole, refused
    when `in_memory`); else a table file, read whole through the cache."""
    if spec.path is None:
        from higgs_lora.data.simulate import simulated_table
        log(f"data: no --data given, simulating {spec.sim_events:,} events (seed {spec.sim_seed}) with the built-in "
            "toy Monte Carlo")
        return TableSource(simulated_table(spec.sim_events, seed=spec.sim_seed), device)
    if Path(spec.path).is_dir():
        if in_memory:
            raise UserError(f"--data {spec.path}: a directory of shards; this command needs one table file")
        from higgs_lora.data.shards import open_shards
        source = ShardSource(open_shards(spec.path, label_column=spec.label_column, cache_dir=spec.cache_dir,
                                         progress=progress), device)
        log(f"data: {source.describe()}")
        return source
    from higgs_lora.data.read import load_table
    return TableSource(load_table(spec.path, label_column=spec.label_column, cache_dir=spec.cache_dir,
                                  progress=progress), device)


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
    """Load, split, check the features and standardize. Without `model`: split by the spec with
    `val_fraction` of the train rows for validation, and fit the standardizer on the train rows. With a
    saved `model`: its split and its standardizer, after checking the data has its feature count."""
    source = load_data(spec, device=device, in_memory=in_memory, progress=progress)
    if model is None:
        split = split_rows(source.rows, train_rows=spec.train_rows, test_rows=spec.test_rows,
                           val_fraction=val_fraction, source=source.source)
        return Prepared(source=source, split=split, standardizer=source.fit_standardizer(split.train))
    check_features(source, model)
    return Prepared(source=source, split=split_for_model(source, spec, model.meta), standardizer=model.standardizer)
