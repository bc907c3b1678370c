"""`higgs-lora strategies`: LoRA against full fine-tuning, head only, from scratch and the base."""
from __future__ import annotations

from higgs_lora.commands import args as a


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
    return {"strategies": strategies}


def strategies(args, argv) -> None:
    from higgs_lora.pipeline.strategies import compare_strategies
    compare_strategies(a.train_config(args), a.data_spec(args), out=args.out, force=args.force, base_path=args.base,
                       progress=a.progress(args), command="higgs-lora " + " ".join(argv))
