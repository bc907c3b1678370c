"""Commands on saved models: evaluate, merge, predict, export, import-keras."""
from __future__ import annotations

from higgs_lora.commands import args as a


def add_parsers(sub) -> dict:
    p = sub.add_parser("evaluate", help="metrics of a saved model (optionally with an adapter) on a data part")
    p.add_argument("model", metavar="MODEL", help="model (.safetensors with its .json beside it)")
    p.add_argument("--adapter", metavar="ADAPTER", help="adapter file trained on MODEL")
    a.add_data_args(p)
    p.add_argument("--part", default="test", choices=["train", "val", "extra", "test", "all"],
                   help="rows to evaluate on (default: test)")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")

    p = sub.add_parser("merge", help="fold an adapter into a plain network")
    p.add_argument("model", metavar="MODEL", help="base model")
    p.add_argument("--adapter", metavar="ADAPTER", required=True, help="adapter trained on MODEL")
    p.add_argument("--out", metavar="PATH", required=True, help="merged model path (PATH.safetensors + PATH.json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")
    a.add_data_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")

    p = sub.add_parser("predict", help="probabilities for every row of a file, streamed in chunks",
                       description="Stream FILE through MODEL in chunks (files larger than memory are fine) and write "
                                   "one probability per row to a CSV or Parquet file.")
    p.add_argument("model", metavar="MODEL", help="model (.safetensors with its .json beside it)")
    p.add_argument("--adapter", metavar="ADAPTER", help="adapter trained on MODEL")
    p.add_argument("--data", metavar="FILE", required=True, help="CSV (.csv, .csv.gz) or Parquet file of raw features")
    p.add_argument("--out", metavar="PREDS", required=True, help="output .csv or .parquet")
    p.add_argument("--label-column", default="0", metavar="NAME|INDEX|none",
                   help="label column to skip (and copy to the output); 'none' if the file has only features")
    p.add_argument("--chunk-rows", type=int, default=1 << 20, metavar="N", help="rows per chunk (default: 1048576)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="arithmetic; auto: bf16 where the hardware has it natively and a short probe (cached per "
                        "machine) measures it faster, else fp32 (default: auto)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")

    p = sub.add_parser("export", help="export a model for deployment (ONNX)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--adapter", metavar="ADAPTER", help="adapter to merge in before export")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: onnx)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (model.onnx, preprocess.json)")
    p.add_argument("--include-standardization", action="store_true",
                   help="bake (x - mean) / std into the graph instead of leaving it to preprocess.json")

    p = sub.add_parser("import-keras", help="convert a .keras model saved by the notebook's code")
    p.add_argument("file", metavar="FILE.keras")
    p.add_argument("--stats", required=True, metavar="STATS.json", help='train mean/std: {"mean": [...], "std": [...]}')
    p.add_argument("--out", required=True, metavar="MODEL", help="output model path (MODEL.safetensors + .json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")
    return {"evaluate": evaluate, "merge": merge, "predict": predict, "export": export, "import-keras": import_keras}


def evaluate(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.evaluate(a.data_spec(args), model_path=args.model, adapter_path=args.adapter, part=args.part,
                      device=args.device, json_path=args.json)


def merge(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.merge(model_path=args.model, adapter_path=args.adapter, out=args.out, force=args.force,
                   check=a.data_spec(args) if args.data is not None else None, device=args.device)


def predict(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.predict(model_path=args.model, adapter_path=args.adapter, data=args.data, out=args.out,
                     label_column=a.label_column(args.label_column), chunk_rows=args.chunk_rows,
                     precision=args.precision, force=args.force, device=args.device)


def export(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.export(model_path=args.model, adapter_path=args.adapter, out=args.out,
                    include_standardization=args.include_standardization)


def import_keras(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.import_keras(keras_path=args.file, stats_path=args.stats, out=args.out, force=args.force)
