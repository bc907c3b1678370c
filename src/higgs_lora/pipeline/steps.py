"""The single-step workflows (train, finetune, evaluate, merge, predict, export, import-keras): each works
on files an earlier step saved, in a fresh process. Plain keyword arguments, no command-line objects:
the CLI's commands and Python callers use them alike."""
from __future__ import annotations

import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from higgs_lora.hardware import distributed
from higgs_lora import io
from higgs_lora.config import DEFAULT_PRECISION, TrainConfig
from higgs_lora.hardware.distributed import log
from higgs_lora.errors import DataError, UserError
from higgs_lora.adapters.lora import adapters
from higgs_lora.report.figures_of_merit import efficiency_vs
from higgs_lora.report.metrics import format_metrics, format_value
from higgs_lora.pipeline import figures, phases
from higgs_lora.pipeline.inputs import DataSpec, Prepared, prepare_data
from higgs_lora.report.document import format_figures
from higgs_lora.pipeline.rundir import new_file, new_model_path, prepare_run_dir, release_dir, write_history
from higgs_lora.hardware.runtime import resolve_device
from higgs_lora.report.tracking import Tracker, make_tracker
from higgs_lora.model.model_file import LoadedModel, load_model, save_model
from higgs_lora.adapters.adapter_file import load_adapter, save_adapter

PARTS = ("train", "val", "extra", "test", "all")


@dataclass(frozen=True)
class Trained:
    """A model or adapter file a step wrote, how its training went, and the trained network."""
    path: Path
    seconds: float
    samples_per_s: float
    history: list[dict]
    model: torch.nn.Module | None = None


def load_with_adapter(model_path, adapter_path=None) -> LoadedModel:
    """A saved model, with the adapter trained on it added when given."""
    loaded = load_model(model_path)
    if adapter_path:
        load_adapter(adapter_path, loaded.model, base_fingerprint=loaded.meta["fingerprint"])
    return loaded


def train(cfg: TrainConfig, spec: DataSpec, *, out, force: bool = False, resume: bool = False,
          progress: bool = True, track=None) -> Trained | None:
    """Train a base network; writes OUT/base.safetensors + .json, OUT/history.jsonl and a checkpoint per
    epoch. Returns None on the processes of a torchrun other than the first (they write nothing).
    `track`: "mlflow", "tensorboard" or a higgs_lora.report.tracking.Tracker (see tracking.py)."""
    device = distributed.local_device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    data = prepare_data(spec, device=device, val_fraction=cfg.val_fraction, progress=progress)
    return train_prepared(cfg, data, out=out, force=force, resume=resume, progress=progress, track=track)


def train_prepared(cfg: TrainConfig, data: Prepared, *, out, force: bool = False, resume: bool = False,
                   progress: bool = True, track=None) -> Trained | None:
    """`train` on data already loaded, split and standardized (the Python API keeps data in memory)."""
    phases.fit_features(cfg, data.source.n_features)
    phases.refuse_one_class(data, "train")  # before the run directory is made
    out = prepare_run_dir(Path(out), force=force, resume=resume)
    try:
        data.log_balance()
        cfg, hw = phases.resolve_hardware(cfg, data.source.device, out=out, resume=resume,
                                           train_rows=data.split.train.stop)
        tracker = start_tracking(track, out, params=dict(
            train=cfg.to_dict(), data=dict(source=data.source.source, **data.split.to_dict())))
        with tracking(tracker):
            model, result = phases.train_base(cfg, data, checkpoint=out / "checkpoints" / "base.safetensors",
                                              resume=resume, progress=progress, on_epoch=epoch_writer(out, tracker))
            provenance = dict(data=data.summary() | {"feature_names": None}, seed=cfg.seed, preset=cfg.preset,
                              train=cfg.to_dict(), hardware=hw, history=result.history)
            if not distributed.is_main():
                return None
            write_history(out / "history.jsonl", result.history)
            path = save_model(out / "base.safetensors", model.cpu(), data.standardizer,
                              feature_names=data.source.feature_names, provenance=provenance)
            tracker.log_metrics({"train_samples_per_s": result.samples_per_s, "train_seconds": result.seconds})
            tracker.log_artifacts()
    finally:
        release_dir(out)
    log(f"trained in {result.seconds:.1f}s ({result.samples_per_s:,.0f} samples/s); saved {path}")
    return Trained(path, result.seconds, result.samples_per_s, result.history, model.to(data.source.device))


def finetune(cfg: TrainConfig, spec: DataSpec, *, model_path, out, force: bool = False, resume: bool = False,
             progress: bool = True, track=None, name: str | None = None, condition: str | None = None) -> Trained | None:
    """Freeze a saved base, add adapters and train them on the extra rows; writes OUT/adapter.safetensors
    + .json and OUT/history.jsonl. The adapter's JSON gets its `name` (default: OUT's name), the target
    `condition` (default: the data's source) and its test metrics."""
    device = distributed.local_device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    loaded = load_model(model_path)
    data = prepare_data(spec, device=device, model=loaded, progress=progress)
    check_extra_rows(data)
    model = phases.adapt(cfg, loaded.model.to(device))
    return finetune_prepared(cfg, model, data, base_fingerprint=loaded.meta["fingerprint"], base=str(model_path),
                             out=out, force=force, resume=resume, progress=progress, track=track, name=name,
                             condition=condition)


def check_extra_rows(data: Prepared) -> None:
    if data.split.extra_rows == 0:
        raise DataError(f"{data.source.source}: no extra rows to fine-tune on with train {data.split.train_rows:,} "
                        f"and test {data.split.test_rows:,} of {data.source.rows:,} rows")


def finetune_prepared(cfg: TrainConfig, model: torch.nn.Module, data: Prepared, *, base_fingerprint: str, base: str,
                      out, force: bool = False, resume: bool = False, progress: bool = True,
                      track=None, name: str | None = None, condition: str | None = None) -> Trained | None:
    """`finetune` of a network that has its adapters already, on data already prepared (the Python API)."""
    check_extra_rows(data)
    phases.refuse_one_class(data, "extra")  # before the run directory is made
    out = prepare_run_dir(Path(out), force=force, resume=resume)
    try:
        data.log_balance()
        cfg.model = model.config  # the probe measures the network being adapted
        cfg, hw = phases.resolve_hardware(cfg, data.source.device, out=out, resume=resume)
        tracker = start_tracking(track, out, params=dict(
            train=cfg.to_dict(), data=dict(source=data.source.source, **data.split.to_dict())))
        with tracking(tracker):
            result = phases.finetune(cfg, model, data, base_fingerprint=base_fingerprint,
                                     checkpoint=out / "checkpoints" / "finetune.safetensors", resume=resume,
                                     progress=progress, on_epoch=epoch_writer(out, tracker))
            metrics = None
            if data.split.test_rows:
                m = phases.evaluate(model, data, data.split.test).metrics
                metrics = dict(part="test", rows=data.split.test_rows,
                               **{k: m[k] for k in ("roc_auc", "accuracy", "log_loss")})
                log(f"adapted, test: {format_metrics(m)}")
            if not distributed.is_main():
                return None
            write_history(out / "history.jsonl", result.history)
            path = save_adapter(out / "adapter.safetensors", model, base_fingerprint=base_fingerprint,
                                name=name or out.resolve().name, target_condition=condition or data.source.source,
                                metrics=metrics, provenance=dict(base=base, data=data.source.source, seed=cfg.seed,
                                                ft_epochs=cfg.ft_epochs, ft_lr=cfg.ft_lr,
                                                class_balance=cfg.class_balance,
                                                negative_weights=cfg.negative_weights, hardware=hw,
                                                history=result.history))
            tracker.log_metrics({"finetune_samples_per_s": result.samples_per_s, "finetune_seconds": result.seconds})
            tracker.log_artifacts()
    finally:
        release_dir(out)
    log(f"fine-tuned in {result.seconds:.1f}s ({result.samples_per_s:,.0f} samples/s); saved {path}")
    return Trained(path, result.seconds, result.samples_per_s, result.history, model)


def start_tracking(track, out: Path, *, params: dict) -> Tracker:
    """The tracker of the run in `out` (`track`: "mlflow", "tensorboard", a Tracker or None), started with
    `params`; on the first process only, the others track nothing. End it with `tracking()`."""
    tracker = track if isinstance(track, Tracker) else make_tracker(track if distributed.is_main() else None, out)
    tracker.start(params=params)
    return tracker


@contextmanager
def tracking(tracker: Tracker):
    """End the tracked run: FAILED when the work inside raised (the error goes on), FINISHED otherwise."""
    try:
        yield
    except BaseException:
        tracker.end(failed=True)
        raise
    tracker.end()


def epoch_writer(out: Path, tracker: Tracker, *, before: list[dict] = ()):
    """fit()'s on_epoch: OUT/history.jsonl rewritten with `before` and this phase's epochs so far, and the
    new epoch tracked."""
    before = list(before)

    def on_epoch(rows: list[dict]) -> None:
        write_history(out / "history.jsonl", [*before, *rows])
        tracker.log_epoch(rows[-1])
    return on_epoch


def evaluate(spec: DataSpec, *, model_path, adapter_path=None, part: str = "test", device: str = "auto",
             json_path=None, progress: bool = True, eff_vs: str | None = None) -> dict:
    """Metrics of a saved model (with an adapter) on a part of the data, weighted by the data's event
    weights, with the figures of merit (and, with `eff_vs`, the efficiencies at the best-AMS cut in bins
    of that feature); also written to `json_path`."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    loaded = load_with_adapter(model_path, adapter_path)
    data = prepare_data(spec, device=resolve_device(device), model=loaded, progress=progress)
    column = None if eff_vs is None else figures.feature_column(data, eff_vs)
    rows = slice(0, data.source.rows) if part == "all" else getattr(data.split, part)
    if rows.stop <= rows.start:
        raise DataError(f"{data.source.source}: the {part} part is empty")
    model = loaded.model.to(data.source.device)
    e = phases.evaluate(model, data, rows, part_name=f"{part} part")
    m = e.metrics
    kind = "base" if adapter_path is None else "adapted"
    fom = figures.model_figures(model, data, kind=kind, logits=e.logits, rows=rows)
    fom.pop("train_scores", None)
    trained_with = (loaded.meta.get("provenance") or {}).get("train")  # the model's policies, where recorded
    more = dict(figures_of_merit=fom, weighting=figures.weighting(data, trained_with))  # beside the metrics
    log(f"{part} ({rows.stop - rows.start:,} rows): {format_metrics(m)}")
    for line in format_figures(fom).splitlines():
        log("  " + line)
    best = fom.get("best_ams") or {}
    if column is not None and best.get("cut") is not None:
        probs = 1 / (1 + np.exp(-e.logits.float().cpu().numpy().astype(np.float64)))
        more["eff_vs"] = dict(feature=eff_vs, cut=best["cut"], **efficiency_vs(
            figures.raw_column(data, rows, column), labels=data.source.labels[rows], scores=probs, cut=best["cut"],
            weights=e.weights))
        log(f"  efficiency at the best-AMS cut vs {eff_vs}: " + "  ".join(
            f"[{lo:.4g}, {hi:.4g}) S {format_value(s)} B {format_value(b)}" for lo, hi, s, b in zip(
                more["eff_vs"]["edges"][:-1], more["eff_vs"]["edges"][1:], more["eff_vs"]["eff_s"],
                more["eff_vs"]["eff_b"])))
    if json_path:
        io.write_json(json_path, dict(model=str(model_path), adapter=adapter_path, data=data.source.source, part=part,
                                      rows=rows.stop - rows.start, metrics=m, **more))
    return m


def merge(*, model_path, adapter_path, out, force: bool = False, check: DataSpec | None = None,
          device: str = "auto", progress: bool = True) -> Path:
    """Fold an adapter into a plain network and save it; with `check`, first verify on that data's test
    rows that the merged network predicts what the adapted one does."""
    out = new_model_path(out, force=force)
    loaded = load_with_adapter(model_path, adapter_path)
    merged = phases.merge(loaded.model)
    log(f"merged {len(adapters(loaded.model))} adapters -> {merged.n_params():,} parameters")
    if check is not None:
        data = prepare_data(check, device=resolve_device(device), model=loaded, progress=progress)
        dev = data.source.device
        diff = phases.merge_difference(merged.to(dev), loaded.model.to(dev), data)
        phases.refuse_inexact_merge(diff, merged=merged, test_rows=data.split.test_rows)
    meta = loaded.meta
    path = save_model(out, merged.cpu(), loaded.standardizer, feature_names=meta["feature_names"], kind="merged",
                      provenance=dict(meta.get("provenance", {}), base=meta["fingerprint"], adapter=str(adapter_path)))
    log(f"saved {path}")
    return path


def predict(*, model_path, data, out, adapter_path=None, adapter_paths=(), label_column=0,
            chunk_rows: int = 1 << 20, precision: str = DEFAULT_PRECISION, force: bool = False, device: str = "auto",
            read: dict | None = None) -> int:
    """Stream a file through a saved model in chunks and write one probability per row (and the label,
    when the file has one; label_column None: features only) to a .csv or .parquet file. Returns the rows.

    No adapter or one: column 'probability', of the base or the adapted network. Several adapters
    (`adapter_paths`, each trained on this base, names distinct): 'probability_base' and
    'probability_<name>' for each, computed in the same pass over the file."""
    _check_predict_args(data=data, out=out, chunk_rows=chunk_rows, force=force)
    model, standardizer = _predict_networks(model_path, adapter_path, adapter_paths)
    return predict_with(model, standardizer, data=data, out=out, label_column=label_column, chunk_rows=chunk_rows,
                        precision=precision, force=force, device=device, name=model_path, read=read)


def _predict_networks(model_path, adapter_path, adapter_paths):
    from higgs_lora.adapters.many import load_many
    paths = ([adapter_path] if adapter_path else []) + list(adapter_paths)
    if len(paths) > 1:
        networks, standardizer, _ = load_many(model_path, paths)
        return {f"probability_{k}": v for k, v in networks.items()}, standardizer
    loaded = load_with_adapter(model_path, paths[0] if paths else None)
    return loaded.model, loaded.standardizer


def predict_samples(specs, *, model_path, out, adapter_path=None, adapter_paths=(), label_column=0,
                    chunk_rows: int = 1 << 20, precision: str = DEFAULT_PRECISION, force: bool = False, device: str = "auto",
                    read: dict | None = None) -> int:
    """`predict` for samples (data/samples.py SampleSpecs): one OUT/SAMPLE-FILE.parquet per input file, its rows
    in input order, with the label (the sample's, or the file's label column for --data) and, with a weight
    expression, the weight (sample scale included). OUT appears complete or not at all. Returns the rows."""
    from higgs_lora.data.samples import scaled_weight
    out = Path(out)
    if out.exists() and not (force and out.is_dir() and not any(out.iterdir())):
        raise UserError(f"--out {out}: exists; predict with samples writes a new directory")
    model, standardizer = _predict_networks(model_path, adapter_path, adapter_paths)
    rows = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for spec in specs:
            for f in spec.files:
                name = f"{spec.name}-{f.name.split('.')[0]}.parquet"
                if (tmp / name).exists():
                    raise UserError(f"{f}: a second input file named {name} in sample {spec.name}; rename one")
                own = dict(read or {}, tree=spec.tree or (read or {}).get("tree"),
                           weight=scaled_weight((read or {}).get("weight"), spec.scale))
                from_column = spec.label < 0
                rows += predict_with(model, standardizer, data=f, out=tmp / name,
                                     label_column=label_column if from_column else None,
                                     label_value=None if from_column else spec.label, chunk_rows=chunk_rows,
                                     precision=precision, device=device, name=model_path, read=own)
        if out.exists():
            out.rmdir()  # the empty directory --force allows
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {rows:,} rows of predictions to {out}/ ({sum(len(s.files) for s in specs)} files)")
    return rows


def _check_predict_args(*, data, out, chunk_rows: int, force: bool) -> None:
    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise UserError(f"--out {out}: use a .csv or .parquet file name")
    new_file(out, force=force)
    if Path(data).is_dir():
        raise UserError(f"--data {data}: a directory; predict streams one file (run it once per shard)")
    if chunk_rows < 1:
        raise UserError(f"--chunk-rows must be >= 1, got {chunk_rows}")


def predict_with(model: torch.nn.Module, standardizer, *, data, out, label_column=0, chunk_rows: int = 1 << 20,
                 precision: str = DEFAULT_PRECISION, force: bool = False, device: str = "auto", name="the model",
                 label_value: int | None = None, read: dict | None = None) -> int:
    """`predict` with a network and its standardizer in memory; `name` is what error messages call it.
    `model` may be {column name: network} (one base and its adapters): one column each, in one pass.
    `read`: what the reader takes beyond the label (features, weight, tree)."""
    from higgs_lora.data.read import stream_rows
    from higgs_lora.adapters.many import probabilities
    from higgs_lora.hardware.runtime import inference_batch
    from higgs_lora.pipeline.prediction_out import OutputBatches
    reader = dict(read or {})
    _check_predict_args(data=data, out=out, chunk_rows=chunk_rows, force=force)
    out = Path(out)
    dev = resolve_device(device)
    networks = {k: v.to(dev) for k, v in model.items()} if isinstance(model, dict) else {"probability": model.to(dev)}
    n_features = next(iter(networks.values())).config.n_features
    precision = phases.inference_precision(precision, next(iter(networks.values())).config, dev)
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm
    t, rows, deviation = time.perf_counter(), 0, None
    # The cache entry when the file has one; else the file parsed, in a thread beside the inference where
    # the cores allow. Chunks of whole inference batches (see stream_rows); the output is written in
    # batches of --chunk-rows rows whatever the chunks were.
    block = inference_batch(dev)
    # Overlap only where the cores suffice for both: on 2 cores the parser's threads take the CPU the
    # forward's OpenMP threads wait for at every barrier (1.1M rows, quiet Xeon: 3.77 s overlapped against
    # 3.42 s taking turns in chunks of --chunk-rows, as before).
    from higgs_lora.hardware.machine import usable_cores
    overlap = dev.type != "cpu" or usable_cores().n >= torch.get_num_threads() + 2
    # The forward in chunks of at most 65,536 rows (a standardized chunk of 7 MB): a cached 1.1M-row predict
    # measured 1.94 s against 2.53 s in 1M-row chunks, side by side on the quiet Xeon. The parser's chunks
    # are cut into such ones.
    forward_rows = max(block, min(chunk_rows, 1 << 16))
    cached, chunks = stream_rows(data, label_column=label_column, label_value=label_value, chunk_rows=forward_rows,
                                 parse_rows=forward_rows if overlap else chunk_rows, block=block,
                                 ahead=2 if overlap else 0, **reader)
    if cached is not None:
        log(f"reading {data} from its cache entry {cached}")
    batches = OutputBatches(chunk_rows)
    with io.atomic_path(out) as tmp:
        writer = None

        def write(batch):
            nonlocal writer
            if writer is None:
                # bf16's measured deviation travels with a Parquet file's probabilities (CSV has no place)
                schema = batch.schema if deviation is None else \
                    batch.schema.with_metadata({"higgs_lora.bf16_max_abs_diff": repr(deviation)})
                writer = (pq.ParquetWriter(str(tmp), schema) if out.suffix == ".parquet"
                          else pacsv.CSVWriter(str(tmp), batch.schema))
            writer.write_table(batch)

        try:
            with tqdm(unit="rows", unit_scale=True, desc="predict", dynamic_ncols=True) as bar:
                for chunk in chunks:
                    features, labels = chunk.features, chunk.labels
                    if features.shape[1] != n_features:
                        raise DataError(f"{data}: {features.shape[1]} features, but {name} expects {n_features}")
                    x = torch.from_numpy(standardizer.transform(features)).to(dev)
                    p = probabilities(networks, x, precision=precision)  # as hl.predict, batch by batch from row 0
                    if precision == "bf16" and rows == 0:
                        deviation = phases.bf16_deviation(networks, x, p)
                        tqdm.write(phases.deviation_line(deviation, len(features)))
                    cols = dict(p)
                    if labels is not None:
                        cols = {"label": np.asarray(labels), **cols}
                    if reader.get("weight") is not None:
                        cols["weight"] = np.asarray(chunk.weights_or_ones())
                    for batch in batches.add(cols):
                        write(batch)
                    rows += len(features)
                    bar.update(len(features))
                for batch in batches.flush():
                    write(batch)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError(f"{data}: no rows")
    s = time.perf_counter() - t
    what = "probabilities" if len(networks) == 1 else f"rows of {len(networks)} probabilities ({', '.join(networks)})"
    arithmetic = "" if deviation is None else f"; bf16, max |p_bf16 - p_fp32| on the first chunk {deviation:.2e}"
    log(f"wrote {rows:,} {what} to {out} in {s:.1f}s ({rows / s:,.0f} rows/s{arithmetic})")
    return rows


def export(*, model_path, out, adapter_path=None, include_standardization: bool = False, force: bool = False) -> Path:
    """An ONNX graph of a saved model (the adapter merged in) and its preprocess.json, in directory `out`;
    existing ones are replaced only with `force`, as every command's outputs."""
    from higgs_lora.interop.onnx import export_onnx
    for name in ("model.onnx", "preprocess.json"):
        new_file(Path(out) / name, force=force)
    loaded = load_with_adapter(model_path, adapter_path)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create ({e.strerror})") from None
    path = export_onnx(loaded.model, loaded.standardizer, feature_names=loaded.meta["feature_names"], out_dir=out,
                       include_standardization=include_standardization)
    log(f"wrote {path} and {out / 'preprocess.json'}")
    return path


def export_peft(*, model_path, out, adapter_path=None, include_standardization: bool = False,
                force: bool = False) -> Path:
    """An adapter in PEFT's format (adapter_config.json + adapter_model.safetensors) in directory `out`.
    With `adapter_path`, `model_path` is its base (checked); without, `model_path` is the adapter file."""
    from higgs_lora.adapters.peft import CONFIG_FILE, WEIGHTS_FILE, export_adapter
    if include_standardization:
        raise UserError("--include-standardization applies to --format onnx only (a PEFT adapter has no inputs)")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        new_file(Path(out) / name, force=force)
    if adapter_path is None:
        adapter_path = model_path
    else:   # it must belong to the model, as everywhere else
        load_with_adapter(model_path, adapter_path)
    out = export_adapter(adapter_path, out)
    log(f"wrote {out / 'adapter_config.json'} and {out / 'adapter_model.safetensors'}")
    return out


def import_peft(*, peft_dir, base_path, out, name: str | None = None, force: bool = False) -> Path:
    """A PEFT LoRA adapter directory as a higgs-lora adapter bound to the base at `base_path`."""
    from higgs_lora.adapters.peft import import_adapter, peft_base_fingerprint
    out = new_model_path(out, force=force)
    loaded = load_model(base_path)
    bound = peft_base_fingerprint(peft_dir)
    if bound is not None and bound != loaded.meta["fingerprint"]:
        raise UserError(f"{peft_dir}: exported from an adapter of another base model "
                        f"(its base {bound}, this base {loaded.meta['fingerprint']})")
    import_adapter(peft_dir, loaded.model)
    path = save_adapter(out, loaded.model, base_fingerprint=loaded.meta["fingerprint"], name=name,
                        provenance=dict(peft_dir=str(peft_dir), base=str(base_path)))
    log(f"imported {peft_dir} ({len(adapters(loaded.model))} adapted layers) -> {path}")
    return path


def import_keras(*, keras_path, stats_path, out, force: bool = False) -> Path:
    """Convert a .keras model saved by the notebook's code (with its train mean/std) into a model file."""
    from higgs_lora.data import default_feature_names
    from higgs_lora.interop.keras import import_keras as convert
    out = new_model_path(out, force=force)
    model, standardizer = convert(keras_path, stats_path=stats_path)
    path = save_model(out, model, standardizer, feature_names=default_feature_names(model.config.n_features),
                      kind="imported", provenance=dict(keras_file=str(keras_path), stats=str(stats_path)))
    log(f"imported {keras_path} ({model.n_params():,} parameters, {model.config.to_dict()}) -> {path}")
    return path
