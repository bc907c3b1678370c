"""`higgs-lora run` (the whole pipeline into a run directory), `train` and `finetune` (one training phase
each, into an output directory) and `report` (rebuild the plots and reports of a run directory, no PyTorch)."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from higgs_lora.commands import args as a
from higgs_lora.errors import UserError


def add_parsers(sub) -> dict:
    p = sub.add_parser("run", help="the whole pipeline: train, evaluate, adapt, compare, merge, verify, save",
                       description="Read data, split (first rows train, last rows test, middle extra), standardize "
                                   "with train statistics, train the base network, evaluate, save and reload it, "
                                   "freeze it, add adapters, fine-tune them on the extra rows, evaluate, compare, "
                                   "merge the adapters into a plain network, verify and save. Writes a run directory.")
    a.add_data_args(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/run-YYYYmmdd-HHMMSS)")
    p.add_argument("--force", action="store_true", help="write into a non-empty run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its checkpoints")
    p.add_argument("--no-report", action="store_true", help="skip plots and report.md/report.html")
    p.add_argument("--eff-vs", metavar="NAME", help="a feature name: plot the signal and background efficiency at the "
                                                    "best-AMS cut in bins of it (plots/efficiency_vs.png)")
    a.add_recipe_args(p)
    a.add_track_arg(p)

    p = sub.add_parser("train", help="train a base network only",
                       description="Train the base network on the train rows; writes DIR/base.safetensors + .json, "
                                   "DIR/history.jsonl and a checkpoint per epoch.")
    a.add_data_args(p)
    a.add_out_args(p, help="output directory", resume="continue from DIR/checkpoints/base.safetensors")
    a.add_recipe_args(p, lora=False)
    a.add_track_arg(p)

    p = sub.add_parser("finetune", help="fine-tune adapters of a saved base network on the extra rows",
                       description="Freeze MODEL, add adapters and train them on the extra rows; writes "
                                   "DIR/adapter.safetensors + .json and DIR/history.jsonl.")
    p.add_argument("model", metavar="MODEL", help="base model (.safetensors with its .json beside it)")
    a.add_data_args(p)
    a.add_out_args(p, help="output directory", resume="continue from DIR/checkpoints/finetune.safetensors")
    p.add_argument("--name", metavar="NAME", help="the adapter's name, for `adapters` and `predict` columns "
                   "(default: the --out directory's name)")
    p.add_argument("--condition", metavar="TEXT", help="what the adapter adapts to, e.g. a simulator condition "
                   "(default: the data's source)")
    a.add_recipe_args(p, base=False)
    a.add_track_arg(p)
    return {"run": run, "train": train, "finetune": finetune}


def train(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.train(a.train_config(args), a.data_spec(args), out=args.out, force=args.force, resume=args.resume,
                   progress=a.progress(args), track=args.track)


def finetune(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.finetune(a.train_config(args), a.data_spec(args), model_path=args.model, out=args.out, force=args.force,
                      resume=args.resume, progress=a.progress(args), track=args.track, name=args.name,
                      condition=args.condition)


def run(args, argv) -> None:
    from higgs_lora import pipeline
    out = Path(args.out or time.strftime("runs/run-%Y%m%d-%H%M%S"))
    pipeline.run(a.train_config(args), a.data_spec(args), out=out, force=args.force, resume=args.resume,
                 progress=a.progress(args), report=not args.no_report, command="higgs-lora " + shlex.join(argv),
                 track=args.track, eff_vs=args.eff_vs)


def add_report_parser(sub) -> dict:
    p = sub.add_parser("report", help="rebuild plots, report.md and report.html of a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR")
    return {"report": report}


def report(args, argv) -> None:
    from higgs_lora.report.document import write_report
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.json").exists():
        raise UserError(f"{run_dir}: not a run directory (no metrics.json)")
    md, html = write_report(run_dir)
    print(f"wrote {md} and {html}")
