"""The strategies comparison as a workflow: prepare the data, train (or load) the base, measure every
strategy (higgs_lora.strategies), write strategies.json/.md/.png."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from higgs_lora import io
from higgs_lora.config import TrainConfig
from higgs_lora.hardware.distributed import log
from higgs_lora.errors import DataError, RunDirectoryError
from higgs_lora.adapters.lora import resolve_targets
from higgs_lora.model.network import ResidualMLP
from higgs_lora.pipeline import phases
from higgs_lora.pipeline.inputs import DataSpec, prepare_data
from higgs_lora.pipeline.rundir import LOCK_NAME, lock_dir, refuse_if_locked, release_dir
from higgs_lora.hardware.runtime import resolve_device
from higgs_lora.model.network import HEAD_LAYERS
from higgs_lora.studies.strategies import markdown_table, run_all, write_outputs
from higgs_lora.data.sources import TensorData
from higgs_lora.train import fit
from higgs_lora.model.model_file import load_model, save_model


def compare_strategies(cfg: TrainConfig, spec: DataSpec, *, out, force: bool = False, base_path=None,
                       progress: bool = True, command: str = "") -> dict:
    """On one base network (trained here with `cfg`, or loaded from `base_path`) and the same extra rows,
    train and measure every strategy; returns what strategies.json holds."""
    device = resolve_device(cfg.device)
    out = Path(out)
    if out.exists() and out.is_dir():
        refuse_if_locked(out)
    if out.exists() and (not out.is_dir() or (any(p.name != LOCK_NAME for p in out.iterdir()) and not force)):
        raise RunDirectoryError(f"--out {out}: exists and is not an empty directory (use --force to write into it)")
    loaded = load_model(base_path) if base_path else None
    data = prepare_data(spec, device=device, val_fraction=cfg.val_fraction, model=loaded, in_memory=True,
                        progress=progress)
    split, source = data.split, data.source
    if split.extra_rows == 0:
        raise DataError(f"{source.source}: no extra rows between the train and test rows; nothing to adapt on")
    out.mkdir(parents=True, exist_ok=True)
    lock_dir(out)
    try:
        return _compare(cfg, data, out, loaded=loaded, base_path=base_path, progress=progress, command=command)
    finally:
        release_dir(out)


def _compare(cfg: TrainConfig, data, out: Path, *, loaded, base_path, progress: bool, command: str) -> dict:
    split, source, device = data.split, data.source, data.source.device
    tensors = {k: source.tensors(rows, data.standardizer) for k, rows in data.parts().items()}
    if not split.val_rows:
        tensors["val"] = None
    base_training = None
    torch.manual_seed(cfg.seed)
    phases.fit_features(cfg, source.n_features if loaded is None else loaded.model.config.n_features)
    if loaded is not None:
        cfg.model = loaded.model.config
    cfg, hw = phases.resolve_hardware(cfg, device, train_rows=split.train.stop if loaded is None else None)
    if loaded is None:
        base = ResidualMLP.from_config(cfg.model).to(device)
        log(f"training the base: preset {cfg.preset}, {cfg.epochs} epochs on {split.train.stop:,} rows")
        val = TensorData(*tensors["val"], batch_size=cfg.batch_size) if tensors["val"] is not None else None
        t = time.perf_counter()
        r = fit(base, TensorData(*tensors["train"], batch_size=cfg.batch_size), cfg.base_recipe(), val=val,
                progress=progress)
        base_training = dict(wall_s=time.perf_counter() - t, samples=r.samples_seen, epochs_run=len(r.history),
                             best_epoch=r.best_epoch, train_rows=split.train.stop - split.train.start)
        save_model(out / "base.safetensors", base.cpu(), data.standardizer, feature_names=source.feature_names,
                   kind="base", provenance=dict(data=data.summary() | {"feature_names": None}, seed=cfg.seed,
                                                preset=cfg.preset))
    else:
        base = loaded.model
    base = base.to(device).eval()
    rows = run_all(base, cfg, tensors, progress=progress, log=log)
    result = dict(config=cfg.to_dict(), hardware=hw, device=str(device), threads=torch.get_num_threads(),
                  data=dict(source=source.source, fingerprint=source.fingerprint, **split.to_dict()),
                  base=base_path, base_training=base_training, head_layers=list(HEAD_LAYERS),
                  lora_layers=resolve_targets(base, cfg.targets), strategies=rows, command=command)
    paths = write_outputs(out, io.json_safe(result))
    log("\n" + markdown_table(result) + "\n")
    log("wrote " + "  ".join(str(p) for p in paths))
    return result
