"""Command-line arguments more than one command shares: the data, the recipe, execution, outputs; and
their translation into the pipeline's objects (DataSpec, TrainConfig). No PyTorch here: --help is fast."""
from __future__ import annotations

import argparse

from higgs_lora.config import SIM_EVENTS, SIM_SEED, ModelConfig, TrainConfig, preset


def add_data_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
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
        g.add_argument("--sim-events", type=int, default=SIM_EVENTS, metavar="N",
                       help=f"events simulated when --data is not given (default: {SIM_EVENTS:,})")
        g.add_argument("--sim-seed", type=int, default=SIM_SEED, metavar="S",
                       help=f"simulator seed (default: {SIM_SEED})")


def add_out_args(p: argparse.ArgumentParser, *, help: str, resume: str | None = None, required: bool = True) -> None:
    p.add_argument("--out", metavar="DIR", required=required, help=help)
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    if resume:
        p.add_argument("--resume", action="store_true", help=resume)


def add_recipe_args(p: argparse.ArgumentParser, *, base: bool = True, lora: bool = True) -> None:
    g = p.add_argument_group("recipe (defaults come from --preset)")
    g.add_argument("--preset", default="default", choices=["notebook", "default"],
                   help="default: our measured recipe (precision auto, AdamW 1e-2 cosine, 9 epochs in fp32 "
                        "or as many more as bf16's measured speed-up buys in the same time, 10%% validation; "
                        "adapters rank 8, scale 1, lr 3e-3); notebook: the notebook's recipe exactly, fp32 "
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
    x = p.add_argument_group("execution")
    x.add_argument("--seed", type=int, metavar="S", help="random seed (default: 1234, the notebook's)")
    x.add_argument("--device", metavar="DEV", help="auto (CUDA when present), cpu, cuda, cuda:N (default: auto)")
    x.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="training arithmetic; bf16 = autocast; auto: bf16 where the hardware has it natively and a "
                        "short probe of this network (cached per machine) measures it faster, else fp32 "
                        "(default preset: auto; notebook: fp32)")
    x.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    x.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The preset with every recipe flag given on the command line laid over it, validated."""
    overrides = {f.name: getattr(args, f.name, None) for f in TrainConfig.recipe_fields()}
    if overrides.get("targets"):
        overrides["targets"] = tuple(overrides["targets"])
    if overrides.get("epochs") is not None:  # an explicit epoch count is obeyed, never rescaled
        overrides["scale_epochs"] = False
    cfg = preset(args.preset, **overrides)
    model = {k: v for k, v in (("width", getattr(args, "width", None)), ("n_blocks", getattr(args, "blocks", None)),
                               ("head_width", getattr(args, "head_width", None))) if v is not None}
    if model:
        cfg.model = ModelConfig(**{**cfg.model.to_dict(), **model})
    return cfg


def data_spec(args: argparse.Namespace):
    """Where the data of a command comes from (--data, --label-column, ... or the simulation)."""
    from higgs_lora.pipeline.data import DataSpec
    return DataSpec(path=getattr(args, "data", None), label_column=args.label_column,
                    cache_dir=getattr(args, "cache_dir", None), train_rows=getattr(args, "train_rows", None),
                    test_rows=getattr(args, "test_rows", None), sim_events=getattr(args, "sim_events", SIM_EVENTS),
                    sim_seed=getattr(args, "sim_seed", SIM_SEED))


def label_column(value):
    """The reader takes names and index strings ("0", "-1") as they come; 'none': the file has no label."""
    return None if value is None or str(value).lower() == "none" else value


def progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)
