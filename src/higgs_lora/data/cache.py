"""The read cache: a directory of memory-mappable .npy files (features.npy, labels.npy, meta.json) per
data file, keyed by the file's fingerprint and the label column. An entry is built under a temporary
name and renamed, so it is complete or absent; anything off about an entry (missing file, wrong size,
bad meta) makes it be rebuilt. Array shards (data/shards.py) use the same folder layout."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from higgs_lora import io
from higgs_lora.data.layout import Layout
from higgs_lora.errors import UserError

log = logging.getLogger(__name__)
CACHE_FORMAT = "higgs-lora-cache"
CACHE_VERSION = 1


def default_cache_roots(path: str | os.PathLike) -> list[Path]:
    """Where the cache of `path` may go, in order of preference: $HIGGS_LORA_CACHE alone if set, else a
    .higgs-lora-cache/ beside the data, then ~/.cache/higgs-lora ($XDG_CACHE_HOME respected)."""
    if os.environ.get("HIGGS_LORA_CACHE"):
        return [Path(os.environ["HIGGS_LORA_CACHE"])]
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "higgs-lora"
    return [Path(path).resolve().parent / ".higgs-lora-cache", home_cache]


def open_entry(entry: Path, *, fingerprint: str, layout: Layout, version: str | None = None):
    """(features, labels, meta) memory-mapped from a complete, consistent cache entry; None otherwise.
    `version` (sniff.file_version of the data file): an entry made from another version of the file, or
    one that does not say which (made before versions were kept), is read again, silently."""
    if not (entry / "meta.json").exists():
        return None
    meta = {}
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if version is not None and meta.get("file_version") != version:
            log.info("%s changed since cache entry %s was made; reading it again", meta.get("source"), entry)
            return None
        rows, n = int(meta["rows"]), int(meta["n_features"])
        if (meta.get("format"), meta.get("version"), meta.get("fingerprint"), meta.get("label_column")) != \
                (CACHE_FORMAT, CACHE_VERSION, fingerprint, layout.label) or len(meta["feature_names"]) != n:
            raise ValueError("meta.json does not describe this file")
        features = np.load(entry / "features.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy", mmap_mode="r")
        for arr, name, dtype, shape in ((features, "features.npy", np.float32, (rows, n)),
                                        (labels, "labels.npy", np.uint8, (rows,))):
            # np.load refuses a file too short for its header's shape; a longer one must be caught here.
            if arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous or \
                    arr.offset + arr.nbytes != (entry / name).stat().st_size:
                raise ValueError(f"{name} is {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {shape}")
        if int(np.count_nonzero(labels)) != meta["signal"] or (rows and labels.max() > 1):  # 11 MB: cheap
            raise ValueError("labels.npy does not match meta.json")
        for arr, name in ((features, "features.npy"), (labels, "labels.npy")):
            if checksum(arr) != meta["checksums"][name]:
                raise ValueError(f"{name} does not match its checksum")
    except (OSError, ValueError, KeyError, TypeError) as e:
        source = meta.get("source") if isinstance(meta, dict) else None
        log.warning("cache entry %s is damaged (%s); re-reading %s", entry, e, source or "the data file")
        return None
    return features, labels, meta


def write_entry(roots: list[Path], name: str, *, features, labels, meta, explicit: bool,
                extra: dict | None = None) -> Path | None:
    """Write the entry under a temporary name in the first usable root, fsync, rename into place.
    An unwritable default location falls through to the next; an unwritable chosen one is an error."""
    errors = []
    for root in roots:
        try:
            return _write_entry_in(root, name, features=features, labels=labels, meta=meta, extra=extra)
        except OSError as e:
            errors.append(f"{e.filename or root}: {e.strerror or e}")
    if explicit:
        raise UserError(f"cannot write the cache ({'; '.join(errors)}); choose another cache directory")
    log.warning("no cache written (%s)", "; ".join(errors))
    return None


def _write_entry_in(root: Path, name: str, *, features, labels, meta, extra=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    entry = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write_arrays(tmp, features=features, labels=labels, meta=meta, extra=extra)
        if entry.exists():  # damaged (else it had been used) or just written by a concurrent process
            trash = root / f".tmp-trash-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(entry, trash)
                shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent process has just put the same entry there
        io.fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_superseded(root, keep=entry, source=meta["source"], fingerprint=meta["fingerprint"])
    return entry


def write_arrays(folder: Path, *, features: np.ndarray, labels: np.ndarray, meta: dict,
                 extra: dict | None = None) -> None:
    """features.npy, labels.npy, `extra` arrays (NAME.npy, e.g. weights) and meta.json into the existing
    `folder`, each fsynced: the layout of a cache entry and of an array shard (data/shards.py). meta.json
    gets every array's checksum."""
    arrays = {"features.npy": features, "labels.npy": labels, **{f"{n}.npy": a for n, a in (extra or {}).items()}}
    meta = dict(meta, checksums={name: checksum(a) for name, a in arrays.items()})
    for name, value in (*arrays.items(), ("meta.json", json.dumps(meta, indent=2) + "\n")):
        try:  # numpy's writes name no file when they fail: name it here
            if isinstance(value, str):
                (folder / name).write_text(value)
            else:
                np.save(folder / name, value)
        except OSError as e:
            raise OSError(e.errno, e.strerror or str(e), str(folder / name)) from None
    for f in (*arrays, "meta.json", "."):
        io.fsync(folder / f)


def checksum(arr: np.ndarray) -> str:
    """CRC-32 of an array's bytes (ISA-L: ~20 GB/s, so checking an entry costs far less than its page
    faults, let alone a re-parse). It catches damage (bytes overwritten, a bad disk block), not forgery."""
    from isal import isal_zlib
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, flat.size, 1 << 28):  # 256 MiB at a time: CRC-32 APIs take at most 4 GiB
        crc = isal_zlib.crc32(flat[start:start + (1 << 28)], crc)
    return f"crc32:{crc:08x}"


def _remove_abandoned(root: Path) -> None:
    """Temporary entries whose writing process is gone (killed mid-write) are garbage."""
    for tmp in root.glob(".tmp-*"):
        m = re.search(r"-(\d+)-[0-9a-f]{8}$", tmp.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_superseded(root: Path, *, keep: Path, source: str, fingerprint: str) -> None:
    """Entries of an older version of the same file: each is as big as the data, so do not pile them up."""
    for meta_path in root.glob("*/meta.json"):
        entry = meta_path.parent
        if entry == keep:
            continue
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(meta_path.read_text())
            if meta.get("source") == source and meta.get("fingerprint") != fingerprint:
                shutil.rmtree(entry, ignore_errors=True)
