"""`higgs-lora strategies` (LoRA against full fine-tuning, head only, from scratch and the base) and
`higgs-lora adapt-study` (when adapters pay, measured; docs/adaptation.md)."""
from __future__ import annotations

import shlex
from pathlib import Path

from higgs_lora.commands import args as a
from higgs_lora.errors import UserError


def add_parsers(sub) -> dict:
    p = sub.add_parser(
        "strategies", help="compare LoRA with full fine-tuning, head-only, from scratch and the untouched base",
        description="On one base network (trained here with the recipe, or --base MODEL) and the same extra rows, "
                    "train and measure: adapters (LoRA), full fine-tuning, the head only, a network from scratch "
                    "on train+extra with the same sample budget, and the base untouched. Writes strategies.json, "
                    "strategies.md and strategies.png into --out.")
    a.add_data_args(p)
    p.add_argument("--out", metavar="DIR", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.add_argument("--base", metavar="MODEL", help="use this saved base model instead of training one")
    a.add_recipe_args(p)

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
    return {"strategies": strategies, "adapt-study": adapt_study}


def strategies(args, argv) -> None:
    from higgs_lora.pipeline.strategy_runs import compare_strategies
    compare_strategies(a.train_config(args), a.data_spec(args), out=args.out, force=args.force, base_path=args.base,
                       progress=a.progress(args), command="higgs-lora " + " ".join(argv))


def adapt_study(args, argv) -> None:
    import dataclasses

    from higgs_lora.studies import adapt_study as study
    from higgs_lora.hardware.distributed import log
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.force)):
        raise UserError(f"--out {out}: exists and is not an empty directory (use --force to write into it)")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        study.set_threads(args.threads)
    settings = study.QUICK if args.quick else study.StudySettings()
    chosen = {k: tuple(getattr(args, k)) for k in ("conditions", "sizes", "seeds", "methods") if getattr(args, k)}
    result = study.run_study(dataclasses.replace(settings, **chosen), log=log)
    result |= dict(machine=study.machine(), command="higgs-lora " + shlex.join(argv))
    paths = study.write_outputs(out, result)
    log("wrote " + "  ".join(str(p) for p in paths))
