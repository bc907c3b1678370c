"""The single-step subcommands (train, finetune, evaluate, merge, predict, export, import-keras):
each works on files saved by an earlier step, in a fresh process."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from higgs_lora import distributed, io, pipeline
from higgs_lora.data import split_rows
from higgs_lora.errors import UserError
from higgs_lora.lora import adapters, merge_adapters
from higgs_lora.metrics import format_metrics
from higgs_lora.train import predict_logits, resolve_device

log = pipeline.log


def _label_column(value):
    # The reader takes names and index strings ("0", "-1") as they come from the command line.
    return None if value is None or str(value).lower() == "none" else value


def _table(args, *, shards_ok: bool = True):
    if not shards_ok and getattr(args, "data", None) and Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: a directory of shards; this command needs one table file")
    return pipeline.load_data(getattr(args, "data", None), label_column=args.label_column,
                              cache_dir=getattr(args, "cache_dir", None),
                              sim_events=getattr(args, "sim_events", pipeline.DEFAULT_SIM_EVENTS),
                              sim_seed=getattr(args, "sim_seed", pipeline.DEFAULT_SIM_SEED),
                              progress=not getattr(args, "no_progress", False))


def _split_for_model(table, meta: dict, args):
    """The split a model was trained with, when it was trained on this very data; else the defaults."""
    train_rows, test_rows = args.train_rows, args.test_rows
    trained_on = meta.get("provenance", {}).get("data", {})
    if train_rows is None and test_rows is None and trained_on.get("fingerprint") == table.fingerprint:
        train_rows = trained_on["train_rows"] + trained_on.get("val_rows", 0)
        test_rows = trained_on["test_rows"]
        split = split_rows(table.rows, train_rows=train_rows, test_rows=test_rows, source=table.source)
        return dataclasses.replace(split, val_rows=trained_on.get("val_rows", 0))
    return split_rows(table.rows, train_rows=train_rows, test_rows=test_rows, source=table.source)


def _check_features(table, model, meta, path):
    if table.n_features != model.config.n_features:
        raise UserError(f"{table.source}: {table.n_features} features, but {path} expects {model.config.n_features}")


def load_with_adapter(model_path, adapter_path=None):
    model, standardizer, meta = io.load_model(model_path)
    if adapter_path:
        io.load_adapter(adapter_path, model, base_fingerprint=meta["fingerprint"])
    return model, standardizer, meta


def _new_model_path(out, force: bool) -> Path:
    """The .safetensors path a command will write; refuses to replace an existing model without --force."""
    path, _ = io.model_paths(out)
    if path.exists() and not force:
        raise UserError(f"--out {path}: file exists (use --force to overwrite)")
    return path


def _output_dir(out, force: bool, resume: bool = False) -> Path:
    out = Path(out)
    pipeline.prepare_run_dir(out, force=force, resume=resume)
    return out


def train(cfg, args) -> None:
    device = distributed.local_device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    table = _table(args)
    split = split_rows(table.rows, train_rows=args.train_rows, test_rows=args.test_rows,
                       val_fraction=cfg.val_fraction, source=table.source)
    pipeline.fit_features(cfg, table)
    out = _output_dir(args.out, args.force, args.resume)
    pipeline.print_balance(table, split)
    standardizer = pipeline.fit_standardizer(table, split.train, device)
    model, result = pipeline.train_base(cfg, table, split, standardizer, device, out=out, resume=args.resume,
                                        progress=not args.no_progress)
    provenance = dict(data=pipeline.data_summary(table, split) | {"feature_names": None}, seed=cfg.seed,
                      preset=cfg.preset, train=cfg.to_dict(), history=result.history)
    if not distributed.is_main():
        return
    path = io.save_model(out / "base.safetensors", model.cpu(), standardizer, feature_names=table.feature_names,
                         provenance=provenance)
    log(f"trained in {result.seconds:.1f}s ({result.samples_per_s:,.0f} samples/s); saved {path}")


def finetune(cfg, args) -> None:
    device = distributed.local_device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    model, standardizer, meta = io.load_model(args.model)
    table = _table(args)
    _check_features(table, model, meta, args.model)
    split = _split_for_model(table, meta, args)
    if split.extra_rows == 0:
        raise UserError(f"{table.source}: no extra rows to fine-tune on with train {split.train_rows:,} and "
                        f"test {split.test_rows:,} of {table.rows:,} rows")
    out = _output_dir(args.out, args.force, args.resume)
    pipeline.print_balance(table, split)
    model = pipeline.adapt(cfg, model.to(device))
    result = pipeline.finetune(cfg, model, table, split, standardizer, device, out=out, resume=args.resume,
                               progress=not args.no_progress)
    if not distributed.is_main():
        return
    path = io.save_adapter(out / "adapter.safetensors", model, base_fingerprint=meta["fingerprint"],
                           provenance=dict(base=str(args.model), data=table.source, seed=cfg.seed,
                                           ft_epochs=cfg.ft_epochs, ft_lr=cfg.ft_lr, history=result.history))
    log(f"fine-tuned in {result.seconds:.1f}s ({result.samples_per_s:,.0f} samples/s); saved {path}")


def evaluate(args) -> None:
    device = resolve_device(args.device)
    model, standardizer, meta = load_with_adapter(args.model, args.adapter)
    table = _table(args)
    _check_features(table, model, meta, args.model)
    split = _split_for_model(table, meta, args)
    rows = slice(0, table.rows) if args.part == "all" else getattr(split, args.part)
    if rows.stop <= rows.start:
        raise UserError(f"{table.source}: the {args.part} part is empty")
    m = pipeline.evaluate(model.to(device), table, rows, standardizer, device)[0]
    log(f"{args.part} ({rows.stop - rows.start:,} rows): {format_metrics(m)}")
    if args.json:
        io.write_json(args.json, dict(model=str(args.model), adapter=args.adapter, data=table.source, part=args.part,
                                      rows=rows.stop - rows.start, metrics=m))


def merge(args) -> None:
    out = _new_model_path(args.out, args.force)
    model, standardizer, meta = load_with_adapter(args.model, args.adapter)
    merged = merge_adapters(model)
    log(f"merged {len(adapters(model))} adapters -> {merged.n_params():,} parameters")
    if args.data is not None:
        device = resolve_device(args.device)
        table = _table(args)
        _check_features(table, model, meta, args.model)
        split = _split_for_model(table, meta, args)
        p_merged = torch.sigmoid(pipeline.predict_part(merged.to(device), table, split.test, standardizer, device)[0])
        p_adapted = torch.sigmoid(pipeline.predict_part(model.to(device), table, split.test, standardizer, device)[0])
        diff = (p_merged - p_adapted).abs().max().item()
        log(f"max |p_merged - p_adapted| on {split.test_rows:,} test rows = {diff:.3g}")
        if not diff <= pipeline.MERGE_TOLERANCE:
            raise UserError(f"merge check failed: {diff:.3g} > {pipeline.MERGE_TOLERANCE}")
    path = io.save_model(out, merged.cpu(), standardizer, feature_names=meta["feature_names"], kind="merged",
                         provenance=dict(meta.get("provenance", {}), base=meta["fingerprint"], adapter=str(args.adapter)))
    log(f"saved {path}")


def predict(args) -> None:
    from higgs_lora.data.read import iter_chunks
    out = Path(args.out)
    if out.suffix not in (".csv", ".parquet"):
        raise UserError(f"--out {out}: use a .csv or .parquet file name")
    if out.exists() and not args.force:
        raise UserError(f"--out {out}: file exists (use --force to overwrite)")
    if Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: a directory; predict streams one file (run it once per shard)")
    if args.chunk_rows < 1:
        raise UserError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    device = resolve_device(args.device)
    model, standardizer, meta = load_with_adapter(args.model, args.adapter)
    model = model.to(device)
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm
    t, rows = time.perf_counter(), 0
    with io.atomic_path(out) as tmp:
        writer = None
        try:
            with tqdm(unit="rows", unit_scale=True, desc="predict", dynamic_ncols=True) as bar:
                for features, labels in iter_chunks(args.data, label_column=_label_column(args.label_column),
                                                    chunk_rows=args.chunk_rows):
                    if features.shape[1] != model.config.n_features:
                        raise UserError(f"{args.data}: {features.shape[1]} features, but {args.model} expects "
                                        f"{model.config.n_features}")
                    x = torch.from_numpy(standardizer.transform(features)).to(device)
                    p = torch.sigmoid(predict_logits(model, x, precision=args.precision)).cpu().numpy()
                    cols = {"probability": pa.array(p)}
                    if labels is not None:
                        cols = {"label": pa.array(labels), **cols}
                    batch = pa.table(cols)
                    if writer is None:
                        writer = (pq.ParquetWriter(str(tmp), batch.schema) if out.suffix == ".parquet"
                                  else pacsv.CSVWriter(str(tmp), batch.schema))
                    writer.write_table(batch)
                    rows += len(p)
                    bar.update(len(p))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise UserError(f"{args.data}: no rows")
    s = time.perf_counter() - t
    log(f"wrote {rows:,} probabilities to {out} in {s:.1f}s ({rows / s:,.0f} rows/s)")


def export(args) -> None:
    if args.format == "peft":
        return _export_peft(args)
    from higgs_lora.export import export_onnx
    model, standardizer, meta = load_with_adapter(args.model, args.adapter)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create ({e.strerror})") from None
    path = export_onnx(model, standardizer, feature_names=meta["feature_names"], out_dir=out,
                       include_standardization=args.include_standardization)
    log(f"wrote {path} and {out / 'preprocess.json'}")


def _export_peft(args) -> None:
    from higgs_lora.peft_format import export_adapter
    adapter = args.adapter
    if adapter is None:   # the adapter file given alone
        adapter = args.model
    else:                 # check it belongs to MODEL, as every other command does
        load_with_adapter(args.model, adapter)
    if args.include_standardization:
        raise UserError("--include-standardization applies to --format onnx only (a PEFT adapter has no inputs)")
    out = export_adapter(adapter, args.out)
    log(f"wrote {out / 'adapter_config.json'} and {out / 'adapter_model.safetensors'}")


def import_peft(args) -> None:
    from higgs_lora.peft_format import import_adapter, peft_base_fingerprint
    out = _new_model_path(args.out, args.force)
    model, _, meta = io.load_model(args.base)
    bound = peft_base_fingerprint(args.peft_dir)
    if bound is not None and bound != meta["fingerprint"]:
        raise UserError(f"{args.peft_dir}: exported from an adapter of another base model "
                        f"(its base {bound}, this base {meta['fingerprint']})")
    import_adapter(args.peft_dir, model)
    path = io.save_adapter(out, model, base_fingerprint=meta["fingerprint"],
                           provenance=dict(peft_dir=str(args.peft_dir), base=str(args.base)))
    log(f"imported {args.peft_dir} ({len(adapters(model))} adapted layers) -> {path}")


def import_keras(args) -> None:
    from higgs_lora.data import default_feature_names
    from higgs_lora.keras_import import import_keras as do_import
    out = _new_model_path(args.out, args.force)
    model, standardizer = do_import(args.file, stats_path=args.stats)
    path = io.save_model(out, model, standardizer, feature_names=default_feature_names(model.config.n_features),
                         kind="imported", provenance=dict(keras_file=str(args.file), stats=str(args.stats)))
    log(f"imported {args.file} ({model.n_params():,} parameters, {model.config.to_dict()}) -> {path}")
