"""Output directories: a run directory made ready (and locked) before any work, files a command must not
replace by accident, the history file, and the description of the machine that ran.

A process writing a run directory holds an OS lock on OUT/.lock (fcntl.flock), which the kernel releases
when the process ends, however it ends: a killed run leaves no stale lock. A second process started into
the same directory (the same command launched twice, --force, --resume) is refused, naming the first."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

import torch

from higgs_lora.hardware import distributed, machine
from higgs_lora import io
from higgs_lora.errors import RunDirectoryError
from higgs_lora.model.model_file import model_paths


LOCK_NAME = ".lock"
HARDWARE_FILE = "hardware.json"  # the one record of what this machine chose for the run
MIN_FREE = 64 << 20  # a run's checkpoints, models and report
_held: dict[Path, int] = {}  # directory -> descriptor of its lock file, kept open while this process lives


def prepare_run_dir(out: Path, *, force: bool, resume: bool) -> Path:
    """Refuse a directory another process is writing, and a non-empty one unless force/resume; lock it;
    check it is writable before any work. Under torchrun only rank 0 checks, creates and locks; the others
    wait for it."""
    out = Path(out)
    if not distributed.is_main():
        distributed.barrier()
        return out
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()) and not (force or resume):
        refuse_if_locked(out)
        raise RunDirectoryError(f"--out {out}: directory is not empty (use --force to overwrite or --resume to continue)")
    # Space first, before anything is made: a refused run leaves nothing that blocks its own retry.
    first_new = _first_missing(out)
    free = shutil.disk_usage(first_new.parent if first_new is not None else out).free
    if free < MIN_FREE:
        raise RunDirectoryError(f"--out {out}: only {free >> 20} MiB free on that disk; a run needs at least "
                                f"{MIN_FREE >> 20} MiB")
    had_checkpoints = (out / "checkpoints").exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock_dir(out)
        (out / "checkpoints").mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        _undo(out, first_new, had_checkpoints)
        raise RunDirectoryError(f"--out {out}: cannot write there ({e.strerror})") from None
    distributed.barrier()
    return out


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of `path` that does not exist yet (what mkdir -p would make first), or None."""
    path, missing = path.absolute(), None
    while not path.exists():
        path, missing = path.parent, path
    return missing


def _undo(out: Path, first_new: Path | None, had_checkpoints: bool) -> None:
    """Remove what a refused prepare_run_dir made: the directories it created, or the checkpoints/ it added."""
    release_dir(out)
    if first_new is not None:
        shutil.rmtree(first_new, ignore_errors=True)
    elif not had_checkpoints:
        with contextlib.suppress(OSError):
            (out / "checkpoints").rmdir()
            (out / LOCK_NAME).unlink()


def lock_dir(out: Path) -> None:
    """Hold the lock of directory `out` until this process ends; refuse if another process holds it."""
    out = Path(out).resolve()
    if out in _held:
        return
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirectoryError(_in_use(out, holder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[out] = fd


def release_dir(out: Path) -> None:
    """Give the lock of `out` back (a finished step, so that a Python caller can start the next one)."""
    fd = _held.pop(Path(out).resolve(), None)
    if fd is not None:
        os.close(fd)


def refuse_if_locked(out: Path) -> None:
    """Refuse, naming the process, when another process holds the lock of `out` (creates nothing)."""
    try:
        fd = os.open(Path(out) / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirectoryError(_in_use(out, _holder(fd))) from None
    finally:
        os.close(fd)  # closing drops a lock taken here; one held by another process is untouched


def _holder(fd: int) -> str:
    pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"process {pid}" if pid.isdigit() else "another process"


def _in_use(out: Path, holder: str) -> str:
    return (f"--out {out}: in use by {holder}, which is writing there now (wait for it to finish or stop it; "
            "--force and --resume do not take over a live run)")


def new_model_path(out, *, force: bool) -> Path:
    """The .safetensors path a command will write; refuses to replace an existing model without force."""
    path, _ = model_paths(out)
    if path.is_dir():
        raise RunDirectoryError(f"--out {path}: is a directory, not a file")
    if path.exists() and not force:
        raise RunDirectoryError(f"--out {path}: file exists (use --force to overwrite)")
    return path


def new_file(out, *, force: bool) -> Path:
    """A file a command will write; refuses to replace an existing one without force."""
    out = Path(out)
    if out.is_dir():
        raise RunDirectoryError(f"--out {out}: is a directory, not a file")
    if out.exists() and not force:
        raise RunDirectoryError(f"--out {out}: file exists (use --force to overwrite)")
    return out


def hardware_record(out: Path) -> dict | None:
    """The precision, epochs and threads the run in `out` got when it started (phases.resolve_hardware), for
    --resume to reuse: OUT/hardware.json; a `run` directory written before that file existed kept it in
    config.json; None where there is neither."""
    out = Path(out)
    if (out / HARDWARE_FILE).exists():
        return io.read_json(out / HARDWARE_FILE)
    if (out / "config.json").exists():
        return io.read_json(out / "config.json").get("hardware")
    return None


def write_history(path: Path, rows: list[dict]) -> None:
    if not distributed.is_main():
        return
    with io.atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def machine_info(device: torch.device) -> dict:
    cores = machine.usable_cores()
    info = dict(cpu=machine.cpu_model(), isa=machine.cpu_isa(), cores=os.cpu_count(), usable_cores=cores.n,
                usable_cores_reason=cores.reason, threads=torch.get_num_threads(), device=str(device))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
