"""`higgs-lora`: the command line. Each subcommand is a thin layer over pipeline/io/train."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from higgs_lora import __version__
from higgs_lora.errors import UserError

EPILOG = "Run 'higgs-lora COMMAND --help' for a command's options. Docs: README.md"


def _data_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", required=required,
                   help="CSV (.csv, .csv.gz) or Parquet table, label first by default; or a directory of shards "
                        "(Parquet/CSV files or `higgs-lora shard` output), streamed from disk, never loaded whole"
                        + ("" if required else "; without it: the built-in simulated data set"))
    g.add_argument("--label-column", default="0", metavar="NAME|INDEX", help="label column (default: 0, the first)")
    g.add_argument("--cache-dir", metavar="DIR", help="where parsed tables are cached (default: beside the data, "
                   "else ~/.cache/higgs-lora; env HIGGS_LORA_CACHE)")
    g.add_argument("--train-rows", type=int, metavar="N", help="first N rows train (default: 2/11 of the rows)")
    g.add_argument("--test-rows", type=int, metavar="N", help="last N rows test (default: 0.5/11 of the rows)")
    if not required:
        g.add_argument("--sim-events", type=int, default=1_100_000, metavar="N",
                       help="events simulated when --data is not given (default: 1,100,000)")
        g.add_argument("--sim-seed", type=int, default=2014, metavar="S", help="simulator seed (default: 2014)")


def _train_args(p: argparse.ArgumentParser, *, base: bool = True, lora: bool = True) -> None:
    g = p.add_argument_group("recipe (defaults come from --preset)")
    g.add_argument("--preset", default="default", choices=["notebook", "default"],
                   help="default: our measured recipe (bf16, AdamW 1e-2 cosine, 18 epochs, 10%% validation; "
                        "adapters rank 8, scale 1, lr 3e-3); notebook: the notebook's recipe exactly "
                        "(default: default)")
    g.add_argument("--batch-size", type=int, metavar="N", help="batch size (notebook: 4096)")
    if base:
        g.add_argument("--epochs", type=int, metavar="N", help="base training epochs (notebook: 10)")
        g.add_argument("--lr", type=float, metavar="LR", help="base learning rate (notebook: 1e-3)")
        g.add_argument("--optimizer", choices=["adam", "adamw"], help="optimizer (notebook: adam)")
        g.add_argument("--weight-decay", type=float, metavar="WD", help="weight decay (notebook: 0)")
        g.add_argument("--schedule", choices=["constant", "cosine"], help="learning-rate schedule (notebook: constant)")
        g.add_argument("--warmup-frac", type=float, metavar="F", help="fraction of steps of linear warm-up (notebook: 0)")
        g.add_argument("--val-fraction", type=float, metavar="F",
                       help="fraction of the train rows (their end) held out for validation (notebook: 0)")
        g.add_argument("--patience", type=int, metavar="N",
                       help="stop after N epochs without validation improvement and keep the best (0: off)")
        g.add_argument("--width", type=int, metavar="N", help="residual width (notebook: 128)")
        g.add_argument("--blocks", type=int, metavar="N", help="number of residual blocks (notebook: 2)")
        g.add_argument("--head-width", type=int, metavar="N", help="hidden head width (notebook: 64)")
    if lora:
        g.add_argument("--ft-epochs", type=int, metavar="N", help="adapter fine-tuning epochs (notebook: 3)")
        g.add_argument("--ft-lr", type=float, metavar="LR", help="adapter learning rate (notebook: 5e-4)")
        g.add_argument("--rank", type=int, metavar="R", help="adapter rank r (notebook: 4)")
        g.add_argument("--scale", type=float, metavar="S",
                       help="adapter scale: W + S*A*B (notebook: 0.1; PEFT's lora_alpha = S*r)")
        g.add_argument("--targets", nargs="+", metavar="LAYER",
                       help="layers that get adapters: all (default), blocks, or names like input blocks.0.dense1 "
                            "hidden output")
        g.add_argument("--rslora", action="store_true", default=None,
                       help="rank-stabilised scaling lora_alpha/sqrt(r) instead of lora_alpha/r (PEFT's use_rslora)")
        g.add_argument("--dora", action="store_true", default=None,
                       help="DoRA: learn a magnitude per output row besides the low-rank direction (PEFT's use_dora)")
        g.add_argument("--lora-init", choices=["glorot", "pissa"],
                       help="glorot: A random, B zero (default); pissa: A, B from the top-r singular vectors of W")
        g.add_argument("--loraplus-lr-ratio", type=float, metavar="X",
                       help="LoRA+: B learns at X times A's learning rate (default: 1, off)")
    x = p.add_argument_group("execution")
    x.add_argument("--seed", type=int, metavar="S", help="random seed (default: 1234, the notebook's)")
    x.add_argument("--device", metavar="DEV", help="auto (CUDA when present), cpu, cuda, cuda:N (default: auto)")
    x.add_argument("--precision", choices=["fp32", "bf16"], help="training arithmetic; bf16 = autocast (default: fp32)")
    x.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    x.add_argument("--no-progress", action="store_true", help="no progress bars")


def _resolve_config(args):
    from higgs_lora.config import ModelConfig, preset
    keys = ["batch_size", "epochs", "lr", "optimizer", "weight_decay", "schedule", "warmup_frac", "val_fraction",
            "patience", "ft_epochs", "ft_lr", "rank", "scale", "seed", "device", "precision", "compile",
            "rslora", "dora", "lora_init", "loraplus_lr_ratio"]
    overrides = {k: getattr(args, k, None) for k in keys}
    if getattr(args, "targets", None):
        overrides["targets"] = tuple(args.targets)
    cfg = preset(args.preset, **overrides)
    model = {k: v for k, v in (("width", getattr(args, "width", None)), ("n_blocks", getattr(args, "blocks", None)),
                               ("head_width", getattr(args, "head_width", None))) if v is not None}
    if model:
        cfg.model = ModelConfig(**{**cfg.model.to_dict(), **model})
    return cfg


def _condition_args(p: argparse.ArgumentParser) -> None:
    from higgs_lora.data.simulate import CONDITION_PRESETS, NOMINAL
    g = p.add_argument_group("conditions (shifts of the physics and the detector; docs/simulator.md)")
    g.add_argument("--condition", choices=sorted(CONDITION_PRESETS), metavar="NAME",
                   help="a named shift: " + ", ".join(sorted(CONDITION_PRESETS)) + " (default: nominal); "
                        "the options below override it field by field")
    g.add_argument("--m-h0", type=float, metavar="GEV", help=f"heavy neutral Higgs mass (nominal {NOMINAL.m_h0:g})")
    g.add_argument("--m-hpm", type=float, metavar="GEV", help=f"charged Higgs mass (nominal {NOMINAL.m_hpm:g}); "
                   "needs m_h0 > m_hpm + 95.4 and m_hpm > 220.4 (every decay open)")
    g.add_argument("--jet-energy-scale", type=float, metavar="F", help="multiplies reconstructed jet pT (nominal 1)")
    g.add_argument("--jet-resolution", type=float, metavar="F", help="multiplies the jet energy resolution (nominal 1)")
    g.add_argument("--btag-efficiency", type=float, metavar="P",
                   help=f"tight-tag probability of a true b jet (nominal {NOMINAL.btag_efficiency:g})")
    g.add_argument("--met-soft-sigma", type=float, metavar="GEV",
                   help=f"pile-up / soft missing energy per component (nominal {NOMINAL.met_soft_sigma:g} GeV)")
    g.add_argument("--signal-fraction", type=float, metavar="F",
                   help=f"fraction of signal events (nominal {NOMINAL.signal_fraction:g})")


def _conditions(args):
    import dataclasses
    from higgs_lora.data.simulate import CONDITION_PRESETS, NOMINAL
    base = CONDITION_PRESETS[args.condition] if args.condition else NOMINAL
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(base) if getattr(args, f.name) is not None}
    return dataclasses.replace(base, **fields)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="higgs-lora", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train residual MLPs on large tabular physics data (HIGGS format) and adapt them with\n"
                    "low-rank adapters (LoRA): the notebook's whole workflow, fast, reproducible.")
    parser.add_argument("--version", action="version", version=f"higgs-lora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="the whole pipeline: train, evaluate, adapt, compare, merge, verify, save",
                       description="Read data, split (first rows train, last rows test, middle extra), standardize "
                                   "with train statistics, train the base network, evaluate, save and reload it, "
                                   "freeze it, add adapters, fine-tune them on the extra rows, evaluate, compare, "
                                   "merge the adapters into a plain network, verify and save. Writes a run directory.")
    _data_args(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/run-YYYYmmdd-HHMMSS)")
    p.add_argument("--force", action="store_true", help="write into a non-empty run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its checkpoints")
    p.add_argument("--no-report", action="store_true", help="skip plots and report.md/report.html")
    _train_args(p)

    p = sub.add_parser("train", help="train a base network only",
                       description="Train the base network on the train rows; writes DIR/base.safetensors + .json, "
                                   "DIR/history.jsonl and a checkpoint per epoch.")
    _data_args(p)
    p.add_argument("--out", metavar="DIR", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints/base.safetensors")
    _train_args(p, lora=False)

    p = sub.add_parser("finetune", help="fine-tune adapters of a saved base network on the extra rows",
                       description="Freeze MODEL, add adapters and train them on the extra rows; writes "
                                   "DIR/adapter.safetensors + .json and DIR/history.jsonl.")
    p.add_argument("model", metavar="MODEL", help="base model (.safetensors with its .json beside it)")
    _data_args(p)
    p.add_argument("--out", metavar="DIR", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints/finetune.safetensors")
    _train_args(p, base=False)

    p = sub.add_parser("evaluate", help="metrics of a saved model (optionally with an adapter) on a data part")
    p.add_argument("model", metavar="MODEL", help="model (.safetensors with its .json beside it)")
    p.add_argument("--adapter", metavar="ADAPTER", help="adapter file trained on MODEL")
    _data_args(p)
    p.add_argument("--part", default="test", choices=["train", "val", "extra", "test", "all"],
                   help="rows to evaluate on (default: test)")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")

    p = sub.add_parser("merge", help="fold an adapter into a plain network")
    p.add_argument("model", metavar="MODEL", help="base model")
    p.add_argument("--adapter", metavar="ADAPTER", required=True, help="adapter trained on MODEL")
    p.add_argument("--out", metavar="PATH", required=True, help="merged model path (PATH.safetensors + PATH.json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")
    _data_args(p)
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
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="arithmetic; bf16 is faster on CPUs with AVX512-BF16 and on GPUs (default: fp32)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")

    p = sub.add_parser("prepare", help="read a data file (or every file of a shard directory) once and cache it; "
                                       "print rows, columns, class balance")
    p.add_argument("file", metavar="FILE|DIR")
    p.add_argument("--label-column", default="0", metavar="NAME|INDEX", help="label column (default: 0)")
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory")

    p = sub.add_parser("shard", help="split a big table file into a directory of array shards, streamed",
                       description="Stream FILE (CSV, .csv.gz or Parquet, any size) into DIR/part-00000, part-00001, "
                                   "...: each holds features.npy (float32), labels.npy (uint8) and meta.json. "
                                   "Training reads such a directory (--data DIR) window by window, each torchrun "
                                   "process only its own shards. DIR appears complete or not at all.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory for the shards")
    p.add_argument("--rows-per-shard", type=int, default=1_000_000, metavar="N",
                   help="rows per shard (default: 1,000,000, about 113 MB with 28 features)")
    p.add_argument("--label-column", default="0", metavar="NAME|INDEX", help="label column (default: 0)")

    p = sub.add_parser("simulate", help="write a HIGGS-format file from the built-in toy Monte Carlo")
    p.add_argument("--events", type=int, required=True, metavar="N", help="number of events")
    p.add_argument("--seed", type=int, default=2014, metavar="S", help="seed (default: 2014)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .csv or .csv.gz")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    _condition_args(p)

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

    p = sub.add_parser("import-peft", help="convert a PEFT LoRA adapter directory into a higgs-lora adapter",
                       description="Read DIR/adapter_config.json + DIR/adapter_model.safetensors (PEFT's LoRA format, "
                                   "e.g. from `export --format peft` or peft's save_pretrained on a ResidualMLP) and "
                                   "write an adapter bound to MODEL.")
    p.add_argument("peft_dir", metavar="DIR")
    p.add_argument("--base", required=True, metavar="MODEL", help="the base model the adapter belongs to")
    p.add_argument("--out", required=True, metavar="ADAPTER", help="output adapter path (ADAPTER.safetensors + .json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing adapter file")

    p = sub.add_parser("import-keras", help="convert a .keras model saved by the notebook's code")
    p.add_argument("file", metavar="FILE.keras")
    p.add_argument("--stats", required=True, metavar="STATS.json", help='train mean/std: {"mean": [...], "std": [...]}')
    p.add_argument("--out", required=True, metavar="MODEL", help="output model path (MODEL.safetensors + .json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")

    p = sub.add_parser("adapt-study", help="when do adapters pay? base on nominal data, adapted to shifted conditions",
                       description="Train a base on nominal simulated events; for each target condition and number "
                                   "of target rows, compare adapters (ranks, rsLoRA, DoRA, PiSSA, LoRA+), full "
                                   "fine-tuning, head only, fresh networks and LightGBM on the target's test rows, "
                                   "each with the same validation-based choice of epochs and learning rate. Writes "
                                   "adapt_study.json, .md and .png into --out (docs/adaptation.md).")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds): for tests and a first look")
    p.add_argument("--conditions", nargs="+", metavar="NAME", help="target conditions (default: mass-600-450 "
                   "jes-up pileup-high; see higgs-lora simulate --help)")
    p.add_argument("--sizes", nargs="+", type=int, metavar="N",
                   help="target training rows (default: 1000 3000 10000 30000 100000 300000)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="seeds (default: 0 1 2)")
    p.add_argument("--methods", nargs="+", metavar="M", help="methods (default: all; see docs/adaptation.md)")
    p.add_argument("--threads", type=int, metavar="N", help="PyTorch threads (default: PyTorch's choice)")

    p = sub.add_parser("report", help="rebuild plots, report.md and report.html of a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR")

    from higgs_lora import strategies
    strategies.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from higgs_lora import distributed
    code = _main(args, argv, distributed)
    distributed.finish(code)  # under torchrun: a clean, trustworthy exit (see distributed.finish)
    return code


def _main(args, argv, distributed) -> int:
    from higgs_lora.train import Interrupted
    try:
        if distributed.setup() and args.command not in ("run", "train", "finetune"):
            raise UserError(f"'{args.command}' runs in one process; only run, train and finetune use torchrun")
        return COMMANDS[args.command](args, argv) or 0
    except UserError as e:
        print(f"higgs-lora: error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"higgs-lora: interrupted: {e}\n  resume with: higgs-lora {shlex.join(_with_resume(argv))}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("higgs-lora: aborted", file=sys.stderr)
        return 130
    except MemoryError:
        print("higgs-lora: error: out of memory (try fewer rows, --device cuda, or a machine with more memory)",
              file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permission denied, ...: name the file, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"higgs-lora: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


def _with_resume(argv: list[str]) -> list[str]:
    argv = [a for a in argv if a != "--force"]
    return argv if "--resume" in argv else argv + ["--resume"]


# ---------------------------------------------------------------- commands

def cmd_run(args, argv) -> None:
    from higgs_lora import pipeline
    cfg = _resolve_config(args)
    out = Path(args.out or time.strftime("runs/run-%Y%m%d-%H%M%S"))
    pipeline.run(cfg, data=args.data, out=out, label_column=args.label_column, cache_dir=args.cache_dir,
                 train_rows=args.train_rows, test_rows=args.test_rows, sim_events=args.sim_events,
                 sim_seed=args.sim_seed, force=args.force, resume=args.resume, progress=not args.no_progress,
                 report=not args.no_report, command="higgs-lora " + shlex.join(argv))


def cmd_train(args, argv) -> None:
    from higgs_lora import steps
    steps.train(_resolve_config(args), args)


def cmd_finetune(args, argv) -> None:
    from higgs_lora import steps
    steps.finetune(_resolve_config(args), args)


def cmd_evaluate(args, argv) -> None:
    from higgs_lora import steps
    steps.evaluate(args)


def cmd_merge(args, argv) -> None:
    from higgs_lora import steps
    steps.merge(args)


def cmd_predict(args, argv) -> None:
    from higgs_lora import steps
    steps.predict(args)


def cmd_prepare(args, argv) -> None:
    from higgs_lora.data.read import prepare
    if Path(args.file).is_dir():
        from higgs_lora.data.split import class_balance
        from higgs_lora.data.shards import open_shards
        t = time.perf_counter()
        shards = open_shards(args.file, label_column=args.label_column, cache_dir=args.cache_dir, progress=True)
        b = class_balance(shards.labels)
        print(f"{args.file}: {len(shards.shards)} shards, {b['rows']:,} rows x {shards.n_features} features  "
              f"signal {b['signal']:,} ({100 * b['signal_fraction']:.2f}%)  background {b['background']:,}  "
              f"ready in {time.perf_counter() - t:.2f}s")
        return
    s = prepare(args.file, label_column=args.label_column, cache_dir=args.cache_dir, progress=True)
    print(f"{args.file}: {s['rows']:,} rows x {s['columns']} columns  signal {s['signal']:,} "
          f"({100 * s['signal_fraction']:.2f}%)  background {s['background']:,}  "
          f"{'loaded from cache' if s['from_cache'] else 'parsed and cached'} in {s['seconds']:.2f}s -> {s['cache_path']}")


def cmd_shard(args, argv) -> None:
    from higgs_lora.data.shards import write_shards
    t = time.perf_counter()
    parts = write_shards(args.file, args.out, rows_per_shard=args.rows_per_shard, label_column=args.label_column,
                         progress=True)
    print(f"wrote {len(parts)} shards to {args.out} in {time.perf_counter() - t:.1f}s")


def cmd_simulate(args, argv) -> None:
    from higgs_lora.data.simulate import simulate, write_higgs_csv
    out = Path(args.out)
    if args.events < 1:
        raise UserError(f"--events must be >= 1, got {args.events}")
    if out.exists() and not args.force:
        raise UserError(f"--out {out}: file exists (use --force to overwrite)")
    conditions = _conditions(args)
    t = time.perf_counter()
    features, labels = simulate(args.events, seed=args.seed, conditions=conditions)
    t_sim = time.perf_counter() - t
    write_higgs_csv(out, features, labels)
    print(f"simulated {args.events:,} events ({conditions.describe()}) in {t_sim:.1f}s ({args.events / t_sim:,.0f}/s), "
          f"signal {labels.mean() * 100:.2f}%, written to {out} in {time.perf_counter() - t - t_sim:.1f}s")


def cmd_export(args, argv) -> None:
    from higgs_lora import steps
    steps.export(args)


def cmd_import_peft(args, argv) -> None:
    from higgs_lora import steps
    steps.import_peft(args)


def cmd_import_keras(args, argv) -> None:
    from higgs_lora import steps
    steps.import_keras(args)


def cmd_strategies(args, argv) -> None:
    from higgs_lora import strategies
    strategies.command(args, argv)


def cmd_adapt_study(args, argv) -> None:
    import dataclasses

    import torch

    from higgs_lora import adapt_study, pipeline
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.force)):
        raise UserError(f"--out {out}: exists and is not an empty directory (use --force to write into it)")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    settings = adapt_study.QUICK if args.quick else adapt_study.StudySettings()
    chosen = {k: tuple(getattr(args, k)) for k in ("conditions", "sizes", "seeds", "methods") if getattr(args, k)}
    settings = dataclasses.replace(settings, **chosen)
    result = adapt_study.run_study(settings, log=pipeline.log)
    result |= dict(machine=adapt_study.machine(), command="higgs-lora " + shlex.join(argv))
    paths = adapt_study.write_outputs(out, result)
    pipeline.log("wrote " + "  ".join(str(p) for p in paths))


def cmd_report(args, argv) -> None:
    from higgs_lora.report import write_report
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.json").exists():
        raise UserError(f"{run_dir}: not a run directory (no metrics.json)")
    md, html = write_report(run_dir)
    print(f"wrote {md} and {html}")


COMMANDS = {"run": cmd_run, "train": cmd_train, "finetune": cmd_finetune, "evaluate": cmd_evaluate,
            "merge": cmd_merge, "predict": cmd_predict, "prepare": cmd_prepare, "shard": cmd_shard,
            "simulate": cmd_simulate,
            "export": cmd_export, "import-keras": cmd_import_keras, "import-peft": cmd_import_peft, "adapt-study": cmd_adapt_study, "report": cmd_report,
            "strategies": cmd_strategies}
