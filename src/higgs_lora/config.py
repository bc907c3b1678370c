"""The hyperparameters: one dataclass for the network (it travels inside every saved model), one for
the recipe of one training phase (what fit() takes), one for a whole run (base + adapters + execution),
the named presets, and the constants more than one module needs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from higgs_lora.errors import ConfigError

# The notebook's dense layers, in order; adapters target these names.
LAYER_NAMES_DOC = "input, blocks.<i>.dense1, blocks.<i>.dense2, hidden, output"

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16")             # what a phase runs in
PRECISION_CHOICES = ("auto", *PRECISIONS)  # what a run may ask for: auto is decided by hardware.py
LORA_INITS = ("glorot", "pissa")           # lora.py: how A and B start
CLASS_BALANCES = ("auto", "none", "equal")            # train/weighting.py
NEGATIVE_WEIGHTS = ("keep", "zero", "drop-in-training")

# The largest |p_merged - p_adapted| on the test rows for a merge to count as exact (float32 rounding).
MERGE_TOLERANCE = 1e-5

# The built-in simulated data set when no --data is given.
SIM_EVENTS = 1_100_000
SIM_SEED = 2014


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = 28  # follows the data; not a flag
    width: int = field(default=128, metadata=dict(flag="width", help="residual width (notebook: 128)"))
    n_blocks: int = field(default=2, metadata=dict(flag="blocks", help="number of residual blocks (notebook: 2)"))
    head_width: int = field(default=64, metadata=dict(flag="head-width", help="hidden head width (notebook: 64)"))
    # --- the default model's pieces (model.py); these defaults are the notebook's network, so model
    # files written before these fields existed load unchanged. Python API only, not flags.
    embedding: str = "none"          # none | piecewise | periodic: an encoding of each feature beside it
    embedding_size: int = 0          # bins (piecewise) or frequencies (periodic) per feature
    frequency_scale: float = 0.1     # periodic: std of the initial frequencies
    dropout: float = 0.0             # inside each residual block, after its first ReLU (training only)

    def __post_init__(self):
        for name in ("n_features", "width", "head_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model {name} must be >= 1, got {getattr(self, name)}")
        if self.n_blocks < 0:
            raise ConfigError(f"model n_blocks must be >= 0, got {self.n_blocks}")
        if self.embedding not in ("none", "piecewise", "periodic"):
            raise ConfigError(f"model embedding must be none, piecewise or periodic, got {self.embedding!r}")
        if (self.embedding == "none") != (self.embedding_size == 0) or self.embedding_size < 0:
            raise ConfigError(f"model embedding_size must be >= 1 with an embedding and 0 without one, "
                              f"got {self.embedding_size} with embedding {self.embedding!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model dropout must be in [0, 1), got {self.dropout}")
        if not self.frequency_scale > 0:
            raise ConfigError(f"model frequency_scale must be > 0, got {self.frequency_scale}")

    def to_dict(self) -> dict:
        # The optional pieces are written only where they differ from their defaults: a notebook network's
        # model file reads exactly as before, also by versions that predate these fields.
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in _OPTIONAL_MODEL_FIELDS or v != _OPTIONAL_MODEL_FIELDS[k]}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model hyperparameters {sorted(unknown)}")
        return cls(**d)


_OPTIONAL_MODEL_FIELDS = {f.name: f.default for f in dataclasses.fields(ModelConfig)
                          if f.name in ("embedding", "embedding_size", "frequency_scale", "dropout")}


@dataclass(frozen=True)
class Recipe:
    """How fit() trains one phase. The batch size is not here: the data source cuts the batches."""
    epochs: int
    lr: float
    seed: int = 1234
    phase: str = "base"              # names the phase in checkpoints, logs and the epoch order's seed
    optimizer: str = "adam"          # adam | adamw
    weight_decay: float = 0.0
    schedule: str = "constant"       # constant | cosine (with linear warm-up)
    warmup_frac: float = 0.0
    patience: int = 0                # early stopping on validation loss; 0 = off
    precision: str = "fp32"          # fp32 | bf16 (autocast)
    compile: bool = False
    label_smoothing: float = 0.0     # targets pulled toward 1/2 by this/2 (0 = the notebook's plain loss)

    def __post_init__(self):
        _check([
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"),
            (self.precision in PRECISIONS, f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"),
            (0 <= self.warmup_frac <= 1, f"warm-up fraction must be in [0, 1], got {self.warmup_frac}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
        ])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(checks) -> None:
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def _flag(default, help: str, group: str, *, show_default: bool = True, note: str = "", **argparse_options):
    """A TrainConfig setting that is also a command-line flag; `group`: all, base, lora or execution."""
    if show_default:
        shown = f"{default:.0e}".replace("e-0", "e-") if isinstance(default, float) and 0 < default < 0.01 \
            else f"{default:g}" if isinstance(default, float) else default
        help = f"{help} (notebook: {shown}{note})"
    return field(default=default, metadata=dict(help=help, group=group, argparse=argparse_options))


@dataclass
class TrainConfig:
    """Everything that decides a run besides the data. Resolved values land in config.json."""
    preset: str = "notebook"
    model: ModelConfig = field(default_factory=ModelConfig)
    # base training
    # Each setting is also a command-line flag (--name-with-dashes); `help` and `group` say how to show it,
    # and "(notebook: X)" is the default below, which is the notebook's recipe.
    # base training
    epochs: int = _flag(10, "base training epochs", "base", metavar="N")
    batch_size: int = _flag(4096, "batch size", "all", metavar="N")
    lr: float = _flag(1e-3, "base learning rate", "base", metavar="LR")
    optimizer: str = _flag("adam", "optimizer", "base", choices=OPTIMIZERS)
    weight_decay: float = _flag(0.0, "weight decay", "base", metavar="WD")
    schedule: str = _flag("constant", "learning-rate schedule", "base", choices=SCHEDULES)
    warmup_frac: float = _flag(0.0, "fraction of steps of linear warm-up", "base", metavar="F")
    val_fraction: float = _flag(0.0, "fraction of the train rows (their end) held out for validation", "base",
                                metavar="F")
    patience: int = _flag(0, "stop after N epochs without validation improvement and keep the best (0: off)",
                          "base", metavar="N", show_default=False)
    label_smoothing: float = _flag(0.0, "label smoothing of the base training: targets pulled toward 1/2 by E/2",
                                   "base", metavar="E")
    # event weights in training, base and adapters alike (train/weighting.py; docs/analysis-data.md)
    class_balance: str = _flag("auto", "equal: each class scaled to the same total weight in training (TMVA's "
                               "NormMode=EqualNumEvents); none: the event weights as they are; auto: equal for "
                               "data with event weights (measured: docs/analysis-data.md), none without, so "
                               "unweighted data trains exactly as before", "all", choices=CLASS_BALANCES,
                               show_default=False)
    negative_weights: str = _flag("drop-in-training", "negative event weights in training: drop-in-training "
                                  "(out of the loss; measured best with zero, +0.002 weighted AUC over keep: "
                                  "docs/analysis-data.md), zero (set to 0) or keep; every metric keeps them",
                                  "all", choices=NEGATIVE_WEIGHTS, show_default=False)
    # adapter fine-tuning
    ft_epochs: int = _flag(3, "adapter fine-tuning epochs", "lora", metavar="N")
    ft_lr: float = _flag(5e-4, "adapter learning rate", "lora", metavar="LR")
    ft_batch_size: int = _flag(0, "adapter fine-tuning batch size (0: --batch-size)", "lora", metavar="N",
                               show_default=False)
    rank: int = _flag(4, "adapter rank r", "lora", metavar="R")
    scale: float = _flag(0.1, "adapter scale: W + S*A*B", "lora", metavar="S", note="; PEFT's lora_alpha = S*r")
    targets: tuple[str, ...] = _flag(("all",), "layers that get adapters: all (default), blocks, or names like "
                                     "input blocks.0.dense1 hidden output", "lora", metavar="LAYER", nargs="+",
                                     show_default=False)
    rslora: bool = _flag(False, "rank-stabilised scaling lora_alpha/sqrt(r) instead of lora_alpha/r "
                         "(PEFT's use_rslora)", "lora", show_default=False)
    dora: bool = _flag(False, "DoRA: learn a magnitude per output row besides the low-rank direction "
                       "(PEFT's use_dora)", "lora", show_default=False)
    lora_init: str = _flag("glorot", "glorot: A random, B zero; pissa: A, B from the top-r singular vectors of W",
                           "lora", choices=LORA_INITS)
    loraplus_lr_ratio: float = _flag(1.0, "LoRA+: B learns at X times A's learning rate (1: off)", "lora",
                                     metavar="X")
    # execution
    seed: int = _flag(1234, "random seed (default: 1234, the notebook's)", "execution", metavar="S",
                      show_default=False)
    device: str = _flag("auto", "auto (CUDA when present), cpu, cuda, cuda:N (default: auto)", "execution",
                        metavar="DEV", show_default=False)
    precision: str = _flag("fp32", "training arithmetic; bf16 = autocast; auto: bf16 where the hardware has it "
                           "natively and a short probe of this network (cached per machine) measures it faster, "
                           "else fp32 (default preset: auto; notebook: fp32)", "execution",
                           choices=PRECISION_CHOICES, show_default=False)
    compile: bool = _flag(False, "torch.compile the training step", "execution", show_default=False)
    # Not a flag. The epochs are given for fp32: where `auto` picks bf16 they become floor(epochs x the
    # measured bf16 speed-up), so the run takes the time it would in fp32 (the default preset's time promise).
    scale_epochs: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d

    def base_recipe(self) -> Recipe:
        """The recipe of base training."""
        return Recipe(epochs=self.epochs, lr=self.lr, seed=self.seed, phase="base", optimizer=self.optimizer,
                      weight_decay=self.weight_decay, schedule=self.schedule, warmup_frac=self.warmup_frac,
                      patience=self.patience, precision=self.precision, compile=self.compile,
                      label_smoothing=self.label_smoothing)

    def ft_batch(self) -> int:
        """The batch size of adapter fine-tuning."""
        return self.ft_batch_size or self.batch_size

    def finetune_recipe(self, *, phase: str = "finetune", epochs: int | None = None, lr: float | None = None) -> Recipe:
        """The recipe of adapter fine-tuning: Adam, constant lr, no validation (the notebook's)."""
        return Recipe(epochs=self.ft_epochs if epochs is None else epochs, lr=self.ft_lr if lr is None else lr,
                      seed=self.seed, phase=phase, precision=self.precision, compile=self.compile)

    @classmethod
    def recipe_fields(cls) -> list[dataclasses.Field]:
        """The settings a user may override one by one, each a flag (not the preset's name, the network, or
        scale_epochs, which follows from the preset and an explicit --epochs)."""
        return [f for f in dataclasses.fields(cls) if "group" in f.metadata]

    def validate(self) -> "TrainConfig":
        checks = [
            (self.epochs >= 0, f"--epochs must be >= 0, got {self.epochs}"),
            (self.ft_epochs >= 0, f"--ft-epochs must be >= 0, got {self.ft_epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.ft_batch_size >= 0, f"--ft-batch-size must be >= 0 (0: --batch-size), got {self.ft_batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.ft_lr > 0, f"--ft-lr must be > 0, got {self.ft_lr}"),
            (self.rank >= 1, f"--rank must be >= 1, got {self.rank}"),
            (self.lora_init in LORA_INITS, f"--lora-init must be one of {', '.join(LORA_INITS)}, got {self.lora_init!r}"),
            (self.loraplus_lr_ratio > 0, f"--loraplus-lr-ratio must be > 0, got {self.loraplus_lr_ratio}"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.optimizer in ("adam", "adamw"), f"--optimizer must be adam or adamw, got {self.optimizer!r}"),
            (self.schedule in ("constant", "cosine"), f"--schedule must be constant or cosine, got {self.schedule!r}"),
            (self.precision in PRECISION_CHOICES,
             f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}"),
            (self.class_balance in CLASS_BALANCES,
             f"--class-balance must be one of {', '.join(CLASS_BALANCES)}, got {self.class_balance!r}"),
            (self.negative_weights in NEGATIVE_WEIGHTS,
             f"--negative-weights must be one of {', '.join(NEGATIVE_WEIGHTS)}, got {self.negative_weights!r}"),
        ]
        _check(checks)
        return self


# The notebook's recipe, exactly: Adam 1e-3, batch 4096, 10 epochs, no validation; adapters rank 4,
# scale 0.1 on every dense layer, Adam 5e-4 for 3 epochs.
NOTEBOOK = dict(preset="notebook")

# Our default. Every difference from the notebook is backed by a measurement (docs/presets.md,
# benchmarks/bench_presets.py, benchmarks/bench_peers.py), chosen on validation rows at the notebook preset's
# own training time. fp32 recipe (issue 13, chosen on an AVX-512 Xeon in fp32 on one thread): batch 2048 at
# a peak lr of 7e-3 under a 5% warm-up + cosine decay, AdamW (wd 1e-2), 9 epochs, which fit the notebook's
# 10 epochs at batch 4096 (the 10% validation rows are not trained on, the per-epoch validation pass costs a
# little). Halving the batch was the largest gain on both data sets (+0.002/+0.004 validation AUC over batch
# 4096 at equal time); piecewise-linear feature embeddings (ModelConfig.embedding) paid on the simulation
# and lost on the second data set, label smoothing, dropout, width 256 and 16 bins did not pay, so the
# network is still the notebook's. `epochs` is the fp32 count; bf16 where it is native runs more in the same
# time (precision below is set by the hardware-aware choice, not by this recipe).
# Adapters: rank 8, scale 1 (the notebook's 0.1 with lr 5e-4 barely moves them), lr 3e-3, every dense layer:
# best of a sweep on held-out extra rows on both data sets, at batch 4096 (benchmarks/results/presets_adapters.txt),
# which fine-tuning keeps: at the base's 2048 it took the default run ~1.2x the notebook preset's wall time
# on emulated AVX2 (fine-tuning was 12.5 of the quick start's 28.5 s). ft_epochs stays the notebook's 3.
DEFAULT = dict(preset="default", precision="auto", epochs=9, scale_epochs=True, batch_size=2048, lr=7e-3,
               optimizer="adamw",
               weight_decay=1e-2, schedule="cosine", warmup_frac=0.05, val_fraction=0.1,
               rank=8, scale=1.0, ft_lr=3e-3, ft_batch_size=4096, targets=("all",))

PRESETS = {"notebook": NOTEBOOK, "default": DEFAULT}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values).validate()
