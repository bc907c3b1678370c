"""Output directories: a run directory made ready before any work, files a command must not replace
by accident, the history file, and the description of the machine that ran."""
from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch

from higgs_lora import distributed, hardware, io
from higgs_lora.errors import RunDirectoryError
from higgs_lora.weights import model_paths


def prepare_run_dir(out: Path, *, force: bool, resume: bool) -> Path:
    """Refuse a non-empty directory unless force/resume; check it is writable before any work.
    Under torchrun only rank 0 checks and creates; the others wait for it."""
    out = Path(out)
    if not distributed.is_main():
        distributed.barrier()
        return out
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (force or resume):
        raise RunDirectoryError(f"--out {out}: directory is not empty (use --force to overwrite or --resume to continue)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise RunDirectoryError(f"--out {out}: cannot write there ({e.strerror})") from None
    free = shutil.disk_usage(out).free
    if free < 64 << 20:
        raise RunDirectoryError(f"--out {out}: only {free >> 20} MiB free on that disk; a run needs at least 64 MiB")
    distributed.barrier()
    return out


def new_model_path(out, *, force: bool) -> Path:
    """The .safetensors path a command will write; refuses to replace an existing model without force."""
    path, _ = model_paths(out)
    if path.exists() and not force:
        raise RunDirectoryError(f"--out {path}: file exists (use --force to overwrite)")
    return path


def new_file(out, *, force: bool) -> Path:
    """A file a command will write; refuses to replace an existing one without force."""
    out = Path(out)
    if out.exists() and not force:
        raise RunDirectoryError(f"--out {out}: file exists (use --force to overwrite)")
    return out


def write_history(path: Path, rows: list[dict]) -> None:
    if not distributed.is_main():
        return
    with io.atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = hardware.usable_cores()
    info = dict(cpu=cpu, isa=hardware.cpu_isa(), cores=os.cpu_count(), usable_cores=cores.n,
                usable_cores_reason=cores.reason, threads=torch.get_num_threads(), device=str(device))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
