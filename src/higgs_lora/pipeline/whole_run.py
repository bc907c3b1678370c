"""`higgs-lora run`: the notebook's whole workflow, as a list of named steps over one RunState (the run's
settings and data, and what it made: its Record, Networks and Scores).

load -> split -> standardize -> train the base -> save, reload and evaluate it -> freeze + adapters ->
fine-tune on the extra rows -> evaluate -> compare -> merge -> verify -> save -> measure -> report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from higgs_lora.hardware import distributed, machine
from higgs_lora import io
from higgs_lora.config import TrainConfig
from higgs_lora.hardware.distributed import log
from higgs_lora.adapters.lora import adapter_config
from higgs_lora.report.metrics import ROC_POINTS, binary_metrics, format_metrics, roc_curve
from higgs_lora.pipeline import figures, phases
from higgs_lora.pipeline.inputs import DataSpec, Prepared, prepare_data
from higgs_lora.pipeline.rundir import hardware_record, machine_info, prepare_run_dir, release_dir, write_history
from higgs_lora.hardware.runtime import resolve_device, versions
from higgs_lora.pipeline.steps import epoch_writer, start_tracking, tracking
from higgs_lora.report.tracking import Tracker
from higgs_lora.train.checkpoint import refuse_changed_settings as refuse_changed_settings_in
from higgs_lora.model.model_file import load_model, save_model, tensors_fingerprint
from higgs_lora.adapters.adapter_file import save_adapter

SHORT_METRICS = ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc")


@dataclass
class Record:
    """What the run writes besides its models: the history, metrics.json and each model's provenance."""
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=lambda: dict(evaluate=0.0))   # seconds, by step
    rates: dict = field(default_factory=dict)                           # training samples/s, by phase
    provenance: dict = field(default_factory=dict)


@dataclass
class Networks:
    """The run's networks, as the steps make them: the base (reloaded from its file), adapted, merged."""
    base: torch.nn.Module | None = None
    base_meta: dict | None = None
    adapted: torch.nn.Module | None = None
    merged: torch.nn.Module | None = None


@dataclass
class Scores:
    """The test rows' labels and logits by network (base, adapted), and the scores of the rows each
    network trained on (the overtraining test's other half): what the figures and test_predictions.npz show."""
    labels: torch.Tensor | None = None
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    train: dict = field(default_factory=dict)


@dataclass
class RunState:
    """What the steps of a run hand each other: its settings and data, and what it made so far."""
    cfg: TrainConfig
    spec: DataSpec
    out: Path
    resume: bool
    progress: bool
    device: torch.device
    eff_vs: str | None = None        # the feature the efficiencies are plotted against (--eff-vs)
    data: Prepared | None = None
    tracker: Tracker | None = None
    record: Record = field(default_factory=Record)
    nets: Networks = field(default_factory=Networks)
    scores: Scores = field(default_factory=Scores)

    @property
    def main(self) -> bool:
        return distributed.is_main()


def run(cfg: TrainConfig, spec: DataSpec, *, out: Path, force: bool = False, resume: bool = False,
        progress: bool = True, report: bool = True, command: str = "", track=None, eff_vs: str | None = None) -> dict:
    """Run the whole workflow into the directory `out`; returns the metrics (as in metrics.json).
    `track` ("mlflow", "tensorboard" or a higgs_lora.report.tracking.Tracker) logs the settings, every epoch,
    the final metrics and the run directory's files; a tracking failure warns and the run goes on.
    `eff_vs`: a feature name; the report plots the signal and background efficiency at the best-AMS cut
    against it."""
    t_total = time.perf_counter()
    torch.manual_seed(cfg.seed)
    r = RunState(cfg=cfg, spec=spec, out=Path(out), resume=resume, progress=progress,
                 device=distributed.local_device(resolve_device(cfg.device)), eff_vs=eff_vs)
    refuse_changed_settings(r)
    try:
        prepare(r, force=force)  # locks the run directory
        if r.eff_vs is not None:
            figures.feature_column(r.data, r.eff_vs)  # a wrong name is refused before any training
        refuse_other_data(r)
        r.cfg, hardware = phases.resolve_hardware(r.cfg, r.device, out=r.out, resume=r.resume,
                                                    train_rows=r.data.split.train.stop)
        r.record.provenance["precision"] = {k: hardware[k] for k in ("precision", "reason", "epochs")}
        write_config(r, command=command)
        r.tracker = start_tracking(track, r.out, params=dict(
            train=r.cfg.to_dict(), data=dict(r.spec.to_dict(), source=r.data.source.source)))
        with tracking(r.tracker):
            train_or_reuse_base(r)
            evaluate_saved_base(r)
            adapt_and_finetune(r)
            evaluate_adapted(r)
            merge_and_verify(r)
            r.record.timings["total"] = time.perf_counter() - t_total
            measure(r)
            if r.main:
                write_outputs(r)
                if report:
                    write_report(r.out)
                log(f"done in {r.record.timings['total']:.1f}s -> {r.out}")
            r.tracker.log_metrics(r.record.metrics)
            r.tracker.log_artifacts()
    finally:
        release_dir(r.out)
    return r.record.metrics


# ---------------------------------------------------------------- the steps, in order

def refuse_changed_settings(r: RunState) -> None:
    """--resume continues only the run that was started: same recipe and data (the device may change).
    Checked before any work, from config.json; each phase's checkpoint checks again (with the data's
    fingerprint and the split) when it resumes."""
    if not (r.resume and (r.out / "config.json").exists()):
        return
    previous = io.read_json(r.out / "config.json")
    # Compared as resolved when the run started (the precision and epochs it chose), not measured anew.
    cfg = machine.reuse_record(r.cfg, hardware_record(r.out)) or r.cfg
    old = dict(train=dict(previous.get("train", {})), data=dict(previous.get("data", {})))
    new = dict(train=cfg.to_dict(), data=r.spec.to_dict())
    for d in (old, new):
        d["train"].pop("device", None)
        d["train"]["model"] = {k: v for k, v in d["train"].get("model", {}).items() if k != "n_features"}  # the data's
        for k in ("source", "fingerprint"):  # known once the data is read: refuse_other_data
            d["data"].pop(k, None)
    refuse_changed_settings_in(f"the run in {r.out}", old, new)


def prepare(r: RunState, *, force: bool) -> None:
    t = time.perf_counter()
    r.data = prepare_data(r.spec, device=r.device, val_fraction=r.cfg.val_fraction, progress=r.progress)
    phases.fit_features(r.cfg, r.data.source.n_features)
    phases.refuse_one_class(r.data, "train")  # before the run directory is made
    if r.data.split.extra_rows and r.cfg.ft_epochs:
        phases.refuse_one_class(r.data, "extra")
    prepare_run_dir(r.out, force=force, resume=r.resume)
    log(f"data: {r.data.source.describe()}")
    r.data.log_split()
    r.data.log_balance()
    r.record.timings["load"] = time.perf_counter() - t
    r.record.metrics["data"] = r.data.summary()
    r.record.provenance = dict(data=r.data.summary() | {"feature_names": None}, seed=r.cfg.seed,
                               preset=r.cfg.preset, standardizer="train rows only, population std, zero std -> 1")


def refuse_other_data(r: RunState) -> None:
    """--resume on other rows than the run started with (same path, new content) is refused too."""
    if not (r.resume and (r.out / "config.json").exists()):
        return
    old = io.read_json(r.out / "config.json").get("data", {}).get("fingerprint")
    if old is not None:
        refuse_changed_settings_in(f"the run in {r.out}", dict(data=dict(fingerprint=old)),
                                   dict(data=dict(fingerprint=r.data.source.fingerprint)))


def write_config(r: RunState, *, command: str) -> None:
    if r.main:
        io.write_json(r.out / "config.json", dict(
            train=r.cfg.to_dict(), data=dict(r.spec.to_dict(), source=r.data.source.source,
                                             fingerprint=r.data.source.fingerprint),
            command=command, versions=versions(), machine=machine_info(r.device)))


def train_or_reuse_base(r: RunState) -> None:
    base_path = r.out / "base.safetensors"
    if r.resume and base_path.exists() and (r.out / "base.json").exists():
        log(f"base: {base_path} exists, skipping base training (--resume)")
        from higgs_lora.report.plots import read_history
        r.record.history += [row for row in read_history(r.out / "history.jsonl") if row["phase"] == "base"]
        for row in r.record.history:
            r.tracker.log_epoch(row)
        r.record.timings["train"], r.record.rates["train"] = 0.0, float("nan")
        return
    model, result = phases.train_base(r.cfg, r.data, checkpoint=r.out / "checkpoints" / "base.safetensors",
                                      resume=r.resume, progress=r.progress,
                                      on_epoch=epoch_writer(r.out, r.tracker, before=r.record.history))
    r.record.history += result.history
    write_history(r.out / "history.jsonl", r.record.history)
    r.record.timings["train"], r.record.rates["train"] = result.seconds, result.samples_per_s
    if r.main:
        save_model(base_path, model.cpu(), r.data.standardizer, feature_names=r.data.source.feature_names,
                   kind="base", provenance=r.record.provenance | {"history": result.history})
        log(f"saved {base_path}")
    distributed.barrier()


def evaluate_saved_base(r: RunState) -> None:
    """Reload the base from disk, as the notebook does, and evaluate what was saved."""
    r.nets.base, _, r.nets.base_meta = load_model(r.out / "base.safetensors")
    r.nets.base = r.nets.base.to(r.device)
    e = _timed_evaluation(r, r.nets.base, kind="base")
    r.record.metrics["base"], r.scores.logits["base"], r.scores.labels = e.metrics, e.logits, e.labels
    log("base test:    " + _short(e.metrics))


def adapt_and_finetune(r: RunState) -> None:
    cfg = r.cfg
    r.nets.adapted = phases.adapt(cfg, r.nets.base)
    trainable = r.nets.adapted.n_params(trainable_only=True)
    adapted = adapter_config(r.nets.adapted)
    r.record.metrics["lora"] = dict(adapted.to_dict(), lora_alpha=adapted.lora_alpha, trainable_params=trainable,
                                    frozen_params=r.nets.adapted.n_params() - trainable)
    phases.check_unchanged_at_start(r.nets.adapted, r.scores.logits["base"], r.data)
    if r.data.split.extra_rows == 0 or cfg.ft_epochs == 0:
        log("fine-tuning skipped (no extra rows or --ft-epochs 0)")
        r.record.timings["finetune"], r.record.rates["finetune"] = 0.0, float("nan")
    else:
        result = phases.finetune(cfg, r.nets.adapted, r.data, base_fingerprint=r.nets.base_meta["fingerprint"],
                                 checkpoint=r.out / "checkpoints" / "finetune.safetensors", resume=r.resume,
                                 progress=r.progress, on_epoch=epoch_writer(r.out, r.tracker, before=r.record.history))
        r.record.history += result.history
        write_history(r.out / "history.jsonl", r.record.history)
        r.record.timings["finetune"], r.record.rates["finetune"] = result.seconds, result.samples_per_s
    if r.main:
        adapter_path = r.out / "adapter.safetensors"
        save_adapter(adapter_path, r.nets.adapted, base_fingerprint=r.nets.base_meta["fingerprint"],
                     provenance=dict(base=str(r.out / "base.safetensors"), seed=cfg.seed, ft_epochs=cfg.ft_epochs,
                                     ft_lr=cfg.ft_lr))
        log(f"saved {adapter_path}")


def evaluate_adapted(r: RunState) -> None:
    e = _timed_evaluation(r, r.nets.adapted, kind="adapted")
    r.record.metrics["adapted"], r.scores.logits["adapted"] = e.metrics, e.logits
    log("adapted test: " + _short(e.metrics))
    from higgs_lora.report.document import comparison_table
    log("\n" + comparison_table(r.record.metrics) + "\n")


def merge_and_verify(r: RunState) -> None:
    """Fold the adapters in, check the merged network predicts what the adapted one does, save it."""
    t = time.perf_counter()
    r.nets.merged = phases.merge(r.nets.adapted)
    r.record.timings["merge"] = time.perf_counter() - t
    merged_logits = r.data.source.predict(r.nets.merged, r.data.split.test, r.data.standardizer)[0]
    diff = (torch.sigmoid(merged_logits) - torch.sigmoid(r.scores.logits["adapted"])).abs().max().item()
    r.record.metrics["merge_max_abs_diff"] = diff
    r.record.metrics["merged"] = binary_metrics(merged_logits.float().cpu(), r.scores.labels.cpu(),
                                                figures.part_weights(r.data, r.data.split.test))
    _add_figures(r, r.nets.merged, "merged", merged_logits)
    phases.refuse_inexact_merge(diff, merged=r.nets.merged, test_rows=r.data.split.test_rows)
    if r.main:
        save_model(r.out / "merged.safetensors", r.nets.merged.cpu(), r.data.standardizer,
                   feature_names=r.data.source.feature_names, kind="merged",
                   provenance=r.record.provenance | {"base": r.nets.base_meta["fingerprint"],
                                                     "adapter": str(r.out / "adapter.safetensors")})
        log(f"saved {r.out / 'merged.safetensors'}")


def measure(r: RunState) -> None:
    """Speeds, and the check that every process merged the same weights."""
    r.record.metrics["timings_s"] = r.record.timings
    x = r.data.source.head(r.data.split.test, r.data.standardizer, 1 << 20)
    r.record.metrics["throughput"] = dict(
        train_samples_per_s=r.record.rates["train"], finetune_samples_per_s=r.record.rates["finetune"],
        inference_rows_per_s=phases.inference_rate(r.nets.merged, x, precision="fp32"),
        inference_rows_per_s_bf16=phases.inference_rate(r.nets.merged, x, precision="bf16"))
    # Every rank merged its own copy: they must agree bit for bit, or the ranks drifted apart.
    fingerprints = distributed.gather(tensors_fingerprint(r.nets.merged.state_dict()))
    if len(set(fingerprints)) != 1:
        raise RuntimeError(f"ranks disagree on the merged weights: {fingerprints}")
    r.record.metrics["distributed"] = dict(world_size=distributed.world()[1], merged_fingerprints=fingerprints)


def write_outputs(r: RunState) -> None:
    """metrics.json, and the test predictions with their ROC curves (what the plots draw)."""
    test = r.data.split.test
    if r.eff_vs is not None:
        r.record.metrics["eff_vs"] = r.eff_vs
    io.write_json(r.out / "metrics.json", r.record.metrics)
    labels = r.data.source.labels[test].astype(np.uint8)
    weights = figures.part_weights(r.data, test)
    arrays = dict(labels=labels)
    if weights is not None:
        arrays["weights"] = weights.astype(np.float32)
    if r.eff_vs is not None:
        arrays["eff_vs"] = figures.raw_column(r.data, test, figures.feature_column(r.data, r.eff_vs))
    for key, logits in r.scores.logits.items():  # base, adapted
        arrays[key] = torch.sigmoid(logits).cpu().numpy().astype(np.float32)
        if not r.record.metrics[key].get("one_class"):
            fpr, tpr, _ = roc_curve(labels=labels, scores=arrays[key], weights=weights, max_points=ROC_POINTS)
            arrays |= {f"roc_{key}_fpr": fpr, f"roc_{key}_tpr": tpr}
        train = r.scores.train.get(key)
        if train is not None:  # the overtraining check's other half
            arrays |= {f"train_{key}": train["scores"].astype(np.float32),
                       f"train_{key}_labels": train["labels"].astype(np.uint8)}
            if train["weights"] is not None:
                arrays[f"train_{key}_weights"] = train["weights"].astype(np.float32)
    with io.atomic_path(r.out / "test_predictions.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def write_report(out: Path) -> None:
    from higgs_lora.report.document import write_report as write
    md, html = write(out)
    log(f"report: {md}  {html}")


# ---------------------------------------------------------------- helpers

def _timed_evaluation(r: RunState, model, *, kind: str) -> phases.Evaluation:
    t = time.perf_counter()
    e = phases.evaluate(model, r.data, r.data.split.test)
    _add_figures(r, model, kind, e.logits, metrics=e.metrics)
    r.record.timings["evaluate"] += time.perf_counter() - t
    return e


def _add_figures(r: RunState, model, kind: str, logits: torch.Tensor, metrics: dict | None = None) -> None:
    """The model's figures_of_merit and weighting blocks in its metrics; its train-side scores kept for the plots."""
    m = r.record.metrics[kind] if metrics is None else metrics
    fom = figures.model_figures(model, r.data, kind=kind, logits=logits, rows=r.data.split.test, seed=r.cfg.seed)
    train = fom.pop("train_scores", None)
    if train is not None:
        r.scores.train[kind] = train
    m["figures_of_merit"] = fom
    m["weighting"] = figures.weighting(r.data, r.cfg.to_dict())


def _short(m: dict) -> str:
    return format_metrics({k: m[k] for k in (*SHORT_METRICS, "one_class") if k in m})
