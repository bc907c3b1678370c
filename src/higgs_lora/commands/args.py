"""Command-line arguments more than one command shares: the data, the recipe, execution, outputs; and
their translation into the pipeline's objects (DataSpec, TrainConfig). No PyTorch here: --help is fast."""
from __future__ import annotations

import argparse
import dataclasses

from higgs_lora.config import PRESETS, SIM_EVENTS, SIM_SEED, ModelConfig, TrainConfig, preset


def add_data_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    g = p.add_argument_group("data (docs/analysis-data.md)")
    g.add_argument("--data", metavar="PATH", required=required,
                   help="CSV (.csv, .csv.gz), Parquet or ROOT table (FILE.root or FILE.root:TREE), label first by "
                        "default; a glob or a directory of ROOT files (one sample, labels from the label column); or "
                        "a directory of shards (Parquet/CSV files or `higgs-lora shard` output), streamed from disk, "
                        "never loaded whole" + ("" if required else "; without it (and without --signal/--background): "
                                                "the built-in simulated data set"))
    add_sample_args(g)
    g.add_argument("--label-column", default="0", metavar="NAME|INDEX", help="label column (default: 0, the first)")
    g.add_argument("--cache-dir", metavar="DIR", help="where parsed tables are cached (default: beside the data, "
                   "else ~/.cache/higgs-lora; env HIGGS_LORA_CACHE)")
    g.add_argument("--train-rows", type=int, metavar="N", help="first N rows train (default: 2/11 of the rows; with "
                   "samples: N rows in all, shared out in proportion to the samples' sizes)")
    g.add_argument("--test-rows", type=int, metavar="N", help="last N rows test (default: 0.5/11 of the rows; samples: "
                   "as --train-rows)")
    if not required:
        g.add_argument("--sim-events", type=int, default=SIM_EVENTS, metavar="N",
                       help=f"events simulated when --data is not given (default: {SIM_EVENTS:,})")
        g.add_argument("--sim-seed", type=int, default=SIM_SEED, metavar="S",
                       help=f"simulator seed (default: {SIM_SEED})")


def add_sample_args(g) -> None:
    """--signal/--background samples, --weight, --features, --tree: shared by the training commands and predict."""
    g.add_argument("--signal", action="append", metavar="SPEC",
                   help="a signal sample: PATH|GLOB|DIR[:TREE][*FACTOR] of ROOT/Parquet/CSV files, e.g. "
                        "'hzz/*.root:events*0.0021'; every row labelled 1; repeat for several; needs --background")
    g.add_argument("--background", action="append", metavar="SPEC",
                   help="a background sample, as --signal; every row labelled 0; repeat for several")
    add_read_args(g, weight="event weight: a branch/column, or a product such as 'genWeight*sf_lep*sf_btag' "
                            "(numbers allowed), times the sample's *FACTOR")


def add_read_args(g, *, weight: str) -> None:
    """--weight (its help: `weight`), --features, --tree: how a table file is read, for every command that reads one."""
    g.add_argument("--weight", metavar="EXPR", help=weight)
    g.add_argument("--features", action="append", metavar="NAMES",
                   help="feature columns/branches: comma list, glob patterns (floating-point ones they match) or "
                        "@FILE (one name a line); repeatable (default: every column but label and weight; ROOT: "
                        "every flat floating-point branch, integer branches only when named)")
    g.add_argument("--tree", metavar="NAME", help="the TTree to read in ROOT files (default: the one in the file)")


def add_out_args(p: argparse.ArgumentParser, *, help: str, resume: str | None = None, required: bool = True) -> None:
    p.add_argument("--out", metavar="DIR", required=required, help=help)
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    if resume:
        p.add_argument("--resume", action="store_true", help=resume)


def add_recipe_args(p: argparse.ArgumentParser, *, base: bool = True, lora: bool = True) -> None:
    """One flag per TrainConfig setting and per network size, made from the dataclass fields (names, types,
    choices, help). `base`/`lora`: whether the base-training/adapter settings apply to the command. Flags
    not given stay None: the preset's value."""
    g = p.add_argument_group("recipe (defaults come from --preset)")
    g.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="default: our measured recipe (AdamW, warm-up and cosine; batch, most epochs, patience, "
                        "peak lr and weight decay sized to the training rows, each unless given: from 180,000 rows "
                        "batch 2048, 9 fp32 epochs, lr 7e-3, wd 1e-2; below, smaller batches, >= 750 steps, more "
                        "weight decay; 10%% validation, early stopping keeps the best epoch; precision auto: bf16 "
                        "raises the most epochs by its measured speed-up; adapters rank 8, scale 1, lr 3e-3); "
                        "notebook: the notebook's recipe exactly (default: default)")
    x = p.add_argument_group("execution")
    by_group = {}
    for f in TrainConfig.recipe_fields():
        by_group.setdefault(f.metadata["group"], []).append(f)
    for f in by_group["all"] + (by_group["base"] if base else []):
        _add_field(g, f)
    if base:
        for f in dataclasses.fields(ModelConfig):
            if "flag" in f.metadata:
                g.add_argument(f"--{f.metadata['flag']}", dest=f"model_{f.name}", type=int, metavar="N",
                               help=f.metadata["help"])
    for f in by_group["lora"] if lora else []:
        _add_field(g, f)
    for f in by_group["execution"]:
        _add_field(x, f)
    x.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_field(group, f: dataclasses.Field) -> None:
    options = dict(f.metadata["argparse"])
    if f.type in ("bool", bool):
        options |= dict(action="store_true", default=None)
    else:
        options.setdefault("type", {"int": int, "float": float}.get(str(f.type), str))
    group.add_argument("--" + f.name.replace("_", "-"), help=f.metadata["help"], **options)


def add_track_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", choices=["mlflow", "tensorboard"],
                   help="log settings, per-epoch and final metrics and the output files: mlflow (to "
                        "MLFLOW_TRACKING_URI, else sqlite:///OUT/mlflow.db) or tensorboard (OUT/tensorboard/); "
                        "needs the mlflow or tensorboard extra; a tracking failure warns and the run goes on")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The preset with every recipe flag given on the command line laid over it, validated."""
    overrides = {f.name: getattr(args, f.name, None) for f in TrainConfig.recipe_fields()}
    if overrides.get("targets"):
        overrides["targets"] = tuple(overrides["targets"])
    if overrides.get("epochs") is not None:  # an explicit epoch count is obeyed, never rescaled
        overrides["scale_epochs"] = False
    cfg = preset(args.preset, **overrides)
    model = {f.name: getattr(args, f"model_{f.name}", None) for f in dataclasses.fields(ModelConfig)}
    model = {k: v for k, v in model.items() if v is not None}
    if model:
        cfg.model = ModelConfig(**{**cfg.model.to_dict(), **model})
    return cfg


def data_spec(args: argparse.Namespace):
    """Where the data of a command comes from (--data, --signal/--background, --label-column, ... or the
    simulation). --seed, when given, also seeds the per-sample split."""
    from higgs_lora.pipeline.inputs import DataSpec
    return DataSpec(path=getattr(args, "data", None), label_column=args.label_column,
                    cache_dir=getattr(args, "cache_dir", None), train_rows=getattr(args, "train_rows", None),
                    test_rows=getattr(args, "test_rows", None), sim_events=getattr(args, "sim_events", SIM_EVENTS),
                    sim_seed=getattr(args, "sim_seed", SIM_SEED), signal=tuple(getattr(args, "signal", None) or ()),
                    background=tuple(getattr(args, "background", None) or ()), weight=getattr(args, "weight", None),
                    features=features(args), tree=getattr(args, "tree", None), split_seed=getattr(args, "seed", None))


def features(args: argparse.Namespace) -> tuple[str, ...] | None:
    """--features, repeated or comma-separated, as one tuple of names/patterns/@files."""
    given = getattr(args, "features", None)
    return None if not given else tuple(s.strip() for item in given for s in item.split(",") if s.strip())


def label_column(value):
    """The reader takes names and index strings ("0", "-1") as they come; 'none': the file has no label."""
    return None if value is None or str(value).lower() == "none" else value


def progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)
