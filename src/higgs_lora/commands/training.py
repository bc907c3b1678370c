"""`higgs-lora train` and `higgs-lora finetune`: one training phase each, into an output directory."""
from __future__ import annotations

from higgs_lora.commands import args as a


def add_parsers(sub) -> dict:
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
    a.add_recipe_args(p, base=False)
    a.add_track_arg(p)
    return {"train": train, "finetune": finetune}


def train(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.train(a.train_config(args), a.data_spec(args), out=args.out, force=args.force, resume=args.resume,
                   progress=a.progress(args), track=args.track)


def finetune(args, argv) -> None:
    from higgs_lora import pipeline
    pipeline.finetune(a.train_config(args), a.data_spec(args), model_path=args.model, out=args.out, force=args.force,
                      resume=args.resume, progress=a.progress(args), track=args.track)
