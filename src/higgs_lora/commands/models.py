"""Commands on saved models: evaluate, merge, predict, export, import-keras, import-peft, adapters."""
from __future__ import annotations

from higgs_lora.commands import args as a
from higgs_lora.config import DEFAULT_PRECISION, PRECISION_CHOICES


def add_parsers(sub) -> dict:
    p = sub.add_parser("evaluate", help="metrics of a saved model (optionally with an adapter) on a data part, "
                                          "weighted by the data's event weights, with the figures of merit")
    p.add_argument("model", metavar="MODEL", help="model (.safetensors with its .json beside it)")
    p.add_argument("--adapter", metavar="ADAPTER", help="adapter file trained on MODEL")
    a.add_data_args(p)
    p.add_argument("--part", default="test", choices=["train", "val", "extra", "test", "all"],
                   help="rows to evaluate on (default: test)")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--eff-vs", metavar="NAME", help="a feature name: also give the signal and background efficiency "
                                                    "at the best-AMS cut in bins of it")
    _device_arg(p)

    p = sub.add_parser("merge", help="fold an adapter into a plain network")
    p.add_argument("model", metavar="MODEL", help="base model")
    p.add_argument("--adapter", metavar="ADAPTER", required=True, help="adapter trained on MODEL")
    p.add_argument("--out", metavar="PATH", required=True,
                   help="merged model path: PATH.safetensors + PATH.json (a suffix of PATH's own is kept)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")
    a.add_data_args(p)
    _device_arg(p)

    p = sub.add_parser("predict", help="probabilities for every row of a file, streamed in chunks",
                       description="Stream FILE through MODEL in chunks (files larger than memory are fine) and write "
                                   "one probability per row to a CSV or Parquet file. With one --adapter: the "
                                   "adapted network's, column 'probability'. With several: in the same pass, one "
                                   "column per network, 'probability_base' and 'probability_NAME' for each adapter "
                                   "(NAME from its JSON; see `higgs-lora adapters`).")
    p.add_argument("model", metavar="MODEL", help="model (.safetensors with its .json beside it)")
    p.add_argument("--adapter", metavar="ADAPTER", action="append",
                   help="adapter trained on MODEL; repeat for several (one column each, and the base's)")
    p.add_argument("--data", metavar="FILE", help="CSV (.csv, .csv.gz), Parquet or ROOT (FILE.root[:TREE]) file of raw "
                   "features; a glob or directory of files: one output per file under --out DIR")
    a.add_sample_args(p)
    p.add_argument("--out", metavar="PREDS|DIR", required=True,
                   help="output .csv or .parquet; with samples or several files: a new directory, one "
                        "NAME.parquet per input file (rows in input order, with label and weight columns)")
    p.add_argument("--label-column", default="0", metavar="NAME|INDEX|none",
                   help="label column to skip (and copy to the output); 'none' if the file has only features")
    p.add_argument("--chunk-rows", type=int, default=1 << 20, metavar="N", help="rows per chunk (default: 1048576)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISION_CHOICES,
                   help="arithmetic (default: fp32, the model's exact probabilities, as evaluate and the ONNX "
                        "export give them); bf16: faster where the hardware has it natively, rounded: prints the "
                        "measured max |p_bf16 - p_fp32| on the first chunk; auto: bf16 where it is native and a "
                        "short probe (cached per machine) measures it faster, else fp32")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    _device_arg(p)

    p = sub.add_parser("export", help="export a model for deployment (ONNX), or an adapter in PEFT's format",
                       description="--format onnx: MODEL (with --adapter merged in) as DIR/model.onnx + "
                                   "DIR/preprocess.json. --format peft: the adapter (MODEL --adapter A, or the "
                                   "adapter file alone as MODEL) as DIR/adapter_config.json + "
                                   "DIR/adapter_model.safetensors, loadable with peft.PeftModel.from_pretrained.")
    p.add_argument("model", metavar="MODEL|ADAPTER")
    p.add_argument("--adapter", metavar="ADAPTER", help="adapter to merge in before export (onnx) or to export (peft)")
    p.add_argument("--format", default="onnx", choices=["onnx", "peft"], help="export format (default: onnx)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--include-standardization", action="store_true",
                   help="bake (x - mean) / std into the graph instead of leaving it to preprocess.json")
    p.add_argument("--force", action="store_true", help="overwrite existing exported files in DIR")

    p = sub.add_parser("import-keras", help="convert a .keras model saved by the notebook's code")
    p.add_argument("file", metavar="FILE.keras")
    p.add_argument("--stats", required=True, metavar="STATS.json", help='train mean/std: {"mean": [...], "std": [...]}')
    p.add_argument("--out", required=True, metavar="MODEL", help="output model path (MODEL.safetensors + .json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")

    p = sub.add_parser("import-peft", help="convert a PEFT LoRA adapter directory into a higgs-lora adapter",
                       description="Read DIR/adapter_config.json + DIR/adapter_model.safetensors (PEFT's LoRA format, "
                                   "e.g. from `export --format peft` or peft's save_pretrained on a ResidualMLP) and "
                                   "write an adapter bound to MODEL.")
    p.add_argument("peft_dir", metavar="DIR")
    p.add_argument("--base", required=True, metavar="MODEL", help="the base model the adapter belongs to")
    p.add_argument("--out", required=True, metavar="ADAPTER", help="output adapter path (ADAPTER.safetensors + .json)")
    p.add_argument("--name", metavar="NAME", help="the adapter's name (default: the file name)")
    p.add_argument("--force", action="store_true", help="overwrite an existing adapter file")

    p = sub.add_parser("adapters", help="list the adapters in a directory: name, base, rank, variant, size, "
                                        "target condition, metrics")
    p.add_argument("dir", metavar="DIR", help="directory searched recursively for adapter files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return {"evaluate": evaluate, "merge": merge, "predict": predict, "export": export, "import-keras": import_keras,
            "import-peft": import_peft, "adapters": list_adapters}


def _device_arg(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")


def evaluate(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.evaluate(a.data_spec(args), model_path=args.model, adapter_path=args.adapter, part=args.part,
                      device=args.device, json_path=args.json, eff_vs=args.eff_vs)


def merge(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.merge(model_path=args.model, adapter_path=args.adapter, out=args.out, force=args.force,
                   check=a.data_spec(args) if args.data is not None else None, device=args.device)


def predict(args, argv) -> None:
    from higgs_lora import pipeline
    spec = a.data_spec(args)
    if spec.path is None and not spec.signal and not spec.background:
        from higgs_lora.errors import UserError
        raise UserError("predict needs --data FILE (or --signal/--background samples)")
    specs = spec.sample_specs()
    common = dict(model_path=args.model, adapter_paths=args.adapter or [], chunk_rows=args.chunk_rows,
                  precision=args.precision, force=args.force, device=args.device)
    read = dict(features=spec.features, weight=spec.weight, tree=spec.tree)
    if specs is None:
        pipeline.predict(data=args.data, out=args.out, label_column=a.label_column(args.label_column), read=read,
                         **common)
        return
    pipeline.predict_samples(specs, out=args.out, label_column=a.label_column(args.label_column), read=read, **common)


def export(args, argv) -> None:
    from higgs_lora import pipeline
    if args.format == "peft":
        pipeline.export_peft(model_path=args.model, adapter_path=args.adapter, out=args.out,
                             include_standardization=args.include_standardization, force=args.force)
        return
    pipeline.export(model_path=args.model, adapter_path=args.adapter, out=args.out,
                    include_standardization=args.include_standardization, force=args.force)


def import_keras(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.import_keras(keras_path=args.file, stats_path=args.stats, out=args.out, force=args.force)


def import_peft(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.import_peft(peft_dir=args.peft_dir, base_path=args.base, out=args.out, name=args.name, force=args.force)


def list_adapters(args, argv) -> None:
    import json

    from higgs_lora.adapters.catalog import list_adapters as find, table
    rows = find(args.dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(table(rows))
    else:
        print(f"{args.dir}: no higgs-lora adapters")
