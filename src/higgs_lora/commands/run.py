"""`higgs-lora run`: the whole pipeline into a run directory."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from higgs_lora.commands import args as a


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
    return {"run": run}


def run(args, argv) -> None:
    from higgs_lora import pipeline
    out = Path(args.out or time.strftime("runs/run-%Y%m%d-%H%M%S"))
    pipeline.run(a.train_config(args), a.data_spec(args), out=out, force=args.force, resume=args.resume,
                 progress=a.progress(args), report=not args.no_report, command="higgs-lora " + shlex.join(argv),
                 track=args.track, eff_vs=args.eff_vs)
