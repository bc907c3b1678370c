"""Files: atomic writes, JSON in and out, checksums. The one file-writing module every layer uses;
it imports nothing of higgs-lora but the errors (and no PyTorch, so light commands stay light)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from higgs_lora.errors import UserError, WriteError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success fsync and rename it over `path`.
    On any failure the temporary is removed and `path` is untouched; a failed write (the disk full, a
    file-size limit, ...: an OSError, or the SafetensorError safetensors makes of one) becomes a
    WriteError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # `--out new/dir/model` should just work
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(path, e.errno, e.strerror or str(e)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file what open() would have
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failed = _write_failure(e)
        if failed is None:
            raise
        raise WriteError(path, *failed) from None


def _write_failure(e: BaseException) -> tuple[int | None, str] | None:
    """(errno, reason) when `e` says a write failed, else None (a bug, Ctrl-C: left as they are).
    safetensors' SafetensorError is no OSError; it carries the errno in its text: '... (os error 28)'."""
    if isinstance(e, WriteError):
        return None
    if isinstance(e, OSError):
        return e.errno, e.strerror or str(e)
    m = re.search(r"\(os error (\d+)\)", str(e)) if type(e).__name__ == "SafetensorError" else None
    return (int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_safe(obj):
    """JSON has no NaN or infinity: they become null (e.g. a rate that was not measured)."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync(path) -> None:
    """Flush a file or a directory (after a rename into it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
