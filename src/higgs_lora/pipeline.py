"""The notebook's workflow as steps: load -> split -> standardize -> train -> evaluate -> save -> reload
-> freeze + adapters -> fine-tune on the extra rows -> evaluate -> compare -> merge -> verify -> save.

`run()` chains them for `higgs-lora run`; the CLI's single-step subcommands call the same functions.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from higgs_lora import distributed, io
from higgs_lora.config import TrainConfig
from higgs_lora.data import Split, Standardizer, Table, class_balance, format_balance, split_rows
from higgs_lora.data.shards import ShardSet, ShardStream
from higgs_lora.errors import UserError
from higgs_lora.lora import add_adapters, adapters, merge_adapters, variant_name
from higgs_lora.metrics import binary_metrics
from higgs_lora.model import ResidualMLP
from higgs_lora.train import TensorData, fit, predict_logits, resolve_device

DEFAULT_SIM_EVENTS = 1_100_000
DEFAULT_SIM_SEED = 2014
MERGE_TOLERANCE = 1e-5


def log(msg: str = "") -> None:
    if distributed.is_main():
        print(msg, flush=True)


# ---------------------------------------------------------------- data

def load_data(path: str | None, *, label_column=0, cache_dir=None, sim_events: int = DEFAULT_SIM_EVENTS,
              sim_seed: int = DEFAULT_SIM_SEED, progress: bool = True) -> Table | ShardSet:
    """The simulated data without a path; a directory of shards (read piece by piece, never whole);
    else a table file, read whole (through the cache)."""
    if path is None:
        from higgs_lora.data.simulate import simulated_table
        log(f"data: no --data given, simulating {sim_events:,} events (seed {sim_seed}) with the built-in toy Monte Carlo")
        return simulated_table(sim_events, seed=sim_seed)
    if Path(path).is_dir():
        from higgs_lora.data.shards import open_shards
        shards = open_shards(path, label_column=label_column, cache_dir=cache_dir, progress=progress)
        log(f"data: {len(shards.shards)} shards in {path}, streamed from disk"
            + (f" (not shards, ignored: {', '.join(shards.ignored)})" if shards.ignored else ""))
        return shards
    from higgs_lora.data.read import load_table
    return load_table(path, label_column=label_column, cache_dir=cache_dir, progress=progress)


def standardized_tensor(table: Table, rows: slice, standardizer: Standardizer, device: torch.device):
    x = torch.from_numpy(standardizer.transform(table.features[rows])).to(device)
    y = torch.from_numpy(np.asarray(table.labels[rows], dtype=np.float32)).to(device)
    return x, y


# A table in memory and a shard directory differ only here: the first becomes tensors, the second a stream.

def fit_standardizer(table: Table | ShardSet, rows: slice, device: torch.device) -> Standardizer:
    if isinstance(table, ShardSet):
        from higgs_lora.data.shards import fit_standardizer as fit_streamed
        return fit_streamed(table, rows, device=device)
    return Standardizer.fit(table.features[rows])


def training_data(table: Table | ShardSet, rows: slice, standardizer: Standardizer, device: torch.device, *,
                  batch_size: int):
    """The batches of a part for fit(): tensors on the device, or a stream of this rank's shards."""
    if isinstance(table, ShardSet):
        stream = ShardStream(table, rows, standardizer, device, batch_size=batch_size)
        for line in distributed.gather(stream.describe()):
            log("  " + line)
        return stream
    return TensorData(*standardized_tensor(table, rows, standardizer, device), batch_size=batch_size)


def predict_part(model: torch.nn.Module, table: Table | ShardSet, rows: slice, standardizer: Standardizer,
                 device: torch.device, *, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and float labels of every row of a part, in order."""
    if isinstance(table, ShardSet):
        from higgs_lora.data.shards import predict_part as predict_streamed
        return predict_streamed(model, table, rows, standardizer, device, precision=precision)
    x, y = standardized_tensor(table, rows, standardizer, device)
    return predict_logits(model, x, precision=precision), y


def head_tensor(table: Table | ShardSet, rows: slice, standardizer: Standardizer, device: torch.device, n: int):
    """The first n rows of a part, standardized (for checks and speed measurements)."""
    features, _ = table.read(rows.start, min(rows.stop, rows.start + n))
    return torch.from_numpy(standardizer.transform(features)).to(device)


def data_summary(table: Table, split: Split) -> dict:
    parts = {"train": split.train, "val": split.val, "extra": split.extra, "test": split.test}
    return dict(path=table.source if not table.source.startswith("simulated:") else None, source=table.source,
                fingerprint=table.fingerprint, feature_names=table.feature_names,
                **split.to_dict(),
                balance={k: class_balance(table.labels[s]) for k, s in parts.items() if s.stop > s.start})


def print_balance(table: Table, split: Split) -> None:
    log("class balance:")
    for name, rows in (("train", split.train), ("val", split.val), ("extra", split.extra), ("test", split.test)):
        if rows.stop > rows.start:
            log("  " + format_balance(name, table.labels[rows]))


# ---------------------------------------------------------------- evaluation

def evaluate(model: torch.nn.Module, table: Table | ShardSet, rows: slice, standardizer: Standardizer,
             device: torch.device, *, precision: str = "fp32"):
    """(metrics, logits, labels) of a part."""
    logits, y = predict_part(model, table, rows, standardizer, device, precision=precision)
    return binary_metrics(logits.cpu(), y.cpu()), logits, y


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


# ---------------------------------------------------------------- run directory

def prepare_run_dir(out: Path, *, force: bool, resume: bool) -> None:
    """Refuse a non-empty directory unless --force/--resume; check it is writable before any work.
    Under torchrun only rank 0 checks and creates; the others wait for it."""
    if not distributed.is_main():
        distributed.barrier()
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (force or resume):
        raise UserError(f"--out {out}: directory is not empty (use --force to overwrite or --resume to continue)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror})") from None
    free = shutil.disk_usage(out).free
    if free < 64 << 20:
        raise UserError(f"--out {out}: only {free >> 20} MiB free on that disk; a run needs at least 64 MiB")
    distributed.barrier()


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), threads=torch.get_num_threads(), device=str(device))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_history(path: Path, rows: list[dict]) -> None:
    if not distributed.is_main():
        return
    with io.atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------- the phases (shared with the single-step commands)

def fit_features(cfg: TrainConfig, table: Table) -> None:
    """The network's input width follows the data (HIGGS: 28; SUSY: 18; ...)."""
    if cfg.model.n_features != table.n_features:
        cfg.model = type(cfg.model)(**{**cfg.model.to_dict(), "n_features": table.n_features})


def train_base(cfg: TrainConfig, table: Table, split: Split, standardizer: Standardizer, device: torch.device, *,
               out: Path, resume: bool, progress: bool, history: list[dict] = ()):
    """Train a fresh base network on the train rows (validating on the val rows); returns (model, FitResult)."""
    model = ResidualMLP.from_config(cfg.model).to(device)
    log(f"base network: {cfg.model.to_dict()}  {model.n_params():,} parameters")
    data = training_data(table, split.train, standardizer, device, batch_size=cfg.batch_size)
    val = training_data(table, split.val, standardizer, device, batch_size=cfg.batch_size) if split.val_rows else None
    result = fit(model, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, phase="base",
                 optimizer=cfg.optimizer, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                 warmup_frac=cfg.warmup_frac, val_features=val, patience=cfg.patience,
                 precision=cfg.precision, compile=cfg.compile, checkpoint=out / "checkpoints" / "base.safetensors",
                 resume=resume, progress=progress,
                 on_epoch=lambda rows: write_history(out / "history.jsonl", [*history, *rows]))
    if result.best_epoch is not None:
        log(f"base: keeping epoch {result.best_epoch} (lowest validation loss)")
    return model, result


def adapt(cfg: TrainConfig, model: ResidualMLP) -> ResidualMLP:
    """Freeze the network and add the configured adapters, saying how many parameters train."""
    model = add_adapters(model, rank=cfg.rank, scale=cfg.scale, targets=cfg.targets, rslora=cfg.rslora,
                         dora=cfg.dora, init=cfg.lora_init, loraplus_lr_ratio=cfg.loraplus_lr_ratio)
    trainable = model.n_params(trainable_only=True)
    variant = variant_name(next(iter(adapters(model).values())).options())
    log(f"adapters ({variant}): rank {cfg.rank}, scale {cfg.scale} on {len(adapters(model))} layers  "
        f"trainable {trainable:,}  frozen {model.n_params() - trainable:,}")
    return model


def finetune(cfg: TrainConfig, model: ResidualMLP, table: Table, split: Split, standardizer: Standardizer,
             device: torch.device, *, out: Path, resume: bool, progress: bool, history: list[dict] = ()):
    """Train the adapters of `model` on the extra rows; returns the FitResult."""
    data = training_data(table, split.extra, standardizer, device, batch_size=cfg.batch_size)
    return fit(model, data, epochs=cfg.ft_epochs, batch_size=cfg.batch_size, lr=cfg.ft_lr, seed=cfg.seed,
               phase="finetune", precision=cfg.precision, compile=cfg.compile,
               checkpoint=out / "checkpoints" / "finetune.safetensors", resume=resume, progress=progress,
               on_epoch=lambda rows: write_history(out / "history.jsonl", [*history, *rows]))


# ---------------------------------------------------------------- the whole workflow

def run(cfg: TrainConfig, *, data: str | None, out: Path, label_column=0, cache_dir=None,
        train_rows: int | None = None, test_rows: int | None = None, sim_events: int = DEFAULT_SIM_EVENTS,
        sim_seed: int = DEFAULT_SIM_SEED, force: bool = False, resume: bool = False, progress: bool = True,
        report: bool = True, command: str = "") -> dict:
    t_total = time.perf_counter()
    timings = {}
    torch.manual_seed(cfg.seed)
    device = distributed.local_device(resolve_device(cfg.device))
    main = distributed.is_main()

    # Everything that can be checked cheaply is checked before the run directory is touched.
    out = Path(out)
    if resume and (out / "config.json").exists():
        previous = io.read_json(out / "config.json").get("train", {})
        now = json.loads(json.dumps(cfg.to_dict()))
        changed = sorted(k for k in now if k != "device" and previous.get(k) != now[k])
        if changed:
            raise UserError(f"--resume: settings differ from the run in {out}: {', '.join(changed)}")

    t = time.perf_counter()
    table = load_data(data, label_column=label_column, cache_dir=cache_dir, sim_events=sim_events,
                      sim_seed=sim_seed, progress=progress)
    split = split_rows(table.rows, train_rows=train_rows, test_rows=test_rows, val_fraction=cfg.val_fraction,
                       source=table.source)
    fit_features(cfg, table)
    prepare_run_dir(out, force=force, resume=resume)
    log(f"data: {table.source}  {table.rows:,} rows x {table.n_features} features")
    log(f"split: train {split.train.stop - split.train.start:,}" + (f"  val {split.val_rows:,}" if split.val_rows else "")
        + f"  extra {split.extra_rows:,}  test {split.test_rows:,}")
    print_balance(table, split)

    standardizer = fit_standardizer(table, split.train, device)
    timings["load"] = time.perf_counter() - t

    run_config = dict(train=cfg.to_dict(), data=dict(path=data, source=table.source, label_column=label_column,
                                                     train_rows=train_rows, test_rows=test_rows,
                                                     sim_events=None if data else sim_events,
                                                     sim_seed=None if data else sim_seed),
                      command=command, versions=io.versions(), machine=machine_info(device))
    if main:
        io.write_json(out / "config.json", run_config)
    provenance = dict(data=data_summary(table, split) | {"feature_names": None}, seed=cfg.seed, preset=cfg.preset,
                      standardizer="train rows only, population std, zero std -> 1")
    history: list[dict] = []
    metrics: dict = dict(data=data_summary(table, split))
    timings["evaluate"] = 0.0

    # ---- base training
    base_path = out / "base.safetensors"
    if resume and base_path.exists() and (out / "base.json").exists():
        log(f"base: {base_path} exists, skipping base training (--resume)")
        from higgs_lora.plots import read_history
        history += [r for r in read_history(out / "history.jsonl") if r["phase"] == "base"]
        timings["train"], base_fit_rate = 0.0, float("nan")
    else:
        model, result = train_base(cfg, table, split, standardizer, device, out=out, resume=resume,
                                   progress=progress, history=history)
        history += result.history
        write_history(out / "history.jsonl", history)
        timings["train"], base_fit_rate = result.seconds, result.samples_per_s
        if main:
            io.save_model(base_path, model.cpu(), standardizer, feature_names=table.feature_names, kind="base",
                          provenance=provenance | {"history": result.history})
            log(f"saved {base_path}")
        distributed.barrier()

    # ---- reload from disk, as the notebook does, and evaluate what was saved
    base, _, base_meta = io.load_model(base_path)
    base = base.to(device)
    t = time.perf_counter()
    metrics["base"], base_logits, y_test = evaluate(base, table, split.test, standardizer, device)
    timings["evaluate"] += time.perf_counter() - t
    log("base test:    " + _short(metrics["base"]))

    # ---- freeze, add adapters, fine-tune on the extra rows
    model = adapt(cfg, base)
    trainable = model.n_params(trainable_only=True)
    metrics["lora"] = dict(rank=cfg.rank, scale=cfg.scale, lora_alpha=cfg.scale * cfg.rank,
                           targets=list(adapters(model)), trainable_params=trainable,
                           frozen_params=model.n_params() - trainable)
    # B starts at zero, so the adapted network must compute exactly what the base computes.
    head = head_tensor(table, split.test, standardizer, device, 65536)
    start_diff = (predict_logits(model, head) - base_logits[:head.shape[0]]).abs().max().item()
    if start_diff != 0.0:
        raise RuntimeError(f"adapted network differs from the base before training (max |diff| {start_diff})")

    adapter_path = out / "adapter.safetensors"
    if split.extra_rows == 0 or cfg.ft_epochs == 0:
        log("fine-tuning skipped (no extra rows or --ft-epochs 0)")
        timings["finetune"], ft_rate = 0.0, float("nan")
    else:
        result = finetune(cfg, model, table, split, standardizer, device, out=out, resume=resume,
                          progress=progress, history=history)
        history += result.history
        write_history(out / "history.jsonl", history)
        timings["finetune"], ft_rate = result.seconds, result.samples_per_s
    if main:
        io.save_adapter(adapter_path, model, base_fingerprint=base_meta["fingerprint"],
                        provenance=dict(base=str(base_path), seed=cfg.seed, ft_epochs=cfg.ft_epochs, ft_lr=cfg.ft_lr))
        log(f"saved {adapter_path}")

    t = time.perf_counter()
    metrics["adapted"], adapted_logits, _ = evaluate(model, table, split.test, standardizer, device)
    timings["evaluate"] += time.perf_counter() - t
    log("adapted test: " + _short(metrics["adapted"]))
    from higgs_lora.report import comparison_table
    log("\n" + comparison_table(metrics) + "\n")

    # ---- merge, verify on the whole test part, save
    t = time.perf_counter()
    merged = merge_adapters(model)
    timings["merge"] = time.perf_counter() - t
    merged_logits, _ = predict_part(merged, table, split.test, standardizer, device)
    diff = (torch.sigmoid(merged_logits) - torch.sigmoid(adapted_logits)).abs().max().item()
    metrics["merge_max_abs_diff"] = diff
    metrics["merged"] = binary_metrics(merged_logits.cpu(), y_test.cpu())
    log(f"merge: {merged.n_params():,} parameters; max |p_merged - p_adapted| on {split.test_rows:,} test rows = {diff:.3g}")
    if not diff <= MERGE_TOLERANCE:
        raise UserError(f"merge check failed: merged and adapted predictions differ by {diff:.3g} > {MERGE_TOLERANCE}")
    if main:
        io.save_model(out / "merged.safetensors", merged.cpu(), standardizer, feature_names=table.feature_names,
                      kind="merged", provenance=provenance | {"base": base_meta["fingerprint"], "adapter": str(adapter_path)})
        log(f"saved {out / 'merged.safetensors'}")

    timings["total"] = time.perf_counter() - t_total
    metrics["timings_s"] = timings
    x_speed = head_tensor(table, split.test, standardizer, device, 1 << 20)
    metrics["throughput"] = dict(train_samples_per_s=base_fit_rate, finetune_samples_per_s=ft_rate,
                                 inference_rows_per_s=inference_rate(merged, x_speed, precision="fp32"),
                                 inference_rows_per_s_bf16=inference_rate(merged, x_speed, precision="bf16"))
    # Every rank merged its own copy: they must agree bit for bit, or the ranks drifted apart.
    merged_fingerprints = distributed.gather(io.tensors_fingerprint(merged.state_dict()))
    if len(set(merged_fingerprints)) != 1:
        raise RuntimeError(f"ranks disagree on the merged weights: {merged_fingerprints}")
    metrics["distributed"] = dict(world_size=distributed.world()[1], merged_fingerprints=merged_fingerprints)
    if not main:
        return metrics
    io.write_json(out / "metrics.json", metrics)
    with io.atomic_path(out / "test_predictions.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, labels=table.labels[split.test].astype(np.uint8),
                     base=torch.sigmoid(base_logits).cpu().numpy().astype(np.float32),
                     adapted=torch.sigmoid(adapted_logits).cpu().numpy().astype(np.float32))
    if report:
        _write_report(out)
    log(f"done in {timings['total']:.1f}s -> {out}")
    return metrics


def _write_report(out: Path) -> None:
    from higgs_lora.report import write_report
    md, html = write_report(out)
    log(f"report: {md}  {html}")


def _short(m: dict) -> str:
    return "  ".join(f"{k} {m[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc"))
