"""The phases of the notebook's workflow, shared by `run` and the single-step commands: train a base
network, add adapters, fine-tune them, evaluate a part, verify a merge, measure inference speed."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from higgs_lora import io
from higgs_lora.hardware import machine
from higgs_lora.config import DEFAULT_PRECISION, MERGE_TOLERANCE, ModelConfig, TrainConfig
from higgs_lora.hardware.distributed import gather, is_main, log
from higgs_lora.errors import DataError, UserError
from higgs_lora.adapters.lora import adapters, add_adapters, merge_adapters, variant_name
from higgs_lora.report.metrics import binary_metrics
from higgs_lora.model.network import ResidualMLP
from higgs_lora.pipeline import figures
from higgs_lora.pipeline.inputs import Prepared
from higgs_lora.pipeline.rundir import HARDWARE_FILE, hardware_record
from higgs_lora.hardware.runtime import inference_batch, predict_logits
from higgs_lora.train import Checkpoint, FitResult, fit
from higgs_lora.data.weighting import AS_READ, Policy


def fit_features(cfg: TrainConfig, n_features: int) -> None:
    """The network's input width follows the data (HIGGS: 28; SUSY: 18; ...)."""
    if cfg.model.n_features != n_features:
        cfg.model = ModelConfig(**{**cfg.model.to_dict(), "n_features": n_features})


def resolve_hardware(cfg: TrainConfig, device: torch.device, *, out: Path | None = None, resume: bool = False,
                     train_rows: int | None = None) -> tuple[TrainConfig, dict]:
    """The recipe this machine runs: precision auto -> fp32|bf16 by machine.py's probe of the configured
    network (once per machine, cached), the default preset's budget for `train_rows` (config.budget: batch,
    most epochs, patience, lr), its epochs scaled to the chosen precision's speed. Decided on the first
    process and shared, so every torchrun process trains the same recipe; kept in `out`/hardware.json (where a
    run directory is given), which --resume reuses as it is, so a resumed run continues with what it started
    with. Returns (cfg, the record)."""
    record = None
    if is_main():
        previous = hardware_record(out) if resume and out is not None else None
        _, record, choice = machine.resolve_recipe(cfg, device=str(device), previous=previous, train_rows=train_rows,
                                                    make_model=lambda: ResidualMLP.from_config(cfg.model))
        setting = machine.thread_setting()
        record = dict(record, threads=setting.threads, threads_reason=setting.reason)
        log(machine.record_line(record) + ("  (as when the run started)" if choice is None else ""))
        log(f"threads: {setting.threads} ({setting.reason})")
        if choice is not None and choice.warning:
            print(f"higgs-lora: {choice.warning}", file=sys.stderr, flush=True)
        if out is not None:
            io.write_json(Path(out) / HARDWARE_FILE, record)
    record = gather(record)[0]
    return machine.reuse_record(cfg, record), record


def inference_precision(requested: str, config: ModelConfig, device: torch.device) -> str:
    """auto|fp32|bf16 -> what inference runs in here (machine.py, probing inference of the network).
    Inference is fp32 unless asked otherwise: bf16 rounds the probabilities (up to ~1e-2 measured), so it
    is opt-in, never a default (issue 21)."""
    choice = machine.choose_precision(requested, device=str(device), make_model=lambda: ResidualMLP.from_config(config),
                                       n_features=config.n_features, batch_size=inference_batch(device),
                                       kind="infer")
    log(choice.line())
    if choice.warning:
        print(f"higgs-lora: {choice.warning}", file=sys.stderr, flush=True)
    return choice.precision


def bf16_deviation(networks: dict, x: torch.Tensor, p_bf16: dict) -> float:
    """max |p_bf16 - p_fp32| over the networks on standardized rows `x`, given their bf16 probabilities:
    what reduced-precision inference costs, measured on the rows it ran on (the first chunk)."""
    from higgs_lora.adapters.many import probabilities
    p_fp32 = probabilities(networks, x, precision="fp32")
    return max(float(abs(p_bf16[k].astype("float64") - p_fp32[k]).max(initial=0.0)) for k in networks)


def deviation_line(deviation: float, rows: int) -> str:
    return f"bf16 inference: max |p_bf16 - p_fp32| = {deviation:.2e} on the first {rows:,} rows"


def weight_policy(cfg: TrainConfig) -> Policy:
    """How event weights enter training (--class-balance, --negative-weights): base and adapters alike."""
    return Policy(class_balance=cfg.class_balance, negative_weights=cfg.negative_weights)


def part(data: Prepared, rows: slice, *, batch_size: int, policy: Policy = AS_READ):
    """A part's batches for fit(), weighted by `policy`; a streamed part says which rows each process reads."""
    batches = data.source.part(rows, data.standardizer, batch_size=batch_size, policy=policy)
    lines = gather(batches.describe())
    for line in lines:
        if line:
            log("  " + line)
    return batches


def refuse_one_class(data: Prepared, part_name: str) -> None:
    """Training on rows of one class learns nothing (a constant), and its metrics are undefined: refuse,
    naming the data and the part. Cheap: one count over the part's uint8 labels."""
    rows = data.parts()[part_name]
    n = rows.stop - rows.start
    if n == 0:
        return  # an empty part is refused where it is used, with its own message
    signal = int(np.count_nonzero(np.asarray(data.source.labels[rows])))
    if signal in (0, n):
        only = "signal rows (label 1)" if signal else "background rows (label 0)"
        raise DataError(f"{data.source.source}: the {part_name} part ({n:,} rows) holds only {only}; "
                        "training needs both classes (check the label column and the file)")


def resume_settings(cfg: TrainConfig, data: Prepared, **more) -> dict:
    """What a phase resumed from its checkpoint must share with the run that wrote it: the resolved recipe
    (but the device: a run may move), the data (its fingerprint) and the split; `more` adds e.g. the base."""
    train = cfg.to_dict()
    train.pop("device")
    return dict(train=train, data=dict(fingerprint=data.source.fingerprint), split=data.split.to_dict(), **more)


def train_base(cfg: TrainConfig, data: Prepared, *, checkpoint: Path | None = None, resume: bool = False,
               progress: bool = True, on_epoch=None) -> tuple[ResidualMLP, FitResult]:
    """Train a fresh base network on the train rows (validating on the val rows)."""
    refuse_one_class(data, "train")
    model = ResidualMLP.from_config(cfg.model).to(data.source.device)
    log(f"base network: {cfg.model.to_dict()}  {model.n_params():,} parameters")
    policy = weight_policy(cfg)
    train = part(data, data.split.train, batch_size=cfg.batch_size, policy=policy)
    # The validation loss picks the epoch kept: weighted as the training loss it stands in for.
    val = part(data, data.split.val, batch_size=cfg.batch_size, policy=policy) if data.split.val_rows else None
    keep = Checkpoint(checkpoint, resume=resume, settings=resume_settings(cfg, data)) if checkpoint else None
    result = fit(model, train, cfg.base_recipe(), val=val, checkpoint=keep, on_epoch=on_epoch, progress=progress)
    if result.best_epoch is not None:
        log(f"base: keeping epoch {result.best_epoch} (lowest validation loss)")
    return model, result


def adapt(cfg: TrainConfig, model: ResidualMLP) -> ResidualMLP:
    """Freeze the network and add the configured adapters, saying how many parameters train."""
    config = cfg.adapter_config()
    model = add_adapters(model, config)
    trainable = model.n_params(trainable_only=True)
    log(f"adapters ({variant_name(config.to_dict())}): rank {config.rank}, scale {config.scale} on "
        f"{len(adapters(model))} layers  trainable {trainable:,}  frozen {model.n_params() - trainable:,}")
    return model


def finetune(cfg: TrainConfig, model: ResidualMLP, data: Prepared, *, base_fingerprint: str,
             checkpoint: Path | None = None, resume: bool = False, progress: bool = True, on_epoch=None) -> FitResult:
    """Train the adapters of `model` (whose base has `base_fingerprint`) on the extra rows, validating on
    their last `ft_val_fraction` when the recipe asks for it."""
    refuse_one_class(data, "extra")
    policy = weight_policy(cfg)
    rows, val_rows = data.split.extra_parts(cfg.ft_val_fraction)
    extra = part(data, rows, batch_size=cfg.ft_batch(), policy=policy)
    # As in base training: the validation loss, weighted like the loss it stands in for, picks the epoch kept.
    val = part(data, val_rows, batch_size=cfg.ft_batch(), policy=policy) if val_rows.stop > val_rows.start else None
    settings = resume_settings(cfg, data, base=base_fingerprint)
    keep = Checkpoint(checkpoint, resume=resume, settings=settings) if checkpoint else None
    result = fit(model, extra, cfg.finetune_recipe(), val=val, checkpoint=keep, on_epoch=on_epoch, progress=progress)
    if result.best_epoch is not None:
        log(f"adapters: keeping epoch {result.best_epoch} (lowest validation loss on the last "
            f"{val_rows.stop - val_rows.start:,} extra rows)")
    return result


@dataclass
class Evaluation:
    metrics: dict
    logits: torch.Tensor   # [rows] of the part, in order
    labels: torch.Tensor   # [rows], float 0/1
    weights: np.ndarray | None = None  # [rows] event weights of the part; None: every row weighs 1


def evaluate(model: torch.nn.Module, data: Prepared, rows: slice, *, precision: str = DEFAULT_PRECISION,
             part_name: str = "test part") -> Evaluation:
    """Metrics (weighted by the data's event weights, if any), logits and labels of a part; one warning
    line when a metric is undefined (one class in the part)."""
    logits, labels = data.source.predict(model, rows, data.standardizer, precision=precision)
    weights = figures.part_weights(data, rows)
    m = binary_metrics(logits.float().cpu(), labels.cpu(), weights)
    figures.warn_undefined(m, f"{data.source.source}, {part_name} ({rows.stop - rows.start:,} rows)")
    return Evaluation(metrics=m, logits=logits, labels=labels, weights=weights)


def check_unchanged_at_start(adapted: torch.nn.Module, base_logits: torch.Tensor, data: Prepared) -> None:
    """B starts at zero, so the adapted network must compute exactly what the base computes."""
    head = data.source.head(data.split.test, data.standardizer, 65536)
    diff = (predict_logits(adapted, head) - base_logits[:head.shape[0]]).abs().max().item()
    if diff != 0.0:
        raise RuntimeError(f"adapted network differs from the base before training (max |diff| {diff})")


def merge_difference(merged: torch.nn.Module, adapted: torch.nn.Module, data: Prepared) -> float:
    """max |p_merged - p_adapted| over the test rows."""
    p_merged = torch.sigmoid(data.source.predict(merged, data.split.test, data.standardizer)[0])
    p_adapted = torch.sigmoid(data.source.predict(adapted, data.split.test, data.standardizer)[0])
    return (p_merged - p_adapted).abs().max().item()


def refuse_inexact_merge(diff: float, *, merged: torch.nn.Module, test_rows: int) -> None:
    """Say how far the merged network's probabilities are from the adapted one's; above MERGE_TOLERANCE, refuse."""
    log(f"merge: {merged.n_params():,} parameters; max |p_merged - p_adapted| on {test_rows:,} test rows = {diff:.3g}")
    if not diff <= MERGE_TOLERANCE:
        raise UserError(f"merge check failed: merged and adapted predictions differ by {diff:.3g} > {MERGE_TOLERANCE}")


def merge(model: ResidualMLP) -> ResidualMLP:
    return merge_adapters(model)


def inference_rate(model: torch.nn.Module, x: torch.Tensor, *, precision: str) -> float:
    """Rows/s of the model on `x` after a warm-up pass (first calls pay for allocations and kernel choice)."""
    predict_logits(model, x[:16384], precision=precision)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    t = time.perf_counter()
    predict_logits(model, x, precision=precision)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return x.shape[0] / (time.perf_counter() - t)
